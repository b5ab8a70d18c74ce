"""The per-decision query path, rewritten for inference: one image set, one cached instruction.

:class:`VLAModel.encode_query` is written for training batches: every call re-embeds the
instruction's tokens (projection, positions, type embedding, input LayerNorm) and runs every
fusion layer over every token. A robot asks one question per frame with an instruction that
changes rarely, so :class:`QueryPlan` splits the work in two:

* :meth:`QueryPlan.prepare_text` (once per instruction): everything that depends only on the
  instruction. For transformer fusion that is the CLS and word rows after the input LayerNorm
  and their first-layer query/key/value projections; padded tokens, which attention masks out
  anyway, are dropped. For late/gated fusion it is the projected pooled text.
* :meth:`QueryPlan.forward` (per frame): the image encoder, the patch rows (projection plus one
  precomputed position + type + camera term), and the fusion layers with fused q/k/v products.
  Only the CLS output is read, so the last layer computes keys and values for every row but
  attention, the output projection and the feed-forward block for the CLS row alone.

Every step is the same arithmetic as the training path (attention is permutation-equivariant,
LayerNorm is per token); scores agree to float rounding, which ``test_model_deploy`` checks on
the shipped model. The plan reads the model's parameters (no copy) but caches terms derived
from them at construction: build it after loading or training, not before.

The same module is what ``vla-export-onnx`` exports (see :mod:`.onnx_export`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import TextFeatures, l2_normalize
from .fusion import GatedFusion, LateFusion, TransformerFusion


def reads_every_patch_row(fusion: nn.Module) -> bool:
    """Whether the fusion's query reads every patch row of its last layer (point features,
    ``model.action.point_dim``), which the plan's CLS-only last layer cannot give."""
    return bool(getattr(fusion, 'point_dim', 0))


def fusion_kind(fusion: nn.Module) -> str:
    """'transformer', 'gated' or 'late' (GatedFusion is a LateFusion: check it first)."""
    if isinstance(fusion, TransformerFusion):
        return 'transformer'
    if isinstance(fusion, GatedFusion):
        return 'gated'
    if isinstance(fusion, LateFusion):
        return 'late'
    raise TypeError(f'no query plan for fusion {type(fusion).__name__}')


