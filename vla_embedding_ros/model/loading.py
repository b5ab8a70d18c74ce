"""The one place that decides what a model folder holds and which action library goes with it.

A model folder is either a :class:`~.vla_model.VLAModel` checkpoint (``config.json`` +
``model.safetensors`` written by ``vla-train``) or a CLIP/SigLIP checkpoint (raw from
Hugging Face, or fine-tuned by ``vla-train`` with ``model.init``), scored zero-shot through
the checkpoint's own projections. The selector, the evaluator and the trainer all load
through here, so they agree on both questions.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from .pretrained_space import PretrainedSpace, checkpoint_type, is_fine_tuned

LIBRARY_FILE = 'actions.yaml'


@runtime_checkable
class Scorer(Protocol):
    """What :class:`~vla_embedding_ros.selection.ActionSelector` needs from a model."""

    image_size: int
    image_mean: Sequence[float]
    image_std: Sequence[float]
    param_dim: int | None                  # None: actions embedded from their texts only
    supports_candidate_vectors: bool       # False: only library actions can be scored

    @property
    def device(self) -> torch.device: ...

    def trained_range(self) -> tuple[np.ndarray, np.ndarray] | None: ...

    def encode_text(self, texts: list[str]) -> Any: ...

    def encode_query(self, pixel_values: torch.Tensor, text: Any, num_cameras: int = 1,
                     **kwargs: Any) -> torch.Tensor: ...

    def encode_actions(self, params: torch.Tensor | None,
                       descriptions: list[str] | None = None) -> torch.Tensor: ...

    def score(self, query: torch.Tensor, actions: torch.Tensor) -> torch.Tensor: ...


def is_local_folder_name(name: str) -> bool:
    """True when ``name`` is meant as a path (absolute, ./, ../, ~), not a hub name."""
    return os.path.isabs(name) or name.startswith(('.', '~'))


def model_kind(model_dir: str | os.PathLike) -> str:
    """What a model folder is, as reports say it: 'zero-shot clip' (a raw CLIP/SigLIP
    checkpoint: nothing trained), 'fine-tuned siglip' (one trained by vla-train with
    model.init) or 'trained' (a VLAModel)."""
    kind = checkpoint_type(model_dir)
    if kind is None:
        return 'trained'
    return f'{"fine-tuned" if is_fine_tuned(model_dir) else "zero-shot"} {kind}'


def uses_text_space(model_path: str | os.PathLike) -> bool:
    """True for a CLIP/SigLIP checkpoint (a local folder, or a name that is not a folder and
    so can only be a hub name); False for a VLAModel folder."""
    return checkpoint_type(model_path) is not None or not os.path.isdir(model_path)


def load_scorer(model_path: str | os.PathLike, device: str | torch.device = 'auto',
                action_prompt: str | None = None):
    """A model for inference (eval mode, frozen): a VLAModel folder as itself, a CLIP/SigLIP
    checkpoint as the zero-shot scorer (``action_prompt`` overrides its action prompt).

    Raises:
        FileNotFoundError: a path-like name that is not a folder.
    """
    model_path = os.fspath(model_path)
    if is_local_folder_name(model_path) and not os.path.isdir(model_path):
        raise FileNotFoundError(f'model directory {model_path} does not exist')
    if uses_text_space(model_path):
        from .zero_shot import ZeroShotCLIP
        return ZeroShotCLIP.from_pretrained(model_path, device=device,
                                            action_prompt=action_prompt)
    from .vla_model import VLAModel
    return VLAModel.from_pretrained(model_path, device=device)


def load_trainable(directory: str | os.PathLike, device: str | torch.device = 'auto'):
    """A checkpoint's ``pretrained_model/`` of either kind, to train on: a CLIP/SigLIP folder
    as :class:`PretrainedSpace`, anything else as :class:`VLAModel` (in eval mode, as its
    ``from_pretrained`` returns it)."""
    if checkpoint_type(directory) is not None:
        return PretrainedSpace.from_pretrained(directory, device)
    from .vla_model import VLAModel
    return VLAModel.from_pretrained(directory, device=device)


def model_library_path(model_dir: str | os.PathLike, library: str | os.PathLike | None = None,
                       fallback: str | os.PathLike | None = None) -> Path:
    """The action library that goes with a model: ``library`` when given, else the model
    folder's own ``actions.yaml``, else, for a CLIP/SigLIP checkpoint only, ``fallback`` (the
    caller's benchmark library: a raw checkpoint has none of its own and embeds any action
    from its text, where a VLAModel's action encoder knows only its own library's layout).

    Raises:
        FileNotFoundError: none of them exists, naming what was looked for.
    """
    if library:
        return Path(library)
    own = Path(model_dir) / LIBRARY_FILE
    if own.is_file():
        return own
    if fallback and uses_text_space(model_dir):
        return Path(fallback)
    raise FileNotFoundError(f'no action library given and {own} does not exist; pass one '
                            '(library_path / --library)')
