"""``vla-eval --train-variants CONFIG``: the late, gated and transformer fusions trained with
one config and one budget, so their numbers compare.

A config tuned for one fusion may hold settings another cannot take (the shipped one's
``optim.target_cell_weight`` reads the transformer's fused patch tokens); such a setting is
dropped for the variants that cannot honour it, and the drop is printed, instead of the
variant refusing to start.
"""
from __future__ import annotations

from pathlib import Path

from . import checkpoint as ckpt
from .config import load_config

FUSIONS = ['late', 'gated', 'transformer']
# setting -> (the fusions that take it, its neutral value, why)
FUSION_ONLY = {
    'optim.target_cell_weight': (('transformer',), 0.0,
                                 'its head reads the fused patch tokens of transformer fusion'),
}


def fusion_overrides(config: str, overrides: list[str], fusion: str) -> list[str]:
    """The ``--set`` overrides that neutralise what ``fusion`` cannot take, each announced."""
    cfg = load_config(config, overrides)
    dropped = []
    for dotted, (fusions, neutral, why) in FUSION_ONLY.items():
        section, name = dotted.split('.')
        value = getattr(getattr(cfg, section), name)
        if fusion not in fusions and value != neutral:
            print(f'variant {fusion}: {dotted} {value} -> {neutral} ({why})')
            dropped.append(f'{dotted}={neutral}')
    return dropped


def train_variants(config: str, overrides: list[str], out_dir: Path) -> dict[str, Path]:
    """Train each fusion variant with the same config and budget; returns their model dirs."""
    from .train import Trainer
    dirs = {}
    for fusion in FUSIONS:
        fixed = [*overrides, f'model.fusion.type={fusion}', f'run_name=variant-{fusion}',
                 f'output_dir={out_dir}']
        cfg = load_config(config, [*fixed, *fusion_overrides(config, fixed, fusion)])
        # An earlier variant run continues only with the same settings: a changed config is
        # refused by name (delete the folder or pick another --variants-dir), never reused.
        trainer = Trainer(cfg, resume=ckpt.latest_checkpoint(cfg.run_dir) is not None)
        trainer.run()
        dirs[fusion] = ckpt.latest_checkpoint(trainer.run_dir) / ckpt.MODEL_DIR
    return dirs
