"""ImagePreprocessor against an independent float64 numpy / OpenCV reference."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from vla_embedding_ros.selection.preprocess import ImagePreprocessor

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
# On the CPU frames are resized as uint8 (torch's vectorised channels-last kernel, ~9x faster
# than resizing floats), so results are within one intensity level of the float64 reference.
ONE_LEVEL = 1.0 / 255.0 / min(STD)


def _aa_weights(n_in, n_out):
    """Antialiased bilinear (triangle filter widened by the downscale factor) as a matrix.

    The filter PIL and torch's ``antialias=True`` use: output pixel i is centred at
    (i + 0.5) * scale in input coordinates, the triangle spans ``max(scale, 1)`` input pixels
    on each side, weights are renormalised at the borders.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        for j in range(n_in):
            w[i, j] = max(0.0, 1.0 - abs((j + 0.5 - center) / support))
        w[i] /= w[i].sum()
    return w


def _reference(rgb, size):
    x = rgb.astype(np.float64) / 255.0
    wy, wx = _aa_weights(x.shape[0], size), _aa_weights(x.shape[1], size)
    x = np.einsum('oh,hwc,pw->opc', wy, x, wx)
    x = (x - np.array(MEAN)) / np.array(STD)
    return x.transpose(2, 0, 1)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.mark.parametrize('shape', [(48, 64), (30, 30), (17, 23)])
def test_matches_float64_reference(rng, shape):
    img = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    pre = ImagePreprocessor(24, MEAN, STD, 'cpu')
    out = pre(img)
    assert out.shape == (1, 3, 24, 24) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), _reference(img, 24), atol=ONE_LEVEL)


def test_upscaling_matches_cv2_bilinear(rng):
    # For upscaling the antialias filter is plain half-pixel bilinear, which is cv2's INTER_LINEAR.
    img = rng.integers(0, 256, size=(10, 10, 3), dtype=np.uint8)
    ref = cv2.resize(img.astype(np.float64) / 255.0, (40, 40), interpolation=cv2.INTER_LINEAR)
    ref = ((ref - np.array(MEAN)) / np.array(STD)).transpose(2, 0, 1)
    out = ImagePreprocessor(40, MEAN, STD)(img)
    np.testing.assert_allclose(out[0].numpy(), ref, atol=ONE_LEVEL)


def test_same_size_is_normalisation_only(rng):
    img = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    out = ImagePreprocessor(16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(img)
    np.testing.assert_allclose(out[0].numpy(), img.transpose(2, 0, 1) / 127.5 - 1.0, atol=1e-6)


def test_bgr_input_gives_the_same_tensor_as_rgb(rng):
    rgb = rng.integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    pre = ImagePreprocessor(20, MEAN, STD)
    torch.testing.assert_close(pre(bgr, color='bgr'), pre(rgb, color='rgb'))
    # ...and reading BGR as if it were RGB really is different (the flag does something).
    assert not torch.allclose(pre(bgr, color='rgb'), pre(rgb))


def test_several_cameras_of_different_sizes_keep_order(rng):
    a = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    b = rng.integers(0, 256, size=(30, 30, 3), dtype=np.uint8)
    c = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    pre = ImagePreprocessor(24, MEAN, STD)
    out = pre([a, b, c])
    assert out.shape == (3, 3, 24, 24)
    for i, img in enumerate((a, b, c)):
        np.testing.assert_allclose(out[i].numpy(), _reference(img, 24), atol=ONE_LEVEL)


def test_strided_view_input_is_handled(rng):
    big = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    view = big[::2, 1::2]  # non-contiguous, as a crop or a decimated frame would be
    out = ImagePreprocessor(20, MEAN, STD)(view)
    np.testing.assert_allclose(out[0].numpy(), _reference(np.ascontiguousarray(view), 20),
                               atol=ONE_LEVEL)


def test_rectangular_target_size(rng):
    img = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    assert ImagePreprocessor((12, 16), MEAN, STD)(img).shape == (1, 3, 12, 16)


@pytest.mark.parametrize('bad, pattern', [
    (np.zeros((8, 8), np.uint8), r'image 0: expected 3 dimensions HxWx3, got shape \(8, 8\)'),
    (np.zeros((8, 8, 4), np.uint8), r'image 0: expected 3 colour channels'),
    (np.zeros((8, 8, 3), np.float32), r'image 0: expected dtype uint8, got float32'),
    (np.zeros((0, 8, 3), np.uint8), r'image 0: image is empty'),
    ([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 1), np.uint8)],
     r'image 1: expected 3 colour channels'),
    ([], r'images is empty'),
    ('frame.png', r'images must be an HxWx3 uint8 array'),
])
def test_invalid_input_raises_clear_value_error(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        ImagePreprocessor(8, MEAN, STD)(bad)


def test_invalid_settings():
    img = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="color must be 'rgb' or 'bgr'"):
        ImagePreprocessor(8, MEAN, STD)(img, color='hsv')
    with pytest.raises(ValueError, match='std must be positive'):
        ImagePreprocessor(8, MEAN, (0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match='mean must have 3 values'):
        ImagePreprocessor(8, (0.5,), STD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu(rng):
    img = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    gpu = ImagePreprocessor(24, MEAN, STD, 'cuda')(img)
    assert gpu.device.type == 'cuda'
    torch.testing.assert_close(gpu.cpu(), ImagePreprocessor(24, MEAN, STD)(img),
                               atol=ONE_LEVEL, rtol=0)
    # The GPU resizes floats: as exact as the float64 reference.
    np.testing.assert_allclose(gpu[0].cpu().numpy(), _reference(img, 24), atol=1e-4)


# pytest's own warning capture overrides the module's filter; the next test checks the filter.
@pytest.mark.filterwarnings('ignore:The given NumPy array is not writable')
def test_read_only_frame_from_a_message_buffer(rng):
    img = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    frozen = np.frombuffer(img.tobytes(), np.uint8).reshape(20, 20, 3)  # as from msg.data
    assert not frozen.flags.writeable
    out = ImagePreprocessor(10, MEAN, STD)(frozen)
    np.testing.assert_allclose(out[0].numpy(), _reference(img, 10), atol=ONE_LEVEL)


def test_read_only_frame_does_not_warn():
    # torch warns once per process about non-writable arrays; pytest's warning capture would
    # override the module's filter, so check in a fresh interpreter that turns warnings fatal.
    code = ('import numpy as np\n'
            'from vla_embedding_ros.selection.preprocess import ImagePreprocessor\n'
            'f = np.frombuffer(bytes(300), np.uint8).reshape(10, 10, 3)\n'
            'ImagePreprocessor(5, (0.5,) * 3, (0.5,) * 3)(f)\n')
    result = subprocess.run([sys.executable, '-W', 'error::UserWarning', '-c', code],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_cpu_uint8_resize_is_the_float_resize_rounded(rng):
    # The fast CPU path must not drift further than rounding from resizing floats.
    img = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    fast = ImagePreprocessor(64, MEAN, STD)(img)[0]
    x = torch.from_numpy(img).permute(2, 0, 1)[None].double()
    exact = torch.nn.functional.interpolate(x, size=(64, 64), mode='bilinear', antialias=True,
                                            align_corners=False)[0] / 255.0
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)
    exact = ((exact - mean) / std).float()
    assert (fast - exact).abs().max() <= ONE_LEVEL
    assert (fast - exact).abs().mean() < ONE_LEVEL / 2   # rounding alone gives ~1/4 level
