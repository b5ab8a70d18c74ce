"""Model configuration: plain dataclasses that round-trip through dicts (config.json, YAML).

``from_dict`` rejects unknown keys and bad values with a ``ValueError`` naming the dotted field
(``vision.conv.patch_size``), because a typo in a training YAML should fail before hours of
training, not be silently ignored.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

MINILM = 'sentence-transformers/all-MiniLM-L6-v2'


@dataclass
class ConvConfig:
    """The from-scratch conv stem: ``image_size`` px in, an (image_size / patch_size)^2 grid out.

    ``patch_size`` must be 2 ** len(channels): every channel entry is one stride-2 stage.
    ``patchify`` uses 2x2 kernels so each token sees exactly its own patch (a ViT-style patch
    embedding built from small conv stages) instead of overlapping 3x3 receptive fields.
    """
    image_size: int = 96
    patch_size: int = 8
    channels: tuple = (32, 64, 128)
    width: int = 128
    patchify: bool = False


@dataclass
class VisionConfig:
    """Vision tower. ``type='hf'`` loads ``name_or_path``; ``'conv'`` builds :class:`ConvConfig`.

    ``trainable`` applies to pretrained towers; the conv stem starts from random weights and is
    always trained. ``image_mean`` / ``image_std`` override the tower's own normalisation.
    """
    type: str = 'conv'
    name_or_path: str | None = None
    trainable: bool = False
    conv: ConvConfig = field(default_factory=ConvConfig)
    image_mean: tuple | None = None
    image_std: tuple | None = None


@dataclass
class TextConfig:
    """Text tower (any HF text model; CLIP/SigLIP towers taken from full checkpoints).

    pooling: 'mean' (masked mean of token states), 'cls' (first token), 'pooler' (the model's
    own pooled output) or 'auto' (pooler for CLIP/SigLIP, mean otherwise).
    """
    name_or_path: str = MINILM
    trainable: bool = False
    max_length: int = 32
    pooling: str = 'auto'


@dataclass
class ActionConfig:
    """Action MLP over the normalised parameter vector (+ projected description text).

    ``fourier_features`` > 0 adds random Fourier features (sin and cos of ``fourier_features``
    random projections, frequencies ~ N(0, fourier_scale^2) per standardised unit) of the
    parameters listed in ``continuous_dims``, so the MLP can tell apart nearby positions
    (Tancik et al. 2020); a plain MLP over (x, y) is too smooth to score a continuous space.
    """
    param_dim: int = 7
    hidden: int = 256
    use_description: bool = False
    continuous_dims: tuple = ()
    fourier_features: int = 0
    fourier_scale: float = 2.0
    # Per parameter, the range training sampled (a continuous space's bounds, else the
    # library's min/max); the selector refuses a space reaching beyond it. Empty: unknown.
    continuous_low: tuple = ()
    continuous_high: tuple = ()
    # Point features (transformer fusion only): ``image_point`` names the two parameters that
    # are a point of the (single) camera image, (u right, v down) in [0, 1]. With
    # ``point_dim`` > 0 the query also carries a ``point_dim`` vector per patch cell (read from
    # the fused patch tokens) and an action the same vector spread over the cells around its
    # point, so a candidate's score includes what the image shows where it points: the same
    # weights at every cell, where the global query alone must map every arrangement to a point.
    image_point: tuple = ()
    point_dim: int = 0


@dataclass
class FusionConfig:
    """Image + instruction fusion: 'late', 'gated' or 'transformer' (the other fields)."""
    type: str = 'transformer'
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    dropout: float = 0.1
    max_cameras: int = 4
    max_text_len: int = 32
    patch_pos: str = 'sincos'   # 'sincos' (2-D, fixed) or 'learned' (one vector per grid cell)
    # 'text': the CLS token starts as a projection of the pooled instruction, so its first
    # attention hop can already look for the described object (one hop instead of two).
    cls_init: str = 'learned'   # 'learned' or 'text'


@dataclass
class VLAConfig:
    """The whole joint-space model."""
    embed_dim: int = 256
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    action: ActionConfig = field(default_factory=ActionConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    logit_scale_init: float = math.log(1 / 0.07)
    logit_scale_max: float = math.log(100.0)

    def to_dict(self) -> dict:
        """A JSON/YAML-safe nested dict (tuples become lists)."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict | None) -> 'VLAConfig':
        """Build and validate a config from a (possibly partial) nested dict.

        Raises:
            ValueError: an unknown key or an invalid value; the message names the field.
        """
        config = _build(cls, data or {}, '')
        config.validate()
        return config

    def validate(self) -> None:
        """Check values that types alone cannot (choices, positive sizes, divisibility).

        Raises:
            ValueError: naming the offending field.
        """
        _choice('vision.type', self.vision.type, ('hf', 'conv'))
        if self.vision.type == 'hf' and not self.vision.name_or_path:
            raise ValueError("vision.name_or_path is required when vision.type is 'hf'")
        conv = self.vision.conv
        if not conv.channels or 2 ** len(conv.channels) != conv.patch_size:
            raise ValueError(f'vision.conv.patch_size ({conv.patch_size}) must be 2 ** '
                             f'len(vision.conv.channels) ({len(conv.channels)} stages)')
        if conv.image_size % conv.patch_size:
            raise ValueError(f'vision.conv.image_size ({conv.image_size}) must be a multiple '
                             f'of vision.conv.patch_size ({conv.patch_size})')
        for name in ('image_mean', 'image_std'):
            value = getattr(self.vision, name)
            if value is not None and len(value) != 3:
                raise ValueError(f'vision.{name} must have 3 values, got {list(value)}')
        _choice('text.pooling', self.text.pooling, ('auto', 'mean', 'cls', 'pooler'))
        _choice('fusion.type', self.fusion.type, ('late', 'gated', 'transformer'))
        _choice('fusion.patch_pos', self.fusion.patch_pos, ('sincos', 'learned'))
        _choice('fusion.cls_init', self.fusion.cls_init, ('learned', 'text'))
        for name, value in (('embed_dim', self.embed_dim), ('text.max_length',
                            self.text.max_length), ('action.param_dim', self.action.param_dim),
                            ('action.hidden', self.action.hidden),
                            ('fusion.d_model', self.fusion.d_model),
                            ('fusion.heads', self.fusion.heads),
                            ('fusion.max_cameras', self.fusion.max_cameras),
                            ('fusion.max_text_len', self.fusion.max_text_len)):
            if value < 1:
                raise ValueError(f'{name} must be >= 1, got {value}')
        if self.fusion.d_model % self.fusion.heads:
            raise ValueError(f'fusion.d_model ({self.fusion.d_model}) must be divisible by '
                             f'fusion.heads ({self.fusion.heads})')
        if self.fusion.d_model % 4:
            raise ValueError(f'fusion.d_model ({self.fusion.d_model}) must be a multiple of 4 '
                             '(2-D sin-cos position encoding)')
        if self.fusion.type == 'transformer' and self.text.max_length > self.fusion.max_text_len:
            raise ValueError(f'text.max_length ({self.text.max_length}) exceeds '
                             f'fusion.max_text_len ({self.fusion.max_text_len})')
        action = self.action
        bad = [d for d in action.continuous_dims
               if d != int(d) or not 0 <= int(d) < action.param_dim]
        if bad:
            raise ValueError(f'action.continuous_dims must be indices below action.param_dim '
                             f'({action.param_dim}), got {list(action.continuous_dims)}')
        if action.fourier_features < 0 or (action.fourier_features and
                                           not action.continuous_dims):
            raise ValueError('action.fourier_features must be >= 0 and needs '
                             'action.continuous_dims (the parameters it encodes)')
        if not action.fourier_scale > 0:
            raise ValueError(f'action.fourier_scale must be > 0, got {action.fourier_scale}')
        if action.point_dim < 0:
            raise ValueError(f'action.point_dim must be >= 0 (0: off), got {action.point_dim}')
        if action.point_dim:
            if (len(action.image_point) != 2 or len(set(action.image_point)) != 2 or
                    any(d != int(d) or not 0 <= int(d) < action.param_dim
                        for d in action.image_point)):
                raise ValueError('action.point_dim needs action.image_point: the indices of the '
                                 f'two parameters (u, v) of an image point below '
                                 f'action.param_dim ({action.param_dim}), got '
                                 f'{list(action.image_point)}')
            if self.fusion.type != 'transformer':
                raise ValueError("action.point_dim reads the fused patch tokens: it needs "
                                 f"fusion.type 'transformer', got {self.fusion.type!r}")
        elif action.image_point:
            raise ValueError('action.image_point is read only with action.point_dim > 0; set '
                             'both or neither')
        if not 0.0 <= self.fusion.dropout < 1.0:
            raise ValueError(f'fusion.dropout must be in [0, 1), got {self.fusion.dropout}')


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {list(allowed)}, got {value!r}')


