"""Training curves (loss and evaluation top-1 per split) from run logs, as a PNG."""
from __future__ import annotations

import csv
import os
from pathlib import Path


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline='') as handle:
        return list(csv.DictReader(handle))


def plot_runs(run_dirs: list[Path], out_png: Path) -> Path:
    """One figure: training loss (left) and eval top-1 per split (right) for each run."""
    import matplotlib
    matplotlib.use('Agg')  # headless: robots and CI have no display
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in map(Path, run_dirs):
        train = _read(run / 'train.csv')
        if train:
            ax_loss.plot([int(r['step']) for r in train], [float(r['loss']) for r in train],
                         label=run.name)
        rows = _read(run / 'eval.csv')
        for split in dict.fromkeys(r['split'] for r in rows):
            points = [(int(r['step']), 100 * float(r['top1'])) for r in rows
                      if r['split'] == split]
            ax_eval.plot(*zip(*points, strict=True), marker='.', label=f'{run.name}: {split}')
    ax_loss.set(xlabel='step', ylabel='loss', title='training loss', yscale='log')
    ax_eval.set(xlabel='step', ylabel='top-1 (%)', title='evaluation top-1', ylim=(0, 100))
    for ax in (ax_loss, ax_eval):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f'.{out_png.stem}.tmp.png')
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out_png)
    return out_png