class QueryPlan(nn.Module):
    """Inference query path of a :class:`VLAModel` for one sample (``C`` cameras).

    Args:
        model: a loaded VLAModel (its parameters are shared, not copied).

    ``prepare_text(tokens [1, L, Dt], mask [1, L], pooled [1, Dt])`` returns a tuple of tensors
    (the "prepared text"); ``forward(pixels [C, 3, S, S], *prepared)`` returns the unit query
    ``[1, E]``. Both are plain tensor functions, so they export to ONNX as they are.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.vision = model.vision
        self.fusion = model.fusion
        self.kind = fusion_kind(model.fusion)
        if self.kind == 'transformer':
            f = self.fusion
            if reads_every_patch_row(f):
                raise ValueError('QueryPlan (and so ONNX export) cannot honour '
                                 'model.action.point_dim: it computes the last layer for the '
                                 'CLS row alone, and point features read every patch row')
            for layer in f.encoder.layers:
                if not layer.norm_first or layer.activation_relu_or_gelu != 2:
                    raise ValueError('QueryPlan expects pre-norm GELU encoder layers')
            with torch.no_grad():
                pos = f.patch_pos.detach()
                # position + "image" type + camera c, one [max_cameras, P, d] term.
                add = (pos + f.type_embed.weight[0]).unsqueeze(0) + \
                    f.camera_embed.weight.unsqueeze(1)
            self.register_buffer('patch_add', add.clone(), persistent=False)

    # -- per instruction ------------------------------------------------------------------------
    def prepare_text(self, tokens: torch.Tensor, mask: torch.Tensor,
                     pooled: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Instruction-only terms. Transformer: ``(rows [1+L, d], qkv [1+L, 3d], keep [1+L])``
        (``keep`` False for padding; :func:`compact_text` drops those rows); late/gated:
        ``(t [1, E],)``."""
        f = self.fusion
        if self.kind != 'transformer':
            return (f.text_proj(pooled.to(f.text_proj.weight.dtype)),)
        dtype = f.text_proj.weight.dtype
        length = tokens.shape[1]
        words = f.text_proj(tokens[0].to(dtype)) + f.text_pos[:length] + f.type_embed.weight[1]
        cls = f.cls[0]
        if f.cls_from_text is not None:
            cls = cls + f.cls_from_text(pooled.to(dtype))
        rows = f.input_norm(torch.cat([cls, words], dim=0))
        first = f.encoder.layers[0]
        attn = first.self_attn
        qkv = F.linear(first.norm1(rows), attn.in_proj_weight, attn.in_proj_bias)
        keep = torch.cat([torch.ones(1, dtype=torch.bool, device=mask.device),
                          mask[0].bool()])
        return rows, qkv, keep

    def prepare(self, text: TextFeatures) -> tuple[torch.Tensor, ...]:
        """:meth:`prepare_text` of :class:`TextFeatures` for one instruction, compacted."""
        if text.tokens.shape[0] != 1:
            raise ValueError(f'a query plan takes one instruction, got {text.tokens.shape[0]}')
        return compact_text(self.kind, self.prepare_text(text.tokens, text.mask, text.pooled))

    # -- per frame ------------------------------------------------------------------------------
    def forward(self, pixels: torch.Tensor, *prepared: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.vision(pixels), *prepared)

    def fuse(self, vision, *prepared: torch.Tensor, cameras=None) -> torch.Tensor:
        """The query from the image encoder's features and the prepared text.

        ``cameras``: the camera index (segment) of each image row, for a decision made while
        some of the model's cameras are missing (e.g. ``[0, 2]``: cameras 0 and 2 present,
        1 missing); None = rows 0..C-1. Leaving a camera's rows out is exactly the training
        path's key-padding mask over them (masked keys get no attention weight, and the
        missing camera's own rows never reach the CLS row), so no mask is needed here."""
        f = self.fusion
        if self.kind != 'transformer':
            (t,) = prepared
            v = vision.pooled.mean(dim=0, keepdim=True)
            v = f.vision_proj(v.to(f.vision_proj.weight.dtype))
            if self.kind == 'gated':
                alpha = torch.sigmoid(f.gate(torch.cat([v, t], dim=-1)))
                return l2_normalize(alpha * v + (1 - alpha) * t)
            return l2_normalize(v + t)
        rows, qkv_text = prepared[0], prepared[1]
        patches = vision.patches
        cams, n_patch = patches.shape[0], patches.shape[1]
        if cams > f.cfg.max_cameras:
            raise ValueError(f'{cams} cameras; fusion.max_cameras is {f.cfg.max_cameras}')
        if tuple(vision.grid) != f.grid:
            raise ValueError(f'the query plan was built for a {f.grid} grid, got '
                             f'{tuple(vision.grid)}')
        d = f.cfg.d_model
        add = self.patch_add[:cams] if cameras is None else self.patch_add[
            _camera_index(cameras, cams, f.cfg.max_cameras, self.patch_add.device)]
        img = f.patch_proj(patches.to(f.patch_proj.weight.dtype)) + add
        img = f.input_norm(img.reshape(cams * n_patch, d))
        layers = f.encoder.layers
        x = torch.cat([rows, img], dim=0)           # CLS first, then words, then patches
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            w, b = attn.in_proj_weight, attn.in_proj_bias
            if i == 0:
                qkv = torch.cat([qkv_text, F.linear(layer.norm1(img), w, b)], dim=0)
                q, k, v = qkv.split(d, dim=1)
            elif i == len(layers) - 1:
                a = layer.norm1(x)
                k, v = F.linear(a, w[d:], b[d:]).split(d, dim=1)
                q = F.linear(a[:1], w[:d], b[:d])
            else:
                q, k, v = F.linear(layer.norm1(x), w, b).split(d, dim=1)
            out = _attention(q, k, v, attn.num_heads)
            x = x[:q.shape[0]] + F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
            x = x + layer.linear2(F.gelu(layer.linear1(layer.norm2(x))))
        cls = f.encoder.norm(x[:1]) if f.encoder.norm is not None else x[:1]
        return l2_normalize(f.out_proj(cls))


