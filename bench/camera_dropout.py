"""Camera dropout on the two-camera tabletop (issue 20): top-1 with each camera removed.

Fine-tunes the shipped single-camera model (``init_from: models/tabletop``) on the two-camera
variant (``data.cameras: [top, oblique]``, see data/tabletop/cameras.py) once without and once
with camera dropout, the same steps and seed, then scores every model on the same val scenes
with both cameras, with the top camera removed, with the oblique removed and with no image at
all (instruction only). A removed camera is masked out of the fusion, as the node does when a
camera is missing (``missing_camera: decide``).

    .venv/bin/python bench/camera_dropout.py                         # train (if needed) + table
    .venv/bin/python bench/camera_dropout.py --steps 600 --jobs 2    # both runs at once
    .venv/bin/python bench/camera_dropout.py --eval-only             # score finished runs

Runs go to ``runs/camera_dropout/<variant>``; a finished run (its last checkpoint at
``--steps``) is not trained again.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {
    'no dropout': {'camera_dropout': 0.0, 'image_dropout': 0.0},
    'camera 0.5 + image 0.1': {'camera_dropout': 0.5, 'image_dropout': 0.1},
}
CONDITIONS = (('both cameras', (True, True)), ('top removed', (False, True)),
              ('oblique removed', (True, False)), ('instruction only', (False, False)))


def slug(name: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in name).strip('_')


def train_command(args, name: str, rates: dict) -> list[str]:
    # model={}: the checkpoint's architecture is the model (init_from keeps every part).
    sets = {'run_name': slug(name), 'output_dir': args.runs_dir, 'init_from': args.init_from,
            'model': '{}',
            'data.cameras': '[top, oblique]', 'optim.steps': args.steps,
            'optim.warmup_steps': max(1, args.steps // 10), 'optim.lr': args.lr,
            'optim.batch_size': args.batch_size, 'threads': args.threads,
            'schedule.eval_every': args.steps, 'schedule.save_every': args.steps,
            'schedule.eval_samples': 100, 'schedule.eval_splits': '[val]',
            **{f'optim.{k}': v for k, v in rates.items()}}
    cmd = [sys.executable, '-m', 'vla_embedding_ros.training.train', '--config',
           str(ROOT / 'config' / 'train_tabletop.yaml'), '--no-progress',
           # only unfinished variants are trained: an interrupted run's folder is redone in
           # place, where finished() looks, not beside it under a timestamped name
           '--overwrite-run']
    for key, value in sets.items():
        cmd += ['--set', f'{key}={value}']
    return cmd


def finished(args, name: str) -> Path | None:
    last = Path(args.runs_dir) / slug(name) / 'checkpoints' / f'{args.steps:08d}'
    return last / 'pretrained_model' if (last / 'pretrained_model').is_dir() else None


def train_all(args) -> dict[str, float]:
    """Train the variants that have no finished run; returns minutes per trained run."""
    todo = [(n, r) for n, r in VARIANTS.items() if finished(args, n) is None]
    running, minutes = [], {}
    Path(args.runs_dir).mkdir(parents=True, exist_ok=True)
    for name, rates in todo:
        while len(running) >= args.jobs:
            running = _reap(running, minutes)
        log = open(Path(args.runs_dir) / f'{slug(name)}.log', 'w')
        cmd = train_command(args, name, rates)
        print('$', ' '.join(cmd), flush=True)
        running.append((name, subprocess.Popen(cmd, cwd=ROOT, stdout=log,
                                               stderr=subprocess.STDOUT), time.time()))
    while running:
        running = _reap(running, minutes)
    return minutes


def _reap(running, minutes):
    time.sleep(2)
    left = []
    for name, proc, start in running:
        if proc.poll() is None:
            left.append((name, proc, start))
        elif proc.returncode:
            raise SystemExit(f'training {name!r} failed (rc {proc.returncode}); see its log')
        else:
            minutes[name] = (time.time() - start) / 60
            print(f'{name}: trained in {minutes[name]:.1f} min', flush=True)
    return left


def evaluate(args) -> list[tuple[str, dict]]:
    import numpy as np
    import torch

    from vla_embedding_ros.actions.library import ActionLibrary
    from vla_embedding_ros.model import VLAModel
    from vla_embedding_ros.training.evaluation import LibraryScorer, tabletop_ranks

    torch.set_num_threads(max(1, args.threads))
    library = ActionLibrary.from_yaml(ROOT / 'config' / 'tabletop_actions.yaml')
    models = [('shipped model, not fine-tuned', Path(args.init_from))]
    models += [(f'fine-tuned, {n}', finished(args, n)) for n in VARIANTS if finished(args, n)]
    rows = []
    for label, path in models:
        model = VLAModel.from_pretrained(path, device='cpu')
        scorer = LibraryScorer(model, library)
        row = {}
        for cond, present in CONDITIONS:
            ranks, _ = tabletop_ranks(scorer, 'val', args.eval_samples, args.eval_seed,
                                      cameras=('top', 'oblique'), present=present)
            row[cond] = float(np.mean(ranks == 1))
        rows.append((label, row))
        print(label, {k: f'{100 * v:.1f}%' for k, v in row.items()}, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=3e-4)
    parser.add_argument('--init-from', default=str(ROOT / 'models' / 'tabletop'))
    parser.add_argument('--runs-dir', default=str(ROOT / 'runs' / 'camera_dropout'))
    parser.add_argument('--jobs', type=int, default=1, help='training runs at once')
    parser.add_argument('--threads', type=int, default=1, help='torch threads per run')
    parser.add_argument('--eval-samples', type=int, default=300)
    parser.add_argument('--eval-seed', type=int, default=10_007)
    parser.add_argument('--eval-only', action='store_true')
    args = parser.parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    minutes = {} if args.eval_only else train_all(args)
    rows = evaluate(args)
    print(f'\nval top-1, {args.eval_samples} scenes (seed {args.eval_seed}), two cameras '
          f'[top, oblique]; fine-tuned {args.steps} steps x {args.batch_size} from '
          f'{Path(args.init_from).name}, lr {args.lr}')
    head = ['model'] + [c for c, _ in CONDITIONS]
    print('| ' + ' | '.join(head) + ' |')
    print('|' + '---|' * len(head))
    for label, row in rows:
        print(f'| {label} | ' + ' | '.join(f'{100 * row[c]:.1f}%' for c, _ in CONDITIONS)
              + ' |')
    for name, m in minutes.items():
        print(f'{name}: {m:.1f} min of training')
    return 0


if __name__ == '__main__':
    sys.exit(main())
