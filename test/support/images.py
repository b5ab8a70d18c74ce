"""Encoded images that lie about themselves, for the untrusted-input tests."""
import struct
import zlib


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` RGB, followed by one compressed row only
    (what a decoder must allocate is declared; what it gets is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
            + chunk(b'IDAT', zlib.compress(bytes(1 + 3 * width))) + chunk(b'IEND', b''))
