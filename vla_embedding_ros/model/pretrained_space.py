"""A CLIP or SigLIP checkpoint used as the joint space itself: scored zero-shot or fine-tuned.

The checkpoint's own projections already put images and text in one space, so the query is
``normalise(normalise(image) + normalise(instruction))`` (late fusion, as CLIP-RT), an action
is embedded from its library description (through an optional prompt template such as
``'a robot arm that {description}'``) by the text tower, and the score is the checkpoint's
own ``exp(logit_scale) * cos`` (+ ``logit_bias`` for SigLIP).

:class:`PretrainedSpace` presents the interface the trainer and the selector use with
:class:`~vla_embedding_ros.model.VLAModel` (``encode_text``, ``encode_images``, ``fuse``,
``encode_query``, ``encode_alignment``, ``encode_actions``, ``score``, ``scale``,
``logit_scale``, ``vision``/``text`` towers marked ``pretrained`` so the optimiser gives them
``optim.encoder_lr``, ``save_pretrained``). The frozen zero-shot scorer
(:class:`~vla_embedding_ros.model.zero_shot.ZeroShotCLIP`) is this class with its weights
frozen, so before the first update a fine-tuning run scores exactly as the zero-shot scorer.

A fine-tuned model is saved as a plain Hugging Face checkpoint folder (``config.json`` with
``model_type`` clip/siglip, ``model.safetensors``, tokenizer files, the original
``preprocessor_config.json``) plus ``vla_space.json`` (the action prompt). Everything that loads
a raw CLIP folder (``ActionSelector.from_pretrained``, the node's ``model_path``, ``vla-eval``)
therefore loads a fine-tuned one the same way.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..files import make_shareable, read_json_object
from .encoders import default_normalisation

SPACE_TYPES = ('clip', 'siglip')
SPACE_FILE = 'vla_space.json'
SPACE_FORMAT = 'vla_embedding_ros.pretrained_space'
SPACE_FORMAT_VERSION = 1
PREPROCESSOR_FILE = 'preprocessor_config.json'
DEFAULT_PROMPT = '{description}'
# The checkpoint's submodules per tower (CLIP has separate projections; SigLIP's are inside).
_TOWERS = {'vision': ('vision_model', 'visual_projection'),
           'text': ('text_model', 'text_projection')}
_TEMPERATURE = ('logit_scale', 'logit_bias')
# Files a saved folder must never hold: a pickle is a program.
_PICKLE_SUFFIXES = ('.bin', '.pt', '.pth', '.pkl', '.pickle', '.ckpt')


def pooled(output: Any) -> torch.Tensor:
    """Projected features from get_image_features / get_text_features.

    transformers 4.x returns the projected tensor; 5.x returns a BaseModelOutputWithPooling
    whose ``pooler_output`` holds the projection (a tuple when return_dict is off).
    """
    if isinstance(output, torch.Tensor):
        return output
    value = getattr(output, 'pooler_output', None)
    if value is not None:
        return value
    if isinstance(output, (tuple, list)) and len(output) > 1:
        return output[1]
    raise TypeError(f'cannot find projected features in {type(output).__name__}')


def read_checkpoint_file(name_or_path: str, filename: str) -> dict:
    """``filename`` (a JSON object) of a local folder or a hub checkpoint; {} when absent."""
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, filename)
        if not os.path.isfile(path):
            return {}
    else:
        from transformers.utils import cached_file
        try:
            path = cached_file(name_or_path, filename,
                               _raise_exceptions_for_missing_entries=False)
        except OSError:
            return {}
        if path is None:
            return {}
    return read_json_object(Path(path))


def checkpoint_type(model_path: str | os.PathLike) -> str | None:
    """``model_type`` of a local folder's ``config.json`` when it is clip or siglip, else None
    (no folder, no config.json, unreadable JSON, a VLAModel folder, another family)."""
    path = Path(model_path) / 'config.json'
    if not path.is_file():
        return None
    try:
        config = read_json_object(path)
    except (OSError, ValueError):
        return None
    kind = config.get('model_type')
    return kind if kind in SPACE_TYPES else None


def is_fine_tuned(model_path: str | os.PathLike) -> bool:
    """True for a CLIP/SigLIP folder written by :meth:`PretrainedSpace.save_pretrained` (it
    has ``vla_space.json``); False for a raw checkpoint."""
    return checkpoint_type(model_path) is not None and \
        (Path(model_path) / SPACE_FILE).is_file()


def _check_prompt(prompt: str) -> str:
    if not isinstance(prompt, str) or '{description}' not in prompt:
        raise ValueError(f'action_prompt must be a string containing {{description}} (where '
                         f"each action's description goes), got {prompt!r}")
    return prompt


def _norm(values, name: str, where: str) -> tuple | None:
    if values is None:
        return None
    if not isinstance(values, (list, tuple)) or len(values) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f'{where}: {name} must be 3 numbers, got {values!r}')
    return tuple(float(v) for v in values)


class _Tower(nn.Module):
    """One tower of the checkpoint (encoder + its projection) as the optimiser sees it:
    ``pretrained``, so its parameters get ``optim.encoder_lr``. A view, never registered on
    the model: the weights stay under ``clip.*`` as the checkpoint names them."""

    pretrained = True

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())


class PretrainedSpace(nn.Module):
    """A CLIP/SigLIP checkpoint as the joint vision-language-action space.

    Args:
        model: a loaded ``CLIPModel`` or ``SiglipModel`` (trainable; see ZeroShotCLIP for the
            frozen scorer).
        tokenizer: the checkpoint's tokenizer.
        image_mean: per-channel mean (else the model family's default).
        image_std: per-channel std.
        action_prompt: template an action's description is put into before the text tower;
            must contain ``{description}``.
        preprocessor_config: the checkpoint's preprocessor_config.json, written back on save.
    """

    #: N×D parameter vectors have no meaning for a text tower; the selector checks this.
    supports_candidate_vectors = False
    param_dim = None

    def trained_range(self) -> None:
        """No parameter vectors, so no trained range (actions are embedded from text)."""
        return None

    def __init__(self, model: nn.Module, tokenizer: Any,
                 image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None,
                 action_prompt: str = DEFAULT_PROMPT,
                 preprocessor_config: dict | None = None):
        super().__init__()
        model_type = getattr(model.config, 'model_type', None)
        if model_type not in SPACE_TYPES:
            raise ValueError(f'zero-shot scoring needs a CLIP or SigLIP checkpoint, got '
                             f'model_type {model_type!r}')
        self.model_type = model_type
        self.clip = model
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        default_mean, default_std = default_normalisation(model_type)
        self.image_mean = _norm(image_mean, 'image_mean', PREPROCESSOR_FILE) or default_mean
        self.image_std = _norm(image_std, 'image_std', PREPROCESSOR_FILE) or default_std
        self.max_length = int(model.config.text_config.max_position_embeddings)
        self.action_prompt = _check_prompt(action_prompt)
        self.preprocessor_config = dict(preprocessor_config or {})
        self._check_towers_cover_the_model()
        bias = getattr(model, 'logit_bias', None)
        if isinstance(bias, nn.Parameter):
            # SigLIP's bias shifts every logit of a row alike: the trainer's softmax losses
            # cannot see it (no gradient), so it stays the checkpoint's, for scoring.
            bias.requires_grad_(False)

    def _check_towers_cover_the_model(self) -> None:
        # Every weight must belong to a tower or be the temperature: a weight outside them
        # would silently train at optim.lr (100x the towers') in a layout not foreseen here.
        covered = {id(p) for part in (self.vision, self.text) for p in part.parameters()}
        covered.update(id(p) for name in _TEMPERATURE
                       if isinstance(p := getattr(self.clip, name, None), nn.Parameter))
        stray = [n for n, p in self.clip.named_parameters() if id(p) not in covered]
        if stray:
            raise ValueError(f'{type(self.clip).__name__}: parameter {stray[0]!r} is in no '
                             f'tower ({", ".join(sum(_TOWERS.values(), ()))})')

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, device: str | torch.device = 'auto',
                        action_prompt: str | None = None):
        """Load a CLIP or SigLIP checkpoint (hub name or local folder) and its tokenizer, in
        float32 whatever dtype it was stored in.

        Image normalisation comes from the checkpoint's preprocessor_config.json when it has
        one, else from the model family's default. ``action_prompt`` None takes the folder's
        own (``vla_space.json``, written when a fine-tuned model is saved), else
        ``{description}``.
        """
        from transformers import AutoModel, AutoTokenizer

        from .device import resolve_device

        name_or_path = os.fspath(name_or_path)
        target = device if isinstance(device, torch.device) else resolve_device(device)
        model = AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        pre = read_checkpoint_file(name_or_path, PREPROCESSOR_FILE)
        if action_prompt is None:
            action_prompt = read_checkpoint_file(name_or_path, SPACE_FILE).get(
                'action_prompt', DEFAULT_PROMPT)
        space = cls(model, tokenizer, pre.get('image_mean'), pre.get('image_std'),
                    action_prompt=action_prompt, preprocessor_config=pre)
        return space.to(target)

    # -- what the trainer and the optimiser see ------------------------------------------
    def _tower(self, kind: str) -> _Tower:
        return _Tower([m for name in _TOWERS[kind]
                       if (m := getattr(self.clip, name, None)) is not None])

    @property
    def vision(self) -> _Tower:
        """The image tower and its projection (pretrained: trained at ``optim.encoder_lr``)."""
        return self._tower('vision')

    @property
    def text(self) -> _Tower:
        """The text tower and its projection (pretrained: trained at ``optim.encoder_lr``)."""
        return self._tower('text')

    @property
    def logit_scale(self) -> nn.Parameter:
        """The checkpoint's log inverse temperature (the trainer's loss clamps it at log 100,
        as CLIP does)."""
        return self.clip.logit_scale

    @property
    def device(self) -> torch.device:
        """Device of the checkpoint's weights."""
        return self.clip.logit_scale.device

    # -- encoders -----------------------------------------------------------------------------
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
        return F.normalize(pooled(self.clip.get_text_features(**self._tokenize(texts))), dim=-1)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Return unit image embeddings ``[B, E]`` from the checkpoint's visual projection."""
        return F.normalize(pooled(self.clip.get_image_features(
            pixel_values=pixel_values.to(self.device))), dim=-1)

    def encode_query(self, pixel_values: torch.Tensor, text: torch.Tensor,
                     num_cameras: int = 1) -> torch.Tensor:
        """Fuse images and instruction: ``normalise(normalise(image) + text)``.

        Args:
            pixel_values: ``[B * num_cameras, 3, S, S]``, camera-major within each sample.
            text: unit instruction embeddings ``[B, E]`` (or ``[1, E]``, broadcast).
            num_cameras: cameras per sample; their unit embeddings are averaged.
        """
        return self.fuse(self.encode_images(pixel_values), text, num_cameras)

    def _camera_mean(self, image: torch.Tensor, num_cameras: int) -> torch.Tensor:
        if image.shape[0] % num_cameras:
            raise ValueError(f'{image.shape[0]} images is not a multiple of '
                             f'num_cameras={num_cameras}')
        return F.normalize(image.view(-1, num_cameras, image.shape[-1]).mean(1), dim=-1)

    def fuse(self, image: torch.Tensor, text: torch.Tensor, num_cameras: int = 1
             ) -> torch.Tensor:
        """:meth:`encode_query` after the image encoder: ``image`` from :meth:`encode_images`."""
        image = self._camera_mean(image, num_cameras)
        return F.normalize(image + F.normalize(text, dim=-1), dim=-1)

    def encode_alignment(self, pixel_values: torch.Tensor, text: torch.Tensor,
                         num_cameras: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit image (camera mean) and instruction embeddings ``[B, E]`` each, for the
        trainer's auxiliary image<->instruction InfoNCE (``optim.align_weight``)."""
        return (self._camera_mean(self.encode_images(pixel_values), num_cameras),
                F.normalize(text, dim=-1))

    def action_texts(self, descriptions: Sequence[str]) -> list[str]:
        """The descriptions put into :attr:`action_prompt`."""
        return [self.action_prompt.replace('{description}', d) for d in descriptions]

    def encode_actions(self, params: torch.Tensor | None,
                       descriptions: Sequence[str] | None = None) -> torch.Tensor:
        """Embed actions from their descriptions (in the prompt) through the text tower; the
        parameter vectors are not used.

        Raises:
            ValueError: when no descriptions are given (bare N×D candidate vectors).
        """
        if descriptions is None:
            raise ValueError('a CLIP/SigLIP space embeds actions from their text '
                             'descriptions; N×D candidate vectors are not supported (train a '
                             'VLA checkpoint to score parameter vectors)')
        if len(descriptions) == 0:
            raise ValueError('no action descriptions to embed')
        return self.encode_text(self.action_texts(descriptions))

    # -- scoring ------------------------------------------------------------------------------
    def scale(self) -> torch.Tensor:
        """The checkpoint's own logit scale, ``exp(logit_scale)``."""
        return self.clip.logit_scale.exp()

    def score(self, query: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, N]`` as the checkpoint computes them (SigLIP adds its logit bias)."""
        logits = self.scale() * query @ actions.to(query.dtype).T
        if self.model_type == 'siglip':
            logits = logits + self.clip.logit_bias
        return logits

    # -- saving -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a Hugging Face checkpoint folder (safetensors weights, tokenizer, the original
        preprocessor_config.json) plus ``vla_space.json`` into ``directory``.

        Every file is written into a hidden staging folder inside ``directory`` and renamed
        into place, ``config.json`` last, so a crash never leaves a half-written file under
        its final name.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix='.saving-', dir=directory))
        try:
            self.clip.save_pretrained(staging)
            self.tokenizer.save_pretrained(staging)
            if self.preprocessor_config:
                (staging / PREPROCESSOR_FILE).write_text(
                    json.dumps(self.preprocessor_config, indent=2) + '\n', encoding='utf-8')
            space = {'format': SPACE_FORMAT, 'format_version': SPACE_FORMAT_VERSION,
                     'model_type': self.model_type, 'action_prompt': self.action_prompt}
            (staging / SPACE_FILE).write_text(json.dumps(space, indent=2) + '\n',
                                              encoding='utf-8')
            files = [p for p in staging.iterdir() if p.is_file()]
            unsafe = [p.name for p in files if p.suffix in _PICKLE_SUFFIXES]
            if unsafe or not (staging / 'model.safetensors').is_file():
                wrote = ', '.join(unsafe) if unsafe else 'no model.safetensors'
                raise RuntimeError(f'saving {type(self.clip).__name__} wrote {wrote}; only '
                                   'safetensors weights are kept')
            make_shareable(staging)
            for path in sorted(files, key=lambda p: p.name == 'config.json'):
                os.replace(path, directory / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return directory


# -- the trainer's side: `model.init: clip` ------------------------------------------------

@dataclass
class PretrainedSpaceConfig:
    """The training YAML's ``model:`` section when it starts from a CLIP/SigLIP checkpoint.

    init: 'clip' or 'siglip', the family ``name_or_path`` must be.
    name_or_path: a local checkpoint folder (or a hub name, where a hub can be reached).
    action_prompt: template for action descriptions ('' = the folder's own, else
        '{description}'); e.g. 'a robot arm that {description}'.
    """
    init: str = 'clip'
    name_or_path: str = ''
    action_prompt: str = ''

    @classmethod
    def from_dict(cls, data: dict) -> 'PretrainedSpaceConfig':
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f'unknown option model.{unknown[0]} with model.init: '
                             f'{data.get("init")} (a CLIP/SigLIP space is set by model.'
                             f'{", model.".join(known)}; the encoders, fusion and action MLP '
                             "of the other models are the checkpoint's own towers here)")
        for name in known:
            if name in data and not isinstance(data[name], str):
                raise ValueError(f'model.{name} must be a string, got {data[name]!r}')
        config = cls(**data)
        if config.init not in SPACE_TYPES:
            raise ValueError(f'model.init must be one of {list(SPACE_TYPES)}, got '
                             f'{config.init!r}')
        if not config.name_or_path:
            raise ValueError(f'model.init: {config.init} needs model.name_or_path (the '
                             'checkpoint folder)')
        if config.action_prompt:
            _check_prompt(config.action_prompt)
        return config


def uses_pretrained_space(model_cfg: Any) -> bool:
    """Whether a training config's ``model:`` section asks for a CLIP/SigLIP space."""
    return isinstance(model_cfg, dict) and 'init' in model_cfg


def new_pretrained_space(model_cfg: dict, device: torch.device) -> PretrainedSpace:
    """The model of a ``model.init: clip|siglip`` run, loaded from its checkpoint, trainable.
    (Which training terms such a model cannot serve is the trainer's to check:
    ``training/model_factory.check``.)

    Raises:
        ValueError: a bad ``model:`` section or a checkpoint of another family.
    """
    cfg = PretrainedSpaceConfig.from_dict(model_cfg)
    if os.path.isdir(cfg.name_or_path):
        kind = checkpoint_type(cfg.name_or_path)
        if kind is None:
            raise ValueError(f'model.name_or_path {cfg.name_or_path} is not a CLIP or SigLIP '
                             'checkpoint folder (its config.json has no model_type clip or '
                             'siglip)')
        if kind != cfg.init:
            raise ValueError(f'model.init is {cfg.init!r} but {cfg.name_or_path} is a {kind} '
                             f'checkpoint: set model.init: {kind}')
    elif os.path.isabs(cfg.name_or_path) or cfg.name_or_path.startswith(('.', '~')):
        raise FileNotFoundError(f'model.name_or_path {cfg.name_or_path} does not exist')
    try:
        space = PretrainedSpace.from_pretrained(cfg.name_or_path, device,
                                                action_prompt=cfg.action_prompt or None)
    except OSError as err:   # transformers' word for "no such folder and no hub to ask"
        raise FileNotFoundError(f'model.name_or_path {cfg.name_or_path}: not a local folder, '
                                f'and not loadable as a hub name ({err})') from err
    if space.model_type != cfg.init:
        raise ValueError(f'model.init is {cfg.init!r} but {cfg.name_or_path} is a '
                         f'{space.model_type} checkpoint: set model.init: {space.model_type}')
    return space
