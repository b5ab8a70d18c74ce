"""Image payloads of ``sensor_msgs/Image`` and ``CompressedImage`` to and from RGB arrays.

Works on message objects as ``rosbags`` deserialises them (``data`` is a numpy uint8 array) and
on plain bytes, so neither ROS nor cv_bridge is needed. Decoding raises ``ImageDecodeError``
with the reason; the bag importer counts those instead of stopping.
"""
from __future__ import annotations

import cv2
import numpy as np

from ...encoded_image import DEFAULT_MAX_PIXELS, EncodedImageError, decode_bounded

# encoding -> (channels, conversion to RGB or None when it already is RGB)
RAW_ENCODINGS = {
    'rgb8': (3, None),
    'bgr8': (3, cv2.COLOR_BGR2RGB),
    'rgba8': (4, cv2.COLOR_RGBA2RGB),
    'bgra8': (4, cv2.COLOR_BGRA2RGB),
    'mono8': (1, cv2.COLOR_GRAY2RGB),
    '8uc1': (1, cv2.COLOR_GRAY2RGB),
    '8uc3': (3, cv2.COLOR_BGR2RGB),  # OpenCV's convention for an untyped 3-channel image
}


class ImageDecodeError(ValueError):
    """An image message that cannot be turned into an RGB array; the message says why."""


def _bytes(data) -> np.ndarray:
    """A message's ``data`` (numpy array, bytes or memoryview) as a flat uint8 array."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data), np.uint8)


def decode_raw(height: int, width: int, encoding: str, step: int, data) -> np.ndarray:
    """Fields of a ``sensor_msgs/Image`` -> HxWx3 uint8 RGB.

    ``step`` (bytes per row) may exceed ``width * channels`` (padded rows); the padding is cut.
    """
    key = encoding.lower()
    if key not in RAW_ENCODINGS:
        raise ImageDecodeError(f'unsupported encoding {encoding!r} (supported: '
                               f'{", ".join(sorted(RAW_ENCODINGS))})')
    channels, conversion = RAW_ENCODINGS[key]
    row = width * channels
    if height <= 0 or width <= 0:
        raise ImageDecodeError(f'empty image ({width}x{height})')
    if step < row:
        raise ImageDecodeError(f'step {step} is smaller than width*channels = {row}')
    buf = _bytes(data)
    needed = step * (height - 1) + row  # the last row's padding may be missing
    if buf.size < needed:
        raise ImageDecodeError(f'data has {buf.size} bytes, {width}x{height} {encoding} with '
                               f'step {step} needs {needed}')
    if buf.size < step * height:
        buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
    pixels = buf[:step * height].reshape(height, step)[:, :row].reshape(height, width, channels)
    if conversion is None:
        return np.ascontiguousarray(pixels)
    return cv2.cvtColor(np.ascontiguousarray(pixels), conversion)


def decode_compressed(data, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A ``CompressedImage`` payload (JPEG or PNG) -> HxWx3 uint8 RGB.

    Its header is read first: an image declaring more than ``max_pixels`` is refused without
    being decoded (a few hundred KB of PNG can declare gigabytes of pixels).
    """
    try:
        bgr = decode_bounded(_bytes(data), max_pixels)
    except EncodedImageError as e:
        raise ImageDecodeError(str(e)) from e
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_image(msg, msgtype: str) -> np.ndarray:
    """A deserialised Image or CompressedImage message -> HxWx3 uint8 RGB."""
    if msgtype.endswith('CompressedImage'):
        return decode_compressed(msg.data)
    return decode_raw(int(msg.height), int(msg.width), str(msg.encoding), int(msg.step),
                      msg.data)


def encode_raw(rgb: np.ndarray, encoding: str = 'rgb8', row_padding: int = 0):
    """HxWx3 uint8 RGB -> (encoding, step, data bytes) of a ``sensor_msgs/Image``.

    ``row_padding`` extra bytes per row exercise readers that must honour ``step``.
    """
    rgb = np.asarray(rgb, np.uint8)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 uint8 RGB image, got {rgb.shape}')
    back = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
            'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}
    if encoding not in back:
        raise ValueError(f'cannot encode {encoding!r}; use one of {sorted(back)}')
    pixels = rgb if back[encoding] is None else cv2.cvtColor(rgb, back[encoding])
    height, width = rgb.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    if row_padding:
        rows = np.concatenate([rows, np.zeros((height, row_padding), np.uint8)], axis=1)
    return encoding, rows.shape[1], rows.tobytes()


def encode_compressed(rgb: np.ndarray, fmt: str = 'jpeg', quality: int = 90) -> bytes:
    """HxWx3 uint8 RGB -> JPEG or PNG bytes for a ``CompressedImage``."""
    ext = {'jpeg': '.jpg', 'jpg': '.jpg', 'png': '.png'}.get(fmt.lower())
    if ext is None:
        raise ValueError(f"compressed format must be 'jpeg' or 'png', got {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == '.jpg' else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.asarray(rgb, np.uint8), cv2.COLOR_RGB2BGR),
                           params)
    if not ok:
        raise ValueError(f'cv2.imencode({ext}) failed')
    return buf.tobytes()
