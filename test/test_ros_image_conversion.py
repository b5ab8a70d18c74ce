"""Image message <-> numpy conversion: encodings, row padding, endianness, compression."""
import numpy as np
import pytest

pytest.importorskip('rclpy')

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vla_embedding_ros.ros.image_conversion import (  # noqa: E402
    compressed_to_numpy,
    image_to_numpy,
    numpy_to_compressed,
    numpy_to_image,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


def _msg(array, encoding, pad=0, bigendian=False):
    h, w = array.shape[:2]
    rows = array.reshape(h, -1).view(np.uint8) if array.dtype != np.uint8 else array.reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, pad), 255, np.uint8)], axis=1)
    return Image(height=h, width=w, encoding=encoding, is_bigendian=int(bigendian),
                 step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize('pad', [0, 3])
def test_rgb_bgr_and_alpha_encodings_honour_step(pad):
    out, order = image_to_numpy(_msg(RGB, 'rgb8', pad), use_cv_bridge=False)
    assert order == 'rgb' and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, RGB)
    out, order = image_to_numpy(_msg(RGB[:, :, ::-1].copy(), 'bgr8', pad), use_cv_bridge=False)
    assert order == 'bgr'
    np.testing.assert_array_equal(out[:, :, ::-1], RGB)
    rgba = np.concatenate([RGB, np.full((5, 7, 1), 9, np.uint8)], axis=2)
    out, order = image_to_numpy(_msg(rgba, 'rgba8', pad), use_cv_bridge=False)
    np.testing.assert_array_equal(out, RGB)
    bgra = np.concatenate([RGB[:, :, ::-1], np.full((5, 7, 1), 9, np.uint8)], axis=2)
    out, order = image_to_numpy(_msg(bgra, 'bgra8', pad), use_cv_bridge=False)
    assert order == 'bgr'
    np.testing.assert_array_equal(out[:, :, ::-1], RGB)


def test_raw_rgb8_is_a_view_of_the_message_data():
    msg = _msg(RGB, 'rgb8')
    out, _ = image_to_numpy(msg, use_cv_bridge=False)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_mono8_and_big_endian_mono16():
    gray = RGB[:, :, 0].copy()
    out, order = image_to_numpy(_msg(gray[:, :, None], 'mono8', 1), use_cv_bridge=False)
    assert order == 'rgb'
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))
    wide = gray.astype(np.uint16) * 256 + 17
    big = _msg(wide.astype('>u2')[:, :, None], 'mono16', 0, bigendian=True)
    little = _msg(wide.astype('<u2')[:, :, None], 'mono16', 0, bigendian=False)
    for msg in (big, little):
        out, _ = image_to_numpy(msg, use_cv_bridge=False)
        np.testing.assert_array_equal(out[:, :, 0], gray)


def test_unsupported_encoding_and_short_data_raise_clear_errors():
    with pytest.raises(ValueError, match="unsupported image encoding 'bayer_rggb8'"):
        image_to_numpy(Image(height=2, width=2, encoding='bayer_rggb8', step=2, data=b'1234'))
    msg = _msg(RGB, 'rgb8')
    msg.data = msg.data[:-1].tobytes() if hasattr(msg.data, 'tobytes') else msg.data[:-1]
    with pytest.raises(ValueError, match='needs 105'):
        image_to_numpy(msg, use_cv_bridge=False)


def test_compressed_png_round_trip_and_garbage():
    msg = numpy_to_compressed(RGB, 'rgb', 'png')
    out, order = compressed_to_numpy(msg)
    assert order == 'bgr'
    np.testing.assert_array_equal(out[:, :, ::-1], RGB)
    with pytest.raises(ValueError, match='not a JPEG or PNG image'):
        compressed_to_numpy(CompressedImage(format='jpeg', data=b'not an image'))


def test_numpy_to_image_round_trip():
    msg = numpy_to_image(RGB, 'rgb8')
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, 'rgb8')
    out, _ = image_to_numpy(msg)
    np.testing.assert_array_equal(out, RGB)
    with pytest.raises(ValueError, match='cannot be encoded'):
        numpy_to_image(RGB, 'mono8')
