"""``vla-train --export DIR``: the final checkpoint's model, copied where a node loads it, with
``training.json``: what the model was trained on and validated on (what its card would say)."""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ..files import make_shareable
from . import checkpoint as ckpt


def export_model(checkpoint: Path, target: Path) -> None:
    """Copy a checkpoint's pretrained_model to `target` atomically (replacing what was there)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}-', dir=target.parent))
    try:
        shutil.copytree(checkpoint / ckpt.MODEL_DIR, staging, dirs_exist_ok=True)
        keep = [p for p in target.glob('*') if p.is_file() and
                not (staging / p.name).exists()] if target.exists() else []
        for extra in keep:  # e.g. a hand-written model card stays with the model
            shutil.copy2(extra, staging / extra.name)
        make_shareable(staging)
        backup = target.with_name(f'.{target.name}.old')
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


FACTS_FILE = 'training.json'


def training_facts(cfg, library_path: Path, step: int, held_out, eval_seed: int,
                   last_eval: dict | None) -> str:
    """``training.json`` of a checkpoint's model: the data it learnt from, what it was
    validated on (the tabletop splits and samples of ``schedule.eval_*``, the held-out
    episodes of ``data.val_episodes``, ``data.val_path``) and its last evaluation."""
    d, s = cfg.data, cfg.schedule
    facts = {
        'run': str(cfg.run_dir), 'step': step, 'seed': cfg.seed, 'init_from': cfg.init_from,
        'init_replace': list(cfg.init_replace),
        'data': {'source': d.source, 'path': d.path, 'library': str(library_path)},
        'validation': {
            'eval_splits': list(s.eval_splits), 'eval_samples': s.eval_samples,
            'eval_seed': eval_seed, 'val_path': d.val_path,
            'held_out_episodes': held_out.to_dict() if held_out is not None else None},
        'last_evaluation': last_eval,
    }
    return json.dumps(_finite(facts), indent=2) + '\n'


def _finite(value):
    """NaN (a metric that does not apply) as null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
