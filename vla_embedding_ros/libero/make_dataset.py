"""Write a LIBERO dataset of expert demonstrations on seeded random placements (never the
official initial states), in the package's JSONL format or as a LeRobot v3 dataset.

Example::

    python -m vla_embedding_ros.libero.make_dataset --out data/libero_demo \\
        --suites libero_spatial libero_object --episodes-per-task 20 --workers 2
"""
from __future__ import annotations

import argparse
import os
import sys
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from ..package_share import package_file
from .demonstrations import (
    LAYOUT_EPISODES,
    LIBRARY_FILE,
    Job,
    StaleEpisode,
    cached,
    run_jobs,
    samples,
)

# episodes per worker call: one environment build (~2-8 s) serves them all; one layout's
GROUP = LAYOUT_EPISODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='vla-libero-dataset',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('--out', required=True, help='dataset directory to create')
    parser.add_argument('--suites', nargs='+', default=['libero_spatial', 'libero_object'])
    parser.add_argument('--tasks', type=int, nargs='+', help='task indices (default: all)')
    parser.add_argument('--episodes-per-task', type=int, default=10,
                        help='episodes TRIED per task (failures are not kept)')
    parser.add_argument('--seed', type=int, default=0, help='base seed of the placements')
    parser.add_argument('--format', choices=('jsonl', 'lerobot'), default='jsonl')
    parser.add_argument('--workers', type=int, default=1, help='parallel processes')
    parser.add_argument('--work-dir', help='episode cache for resuming (default: OUT.work)')
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--overwrite', action='store_true', help='replace an existing --out')
    parser.add_argument('--quiet', action='store_true', help='no progress bar')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.episodes_per_task < 1 or args.workers < 1 or args.seed < 0:
        parser.error('--episodes-per-task and --workers must be positive, --seed non-negative')
    if os.path.exists(args.out) and not args.overwrite:
        parser.error(f'{args.out} exists; pass --overwrite to replace it')
    from .suites import LiberoNotInstalled, num_tasks
    try:
        tasks = {s: (args.tasks if args.tasks is not None else range(num_tasks(s)))
                 for s in args.suites}
    except (ValueError, LiberoNotInstalled) as exc:
        parser.exit(2, f'error: {exc}\n')
    work = Path(args.work_dir or f'{args.out.rstrip("/")}.work')
    jobs = [Job(s, t, k) for s in args.suites for t in tasks[s]
            for k in range(args.episodes_per_task)]
    # a group runs in one task's environment, one layout: never across two (k from 0 per
    # task, so groups of LAYOUT_EPISODES are the layouts' runs)
    per_task = [[j for j in jobs if (j.suite, j.task) == key]
                for key in dict.fromkeys((j.suite, j.task) for j in jobs)]
    groups = [same[i:i + GROUP] for same in per_task for i in range(0, len(same), GROUP)]
    try:
        done = sum(cached(j, work) is not None for j in jobs)
    except StaleEpisode as exc:
        parser.exit(2, f'error: {exc}\n')
    bar = tqdm(total=len(jobs), initial=done, disable=args.quiet, unit='episode')
    calls = [(g, str(work), args.seed, args.image_size) for g in groups
             if any(cached(j, work) is None for j in g)]
    todo = [sum(cached(j, work) is None for j in call[0]) for call in calls]
    if args.workers == 1:
        for call, count in zip(calls, todo, strict=True):
            run_jobs(*call)
            bar.update(count)
    else:   # spawn: MuJoCo/EGL state must not be forked
        with get_context('spawn').Pool(args.workers) as pool:
            for count, _ in zip(todo, pool.imap(_run, calls), strict=True):
                bar.update(count)
    bar.close()
    kept = [j for j in jobs if cached(j, work) == 'kept']
    _write(args, kept, work)
    print(f'{len(jobs)} episodes tried, {len(kept)} kept (check_success), '
          f'{2 * len(kept)} samples -> {args.out}')
    return 0


def _run(call):
    return run_jobs(*call)


def _write(args, kept: list[Job], work: Path) -> None:
    from ..data.dataset import DatasetWriter
    library = package_file('config', LIBRARY_FILE)
    if args.format == 'jsonl':
        writer = DatasetWriter(args.out, library=library, overwrite=args.overwrite)
    else:
        from ..data.recordings.lerobot_write import LeRobotWriter
        writer = LeRobotWriter(args.out, library=library, overwrite=args.overwrite, fps=1.0,
                               robot_type='panda')
    with writer:
        for job in kept:
            for image, instruction, vector, t, labels in samples(job, work):
                # scene labels (counter-example training) are the JSONL format's; a LeRobot
                # dataset has no field for them
                extra = {'labels': labels} if args.format == 'jsonl' else {}
                writer.add(image, instruction, action_vector=vector,
                           episode=f'{job.suite}/{job.task}/{job.k}', timestamp=t, **extra)


if __name__ == '__main__':
    sys.exit(main())
