"""Decode a JPEG or PNG only after its header says it is small enough.

A 420 KB PNG can declare 12000x12000 pixels: OpenCV then spends seconds and half a gigabyte
decoding it before any pixel check could refuse it. Pillow's ``Image.open`` reads only the
header (20-50 us for a VGA frame, measured on a 2-core EPYC), so the size is known before
anything is allocated. Used by the node (``image/compressed``), the dataset loader (PNG files)
and the bag importer (``CompressedImage`` payloads).
"""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np

# What robots send (compressed_image_transport writes JPEG or PNG) and what datasets store.
FORMATS = ('PNG', 'JPEG')
# Larger than any camera we know of (a 61 MP still is 9504x6336 = 60 M pixels); the default
# bound for loaders that have no setting of their own.
DEFAULT_MAX_PIXELS = 100_000_000


class EncodedImageError(ValueError):
    """An encoded image refused before or while decoding; ``kind`` is ``image_oversized``
    (declared too large, nothing decoded) or ``image_decode`` (not a readable JPEG/PNG)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def declared_size(data) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header of JPEG/PNG bytes, decoding no pixel.

    Raises:
        EncodedImageError: ``image_decode`` when the bytes are not a JPEG or PNG header;
            ``image_oversized`` when the header declares more pixels than Pillow will even
            describe (its decompression-bomb bound, about 179 M pixels).
    """
    from PIL import Image, UnidentifiedImageError

    buffer = io.BytesIO(memoryview(data))
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 M pixels; the caller's own bound decides, not a warning.
            warnings.simplefilter('ignore', Image.DecompressionBombWarning)
            with Image.open(buffer, formats=FORMATS) as image:
                width, height = image.size
                return int(width), int(height), str(image.format)
    except Image.DecompressionBombError as err:
        raise EncodedImageError('image_oversized', 'header declares more than '
                                f'{2 * Image.MAX_IMAGE_PIXELS} pixels; not decoded') from err
    except UnidentifiedImageError as err:
        raise EncodedImageError('image_decode', 'not a JPEG or PNG image (no header of '
                                'either)') from err
    except (OSError, SyntaxError, ValueError) as err:   # a header Pillow cannot parse
        raise EncodedImageError('image_decode', f'not a readable JPEG or PNG ({err})') from err


def decode_bounded(data, max_pixels: int = DEFAULT_MAX_PIXELS,
                   flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Decode JPEG/PNG bytes with OpenCV (BGR for colour) if the header declares at most
    ``max_pixels`` pixels (0 = no bound).

    Raises:
        EncodedImageError: with kind ``image_oversized`` (nothing was decoded) or
            ``image_decode`` (no JPEG/PNG header, or a body OpenCV cannot decode).
    """
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(memoryview(data), np.uint8)
    buf = buf.reshape(-1).view(np.uint8)
    if buf.size == 0:
        raise EncodedImageError('image_decode', 'empty image data')
    width, height, fmt = declared_size(buf)
    if max_pixels and width * height > max_pixels:
        raise EncodedImageError('image_oversized', f'{fmt} header declares {width}x{height} = '
                                f'{width * height} pixels > {max_pixels}; not decoded')
    try:
        image = cv2.imdecode(buf, flags)
    except cv2.error as err:
        raise EncodedImageError('image_decode', f'cannot decode {fmt} ({err})') from err
    if image is None:
        raise EncodedImageError('image_decode', f'cannot decode {fmt} {width}x{height} '
                                f'({buf.size} bytes): corrupt or truncated')
    return image
