"""The differentiable part of one training step, as one module.

``DistributedDataParallel`` averages the gradients of the parameters a wrapped module uses in
its ``forward``; the trainer used to call the model's encoders one by one, which DDP cannot
follow. This module runs every part of a step that touches trainable parameters (the
instruction encoder when it trains, the image encoder, fusion, the action encoder, alignment
heads and the region heads with their losses) in one ``forward``, and the trainer computes the
contrastive losses from its outputs, gathering the global batch where they need it.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class StepForward(nn.Module):
    """One step's forward pass of ``model`` (and the optional region supervision).

    Args:
        model: the ``VLAModel`` being trained.
        text_features: callable, instructions -> text features (the model's ``encode_text``,
            or a cache of it when the text tower is frozen).
        region: ``RegionSupervision`` or None.
        head: a training-only ``ProjectionHead`` applied to queries and actions, or None.
    """

    def __init__(self, model: nn.Module, text_features, region: nn.Module | None = None,
                 head: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.region = region
        self.head = head
        self.text_features = text_features

    def forward(self, pixels: torch.Tensor, instructions: list[str], num_cameras: int,
                library_params: torch.Tensor, descriptions: list[str],
                labels: dict | None = None, region_weight: float = 0.0,
                target_cell_weight: float = 0.0, align: bool = False,
                camera_mask: torch.Tensor | None = None) -> dict:
        """Returns ``query`` [B, E], ``actions`` [N, E], ``logit_scale`` and, when asked for,
        ``align`` (image and instruction embeddings), ``attribute_loss`` and ``target_loss``.

        The losses use the returned ``logit_scale``, never the parameter itself: DDP counts a
        parameter used outside ``forward`` twice. ``camera_mask`` [B, C] (camera dropout,
        training/camera_dropout.py): False = that sample's camera is left out of the fusion."""
        model = self.model
        text = self.text_features(instructions)
        vision = model.encode_images(pixels)
        out = {}
        masked = {} if camera_mask is None else {'camera_mask': camera_mask}
        if labels is not None and target_cell_weight > 0:
            out['query'], fused = model.fusion(vision, text, num_cameras, return_tokens=True,
                                               **masked)
            out['target_loss'] = self.region.target_loss(fused, labels, num_cameras,
                                                         camera_mask)
        else:
            out['query'] = model.fuse(vision, text, num_cameras, **masked)
        if labels is not None and region_weight > 0:
            out['attribute_loss'] = self.region.attribute_loss(vision.patches, labels,
                                                               num_cameras)
        out['actions'] = model.encode_actions(library_params, descriptions)
        if self.head is not None:
            out['query'], out['actions'] = self.head(out['query']), self.head(out['actions'])
        out['logit_scale'] = model.logit_scale * 1.0
        if align:
            out['align'] = model.encode_alignment(pixels, text, num_cameras, **masked)
        return out
