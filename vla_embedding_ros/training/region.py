"""Dense supervision from the procedural scene's ground truth (optional, tabletop only).

The action loss says only which of 80 actions was right; it takes a long plateau before the
model finds out that the answer depends on *what is in each cell*. Two auxiliary terms give
that signal directly, and both come free with generated scenes:

- attributes: linear heads on each image patch token predict the colour and the shape of the
  object in that cell (or "empty"), as two separate classifiers. Separate heads make the
  tokens carry colour and shape as separate, linearly readable features, which is what lets
  the fusion recognise a colour-shape pair it has never seen (``unseen_combo``).
- target cell: a linear head on each *fused* patch token (after attending to the instruction)
  scores whether that cell holds the object the instruction names; cross-entropy over cells.
  Each cell then answers "is this the one?" for itself, a per-cell test of colour and shape
  that does not depend on having seen the pair.

Recorded datasets have no per-cell labels: the trainer then trains without these terms.

With several cameras (``data.cameras``) the labels are per cell of the *top* view, the only
view whose patch grid is the table's grid; the heads read that camera's tokens (``camera``) and
nothing of the others (an oblique view's patch (r, c) is not table cell (r, c)). A sample whose
top camera was dropped (camera dropout) is left out of the target-cell term: its fused top
tokens are masked out of attention and answer nothing.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.tabletop import COLORS, GRID, SHAPES

EMPTY_COLOR, EMPTY_SHAPE = len(COLORS), len(SHAPES)


def scene_labels(samples) -> dict[str, np.ndarray]:
    """Per-cell colour and shape classes (``len(COLORS)``/``len(SHAPES)`` = empty), row-major
    like the patch grid, and the target cell, for a list of tabletop samples."""
    n = len(samples)
    color = np.full((n, GRID * GRID), EMPTY_COLOR, np.int64)
    shape = np.full((n, GRID * GRID), EMPTY_SHAPE, np.int64)
    target = np.empty(n, np.int64)
    for i, sample in enumerate(samples):
        for obj in sample.scene.objects:
            if not obj.lifted:
                cell = obj.cell[0] * GRID + obj.cell[1]
                color[i, cell], shape[i, cell] = COLORS.index(obj.color), SHAPES.index(obj.shape)
        target[i] = sample.target.cell[0] * GRID + sample.target.cell[1]
    return {'color': color, 'shape': shape, 'target_cell': target}


class RegionSupervision(nn.Module):
    """The auxiliary heads and their losses; trained with the model, never exported."""

    def __init__(self, vision_dim: int, fused_dim: int | None, grid: tuple):
        super().__init__()
        if tuple(grid) != (GRID, GRID):
            raise ValueError(f'region supervision needs a {GRID}x{GRID} patch grid (one token '
                             f'per table cell); the model has {tuple(grid)}')
        self.color = nn.Linear(vision_dim, len(COLORS) + 1)
        self.shape = nn.Linear(vision_dim, len(SHAPES) + 1)
        self.target = nn.Linear(fused_dim, 1) if fused_dim else None
        self.camera = 0   # which of a sample's cameras is the top view the labels describe

    def attribute_loss(self, patches: torch.Tensor, labels: dict,
                       num_cameras: int = 1) -> torch.Tensor:
        """Mean of the colour and shape cross-entropies over every cell of every top-view
        image (``patches`` [B*C, P, D], camera-major)."""
        if num_cameras > 1:
            patches = patches.reshape(-1, num_cameras, *patches.shape[1:])[:, self.camera]
        patches = patches.float()
        color = self.color(patches).flatten(0, 1)
        shape = self.shape(patches).flatten(0, 1)
        return 0.5 * (F.cross_entropy(color, labels['color'].flatten()) +
                      F.cross_entropy(shape, labels['shape'].flatten()))

    def target_loss(self, fused_patches: torch.Tensor, labels: dict, num_cameras: int = 1,
                    camera_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the target cell over the top view's fused patch tokens
        (``fused_patches`` [B, C*P, d]); samples whose top camera is masked are left out."""
        if self.target is None:
            raise ValueError('target-cell supervision needs transformer fusion')
        targets = labels['target_cell']
        if num_cameras > 1:
            cells = fused_patches.shape[1] // num_cameras
            fused_patches = fused_patches[:, self.camera * cells:(self.camera + 1) * cells]
        if camera_mask is not None:
            seen = camera_mask[:, self.camera].to(fused_patches.device)
            if not bool(seen.any()):
                return fused_patches.sum() * 0.0   # keeps the graph (DDP) with no term
            fused_patches, targets = fused_patches[seen], targets[seen]
        logits = self.target(fused_patches.float()).squeeze(-1)
        return F.cross_entropy(logits, targets)
