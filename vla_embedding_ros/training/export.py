"""``vla-train --export DIR``: the final checkpoint's model, copied where a node loads it."""
from __future__ import annotations

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
