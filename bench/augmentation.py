"""Does image augmentation (data.augment) help a model trained on recorded data?

    python bench/augmentation.py                  # the README's run (~25 min, 2 loaded CPUs)
    python bench/augmentation.py --steps 2000 --objects 2,4 --json aug.json
    python bench/augmentation.py --quick                  # smoke: 3 steps, a few episodes

Records episodes from the tabletop renderer with a NARROW appearance (one background grey, no
tint, fixed brightness, no light gradient, fixed faint noise) into JSONL datasets written by
the package's DatasetWriter: an episode is one table, recorded for ``--frames`` steps (each a
new instruction about an object still on the table, the scene changed by the previous step's
action, fresh sensor noise). Train and held-out episodes are disjoint. Then trains the same
model from scratch twice (``--config``, ``data.source: jsonl``, same seed and steps), with
``data.augment.enabled`` false and true, and reports top-1 / MRR over the library on:

* held-out episodes, same appearance;
* appearance shift: held-out episodes rendered with other appearance ranges (background greys
  and tints, brightness, light gradient, noise: the generator's own wide ranges);
* pose shift: same appearance, the camera moved a bit (the render scaled by 0.94-1.06 about the
  centre and offset by up to 3% of the side; no object leaves its cell);
* both shifts at once.

The procedural-only scene heads (optim.region_weight / target_cell_weight) are off: recorded
data has no per-cell labels.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from benchlib import machine_line, print_table, write_json

REPO = Path(__file__).resolve().parents[1]
NARROW = dict(background_range=(150.0, 150.0), background_tint=0.0, brightness_range=(1.0, 1.0),
              light_gradient=0.0, noise_range=(2.0, 2.0))
WIDE = dict(background_range=(100.0, 200.0), background_tint=15.0,
            brightness_range=(0.8, 1.2), light_gradient=0.15, noise_range=(0.0, 6.0))
POSE_SCALE, POSE_SHIFT = 0.06, 0.03
EVAL_SEED = 10_007


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=str(REPO / 'config' / 'train_tabletop.yaml'))
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   help='config override key.path=value (repeatable), for both runs')
    p.add_argument('--steps', type=int, default=1000, help='training steps per run')
    p.add_argument('--warmup', type=int, default=100, help='optim.warmup_steps')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--train-episodes', type=int, default=200)
    p.add_argument('--eval-episodes', type=int, default=80,
                   help='held-out episodes per evaluation set')
    p.add_argument('--frames', type=int, default=5, help='recorded frames per episode')
    p.add_argument('--objects', default='1,2', help='objects per table: min,max')
    p.add_argument('--image-size', type=int, default=96)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1, help='torch CPU threads (0 = default)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--augment', default='off,on', help='runs, in order: off, on or both')
    p.add_argument('--workdir', help='keep datasets and runs here (default: a temp folder)')
    p.add_argument('--quick', action='store_true', help='3 steps, 4+2 episodes: a smoke run')
    p.add_argument('--json', help='also write the rows here (JSON)')
    return p.parse_args(argv)


def camera_moved(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same table seen by a camera moved a bit: scaled about the centre, then offset."""
    size = image.shape[0]
    scale = 1 + rng.uniform(-POSE_SCALE, POSE_SCALE)
    dx, dy = rng.uniform(-POSE_SHIFT, POSE_SHIFT, 2) * size
    c = (size - 1) / 2
    matrix = np.float32([[scale, 0, c - scale * c + dx], [0, scale, c - scale * c + dy]])
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def record(root: Path, episodes: int, frames: int, seed: int, appearance: dict,
           objects: tuple[int, int], image_size: int, pose: bool = False) -> int:
    """Write ``episodes`` recorded episodes of ``frames`` steps each; returns the sample count."""
    from vla_embedding_ros.data.dataset import DatasetWriter
    from vla_embedding_ros.data.tabletop import (
        TabletopConfig,
        TabletopGenerator,
        action_params,
        build_action_library,
    )
    from vla_embedding_ros.data.tabletop.actions import PRIMITIVES, action_name
    from vla_embedding_ros.data.tabletop.language import make_instruction
    from vla_embedding_ros.data.tabletop.scene import apply_action, render

    config = TabletopConfig(image_size=image_size, min_objects=objects[0],
                            max_objects=objects[1], phrasings=200, **appearance)
    generator = TabletopGenerator(config, 'train', seed)
    rng = generator.rng
    count = 0
    with DatasetWriter(root, build_action_library()) as writer:
        for episode in range(episodes):
            scene, target, primitive = generator.scene()
            for frame in range(frames):
                if frame:   # a new instruction about an object still on the table
                    visible = [o for o in scene.objects if not o.lifted]
                    if not visible:
                        break
                    target = visible[int(rng.integers(len(visible)))]
                    primitive = PRIMITIVES[int(rng.integers(len(PRIMITIVES)))]
                instruction, _ = make_instruction(rng, primitive, target.color, target.shape,
                                                  'train', config.phrasings)
                name = action_name(primitive, *target.cell)
                image = render(scene, config, rng)
                if pose:
                    image = camera_moved(image, rng)
                writer.add(image, instruction, action=name,
                           action_vector=action_params(primitive, *target.cell),
                           episode=episode, timestamp=float(frame))
                count += 1
                scene, _ = apply_action(scene, name)   # the robot acted: the table changed
    return count


