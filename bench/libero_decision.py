"""One LIBERO decision in process: a 256 px agentview frame and the task's instruction to a
refined point of the [pick, place, u, v] space (the node's ``candidate_mode: sampled``), first
at the search LIBERO's evaluation and demo use (4,096 x 6), then at cheaper ones.

    python bench/libero_decision.py                 # models/libero, CPU
    python bench/libero_decision.py --device cuda   # adds 16384 x 3
    python bench/libero_decision.py --quick         # a smoke check

Frames are rendered here from seeded random placements of libero_spatial and libero_object
(LIBERO installed; never an official initial state). ``ActionSelector.select_sampled`` at
several sample and iteration counts, rows interleaved so a busy neighbour slows every row
alike. Each row prints the whole decision's FLOPs (image encoder + fusion, counted from the
layers, plus the action encoder for every scored candidate) and the floor they set at this
machine's matrix-product throughput measured in the same run.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault('MUJOCO_GL', 'egl')

from continuous_select import action_encoder_flops, matmul_gflops  # noqa: E402

from benchlib import machine_line, percentile, pick_device, print_table, sync, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def frames(count: int, size: int = 256):
    """(rgb, instruction) of ``count`` seeded random placements, both suites alternating."""
    from vla_embedding_ros.libero.env import LiberoEnv
    from vla_embedding_ros.libero.suites import task
    out = []
    for i in range(count):
        suite = ('libero_spatial', 'libero_object')[i % 2]
        with LiberoEnv(task(suite, i // 2 % 10), image_size=size) as env:
            env.reset_random(90_000 + i)
            env.settle()
            out.append((env.render(depth=False).rgb, env.instruction))
    return out


def run(args) -> int:
    from vla_embedding_ros.model.deploy import query_flops
    from vla_embedding_ros.selection import ActionSelector
    from vla_embedding_ros.selection.sampling import SamplingConfig
    device = pick_device(args.device)
    torch.set_num_threads(args.threads)
    if not Path(args.model).is_dir():
        print(f'bench: no model at {args.model} (vla-train --config config/train_libero.yaml, '
              'or pass --model)', file=sys.stderr)
        return 2
    selector = ActionSelector.from_pretrained(args.model, device=str(device))
    model = selector.model
    from vla_embedding_ros.training.libero_eval import LIBERO_ITERATIONS, LIBERO_SAMPLES
    # first the search vla-eval --task libero and the LIBERO demo run, then cheaper ones
    counts = [(LIBERO_SAMPLES, LIBERO_ITERATIONS), (4096, 3), (1024, 3), (1024, 1), (256, 3)]
    if device.type == 'cuda':
        counts.append((16384, 3))
    if args.quick:
        args.calls, counts = 5, [(256, 1), (1024, 3)]
    scenes = frames(2 if args.quick else 6)
    rows = {f'sampled {n} x {it}': SamplingConfig(samples=n, iterations=it) for n, it in counts}
    times = {name: [] for name in rows}
    for config in rows.values():      # warm-up: kernels, allocator, the instruction cache
        for rgb, text in scenes:
            selector.select_sampled(rgb, text, config)
    for i in range(args.calls):
        rgb, text = scenes[i % len(scenes)]
        for name, config in rows.items():
            sync(device)
            start = time.perf_counter()
            selector.select_sampled(rgb, text, config)
            sync(device)
            times[name].append(time.perf_counter() - start)
    gflops = matmul_gflops(device)
    query = query_flops(model)
    query_total = query['vision'] + query['fusion']
    table, out = [], []
    for name, config in rows.items():
        scored = config.samples * (1 + config.iterations)
        flops = query_total + action_encoder_flops(model, scored)
        p50 = 1e3 * percentile(times[name], 50)
        floor = flops / (gflops * 1e9) * 1e3
        row = {'row': name, 'candidates': scored, 'p50_ms': p50,
               'p95_ms': 1e3 * percentile(times[name], 95), 'mflop': flops / 1e6,
               'floor_ms': floor}
        out.append(row)
        table.append([name, scored, p50, row['p95_ms'], flops / 1e6, floor])
    notes = [f'image encoder {query["vision"] / 1e6:.1f} MFLOP + fusion '
             f'{query["fusion"] / 1e6:.1f} MFLOP once per decision, action encoder '
             f'{action_encoder_flops(model, 1) / 1e3:.1f} kFLOP per scored candidate; floor = '
             f'the decision\'s FLOPs at {gflops:.1f} GFLOP/s (a 512x512 fp32 product on this '
             'device, measured in this run)',
             f'{model.image_size} px model input from {scenes[0][0].shape[1]} px frames; '
             f'{len(scenes)} frames of seeded random placements, {args.calls} calls per row']
    print(machine_line(device))
    print_table(f'One LIBERO decision, {Path(args.model).name} (ms)',
                ['row', 'candidates', 'p50', 'p95', 'MFLOP', 'floor'], table, notes)
    if args.json:
        write_json(args.json, {'device': str(device), 'matmul_gflops': gflops, 'rows': out})
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=str(REPO / 'models' / 'libero'))
    p.add_argument('--device', default='cpu', help='cpu | cuda | auto')
    p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    p.add_argument('--calls', type=int, default=60, help='calls per row')
    p.add_argument('--quick', action='store_true', help='5 calls per row, two frames')
    p.add_argument('--json', help='also write the rows here (JSON)')
    return p.parse_args(argv)


if __name__ == '__main__':
    sys.exit(run(parse_args()))
