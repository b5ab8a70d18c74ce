"""The model a run trains: resumed from its checkpoint, fine-tuned from ``init_from``, a
CLIP/SigLIP joint space (``model.init``), or a new :class:`VLAModel` whose action encoder is
fitted to the library (its width, continuous dimensions and standardisation)."""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..actions.library import ActionLibrary
from ..model import VLAConfig, VLAModel
from ..model.loading import load_trainable
from ..model.pretrained_space import new_pretrained_space, uses_pretrained_space

log = logging.getLogger('vla_train')
# Terms that read a VLAModel's patch tokens, which a CLIP/SigLIP space scores without.
PATCH_TOKEN_TERMS = ('region_weight', 'target_cell_weight')


# Parts of an init_from model that init_replace may build anew from `model:`.
REPLACEABLE = ('action',)


def check(cfg) -> None:
    """ValueError naming the first ``optim.*`` or ``init_replace`` setting the configured
    model cannot honour."""
    replace = cfg.init_replace
    if not isinstance(replace, list) or not all(isinstance(p, str) for p in replace):
        raise ValueError(f'init_replace must be a list of model parts, got {replace!r}')
    unknown = sorted(set(replace) - set(REPLACEABLE))
    if unknown:
        raise ValueError(f'init_replace: unknown part(s) {unknown}; replaceable: '
                         f'{list(REPLACEABLE)}')
    if replace and not cfg.init_from:
        raise ValueError(f'init_replace {replace} replaces parts of the init_from model, and '
                         'init_from is not set')
    if uses_pretrained_space(cfg.model):
        for name in PATCH_TOKEN_TERMS:
            if getattr(cfg.optim, name) > 0:
                raise ValueError(f'optim.{name} needs the patch tokens of a conv/transformer-'
                                 f'fusion model; model.init: {cfg.model.get("init")} scores '
                                 "with the checkpoint's pooled projections: set "
                                 f'optim.{name}=0')


def make_model(cfg, library: ActionLibrary, library_path: Path, device,
               resume_from: Path | None = None):
    """The trainable model: the one saved in ``resume_from`` (a resumed run's
    ``pretrained_model``), else a new one as ``cfg`` says."""
    if resume_from is not None:
        return load_trainable(resume_from, device=device)
    if cfg.init_from:
        # Fine-tuning: the checkpoint's architecture and weights, every part kept unless
        # init_replace names it (every config has a `model.action` section, so its mere
        # presence must not start a fine-tune from a random action encoder).
        model = VLAModel.from_pretrained(cfg.init_from, device=device)
        if 'action' in cfg.init_replace:
            _replace_action_encoder(model, cfg, library, device)
        if model.param_dim != library.param_dim:
            raise ValueError(f'init_from {cfg.init_from}: the model scores actions of '
                             f'{model.param_dim} parameters, the library {library_path} has '
                             f'{library.param_dim}' + (
                                 '' if 'action' in cfg.init_replace else
                                 '; set init_replace: [action] for a new action encoder '
                                 '(from model.action) of the library\'s width'))
        if not cfg.init_replace:
            log.info('init_from %s: fine-tuning every part of it (the config\'s model: '
                     'section is not used; init_replace: [action] would start a new action '
                     'encoder)', cfg.init_from)
        return model
    if uses_pretrained_space(cfg.model):
        # model.init: clip|siglip: the checkpoint's own joint space, fine-tuned end to end
        # (model/pretrained_space.py)
        return new_pretrained_space(cfg.model, device)
    model_cfg = dict(cfg.model)
    model_cfg['action'] = action_settings(model_cfg.get('action', {}), library)
    model = VLAModel(VLAConfig.from_dict(model_cfg)).to(device)
    model.action.set_param_stats(*param_stats(library))
    return model


def action_settings(action: dict, library: ActionLibrary) -> dict:
    """``model.action`` completed from the library: its width and, with a continuous
    space, which parameters are continuous and the bounds training samples."""
    action = dict(action, param_dim=library.param_dim)
    space = library.space
    if space is not None:
        low, high = space.bounds()
        action['continuous_dims'] = list(range(len(space.options), space.param_dim))
        action['continuous_low'] = [0.0] * len(space.options) + low.tolist()
        action['continuous_high'] = [1.0] * len(space.options) + high.tolist()
    return action


def param_stats(library: ActionLibrary) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std the action encoder standardises with: of the space's uniform
    distribution when there is one (what training samples), else of the library."""
    space = library.space
    if space is None:
        params = library.params()
        return params.mean(axis=0), params.std(axis=0)
    share = 1.0 / max(1, len(space.options))
    low, high = space.bounds()
    mean = np.concatenate([np.full(len(space.options), share), (low + high) / 2])
    std = np.concatenate([np.full(len(space.options), math.sqrt(share * (1 - share))),
                          (high - low) / math.sqrt(12)])
    return mean.astype(np.float32), std.astype(np.float32)


def _replace_action_encoder(model: VLAModel, cfg, library: ActionLibrary, device) -> None:
    """Fine-tuning with ``init_replace: [action]``: a new action encoder of the
    ``model.action`` settings on the checkpoint's image, text and fusion weights (e.g.
    Fourier features for a continuous space on top of a grid-trained model)."""
    from ..model.config import ActionConfig, _build
    from ..model.encoders import ActionEncoder
    settings = action_settings(cfg.model.get('action', {}), library)
    config = _build(ActionConfig, settings, 'model.action.')
    kept = getattr(model.fusion, 'point_dim', 0)    # late/gated fusions have none
    if config.point_dim != kept:
        raise ValueError(f'init_replace [action] keeps the fusion, built with action.point_dim '
                         f'{kept}; model.action.point_dim {config.point_dim} cannot be '
                         'honoured (train from scratch)')
    model.config.action = config
    model.config.validate()
    model.action = ActionEncoder(config, model.config.embed_dim,
                                 model.text.hidden_size, model.vision.grid).to(device)
    model.action.set_param_stats(*param_stats(library))
    log.info('init_from %s with a new action encoder (model.action: %s)', cfg.init_from,
             settings)
