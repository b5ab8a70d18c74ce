"""Fuse image(s) and instruction into one unit query vector: late, gated or transformer.

All variants take vision features for ``B * C`` images (camera-major within a sample: row
``b * C + c``) and text features for ``B`` instructions, and return ``[B, embed_dim]`` unit
vectors. Late and gated fusion see only pooled vectors, so they cannot tell *where* something
is; the transformer attends over patch tokens with their positions, which is what grounding
an instruction like "the cube in row 2" needs.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .config import FusionConfig
from .encoders import TextFeatures, VisionFeatures, join_point_features, l2_normalize


def check_camera_mask(camera_mask, batch: int, num_cameras: int, device) -> torch.Tensor | None:
    """``camera_mask`` as a bool ``[B, C]`` tensor on ``device`` (True = the camera's image is
    there), or None when every camera is present. A dropped camera (camera dropout in
    training, a silent camera at run time) is marked here, per sample."""
    if camera_mask is None:
        return None
    mask = torch.as_tensor(camera_mask, device=device).bool()
    if tuple(mask.shape) != (batch, num_cameras):
        raise ValueError(f'camera_mask has shape {tuple(mask.shape)}, expected '
                         f'[{batch}, {num_cameras}] (samples x cameras)')
    return None if bool(mask.all()) else mask


def _camera_pooled(vision: VisionFeatures, batch: int, num_cameras: int,
                   camera_mask=None) -> torch.Tensor:
    """Average the pooled vector over each sample's (present) cameras: ``[B*C, D] -> [B, D]``.

    With a ``camera_mask`` the mean runs over the present cameras only; a sample with none
    gets a zero vector (instruction only)."""
    pooled = vision.pooled
    if pooled.shape[0] != batch * num_cameras:
        raise ValueError(f'{pooled.shape[0]} images for {batch} instructions x {num_cameras} '
                         'cameras')
    pooled = pooled.reshape(batch, num_cameras, -1)
    mask = check_camera_mask(camera_mask, batch, num_cameras, pooled.device)
    if mask is None:
        return pooled.mean(dim=1)
    weights = mask.to(pooled.dtype).unsqueeze(-1)
    return (pooled * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class LateFusion(nn.Module):
    """``q = normalise(P_v v + P_t t)`` over pooled vectors (CLIP-RT style)."""

    def __init__(self, vision_dim: int, text_dim: int, embed_dim: int):
        super().__init__()
        self.vision_proj = nn.Linear(vision_dim, embed_dim)
        self.text_proj = nn.Linear(text_dim, embed_dim)

    def project(self, vision: VisionFeatures, text: TextFeatures, num_cameras: int,
                camera_mask=None):
        """Projected (not normalised) pooled image and text vectors ``[B, E]`` each; a
        ``camera_mask`` [B, C] leaves dropped cameras out of the camera mean."""
        v = _camera_pooled(vision, text.pooled.shape[0], num_cameras, camera_mask)
        return self.vision_proj(v.to(self.vision_proj.weight.dtype)), \
            self.text_proj(text.pooled.to(self.text_proj.weight.dtype))

    def align(self, vision: VisionFeatures, text: TextFeatures, num_cameras: int = 1,
              camera_mask=None):
        """Unit image and text embeddings for an auxiliary image<->instruction loss."""
        v, t = self.project(vision, text, num_cameras, camera_mask)
        return l2_normalize(v), l2_normalize(t)

    def forward(self, vision: VisionFeatures, text: TextFeatures,
                num_cameras: int = 1, camera_mask=None) -> torch.Tensor:
        v, t = self.project(vision, text, num_cameras, camera_mask)
        return l2_normalize(v + t)


class GatedFusion(LateFusion):
    """``alpha = sigmoid(W [v; t])``, ``q = normalise(alpha * v + (1 - alpha) * t)``.

    The gate is per dimension and per sample, so the model can lean on the image for some
    instructions and on the text for others.
    """

    def __init__(self, vision_dim: int, text_dim: int, embed_dim: int):
        super().__init__(vision_dim, text_dim, embed_dim)
        self.gate = nn.Linear(2 * embed_dim, embed_dim)

    def forward(self, vision: VisionFeatures, text: TextFeatures,
                num_cameras: int = 1, camera_mask=None) -> torch.Tensor:
        v, t = self.project(vision, text, num_cameras, camera_mask)
        alpha = torch.sigmoid(self.gate(torch.cat([v, t], dim=-1)))
        return l2_normalize(alpha * v + (1 - alpha) * t)


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal encoding ``[length, dim]`` (Vaswani et al.)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    out = torch.zeros(length, dim)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)
    return out


def sincos_2d(h: int, w: int, dim: int) -> torch.Tensor:
    """2-D sin-cos encoding ``[h*w, dim]``, row-major: half the channels encode the row, half
    the column (MAE / ViT-style), so position is known on both axes without learning it."""
    rows = sincos_1d(h, dim // 2).unsqueeze(1).expand(h, w, dim // 2)
    cols = sincos_1d(w, dim // 2).unsqueeze(0).expand(h, w, dim // 2)
    return torch.cat([rows, cols], dim=-1).reshape(h * w, dim)


class TransformerFusion(nn.Module):
    """Token-level fusion: ``[CLS] + patches of every camera + text tokens`` -> encoder -> CLS.

    Each patch token gets a 2-D position (by grid cell), a modality-type embedding and a
    segment embedding for its camera; each text token a 1-D position and the text type
    embedding. Padding text tokens are masked out of attention.

    A missing camera (``camera_mask`` False for it: dropped in training, silent at run time)
    is a key-padding mask over that camera's patch tokens, chosen over a learned "missing
    camera" token: no new parameter, so checkpoints trained without camera dropout load and
    score exactly as before, and the QueryPlan/ONNX fast paths get the same result by simply
    leaving the camera's rows out. Which camera is missing is still visible to the model: every
    present patch token carries its own camera's segment embedding, so the set of segments
    attended to says which ones are absent. With every camera masked (image dropout) CLS
    attends to itself and the text tokens only: the instruction-only prior.
    """

    def __init__(self, vision_dim: int, text_dim: int, embed_dim: int, cfg: FusionConfig,
                 grid: tuple, point_dim: int = 0):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.grid = tuple(grid)
        self.patch_proj = nn.Linear(vision_dim, d)
        self.text_proj = nn.Linear(text_dim, d)
        if cfg.patch_pos == 'learned':
            self.patch_pos = nn.Parameter(torch.randn(grid[0] * grid[1], d) * 0.02)
        else:
            self.register_buffer('patch_pos', sincos_2d(grid[0], grid[1], d), persistent=False)
        self.register_buffer('text_pos', sincos_1d(cfg.max_text_len, d), persistent=False)
        self.type_embed = nn.Embedding(2, d)          # 0 = image patch, 1 = text token
        self.camera_embed = nn.Embedding(cfg.max_cameras, d)
        # Small init (as BERT): nn.Embedding's N(0, 1) rows would be the largest part of every
        # token and, after LayerNorm, drown the content and position signals.
        for table in (self.type_embed, self.camera_embed):
            nn.init.normal_(table.weight, std=0.02)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.cls_from_text = nn.Linear(text_dim, d) if cfg.cls_init == 'text' else None
        self.input_norm = nn.LayerNorm(d)
        self.input_drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, 4 * d, cfg.dropout, activation='gelu',
                                           batch_first=True, norm_first=True)
        # Nested tensors are a fast path for inference only and warn with norm_first; off.
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.out_proj = nn.Linear(d, embed_dim)
        # action.point_dim: a vector per patch cell, scored against an action's local part
        self.point_dim = point_dim
        self.point_proj = nn.Linear(d, point_dim) if point_dim else None
        # Pooled heads used only by the auxiliary image<->instruction loss (encode_alignment).
        self.align_vision = nn.Linear(vision_dim, embed_dim)
        self.align_text = nn.Linear(text_dim, embed_dim)

    def _patch_positions(self, grid: tuple) -> torch.Tensor:
        if tuple(grid) == self.grid:
            return self.patch_pos
        if self.cfg.patch_pos == 'learned':
            raise ValueError(f'learned patch positions were built for a {self.grid} grid, '
                             f'got {tuple(grid)}')
        return sincos_2d(grid[0], grid[1], self.cfg.d_model).to(self.patch_pos.device)

    def align(self, vision: VisionFeatures, text: TextFeatures, num_cameras: int = 1,
              camera_mask=None):
        """Unit image and text embeddings for an auxiliary image<->instruction loss."""
        v = _camera_pooled(vision, text.pooled.shape[0], num_cameras, camera_mask)
        w = self.align_vision.weight
        return (l2_normalize(self.align_vision(v.to(w.dtype))),
                l2_normalize(self.align_text(text.pooled.to(w.dtype))))

    def forward(self, vision: VisionFeatures, text: TextFeatures, num_cameras: int = 1,
                return_tokens: bool = False, camera_mask=None):
        """The unit query ``[B, E]``; with ``return_tokens`` also the fused patch tokens
        ``[B, C*P, d]`` (what per-cell auxiliary losses read). ``camera_mask`` [B, C] bool:
        False = that sample's camera is missing (its patch tokens are masked out as keys)."""
        batch, length = text.tokens.shape[:2]
        n_img, n_patch = vision.patches.shape[:2]
        if n_img != batch * num_cameras:
            raise ValueError(f'{n_img} images for {batch} instructions x {num_cameras} cameras')
        if num_cameras > self.cfg.max_cameras:
            raise ValueError(f'{num_cameras} cameras; fusion.max_cameras is '
                             f'{self.cfg.max_cameras}')
        if length > self.cfg.max_text_len:
            raise ValueError(f'{length} text tokens; fusion.max_text_len is '
                             f'{self.cfg.max_text_len}')
        if self.point_proj is not None and num_cameras != 1:
            raise ValueError(f'action.point_dim scores points of one camera image; got '
                             f'{num_cameras} cameras')
        dtype = self.patch_proj.weight.dtype
        patches = self.patch_proj(vision.patches.to(dtype)) + self._patch_positions(vision.grid)
        patches = patches + self.type_embed.weight[0]
        cams = torch.arange(num_cameras, device=patches.device).repeat(batch)
        patches = patches + self.camera_embed(cams).unsqueeze(1)
        patches = patches.reshape(batch, num_cameras * n_patch, -1)
        words = self.text_proj(text.tokens.to(dtype)) + self.text_pos[:length]
        words = words + self.type_embed.weight[1]
        cls = self.cls.expand(batch, -1, -1)
        if self.cls_from_text is not None:
            cls = cls + self.cls_from_text(text.pooled.to(dtype)).unsqueeze(1)
        seq = torch.cat([cls, patches, words], dim=1)
        seq = self.input_drop(self.input_norm(seq))
        keep = torch.ones(batch, 1 + num_cameras * n_patch, dtype=torch.bool,
                          device=seq.device)
        mask = check_camera_mask(camera_mask, batch, num_cameras, seq.device)
        if mask is not None:
            keep[:, 1:] = mask.repeat_interleave(n_patch, dim=1)
        pad = ~torch.cat([keep, text.mask.to(seq.device).bool()], dim=1)
        out = self.encoder(seq, src_key_padding_mask=pad)
        query = self.out_proj(out[:, 0])
        if self.point_proj is None:
            query = l2_normalize(query)
        else:
            cells = self.point_proj(out[:, 1:1 + n_patch]).flatten(1)      # [B, P*point_dim]
            query = join_point_features(query, cells)
        if return_tokens:
            return query, out[:, 1:1 + num_cameras * n_patch]
        return query


def build_fusion(cfg: FusionConfig, vision_dim: int, text_dim: int, embed_dim: int,
                 grid: tuple, point_dim: int = 0) -> nn.Module:
    """The fusion module named by ``cfg.type``."""
    if cfg.type == 'late':
        return LateFusion(vision_dim, text_dim, embed_dim)
    if cfg.type == 'gated':
        return GatedFusion(vision_dim, text_dim, embed_dim)
    if cfg.type == 'transformer':
        return TransformerFusion(vision_dim, text_dim, embed_dim, cfg, grid, point_dim)
    raise ValueError(f"fusion.type must be 'late', 'gated' or 'transformer', got {cfg.type!r}")