def _camera_index(cameras, rows: int, max_cameras: int, device) -> torch.Tensor:
    index = torch.as_tensor(cameras, dtype=torch.long, device=device).reshape(-1)
    if index.numel() != rows:
        raise ValueError(f'{rows} images but {index.numel()} camera indices {index.tolist()}')
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= max_cameras):
        raise ValueError(f'camera indices {index.tolist()} outside 0..{max_cameras - 1} '
                         '(fusion.max_cameras)')
    if len(set(index.tolist())) != index.numel():
        raise ValueError(f'camera indices {index.tolist()} repeat a camera')
    return index


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention of ``q [Nq, d]`` over ``k, v [N, d]`` -> ``[Nq, d]``."""
    nq, d = q.shape
    dh = d // heads
    q = q.reshape(nq, heads, dh).transpose(0, 1) * (1.0 / math.sqrt(dh))
    k = k.reshape(-1, heads, dh).permute(1, 2, 0)
    v = v.reshape(-1, heads, dh).transpose(0, 1)
    weights = torch.softmax(torch.bmm(q, k), dim=-1)
    return torch.bmm(weights, v).transpose(0, 1).reshape(nq, d)


def compact_text(kind: str, prepared: tuple) -> tuple:
    """Drop the padded rows of prepared transformer text (no-op for late/gated fusion)."""
    if kind != 'transformer':
        return tuple(prepared)
    rows, qkv, keep = prepared
    if bool(keep.all()):
        return rows, qkv
    return rows[keep], qkv[keep]


def query_flops(model: nn.Module, num_cameras: int = 1, text_len: int = 10) -> dict[str, int]:
    """Multiply-add FLOPs (x2) of one decision's model arithmetic, by part.

    ``vision`` (conv stem, counted from its layers; HF towers: from torch's FLOP counter),
    ``fusion`` (the plan's per-frame fusion with ``text_len`` instruction rows + CLS; with
    point features the model's own fusion, whose last layer runs every row),
    ``scoring`` is left to the caller (``2 * N * E``).
    """
    flops = {'vision': _vision_flops(model, num_cameras), 'fusion': 0}
    f = model.fusion
    if isinstance(f, TransformerFusion):
        d, p = f.cfg.d_model, model.vision.grid[0] * model.vision.grid[1] * num_cameras
        n = p + 1 + text_len
        ff = f.encoder.layers[0].linear1.out_features
        total = 2 * p * model.vision.hidden_size * d               # patch projection
        layers = len(f.encoder.layers)
        point = f.point_dim
        for i in range(layers):
            if i == 0:
                total += 2 * p * d * 3 * d                         # image rows' q, k, v
                nq = n
            elif i == layers - 1 and not reads_every_patch_row(f):
                total += 2 * n * d * 2 * d + 2 * d * d             # k, v all rows; q of CLS
                nq = 1
            else:
                total += 2 * n * d * 3 * d
                nq = n
            total += 2 * 2 * nq * n * d                            # q k^T and weights v
            total += 2 * nq * d * d + 2 * 2 * nq * d * ff          # out proj + feed-forward
        total += 2 * d * f.out_proj.out_features + 2 * p * d * point   # + the cells' vectors
        flops['fusion'] = total
    else:
        e = f.vision_proj.out_features
        flops['fusion'] = 2 * model.vision.hidden_size * e + (
            2 * 2 * e * e if isinstance(f, GatedFusion) else 0)
    return flops


def _vision_flops(model: nn.Module, num_cameras: int) -> int:
    vision = model.vision
    size = vision.image_size
    if vision.model is None:
        total, h = 0, size
        for layer in vision.stem.net:
            if isinstance(layer, nn.Conv2d):
                k, s, p = layer.kernel_size[0], layer.stride[0], layer.padding[0]
                h = (h + 2 * p - k) // s + 1
                total += 2 * h * h * layer.out_channels * layer.in_channels * k * k
        return total * num_cameras
    from torch.utils.flop_counter import FlopCounterMode
    pixels = torch.zeros(num_cameras, 3, size, size, device=model.device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        vision(pixels)
    return int(counter.get_total_flops())


def text_flops(model: nn.Module, text_len: int = 10) -> int:
    """FLOPs of the text encoder for one instruction of ``text_len`` tokens (FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode
    text = model.text
    ids = torch.ones(1, text_len, dtype=torch.long, device=model.device)
    inputs = {'input_ids': ids, 'attention_mask': torch.ones_like(ids)}
    names = set(getattr(text.tokenizer, 'model_input_names', None) or inputs)
    if 'token_type_ids' in names:
        inputs['token_type_ids'] = torch.zeros_like(ids)
    inputs = {k: v for k, v in inputs.items() if k in names | {'input_ids'}}
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        text.model(**inputs)
    return int(counter.get_total_flops())
