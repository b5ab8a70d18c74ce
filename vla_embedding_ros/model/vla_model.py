"""The joint vision-language-action embedding model.

A query (image(s) + instruction) and every candidate action land on the unit sphere of one
``embed_dim`` space; an action's score is ``exp(logit_scale) * cos(q, a)``.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from . import checkpoint
from .config import VLAConfig
from .device import resolve_device
from .encoders import (
    ActionEncoder,
    TextEncoder,
    TextFeatures,
    VisionEncoder,
    VisionFeatures,
    l2_normalize,
)
from .fusion import build_fusion


class VLAModel(nn.Module):
    """Encoders + fusion + action MLP + learnable temperature.

    Args:
        config: a :class:`VLAConfig` or its dict form.
    """

    def __init__(self, config: VLAConfig | dict):
        super().__init__()
        if isinstance(config, dict):
            config = VLAConfig.from_dict(config)
        config.validate()
        self.config = config
        self.vision = VisionEncoder(config.vision)
        self.text = TextEncoder(config.text)
        self.action = ActionEncoder(config.action, config.embed_dim, self.text.hidden_size,
                                    self.vision.grid)
        self.fusion = build_fusion(config.fusion, self.vision.hidden_size, self.text.hidden_size,
                                   config.embed_dim, self.vision.grid, config.action.point_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))

    # -- what a preprocessor needs --------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def image_mean(self) -> tuple:
        return self.vision.image_mean

    @property
    def image_std(self) -> tuple:
        return self.vision.image_std

    @property
    def param_dim(self) -> int:
        return self.config.action.param_dim

    #: the action encoder embeds any parameter vector: N×D candidates can be scored.
    supports_candidate_vectors = True

    def trained_range(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-parameter (low, high) the action encoder was trained on, or None when the
        checkpoint does not say (models trained before continuous actions)."""
        low, high = self.config.action.continuous_low, self.config.action.continuous_high
        if not low:
            return None
        return np.asarray(low, np.float32), np.asarray(high, np.float32)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    # -- encoders -----------------------------------------------------------------------------
    def encode_text(self, instructions: list[str]) -> TextFeatures:
        """Token states, mask and pooled vector for a list of instructions."""
        return self.text(list(instructions))

    def encode_images(self, pixel_values: torch.Tensor) -> VisionFeatures:
        """Patch tokens and pooled vectors for normalised images ``[B*C, 3, H, W]``."""
        return self.vision(pixel_values.to(self.device))

    def _text(self, text) -> TextFeatures:
        if isinstance(text, TextFeatures):
            return text
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            return self.encode_text(list(text))
        raise TypeError('text must be TextFeatures (from encode_text) or a list of strings')

    def encode_query(self, pixel_values: torch.Tensor, text: TextFeatures | list[str],
                     num_cameras: int = 1, camera_mask=None) -> torch.Tensor:
        """Fuse ``B*C`` images (camera-major per sample) and ``B`` instructions -> ``[B, E]`` unit.

        ``camera_mask`` (bool ``[B, C]``, optional): False marks a sample's camera as missing;
        its image is left out of the fusion (see :class:`TransformerFusion`).
        """
        return self.fuse(self.encode_images(pixel_values), text, num_cameras, camera_mask)

    def fuse(self, image: VisionFeatures, text: TextFeatures | list[str],
             num_cameras: int = 1, camera_mask=None) -> torch.Tensor:
        """:meth:`encode_query` after the image encoder (which a selector may run compiled)."""
        if camera_mask is None:
            return self.fusion(image, self._text(text), num_cameras)
        return self.fusion(image, self._text(text), num_cameras, camera_mask=camera_mask)

    def encode_alignment(self, pixel_values: torch.Tensor, text: TextFeatures | list[str],
                         num_cameras: int = 1,
                         camera_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit pooled image (camera mean) and instruction embeddings ``[B, E]`` each, for the
        auxiliary image<->instruction InfoNCE."""
        return self.fusion.align(self.encode_images(pixel_values), self._text(text), num_cameras,
                                 camera_mask)

    def encode_actions(self, params, descriptions: list[str] | None = None) -> torch.Tensor:
        """Embed actions from parameter vectors ``[N, param_dim]`` -> ``[N, E]`` unit vectors.

        With ``action.use_description`` the pooled description text is projected and added,
        so actions never seen in training are placed by what they say; without descriptions
        (e.g. raw candidate vectors from a planner) only the parameters are used.
        """
        params = torch.as_tensor(np.asarray(params) if not torch.is_tensor(params) else params,
                                 dtype=torch.float32, device=self.device)
        description = None
        if descriptions is not None and self.action.description_proj is not None:
            if len(descriptions) != params.shape[0]:
                raise ValueError(f'{len(descriptions)} descriptions for {params.shape[0]} '
                                 'actions')
            description = self.text(list(descriptions)).pooled
        return l2_normalize(self.action(params, description))

    # -- scoring ------------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)`` with the CLIP clamp at ``logit_scale_max``."""
        return self.logit_scale.clamp(max=self.config.logit_scale_max).exp()

    def score(self, query: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N] = scale * q @ a.T``; softmax over N gives a confidence."""
        return self.scale() * query @ actions.to(query.dtype).t()

    # -- persistence --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json + model.safetensors (+ trainable encoder dirs) to ``directory``."""
        checkpoint.save(self, directory)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str = 'auto') -> 'VLAModel':
        """Load a directory written by :meth:`save_pretrained`, in eval mode.

        Raises:
            FileNotFoundError: a missing directory, config.json, model.safetensors or encoder
                directory (the message names it).
            ValueError: an unknown option, bad value, missing/unexpected tensor or shape
                mismatch (naming the file and the field or tensor key).
            RuntimeError: CUDA requested but not available.
        """
        target = resolve_device(device)
        config = checkpoint.load_config(directory)
        # The config's shapes against the weights file's header first, on the meta device
        # (no memory): a config that disagrees fails in a fraction of a second, by field name.
        with torch.device('meta'):
            skeleton = cls(config)
        checkpoint.check_weights_header(skeleton, directory)
        model = cls(config)
        checkpoint.load_weights(model, directory)
        return model.to(target).eval()
