"""Which folder a run writes to: never one that already holds another run.

A new run whose ``runs/<run_name>`` holds a run (its config, logs or checkpoints) writes to a
fresh ``runs/<run_name>-<YYYYmmdd-HHMMSS>`` instead, and says so: following the README top to
bottom used to rewrite one ``runs/tabletop`` several times, its logs restarted and its old
checkpoints left beside the new ones. Only ``--resume`` (continue it) or ``--overwrite-run``
(clear it first) reuse the folder.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from . import checkpoint as ckpt

log = logging.getLogger('vla_train')
# What a run writes into its folder (run_logs.py, checkpoint.py): a folder holding any of them
# holds a run; --overwrite-run removes exactly these, nothing else the user put there.
RUN_FILES = ('config.yaml', 'train.csv', 'eval.csv', 'tensorboard', 'checkpoints')


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds (part of) a run."""
    return any((Path(run_dir) / name).exists() for name in RUN_FILES)


def fresh_run_name(output_dir: Path, run_name: str, now: float | None = None) -> str:
    """``<run_name>-<timestamp>`` (``-2``, ``-3``... appended when that is taken too)."""
    stamp = time.strftime('%Y%m%d-%H%M%S', time.localtime(now))
    name, n = f'{run_name}-{stamp}', 1
    while holds_run(Path(output_dir) / name):
        n += 1
        name = f'{run_name}-{stamp}-{n}'
    return name


def clear_run(run_dir: Path) -> None:
    """Remove what a run wrote into ``run_dir`` (``--overwrite-run``)."""
    for name in RUN_FILES:
        path = Path(run_dir) / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def claim_run_name(output_dir: Path, run_name: str, overwrite: bool) -> str:
    """The run name a new (not resumed) run writes under: ``run_name`` when its folder holds
    no run, or when ``overwrite`` (the old run is then removed), else a fresh name."""
    run_dir = Path(output_dir) / run_name
    if not holds_run(run_dir):
        return run_name
    if overwrite:
        log.warning('--overwrite-run: removing the run in %s (%s)', run_dir,
                    describe(run_dir))
        clear_run(run_dir)
        return run_name
    fresh = fresh_run_name(output_dir, run_name)
    log.warning('%s already holds a run (%s): this new run writes to %s instead (--resume '
                'continues the old one, --overwrite-run replaces it)', run_dir,
                describe(run_dir), Path(output_dir) / fresh)
    return fresh


def describe(run_dir: Path) -> str:
    """A few words on what a run folder holds: its last checkpoint's step."""
    last = ckpt.latest_checkpoint(run_dir)
    return f'last checkpoint step {int(last.name)}' if last is not None else 'no checkpoint'
