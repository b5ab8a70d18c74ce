"""LIBERO step cost: physics alone, physics + robosuite's per-step cameras, on-demand renders,
and whole expert episodes (wall time, decisions per second).

    python bench/libero_step.py                  # libero_spatial task 0, 256 px frames
    python bench/libero_step.py --quick          # fewer steps and one episode

What it compares: robosuite renders every camera observation on every control step when
cameras are on (LIBERO's OffScreenRenderEnv, two 128 px cameras); the adapter keeps cameras
off for control (vla_embedding_ros.libero.env) and renders the agentview frame with depth only
when a decision needs it (twice per episode). Software EGL (Mesa) on the CPU here.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import time

import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')

from benchlib import machine_line, print_table, write_json  # noqa: E402


def timed(fn, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--suite', default='libero_spatial')
    parser.add_argument('--task', type=int, default=0)
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--episodes', type=int, default=3)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--json', help='also write the numbers here')
    args = parser.parse_args()
    steps, episodes = (10, 1) if args.quick else (args.steps, args.episodes)

    from vla_embedding_ros.libero import suites
    from vla_embedding_ros.libero.env import LiberoEnv
    from vla_embedding_ros.libero.episode import run_episode
    from vla_embedding_ros.libero.expert import ExpertPolicy
    spec = suites.task(args.suite, args.task)
    zero = np.array([0, 0, 0, 0, 0, 0, -1.0])
    rows, out = [], {}

    start = time.perf_counter()
    env = LiberoEnv(spec, image_size=args.image_size)
    out['build_s'] = time.perf_counter() - start
    env.max_steps = 10 ** 9
    env.reset_official(0)
    out['reset_official_s'] = timed(lambda: env.reset_official(0), 3)
    # a random placement rebuilds the model (LiberoEnv.reset_random), so its renderer too:
    # timed with the first frame it needs
    out['reset_random_s'] = timed(lambda: (env.reset_random(1), env.render()), 3)
    out['step_ms'] = 1e3 * timed(lambda: env.step(zero), steps)
    env.render()                                   # the GL context's first frame
    out['render_rgbd_ms'] = 1e3 * timed(lambda: env.render(), max(3, steps // 8))
    out['render_rgb_ms'] = 1e3 * timed(lambda: env.render(depth=False), max(3, steps // 8))
    walls, eps_steps, ok = [], [], 0
    for k in range(episodes):
        env.reset_official(k)
        env.max_steps = spec.max_steps
        result = run_episode(env, ExpertPolicy(env))
        walls.append(result.wall_s)
        eps_steps.append(result.steps)
        ok += result.success
    out['episode_s'] = statistics.median(walls)
    out['episode_steps'] = statistics.median(eps_steps)
    env.close()

    # robosuite's own cameras on every step: LIBERO's OffScreenRenderEnv as harnesses use it.
    from libero.libero.envs import OffScreenRenderEnv
    with contextlib.redirect_stdout(io.StringIO()):
        start = time.perf_counter()
        cams = OffScreenRenderEnv(bddl_file_name=spec.bddl_path, camera_heights=128,
                                  camera_widths=128)
        out['build_cameras_s'] = time.perf_counter() - start
    cams.reset()
    cams.set_init_state(suites.initial_states(spec)[0])
    out['step_cameras_ms'] = 1e3 * timed(lambda: cams.step(zero), max(3, steps // 4))
    cams.close()

    rows = [
        ['environment build (cameras off)', f'{out["build_s"]:.2f} s', ''],
        ['environment build (2 cameras, OffScreenRenderEnv)', f'{out["build_cameras_s"]:.2f} s',
         ''],
        ['reset to an official initial state', f'{1e3 * out["reset_official_s"]:.0f} ms', ''],
        ['reset to a seeded random placement (model rebuilt) + its first RGB-D frame',
         f'{1e3 * out["reset_random_s"]:.0f} ms', ''],
        ['control step, cameras off', f'{out["step_ms"]:.1f} ms',
         f'{1e3 / out["step_ms"]:.0f} steps/s'],
        ['control step, 2 x 128 px cameras every step', f'{out["step_cameras_ms"]:.0f} ms',
         f'{1e3 / out["step_cameras_ms"]:.1f} steps/s'],
        [f'render agentview {args.image_size} px RGB + depth', f'{out["render_rgbd_ms"]:.0f} ms',
         ''],
        [f'render agentview {args.image_size} px RGB only', f'{out["render_rgb_ms"]:.0f} ms', ''],
        [f'expert episode ({episodes} official states, median)', f'{out["episode_s"]:.2f} s',
         f'{out["episode_steps"]:.0f} steps, {ok}/{episodes} success, '
         f'{2 / out["episode_s"]:.2f} decisions/s'],
    ]
    print_table(f'LIBERO step cost: {args.suite} task {args.task}', ['what', 'time', 'rate'],
                rows, notes=[machine_line('cpu'), f'MUJOCO_GL={os.environ["MUJOCO_GL"]}; an '
                             'episode is 2 decisions (pick, place), rendered on demand.'])
    if args.json:
        write_json(args.json, out)


if __name__ == '__main__':
    main()