def _build(cls, data: Any, prefix: str):
    """Instantiate dataclass ``cls`` from ``data``, recursing into nested dataclass fields."""
    where = prefix.rstrip('.') or 'model config'
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f'{where} must be a mapping, got {type(data).__name__}')
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f'unknown option {prefix + unknown[0]!r} in {where} '
                         f'(known: {", ".join(known)})')
    defaults = cls()
    kwargs = {}
    for name, value in data.items():
        default = getattr(defaults, name)
        path = f'{prefix}{name}'
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value, path + '.')
        else:
            kwargs[name] = _coerce(path, value, default)
    return cls(**kwargs)


def _coerce(path: str, value: Any, default: Any) -> Any:
    """Check ``value`` against the default's type (ints may stand for floats, lists for tuples)."""
    if value is None:
        if default is None:
            return None
        raise ValueError(f'{path} must not be null')
    if isinstance(default, bool) or default is None and isinstance(value, bool):
        if not isinstance(value, bool):
            raise ValueError(f'{path} must be true or false, got {value!r}')
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f'{path} must be an integer, got {value!r}')
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f'{path} must be a number, got {value!r}')
        return float(value)
    if isinstance(default, str) or default is None and isinstance(value, str):
        if not isinstance(value, str):
            raise ValueError(f'{path} must be a string, got {value!r}')
        return value
    if isinstance(default, tuple) or default is None:
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f'{path} must be a list of numbers, got {value!r}')
        return tuple(value)
    return value


def dotted_leaves(node: Any, into_lists: bool = False, prefix: str = '') -> dict[str, Any]:
    """The leaves of a nested config dict by dotted name (``fusion.d_model``); with
    ``into_lists`` list items are leaves too (``vision.conv.channels[1]``), else whole lists."""
    if isinstance(node, dict):
        items = ((f'{prefix}.{k}' if prefix else str(k), v) for k, v in node.items())
    elif into_lists and isinstance(node, list):
        items = ((f'{prefix}[{i}]', v) for i, v in enumerate(node))
    else:
        return {prefix: node}
    out: dict[str, Any] = {}
    for name, value in items:
        out.update(dotted_leaves(value, into_lists, name))
    return out


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
