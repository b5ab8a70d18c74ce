"""Image augmentation for recorded training data: small random resized crops and shifts,
colour jitter, blur and noise, batched in torch on the training device (no torchvision).

Never a flip and never a rotation: left/right and forward/back are actions, so a mirrored
image would need another answer. The geometry is bounded: any point of the image moves by at
most :meth:`AugmentConfig.max_displacement` of the image side (0.079 with the defaults, under
a third of a tabletop cell), and hue turns by at most ``hue`` of the colour wheel (colour
words are answers: the tabletop's red and orange are 30 degrees apart).

The :class:`Augmenter` works on the preprocessed pixels ``[N, 3, H, W]`` (normalised, at the
model's input size, on its device) rather than on the uint8 batch: they are already on the
device and already at the (small) model size whatever the camera's resolution, so one batched
path serves every source, and nothing is resized twice. It undoes the normalisation, augments
in 0..1 intensities and normalises again. Its random numbers come from its own
``torch.Generator`` whose state is saved with the run, so a resumed run augments exactly as an
uninterrupted one. Under torchrun every rank holds the same generator, draws the parameters of
the whole global batch and applies its own slice to its own shard, as the recorded sources
hand out the data: a run's augmented batches are the same at any world size (2 processes x B
train as 1 x 2B). Noise is a window of a fixed Gaussian pool at a drawn offset (as the tabletop
renderer does), so no rank draws noise for the others' images.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

# sources.RECORDED and recorded_continuous (not imported: this module is torch only)
RECORDED = ('jsonl', 'lerobot', 'recorded_continuous')
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale


def _pair(value, name: str, lo: float, hi: float) -> list[float]:
    where = f'data.augment.{name}'
    if (not isinstance(value, (list, tuple)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f'{where} must be [min, max] numbers, got {value!r}')
    a, b = float(value[0]), float(value[1])
    if not lo <= a <= b <= hi:
        raise ValueError(f'{where} must satisfy {lo} <= min <= max <= {hi}, got {value!r}')
    return [a, b]


def _number(value, name: str, lo: float, hi: float) -> float:
    where = f'data.augment.{name}'
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f'{where} must be a number, got {value!r}')
    if not lo <= float(value) <= hi:
        raise ValueError(f'{where} must be in [{lo}, {hi}], got {value!r}')
    return float(value)


@dataclass
class AugmentConfig:
    """``data.augment``. Every transform is off at its neutral value (noted per key)."""

    # auto: on for recorded data (jsonl, lerobot), off for the procedural tabletop sources,
    # which draw their own backgrounds, lighting and noise; true / false force it.
    enabled: bool | str = 'auto'
    # Random resized crop: crop area as a fraction of the image, its aspect ratio (w/h), and
    # how far its centre may move from the image centre (fraction of the side, per axis).
    # Off: crop_scale [1, 1], crop_ratio [1, 1], max_shift 0.
    crop_scale: list = field(default_factory=lambda: [0.85, 1.0])
    crop_ratio: list = field(default_factory=lambda: [0.95, 1.05])
    max_shift: float = 0.02
    # Colour jitter: factors drawn from [1 - x, 1 + x]; hue turns by up to this fraction of
    # the colour wheel (0.02 = 7 degrees). Off: 0.
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.02
    # Gaussian blur with this probability per image, sigma in pixels of the model input.
    blur_prob: float = 0.2             # off: 0
    blur_sigma: list = field(default_factory=lambda: [0.3, 1.0])
    # Gaussian noise, std drawn per image from [0, noise_std] in 0..1 intensity. Off: 0.
    noise_std: float = 0.03

    def __post_init__(self):
        if self.enabled not in (True, False, 'auto'):
            raise ValueError(f"data.augment.enabled must be auto, true or false, got "
                             f'{self.enabled!r}')
        self.crop_scale = _pair(self.crop_scale, 'crop_scale', 0.5, 1.0)
        self.crop_ratio = _pair(self.crop_ratio, 'crop_ratio', 0.75, 4 / 3)
        self.max_shift = _number(self.max_shift, 'max_shift', 0.0, 0.1)
        for name in ('brightness', 'contrast', 'saturation'):
            setattr(self, name, _number(getattr(self, name), name, 0.0, 0.9))
        self.hue = _number(self.hue, 'hue', 0.0, 0.05)
        self.blur_prob = _number(self.blur_prob, 'blur_prob', 0.0, 1.0)
        self.blur_sigma = _pair(self.blur_sigma, 'blur_sigma', 0.05, 3.0)
        self.noise_std = _number(self.noise_std, 'noise_std', 0.0, 0.2)

    def active(self, source: str) -> tuple[bool, str]:
        """Whether augmentation runs for data.source ``source``, and why (for the log)."""
        if self.enabled == 'auto':
            if source in RECORDED:
                return True, (f'data.augment.enabled: auto and data.source {source} is '
                              'recorded data')
            return False, (f'data.augment.enabled: auto and data.source {source} is procedural, '
                           'drawing its own backgrounds, lighting and noise')
        return bool(self.enabled), f'data.augment.enabled: {str(self.enabled).lower()}'

    @property
    def geometric(self) -> bool:
        return self.crop_scale[0] < 1 or self.crop_ratio != [1.0, 1.0] or self.max_shift > 0

    def _sides(self) -> tuple[float, float]:
        """Smallest crop width and height as fractions of the image side."""
        a, (r_lo, r_hi) = self.crop_scale[0], self.crop_ratio
        return min(1.0, math.sqrt(a * r_lo)), min(1.0, math.sqrt(a / r_hi))

    def max_displacement(self) -> float:
        """The farthest any image point moves, as a fraction of the side (crop centre offset
        plus the zoom about it, at the image's edge)."""
        s = min(self._sides())
        return (0.5 * (1 - s) + self.max_shift) / s

    def describe(self) -> str:
        parts = []
        if self.geometric:
            parts.append(f'crop area {self.crop_scale} ratio {self.crop_ratio} shift '
                         f'{self.max_shift} (points move <= {self.max_displacement():.3f} of '
                         'the side)')
        jitter = {k: getattr(self, k) for k in ('brightness', 'contrast', 'saturation', 'hue')
                  if getattr(self, k) > 0}
        if jitter:
            parts.append('colour ' + ' '.join(f'{k} {v:g}' for k, v in jitter.items()))
        if self.blur_prob > 0:
            parts.append(f'blur p={self.blur_prob:g} sigma {self.blur_sigma}')
        if self.noise_std > 0:
            parts.append(f'noise std <= {self.noise_std:g}')
        return ', '.join(parts) or 'every transform at its neutral value'

    def to_dict(self) -> dict:
        return asdict(self)


class Augmenter:
    """Augments normalised pixel batches ``[N, 3, H, W]`` (see the module docstring).

    Args:
        config: the transforms and their ranges.
        mean, std: the normalisation the pixels carry (the preprocessor's, RGB, 0..1 scale).
        device: the pixels' device; the generator lives there too.
        seed: the generator's seed, the same on every rank.
        rank, world_size: this process's slice of each global batch (see the module docstring).
    """

    def __init__(self, config: AugmentConfig, mean: Sequence[float], std: Sequence[float],
                 device: str | torch.device, seed: int, rank: int = 0, world_size: int = 1):
        self.config = config
        self.rank, self.world_size = rank, world_size
        self._pool = torch.empty(0)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    def state_dict(self) -> dict:
        return {'generator': self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state['generator'].cpu())

    @torch.no_grad()
    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        n = pixels.shape[0]
        # One draw per image and parameter, in a fixed layout whatever is enabled.
        u = torch.rand(n * self.world_size, 12, generator=self.generator,
                       device=self.device)[self.rank * n:(self.rank + 1) * n]
        x = (pixels.float() * self.std + self.mean).clamp(0, 1)
        if cfg.geometric:
            x = self._crop(x, u[:, 0:4])
        x = self._colour(x, u[:, 4:8])
        if cfg.blur_prob > 0:
            x = self._blur(x, u[:, 8] < cfg.blur_prob, u[:, 9])
        if cfg.noise_std > 0:
            x = (x + self._noise(x.shape, u[:, 11]) * (u[:, 10] * cfg.noise_std).view(
                n, 1, 1, 1)).clamp(0, 1)
        return ((x - self.mean) / self.std).to(pixels.dtype)

    def _noise(self, shape: torch.Size, u: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``shape``: per image a window of a fixed pool (drawn once
        from a fixed seed, at least 4 images long) starting at offset ``u`` of the free room."""
        per_image = math.prod(shape[1:])
        if self._pool.numel() < 4 * per_image:
            pool = torch.Generator(device=self.device)
            pool.manual_seed(12_345)
            self._pool = torch.randn(max(1 << 20, 4 * per_image), generator=pool,
                                     device=self.device)
        start = (u * (self._pool.numel() - per_image)).long()
        index = start[:, None] + torch.arange(per_image, device=self.device)[None]
        return self._pool[index].view(shape)

    @staticmethod
    def _between(u: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * u

    def _crop(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Per-image crop (area, log-uniform aspect ratio, centre offset) resampled to the
        full size with one affine_grid/grid_sample over the batch; edges repeat the border."""
        cfg = self.config
        area = self._between(u[:, 0], *cfg.crop_scale)
        ratio = torch.exp(self._between(u[:, 1], *(math.log(r) for r in cfg.crop_ratio)))
        sx = torch.sqrt(area * ratio).clamp(max=1.0)
        sy = torch.sqrt(area / ratio).clamp(max=1.0)
        # Offsets in grid_sample's [-1, 1] coordinates: a fraction f of the side is 2 f.
        tx = self._between(u[:, 2], -1, 1) * 2 * cfg.max_shift
        ty = self._between(u[:, 3], -1, 1) * 2 * cfg.max_shift
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zero, tx], 1),
                             torch.stack([zero, sy, ty], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='border',
                             align_corners=False)

    def _colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation, then hue (a rotation about the grey axis), folded
        into one affine map per image (``M x + o``, one batched matrix product, one clamp):
        each step is affine and keeps grey grey, so the composition is exact."""
        cfg = self.config
        n = x.shape[0]
        w = torch.tensor(GREY, device=x.device)
        eye = torch.eye(3, device=x.device).expand(n, 3, 3)
        ones = torch.ones(n, 1, device=x.device)
        fb = self._between(u[:, 0], 1 - cfg.brightness, 1 + cfg.brightness)
        fc = self._between(u[:, 1], 1 - cfg.contrast, 1 + cfg.contrast)
        fs = self._between(u[:, 2], 1 - cfg.saturation, 1 + cfg.saturation)[:, None, None]
        # saturation: f x + (1 - f) grey(x), grey(x) = w . x on every channel
        m = fs * eye + (1 - fs) * torch.ones(n, 3, 1, device=x.device) * w.view(1, 1, 3)
        if cfg.hue > 0:
            angle = self._between(u[:, 3], -cfg.hue, cfg.hue) * 2 * math.pi
            c, s = torch.cos(angle), torch.sin(angle)
            # Rodrigues' rotation about (1, 1, 1) / sqrt(3).
            a, b = (1 - c) / 3, s / math.sqrt(3)
            rot = torch.stack([torch.stack([c + a, a - b, a + b], 1),
                               torch.stack([a + b, c + a, a - b], 1),
                               torch.stack([a - b, a + b, c + a], 1)], 1)
            m = rot @ m
        m = m * (fb * fc)[:, None, None]
        # contrast pulls towards the mean grey level of the brightened image
        grey_mean = torch.einsum('c,nchw->n', w, x) / (x.shape[2] * x.shape[3])
        offset = ((1 - fc) * fb * grey_mean)[:, None] * ones
        flat = torch.baddbmm(offset[:, :, None].expand(n, 3, 1), m, x.reshape(n, 3, -1))
        return flat.reshape(x.shape).clamp(0, 1)

    def _blur(self, x: torch.Tensor, chosen: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with a per-image sigma, one grouped convolution per axis;
        images not ``chosen`` are kept as they were."""
        lo, hi = self.config.blur_sigma
        n, ch, h, w = x.shape
        radius = min(math.ceil(3 * hi), (min(h, w) - 1) // 2)
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        sigma = self._between(u, lo, hi)
        kernel = torch.exp(-0.5 * (offsets[None] / sigma[:, None]) ** 2)
        kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(ch, 0)  # [n*ch, k]
        flat = x.reshape(1, n * ch, h, w)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode='reflect'),
                        kernel.view(n * ch, 1, 1, -1), groups=n * ch)
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode='reflect'),
                        kernel.view(n * ch, 1, -1, 1), groups=n * ch)
        return torch.where(chosen.view(n, 1, 1, 1), flat.view(n, ch, h, w), x)
