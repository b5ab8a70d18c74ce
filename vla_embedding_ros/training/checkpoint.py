"""Training checkpoints laid out as LeRobot does, written so a crash never loses the last one.

    runs/<name>/checkpoints/<step>/pretrained_model/   VLAModel.from_pretrained loads this
    runs/<name>/checkpoints/<step>/training_state.pt   optimiser, scheduler, RNG, step
    runs/<name>/checkpoints/last -> <step>             symlink, replaced atomically

A checkpoint is assembled in a hidden temporary directory and renamed into place, then `last`
is repointed; a kill at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..files import make_shareable

MODEL_DIR = 'pretrained_model'
STATE_FILE = 'training_state.pt'


def checkpoints_dir(run_dir: Path) -> Path:
    return Path(run_dir) / 'checkpoints'


def rng_state() -> dict:
    state = {'python': random.getstate(), 'numpy': np.random.get_state(),
             'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def save_checkpoint(run_dir: Path, step: int, model, training_state: dict,
                    extra_files: dict[str, Path] | None = None, keep_last: int = 3,
                    extra_text: dict[str, str] | None = None) -> Path:
    """Write checkpoint `step` atomically and point `last` at it; returns its directory.
    ``extra_files`` (copied) and ``extra_text`` (written) go beside the model."""
    root = checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f'{step:08d}'
    staging = Path(tempfile.mkdtemp(prefix=f'.{step:08d}-', dir=root))
    try:
        model.save_pretrained(staging / MODEL_DIR)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, staging / MODEL_DIR / name)
        for name, text in (extra_text or {}).items():
            (staging / MODEL_DIR / name).write_text(text)
        torch.save(dict(training_state, step=step), staging / STATE_FILE)
        make_shareable(staging)
        _fsync_tree(staging)
        old = None
        if final.exists():  # re-saving a step (after a resume): move the old one aside whole
            old = root / f'.{final.name}-old-{os.getpid()}'
            os.replace(final, old)
        os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _point_last(root, final.name)
    _prune(root, keep_last)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `last` points at, or the newest complete one if the pointer is missing."""
    root = checkpoints_dir(run_dir)
    last = root / 'last'
    if last.is_symlink() and (last.resolve() / STATE_FILE).is_file():
        return last.resolve()
    complete = sorted(p for p in root.glob('[0-9]*') if (p / STATE_FILE).is_file())
    return complete[-1] if complete else None


class UnsafeStateError(ValueError):
    """A training state that holds more than tensors, plain values and allowed NumPy types."""


def _numpy_types() -> list:
    """The NumPy globals a state written here contains: the legacy NumPy RNG state and a JSONL
    source's shuffle order are arrays. Rebuilding an array runs no user-chosen code."""
    return [np._core.multiarray._reconstruct, np.ndarray, np.dtype,
            *(type(np.dtype(t)) for t in (np.uint32, np.int64))]


def load_training_state(checkpoint: Path, map_location='cpu') -> dict:
    """Read ``training_state.pt`` with ``weights_only=True``: a pickle is a program, and a run
    folder copied from elsewhere must not be able to run code here. Tensors, plain Python
    values and the NumPy types of :func:`_numpy_types` load; anything else is refused.

    Raises:
        UnsafeStateError (a ValueError): the file asks for another global (named).
    """
    file = Path(checkpoint) / STATE_FILE
    try:
        with torch.serialization.safe_globals(_numpy_types()):
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>", str(err))
        what = f'{found.group(1) or found.group(2)}' if found else 'a disallowed object'
        raise UnsafeStateError(
            f'{file}: refusing to load it: it asks for {what}, and a training state written by '
            'vla-train holds only tensors, plain values and NumPy arrays. Loading it could run '
            'code; resume only from runs you trust, or start a new run from its '
            'pretrained_model/ (init_from), which is safetensors.') from err


def _point_last(root: Path, target: str) -> None:
    tmp = root / f'.last-{os.getpid()}'
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, root / 'last')


def _prune(root: Path, keep_last: int) -> None:
    if keep_last <= 0:
        return
    numbered = sorted(p for p in root.glob('[0-9]*') if p.is_dir())
    current = (root / 'last').resolve()
    for old in numbered[:-keep_last]:
        if old.resolve() != current:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob('.[0-9]*-*'):  # staging dirs left by a killed save
        shutil.rmtree(stale, ignore_errors=True)


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob('*'):
        if path.is_file():
            with open(path, 'rb') as handle:
                os.fsync(handle.fileno())