def train_and_score(args, workdir: Path, augment: bool, sets: dict[str, Path]) -> dict:
    from vla_embedding_ros.training import metrics
    from vla_embedding_ros.training.config import load_config
    from vla_embedding_ros.training.evaluation import LibraryScorer, dataset_ranks
    from vla_embedding_ros.training.sources import recorded_source
    from vla_embedding_ros.training.train import Trainer

    name = 'augmented' if augment else 'plain'
    overrides = [f'output_dir={workdir / "runs"}', f'run_name={name}', f'seed={args.seed}',
                 f'device={args.device}', f'threads={args.threads}', 'data.source=jsonl',
                 f'data.path={sets["train"]}', "data.library=''",
                 # the bench holds out its own episode sets: train on every training episode
                 'data.val_episodes=0',
                 f'data.augment.enabled={str(augment).lower()}',
                 f'optim.steps={args.steps}', f'optim.warmup_steps={args.warmup}',
                 f'optim.batch_size={args.batch_size}', 'optim.region_weight=0',
                 'optim.target_cell_weight=0', 'schedule.eval_splits=[]',
                 f'schedule.eval_every={args.steps}', f'schedule.save_every={args.steps}',
                 f'schedule.log_every={max(1, args.steps // 10)}', *args.overrides]
    trainer = Trainer(load_config(args.config, overrides))
    started = time.perf_counter()
    trainer.run(progress=False)
    minutes = (time.perf_counter() - started) / 60
    scorer = LibraryScorer(trainer.model, trainer.library)
    row = {'augment': augment, 'steps': trainer.step, 'minutes': minutes}
    for key, path in sets.items():
        if key == 'train':
            continue
        source = recorded_source('jsonl', str(path), trainer.library, EVAL_SEED, strict=True)
        summary = metrics.summarise(dataset_ranks(scorer, source, len(source.dataset)))
        row[key] = summary
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size = 3, 1, 8
        args.train_episodes, args.eval_episodes, args.frames = 4, 2, 3
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    logging.getLogger('vla_train').setLevel(logging.INFO)   # e.g. augmentation on/off, why
    objects = tuple(int(v) for v in args.objects.split(','))
    with tempfile.TemporaryDirectory(prefix='vla-bench-aug-') as tmp:
        workdir = Path(args.workdir or tmp)
        data = workdir / 'data'
        # Disjoint episodes: each set is its own generator stream (a seed of its own).
        plan = {'train': (args.train_episodes, args.seed, NARROW, False),
                'held_out': (args.eval_episodes, args.seed + 1, NARROW, False),
                'appearance_shift': (args.eval_episodes, args.seed + 2, WIDE, False),
                'pose_shift': (args.eval_episodes, args.seed + 3, NARROW, True),
                'both_shifts': (args.eval_episodes, args.seed + 4, WIDE, True)}
        sets, counts = {}, {}
        for key, (episodes, seed, appearance, pose) in plan.items():
            sets[key] = data / key
            counts[key] = record(sets[key], episodes, args.frames, seed, appearance, objects,
                                 args.image_size, pose)
        rows = [train_and_score(args, workdir, mode == 'on', sets)
                for mode in args.augment.split(',')]
    evals = [k for k in plan if k != 'train']
    table = [[('on' if r['augment'] else 'off'), r['steps'], f'{r["minutes"]:.1f}',
              *[f'{100 * r[k]["top1"]:.1f}% ({r[k]["mrr"]:.3f})' for k in evals]]
             for r in rows]
    print_table(
        f'Top-1 (MRR) over the 80-action library, {counts["train"]} training samples '
        f'({args.train_episodes} episodes x {args.frames} frames, narrow appearance)',
        ['augmentation', 'steps', 'train min', *[f'{k} ({counts[k]})' for k in evals]], table,
        notes=[machine_line(args.device),
               f'config {Path(args.config).name}, batch {args.batch_size}, seed {args.seed}, '
               f'objects {objects[0]}-{objects[1]} per table, {args.image_size} px renders; '
               'chance 1.2% top-1',
               'appearance shift: background grey 100-200 with tint 15, brightness 0.8-1.2, '
               'light gradient 0.15, noise 0-6 (training: grey 150, no tint, brightness 1, no '
               f'gradient, noise 2); pose shift: scale 1 +- {POSE_SCALE}, offset +- '
               f'{POSE_SHIFT} of the side'])
    if args.json:
        write_json(args.json, {'machine': machine_line(args.device), 'counts': counts,
                               'rows': rows, 'args': vars(args)})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
