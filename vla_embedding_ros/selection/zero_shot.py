"""Zero-shot scorer from a CLIP or SigLIP checkpoint, for users who have trained nothing.

The checkpoint's own projections put images and text in one space, so an action can be
embedded from its description through the text tower and scored against the query
``normalise(normalise(image) + normalise(instruction))`` (late fusion as in CLIP-RT) with the
checkpoint's own logit scale. The class presents the scorer API :class:`ActionSelector` uses
with :class:`VLAModel`: ``image_size``, ``image_mean``/``image_std``, ``device``,
``encode_text``, ``encode_query``, ``encode_actions`` and ``score``.
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

ZERO_SHOT_MODEL_TYPES = ('clip', 'siglip')
# The normalisations these families were trained with (transformers' OPENAI_CLIP_* and
# IMAGENET_STANDARD_* constants), used when the checkpoint has no preprocessor_config.json.
_DEFAULT_NORM = {
    'clip': ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    'siglip': ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _pooled(output: Any) -> torch.Tensor:
    """Projected features from get_image_features / get_text_features.

    transformers 4.x returns the projected tensor; 5.x returns a BaseModelOutputWithPooling
    whose ``pooler_output`` holds the projection (a tuple when return_dict is off).
    """
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, 'pooler_output', None)
    if pooled is not None:
        return pooled
    if isinstance(output, (tuple, list)) and len(output) > 1:
        return output[1]
    raise TypeError(f'cannot find projected features in {type(output).__name__}')


def _read_preprocessor_config(name_or_path: str) -> dict:
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, 'preprocessor_config.json')
        if not os.path.isfile(path):
            return {}
    else:
        from transformers.utils import cached_file
        try:
            path = cached_file(name_or_path, 'preprocessor_config.json',
                               _raise_exceptions_for_missing_entries=False)
        except OSError:
            return {}
        if path is None:
            return {}
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f'{path}: not valid JSON: {exc}') from exc


def is_zero_shot_checkpoint(model_path: str | os.PathLike) -> bool:
    """True when ``model_path/config.json`` is a raw CLIP or SigLIP checkpoint config."""
    path = os.path.join(os.fspath(model_path), 'config.json')
    if not os.path.isfile(path):
        return False
    with open(path, encoding='utf-8') as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError:
            return False
    return isinstance(config, dict) and config.get('model_type') in ZERO_SHOT_MODEL_TYPES


class ZeroShotCLIP(nn.Module):
    """Scores library actions by their descriptions with a CLIP/SigLIP checkpoint.

    Args:
        model: a loaded ``CLIPModel`` or ``SiglipModel``.
        tokenizer: the checkpoint's tokenizer.
        image_mean: per-channel mean override (else preprocessor_config / model-type default).
        image_std: per-channel std override.
    """

    #: N×D parameter vectors have no meaning for a text tower; the selector checks this.
    supports_candidate_vectors = False
    param_dim = None

    def __init__(self, model: nn.Module, tokenizer: Any,
                 image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None):
        super().__init__()
        model_type = getattr(model.config, 'model_type', None)
        if model_type not in ZERO_SHOT_MODEL_TYPES:
            raise ValueError(f'zero-shot scoring needs a CLIP or SigLIP checkpoint, got '
                             f'model_type {model_type!r}')
        self.model_type = model_type
        # Inference only: frozen weights keep autograd bookkeeping out of every call.
        self.clip = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        default_mean, default_std = _DEFAULT_NORM[model_type]
        self.image_mean = tuple(float(v) for v in (image_mean or default_mean))
        self.image_std = tuple(float(v) for v in (image_std or default_std))
        self.max_length = int(model.config.text_config.max_position_embeddings)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike,
                        device: str | torch.device = 'auto') -> 'ZeroShotCLIP':
        """Load a CLIP or SigLIP checkpoint (hub name or local folder) and its tokenizer.

        Image normalisation comes from the checkpoint's preprocessor_config.json when it has
        one, else from the model family's default.
        """
        from transformers import AutoModel, AutoTokenizer

        name_or_path = os.fspath(name_or_path)
        if isinstance(device, torch.device):
            target = device
        else:
            from ..model.device import resolve_device
            target = resolve_device(device)
        model = AutoModel.from_pretrained(name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        pre = _read_preprocessor_config(name_or_path)
        scorer = cls(model, tokenizer, pre.get('image_mean'), pre.get('image_std'))
        return scorer.to(target)

    @property
    def device(self) -> torch.device:
        """Device of the checkpoint's weights."""
        return next(self.clip.parameters()).device

    def _tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        # SigLIP was trained on text padded to max_length; its pooled token is the last one,
        # so padding must match training. CLIP pools the EOS token and pads to the longest.
        padding = 'max_length' if self.model_type == 'siglip' else True
        batch = self.tokenizer(list(texts), padding=padding, truncation=True,
                               max_length=self.max_length, return_tensors='pt')
        keep = ('input_ids', 'attention_mask') if self.model_type == 'clip' else ('input_ids',)
        return {k: batch[k].to(self.device) for k in keep if k in batch}

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Return unit text embeddings ``[B, E]`` from the checkpoint's text projection."""
        if isinstance(texts, str):
            texts = [texts]
        return F.normalize(_pooled(self.clip.get_text_features(**self._tokenize(texts))), dim=-1)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return unit image embeddings ``[B, E]`` from the checkpoint's visual projection."""
        return F.normalize(_pooled(self.clip.get_image_features(pixel_values=pixel_values)),
                           dim=-1)

    def encode_query(self, pixel_values: torch.Tensor, text: torch.Tensor,
                     num_cameras: int = 1) -> torch.Tensor:
        """Fuse images and instruction: ``normalise(normalise(image) + text)``.

        Args:
            pixel_values: ``[B * num_cameras, 3, S, S]``, camera-major within each sample.
            text: unit instruction embeddings ``[B, E]`` (or ``[1, E]``, broadcast).
            num_cameras: cameras per sample; their unit embeddings are averaged.
        """
        return self.fuse(self.encode_images(pixel_values), text, num_cameras)

    def fuse(self, image: torch.Tensor, text: torch.Tensor, num_cameras: int = 1
             ) -> torch.Tensor:
        """:meth:`encode_query` after the image encoder: ``image`` from :meth:`encode_images`."""
        if image.shape[0] % num_cameras:
            raise ValueError(f'{image.shape[0]} images is not a multiple of '
                             f'num_cameras={num_cameras}')
        image = F.normalize(image.view(-1, num_cameras, image.shape[-1]).mean(1), dim=-1)
        return F.normalize(image + F.normalize(text, dim=-1), dim=-1)

    def encode_actions(self, params: torch.Tensor | None,
                       descriptions: Sequence[str] | None = None) -> torch.Tensor:
        """Embed actions from their descriptions through the text tower (params are unused).

        Raises:
            ValueError: when no descriptions are given (bare N×D candidate vectors).
        """
        if descriptions is None:
            raise ValueError('the zero-shot CLIP/SigLIP scorer embeds actions from their text '
                             'descriptions; N×D candidate vectors are not supported (train a '
                             'VLA checkpoint to score parameter vectors)')
        if len(descriptions) == 0:
            raise ValueError('no action descriptions to embed')
        return self.encode_text(list(descriptions))

    def scale(self) -> torch.Tensor:
        """The checkpoint's own logit scale, ``exp(logit_scale)``."""
        return self.clip.logit_scale.exp()

    def score(self, query: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]`` as the checkpoint computes them (SigLIP adds its logit bias)."""
        logits = self.scale() * query @ actions.T
        if self.model_type == 'siglip':
            logits = logits + self.clip.logit_bias
        return logits
