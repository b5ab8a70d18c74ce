"""Training throughput (samples/s) of the default config, and where a step's time goes.

    python bench/train_throughput.py                       # config/train_tabletop.yaml, CPU
    python bench/train_throughput.py --device cuda --set optim.amp=bf16
    python bench/train_throughput.py --quick               # 5 steps of batch 16
    python bench/train_throughput.py --threads 1 --world-sizes 1,2   # torchrun scaling

Runs the package's own ``Trainer`` (the code ``vla-train`` runs, writing into a temporary
directory) for ``--steps`` steps after a warm-up, and reports samples/s and ms per step, split
into drawing the batch (rendering the procedural tabletop scenes on the CPU) and the rest of
the step (preprocessing, forward, backward, optimiser). A row per ``--threads`` value shows
how the step scales with CPU threads in the same run.

``--world-sizes 1,2`` adds a second table: the same step under ``torchrun`` with N processes
(gloo on the CPU, NCCL on GPUs; each process has ``--threads`` threads and its own batch of
``optim.batch_size``), samples/s of the effective batch and the scaling efficiency
``samples/s(N) / (N * samples/s(1))``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchlib import machine_line, median, print_table, sync, write_json

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=str(REPO / 'config' / 'train_tabletop.yaml'))
    p.add_argument('--set', dest='overrides', action='append', default=[],
                   help='config override key.path=value (repeatable)')
    p.add_argument('--steps', type=int, default=100, help='timed steps per row')
    p.add_argument('--warmup', type=int, default=40,
                   help='untimed steps first: the frozen text encoder\'s feature cache fills '
                        'up with the templates\' instructions in the first steps')
    p.add_argument('--batch-size', type=int, default=0, help='0 = the config\'s')
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    p.add_argument('--threads', default='0',
                   help='comma-separated torch CPU thread counts, one row each (0 = default)')
    p.add_argument('--world-sizes', default='',
                   help='comma-separated torchrun process counts, one row each (e.g. 1,2)')
    p.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)  # under torchrun
    p.add_argument('--quick', action='store_true', help='5 steps of batch 16')
    p.add_argument('--json', help='also write the rows here (JSON)')
    return p.parse_args(argv)


def make_trainer(args, workdir: str, threads: int):
    from vla_embedding_ros.training.config import load_config
    from vla_embedding_ros.training.train import Trainer

    overrides = [f'output_dir={workdir}', 'run_name=bench', f'device={args.device}',
                 f'threads={threads}', *args.overrides]
    if args.batch_size:
        overrides.append(f'optim.batch_size={args.batch_size}')
    # Paths in the config resolve next to it, so the bench runs from any folder.
    return Trainer(load_config(args.config, overrides))


def time_steps(trainer, steps: int, warmup: int) -> dict:
    """Per-step wall time, and the part spent drawing the batch, for ``steps`` steps."""
    source, batch_size = trainer.source, trainer.cfg.optim.batch_size
    # With scene supervision on, the trainer draws labelled batches: time whichever it calls.
    method = 'next_labelled_batch' if trainer.region is not None else 'next_batch'
    draw = getattr(source, method)
    data_seconds: list[float] = []

    def timed_draw(n):
        t0 = time.perf_counter()
        out = draw(n)
        data_seconds.append(time.perf_counter() - t0)
        return out

    setattr(source, method, timed_draw)   # this instance only: the step itself is unchanged
    for _ in range(warmup):
        trainer.train_step()
    sync(trainer.device)
    data_seconds.clear()
    step_seconds = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        sync(trainer.device)
        step_seconds.append(time.perf_counter() - t0)
    step_ms, data_ms = median(step_seconds) * 1e3, median(data_seconds) * 1e3
    # Steady state from the median step; the mean also carries the steps that still met a
    # new instruction (one text-encoder forward each), which a long run amortises.
    return {'batch': batch_size, 'steps': steps, 'ms_per_step': step_ms,
            'mean_ms_per_step': sum(step_seconds) / steps * 1e3, 'data_ms': data_ms,
            'samples_per_s': batch_size / (step_ms / 1e3)}


def run_worker(args) -> int:
    """One torchrun process: time the distributed step; rank 0 writes the row."""
    from vla_embedding_ros.training import distributed

    threads = int(args.threads.split(',')[0])
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        with tempfile.TemporaryDirectory(prefix='vla-bench-ddp-') as workdir:
            trainer = make_trainer(args, workdir, threads)
            row = time_steps(trainer, args.steps, args.warmup)
        ctx = trainer.ctx
        if ctx.is_main:
            row.update(world_size=ctx.world_size, backend=ctx.backend or 'none',
                       threads=torch.get_num_threads(),
                       effective_batch=row['batch'] * ctx.world_size,
                       samples_per_s=row['batch'] * ctx.world_size / (row['ms_per_step'] / 1e3))
            write_json(args.json, row)
    finally:
        distributed.shutdown()
    return 0


def world_size_rows(args, sizes: list[int]) -> list[dict]:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix='vla-bench-ddp-') as tmp:
            out = Path(tmp) / 'row.json'
            command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                       f'--nproc_per_node={n}', __file__, '--worker', '--json', str(out),
                       '--config', args.config, '--steps', str(args.steps),
                       '--warmup', str(args.warmup), '--device', args.device,
                       '--threads', args.threads.split(',')[0],
                       '--batch-size', str(args.batch_size)]
            for override in args.overrides:
                command += ['--set', override]
            subprocess.run(command, check=True, env=dict(os.environ, OMP_NUM_THREADS='1'),
                           stdout=subprocess.DEVNULL)
            rows.append(json.loads(out.read_text()))
    single = next((r['samples_per_s'] for r in rows if r['world_size'] == 1), None)
    for r in rows:
        r['efficiency'] = (r['samples_per_s'] / (r['world_size'] * single)
                           if single else float('nan'))
    return rows


def precision_of(trainer) -> str:
    """What the step ran in: the Trainer's autocast dtype on CUDA (optim.amp), else fp32."""
    dtype = getattr(trainer.autocast, 'fast_dtype', None)
    return 'fp32' if dtype is None else str(dtype).removeprefix('torch.')


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.batch_size = 5, 1, args.batch_size or 16
    if args.worker:
        return run_worker(args)
    default_threads = torch.get_num_threads()
    rows = []
    for threads in (int(t) for t in args.threads.split(',')):
        # The Trainer sets only a count > 0, so 0 must undo an earlier row's setting itself.
        torch.set_num_threads(threads if threads > 0 else default_threads)
        with tempfile.TemporaryDirectory(prefix='vla-bench-train-') as workdir:
            trainer = make_trainer(args, workdir, threads)
            row = time_steps(trainer, args.steps, args.warmup)
        row['threads'] = torch.get_num_threads()
        row['precision'] = precision_of(trainer)
        row['config'] = Path(args.config).name + ''.join(f' {o}' for o in args.overrides)
        rows.append(row)
    device = trainer.device
    print(machine_line(device))
    print_table(f'Training throughput on {device}',
                ['config', 'precision', 'torch threads', 'batch', 'steps', 'samples/s',
                 'median ms / step', 'mean ms / step', 'of which data ms'],
                [[r['config'], r['precision'], r['threads'], r['batch'], r['steps'],
                  r['samples_per_s'], r['ms_per_step'], r['mean_ms_per_step'], r['data_ms']]
                 for r in rows],
                ['samples/s = batch / median step. data = rendering the batch of procedural '
                 'scenes (CPU, single-threaded); the rest is preprocessing, forward, backward '
                 'and the optimiser step.'])
    scaling = []
    if args.world_sizes:
        scaling = world_size_rows(args, [int(n) for n in args.world_sizes.split(',')])
        print_table(f'Distributed training throughput (torchrun) on {device}',
                    ['processes', 'backend', 'threads / process', 'batch / process',
                     'effective batch', 'samples/s', 'median ms / step', 'efficiency'],
                    [[r['world_size'], r['backend'], r['threads'], r['batch'],
                      r['effective_batch'], r['samples_per_s'], r['ms_per_step'],
                      r['efficiency']] for r in scaling],
                    ['samples/s = effective batch / median step of rank 0; efficiency = '
                     'samples/s / (processes x samples/s of 1 process). Every process has '
                     'its own threads: on a machine with fewer cores than processes x threads '
                     'they compete.'])
    if args.json:
        write_json(args.json, {'machine': machine_line(device), 'rows': rows,
                               'world_sizes': scaling})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
