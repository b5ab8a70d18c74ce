"""Property-based fuzzing of the image conversion the node runs on every frame.

Whatever a publisher sends (any encoding string, size, step, data length, byte order, or
bytes claiming to be a JPEG), conversion either returns a correct HxWx3 uint8 frame or raises
ValueError; any other exception would reach the node's worker as an inference fault. Valid
messages built from a random array must also decode to exactly that array.
"""
import numpy as np
import pytest

pytest.importorskip('rclpy')
hypothesis = pytest.importorskip('hypothesis')

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vla_embedding_ros.ros.image_conversion import (  # noqa: E402
    SUPPORTED_ENCODINGS,
    ImageError,
    check_image_header,
    compressed_to_numpy,
    image_to_numpy,
    numpy_to_compressed,
)

FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])
UINT32 = 2 ** 32 - 1
ENCODINGS = st.sampled_from(SUPPORTED_ENCODINGS + ('RGB8', 'Mono16', 'yuv422', 'bayer_rggb8',
                                                    '32FC1', '16UC3', '', 'rgb8 ', 'jpeg'))
# (channels, bytes per channel, first-three-channel order) per supported encoding
LAYOUT = {'rgb8': (3, 1, 'rgb'), 'bgr8': (3, 1, 'bgr'), 'rgba8': (4, 1, 'rgb'),
          'bgra8': (4, 1, 'bgr'), 'mono8': (1, 1, 'rgb'), '8uc1': (1, 1, 'rgb'),
          '8uc3': (3, 1, 'bgr'), 'rgb16': (3, 2, 'rgb'), 'bgr16': (3, 2, 'bgr'),
          'rgba16': (4, 2, 'rgb'), 'bgra16': (4, 2, 'bgr'), 'mono16': (1, 2, 'rgb')}


def small_or_huge(small: int):
    return st.one_of(st.integers(0, small), st.integers(0, UINT32))


@st.composite
def arbitrary_images(draw):
    """Headers and data that may or may not agree, including absurd values."""
    encoding = draw(ENCODINGS)
    h, w = draw(small_or_huge(9)), draw(small_or_huge(9))
    channels, width_bytes, _ = LAYOUT.get(encoding.lower(), (3, 1, 'rgb'))
    row = w * channels * width_bytes
    step = draw(st.one_of(st.just(row), st.integers(max(0, row - 3), row + 5),
                          small_or_huge(64)).filter(lambda s: s <= UINT32))
    exact = h * step
    size = draw(st.one_of(st.just(exact), st.integers(max(0, exact - 4), exact + 4),
                          st.integers(0, 600)).filter(lambda n: n <= 4096))
    msg = Image(height=h, width=w, encoding=encoding, step=step,
                is_bigendian=draw(st.integers(0, 1)))
    msg.data = draw(st.binary(min_size=size, max_size=size))
    return msg


@FAST
@given(arbitrary_images())
def test_any_image_message_gives_a_frame_or_a_value_error(msg):
    try:
        out, order = image_to_numpy(msg, use_cv_bridge=False)
    except ImageError as exc:
        assert exc.kind in ('image_encoding', 'image_empty', 'image_layout')
        return
    # Accepted: then the header, step and data really agreed, and the frame is well formed.
    assert msg.encoding.lower() in LAYOUT
    assert out.shape == (msg.height, msg.width, 3) and out.dtype == np.uint8
    assert order in ('rgb', 'bgr')
    assert len(msg.data) == msg.height * msg.step
    check_image_header(msg)  # the callback's O(1) check agrees with the full decode


@st.composite
def valid_images(draw):
    """A random array, its encoding with random row padding and byte order."""
    encoding = draw(st.sampled_from(sorted(LAYOUT)))
    channels, width_bytes, order = LAYOUT[encoding]
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    pad = draw(st.integers(0, 7))
    big = draw(st.booleans()) if width_bytes == 2 else False
    seed = draw(st.integers(0, 2 ** 16))
    pixels = np.random.default_rng(seed).integers(0, 2 ** (8 * width_bytes), (h, w, channels))
    dtype = {1: np.dtype(np.uint8), 2: np.dtype('>u2' if big else '<u2')}[width_bytes]
    rows = pixels.astype(dtype).reshape(h, -1).view(np.uint8)
    rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, step=rows.shape[1],
                is_bigendian=int(big))
    msg.data = rows.tobytes()
    return msg, pixels, width_bytes, order


@FAST
@given(valid_images())
def test_valid_images_decode_to_exactly_their_pixels(case):
    msg, pixels, width_bytes, order = case
    out, got_order = image_to_numpy(msg, use_cv_bridge=False)
    expected = (pixels >> 8 if width_bytes == 2 else pixels).astype(np.uint8)
    expected = np.repeat(expected, 3, axis=2) if expected.shape[2] == 1 else expected[:, :, :3]
    assert got_order == order
    np.testing.assert_array_equal(out, expected)


JPEG = bytes(numpy_to_compressed(
    np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8), 'rgb',
    'jpeg').data)
PNG = bytes(numpy_to_compressed(
    np.random.default_rng(1).integers(0, 256, (10, 6, 3), dtype=np.uint8), 'rgb', 'png').data)


@st.composite
def damaged_compressed(draw):
    base = draw(st.sampled_from([JPEG, PNG, b'']))
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 8))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    data = data[:cut] if draw(st.booleans()) else data
    data += draw(st.binary(max_size=32))
    return CompressedImage(format=draw(st.sampled_from(['jpeg', 'png', '', 'rgb8; jpeg'])),
                           data=bytes(data))


@FAST
@given(damaged_compressed())
def test_damaged_compressed_images_give_a_frame_or_a_value_error(msg):
    try:
        out, order = compressed_to_numpy(msg)
    except ImageError as exc:
        assert exc.kind == 'image_decode'
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8 and order == 'bgr'
    assert out.shape[0] > 0 and out.shape[1] > 0
