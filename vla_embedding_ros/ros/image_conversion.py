"""sensor_msgs Image / CompressedImage <-> numpy, without requiring cv_bridge.

The ROS 2 ``cv_bridge`` is used for raw images when it imports and is really the ROS 2 one
(found in the ament index); the PyPI ``cv-bridge`` is a stale ROS 1 port that breaks on
NumPy 2, so it is never used. Otherwise frames are decoded here: ``np.frombuffer`` over
``msg.data`` (no copy), row padding (``step``) removed by slicing a view, and channel order
reported instead of converted, because the selector's preprocessing flips BGR on the device.
At most one copy is made (mono expansion, 16-bit scaling, JPEG/PNG decoding); a compressed
frame's size is read from its header before it is decoded.
"""
from __future__ import annotations

import numpy as np

from ..encoded_image import EncodedImageError, declared_size, decode_bounded

# encoding -> (channels, bytes per channel, channel order of the first three channels)
_ENCODINGS = {
    'rgb8': (3, 1, 'rgb'), 'bgr8': (3, 1, 'bgr'), 'rgba8': (4, 1, 'rgb'),
    'bgra8': (4, 1, 'bgr'), 'mono8': (1, 1, 'rgb'), '8uc1': (1, 1, 'rgb'),
    '8uc3': (3, 1, 'bgr'), 'rgb16': (3, 2, 'rgb'), 'bgr16': (3, 2, 'bgr'),
    'rgba16': (4, 2, 'rgb'), 'bgra16': (4, 2, 'bgr'), 'mono16': (1, 2, 'rgb'),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


class ImageError(ValueError):
    """A frame that cannot be used; ``kind`` names the problem for per-kind counters:
    image_encoding, image_empty, image_layout (step/data vs header), image_decode or
    image_oversized."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _ros2_cv_bridge():
    """The ROS 2 ``CvBridge`` class, or None (absent, or the stale ROS 1 PyPI port)."""
    try:
        from ament_index_python.packages import get_package_share_directory
        from cv_bridge import CvBridge
        get_package_share_directory('cv_bridge')  # only a ROS 2 install registers it
    except Exception:  # ImportError, PackageNotFoundError, a broken ROS 1 port on NumPy 2
        return None
    return CvBridge


_CV_BRIDGE = _ros2_cv_bridge()
_BRIDGE = _CV_BRIDGE() if _CV_BRIDGE is not None else None


def cv_bridge_available() -> bool:
    """Whether the ROS 2 cv_bridge is used for raw images."""
    return _BRIDGE is not None


def image_to_numpy(msg, use_cv_bridge: bool = True) -> tuple[np.ndarray, str]:
    """Convert a ``sensor_msgs/Image`` to ``(HxWx3 uint8, 'rgb' | 'bgr')``.

    The array may be a read-only view of ``msg.data``; do not write to it.

    Raises:
        ImageError (a ValueError): unsupported encoding, empty image, ``step`` or ``data``
            that disagrees with the header.
    """
    channels, width_bytes, order = check_image_header(msg)
    if use_cv_bridge and _BRIDGE is not None and width_bytes == 1:
        try:
            return _to_three_channels(_BRIDGE.imgmsg_to_cv2(msg, 'passthrough'), channels,
                                      order)
        except Exception:  # fall through to our own decoder, which gives a precise error
            pass
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * width_bytes
    buf = np.frombuffer(msg.data, dtype=np.uint8)
    rows = buf[:h * step].reshape(h, step)[:, :row]  # a view: padding dropped, no copy
    if width_bytes == 2:
        dtype = np.dtype('>u2' if msg.is_bigendian else '<u2')
        wide = np.ascontiguousarray(rows).view(dtype).reshape(h, w, channels)
        img = (wide >> 8).astype(np.uint8)  # the one copy: 16 -> 8 bit
    else:
        img = rows.reshape(h, w, channels)
    return _to_three_channels(img, channels, order)


def check_image_header(msg) -> tuple[int, int, str]:
    """Check encoding, size, ``step`` and ``len(data)`` of a ``sensor_msgs/Image`` in O(1)
    (no pixel is read), so a subscription callback can reject a bad frame before it displaces
    a good one. Returns ``(channels, bytes per channel, channel order)``.

    Raises:
        ImageError: what is wrong, with its ``kind``.
    """
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ImageError('image_encoding', f'unsupported image encoding {msg.encoding!r}; '
                         f'supported: {", ".join(SUPPORTED_ENCODINGS)} (and compressed '
                         'JPEG/PNG)')
    channels, width_bytes, order = _ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row = w * channels * width_bytes
    if h == 0 or w == 0:
        raise ImageError('image_empty', f'empty image ({w}x{h})')
    if step < row:
        raise ImageError('image_layout', f'step {step} is smaller than width*channels*bytes '
                         f'= {row} for {msg.encoding} {w}x{h}')
    size = len(msg.data)
    # Exactly height * step, as sensor_msgs/Image defines it: a longer buffer means the
    # publisher's header is wrong too, and guessing which part is right would show garbage.
    if size != h * step:
        raise ImageError('image_layout', f'image data has {size} bytes, {msg.encoding} '
                         f'{w}x{h} with step {step} needs {h * step}')
    return channels, width_bytes, order


def _to_three_channels(img: np.ndarray, channels: int, order: str) -> tuple[np.ndarray, str]:
    if img.ndim == 2 or channels == 1:
        img = img.reshape(img.shape[0], img.shape[1], 1)
        return np.repeat(img, 3, axis=2), 'rgb'
    return img[:, :, :3], order


def compressed_to_numpy(msg, max_pixels: int = 0) -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/CompressedImage`` (JPEG/PNG) to ``(HxWx3 uint8, 'bgr')``.

    The header is read first: an image declaring more than ``max_pixels`` (0 = no bound) is
    refused without decoding a pixel.

    Raises:
        ImageError (a ValueError): kind ``image_oversized``, or ``image_decode`` when the data
            is not a JPEG/PNG OpenCV can decode.
    """
    try:
        return decode_bounded(msg.data, max_pixels), 'bgr'
    except EncodedImageError as err:
        raise _refused(msg, err) from err


def compressed_size(msg) -> tuple[int, int]:
    """``(width, height)`` a ``CompressedImage`` declares in its header, decoding nothing.

    Raises:
        ImageError: kind ``image_decode`` (no JPEG/PNG header) or ``image_oversized``.
    """
    try:
        width, height, _ = declared_size(msg.data)
    except EncodedImageError as err:
        raise _refused(msg, err) from err
    return width, height


def _refused(msg, err: EncodedImageError) -> ImageError:
    """The node's error for a refused ``CompressedImage``: the kind, and what was received."""
    return ImageError(err.kind, f'compressed image (format {msg.format!r}, {len(msg.data)} '
                                f'bytes): {err}')


def numpy_to_image(array: np.ndarray, encoding: str = 'rgb8', header=None):
    """Build a ``sensor_msgs/Image`` from an HxWx3 (or HxW for mono8) uint8 array.

    ``msg.data`` is assigned ``bytes``: assigning a numpy array goes element by element and
    costs tens of milliseconds for a VGA frame.
    """
    from sensor_msgs.msg import Image

    if array.dtype != np.uint8:
        raise ValueError(f'expected uint8, got {array.dtype}')
    channels = 1 if array.ndim == 2 else array.shape[2]
    expected = _ENCODINGS.get(encoding.lower(), (None,))[0]
    if expected != channels or _ENCODINGS[encoding.lower()][1] != 1:
        raise ValueError(f'array with {channels} channel(s) cannot be encoded as {encoding!r}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = np.ascontiguousarray(array).tobytes()
    return msg


def depth_to_image(depth: np.ndarray, header=None):
    """Build a ``sensor_msgs/Image`` ``32FC1`` (REP 118: metres, little-endian float32) from an
    HxW depth map."""
    from sensor_msgs.msg import Image

    depth = np.asarray(depth)
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f'expected an HxW float depth map, got {depth.dtype} {depth.shape}')
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(depth.shape[0]), int(depth.shape[1])
    msg.encoding = '32FC1'
    msg.is_bigendian = 0
    msg.step = msg.width * 4
    msg.data = np.ascontiguousarray(depth, dtype='<f4').tobytes()
    return msg


def numpy_to_compressed(array: np.ndarray, color: str = 'rgb', fmt: str = 'jpeg',
                        header=None):
    """Encode an HxWx3 uint8 array as a ``sensor_msgs/CompressedImage`` (jpeg or png)."""
    import cv2
    from sensor_msgs.msg import CompressedImage

    bgr = array[:, :, ::-1] if color == 'rgb' else array
    ok, data = cv2.imencode('.png' if fmt == 'png' else '.jpg', np.ascontiguousarray(bgr))
    if not ok:
        raise ValueError(f'cv2 could not encode the image as {fmt}')
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = 'png' if fmt == 'png' else 'jpeg'
    msg.data = data.tobytes()
    return msg
