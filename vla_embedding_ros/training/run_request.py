"""What ``vla-train``'s command line asks for, checked before a Trainer is built: the input
folders it names exist, and ``--resume`` continues the saved run's own settings."""
from __future__ import annotations

import logging
from pathlib import Path

from . import checkpoint as ckpt
from .config import TrainConfig, changed_settings, resumed_config

log = logging.getLogger('vla_train')


def check_input_paths(cfg: TrainConfig) -> None:
    """FileNotFoundError naming a dataset, library or model folder the settings name and that
    does not exist, before anything looks inside it (e.g. for the dataset's actions.yaml)."""
    for name, value in (('data.path', cfg.data.path), ('data.val_path', cfg.data.val_path),
                        ('data.library', cfg.data.library), ('init_from', cfg.init_from)):
        if value and not Path(value).exists():
            raise FileNotFoundError(f'{name}: {value} does not exist')


def resume_request(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """What --resume asks of the run ``cfg`` names: its saved settings plus the ``--set``
    overrides (``config.resumed_config``), with one warning naming what the config file says
    otherwise and is not used. ``cfg`` itself when there is nothing to resume (the Trainer
    then says so)."""
    start = ckpt.latest_checkpoint(cfg.run_dir)
    if start is None:
        return cfg
    saved = ckpt.load_training_state(start)['config']
    explicit = {a.split('=', 1)[0].strip() for a in overrides}
    ignored = {k: v for k, v in changed_settings(saved, cfg).items()
               if k not in explicit and not k.startswith(tuple(e + '.' for e in explicit))}
    if ignored:
        listed = '; '.join(f'{k} {new!r} (the run has {old!r})'
                           for k, (old, new) in list(ignored.items())[:6])
        log.warning("--resume continues the saved run's own settings; the config file's "
                    'differing %s%s are not used (--set KEY=VALUE changes a resumable one, '
                    'e.g. optim.steps)', listed,
                    f' and {len(ignored) - 6} more' if len(ignored) > 6 else '')
    return resumed_config(saved, overrides)
