"""Zero-shot scorer from a CLIP or SigLIP checkpoint, for users who have trained nothing.

The checkpoint's own projections put images and text in one space, so an action can be
embedded from its description through the text tower and scored against the query
``normalise(normalise(image) + normalise(instruction))`` (late fusion as in CLIP-RT) with the
checkpoint's own logit scale. The class presents the scorer API :class:`ActionSelector` uses
with :class:`VLAModel`: ``image_size``, ``image_mean``/``image_std``, ``device``,
``encode_text``, ``encode_query``, ``encode_actions`` and ``score``.

It is :class:`~vla_embedding_ros.model.pretrained_space.PretrainedSpace` (what a
``model.init: clip`` training run fine-tunes) with its weights frozen, so a model fine-tuned
by ``vla-train`` (a CLIP/SigLIP folder with ``vla_space.json``: the action prompt it was
trained with) loads and scores here exactly as a raw checkpoint does.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import torch.nn as nn

from .pretrained_space import (
    DEFAULT_PROMPT,
    PretrainedSpace,
    checkpoint_type,
)


def is_zero_shot_checkpoint(model_path: str | os.PathLike) -> bool:
    """True when ``model_path/config.json`` is a CLIP or SigLIP checkpoint config (raw, or
    fine-tuned by ``vla-train`` with ``model.init: clip``)."""
    return checkpoint_type(model_path) is not None


class ZeroShotCLIP(PretrainedSpace):
    """Scores library actions by their descriptions with a CLIP/SigLIP checkpoint (frozen).

    Args:
        model: a loaded ``CLIPModel`` or ``SiglipModel``.
        tokenizer: the checkpoint's tokenizer.
        image_mean: per-channel mean override (else preprocessor_config / model-type default).
        image_std: per-channel std override.
        action_prompt: template for action descriptions (contains ``{description}``).
        preprocessor_config: the checkpoint's preprocessor_config.json (kept on save).
    """

    def __init__(self, model: nn.Module, tokenizer: Any,
                 image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None,
                 action_prompt: str = DEFAULT_PROMPT,
                 preprocessor_config: dict | None = None):
        super().__init__(model, tokenizer, image_mean, image_std, action_prompt,
                         preprocessor_config)
        # Inference only: frozen weights keep autograd bookkeeping out of every call.
        self.clip.eval().requires_grad_(False)
