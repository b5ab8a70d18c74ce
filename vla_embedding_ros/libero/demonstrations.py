"""Expert demonstrations on SEEDED RANDOM PLACEMENTS (LIBERO's reset), never the official
initial states (the benchmark's test set). Per kept episode: the frame before the pick and the
frame before the place, the instruction, and each decision's action vector
``[pick, place, u, v]`` (``config/libero_actions.yaml``), and its scene labels
(:func:`.arrangement.scene_labels`: the other objects' image points, the target's radius) for
counter-example training. Only episodes that LIBERO's ``check_success`` accepts are kept.

In a suite whose instructions name objects by what they are (``arrangement.SWAPPABLE_SUITES``)
every other episode (odd ``k``) has its objects' places permuted after the reset
(:func:`.arrangement.swap_objects`), so the data does not tie an object to a region.

Episodes are cached one file each under a work folder (NPZ of numeric arrays, read back with
``allow_pickle=False``; a failed episode leaves a small JSON), so an interrupted run resumes
where it stopped and workers share nothing but that folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..files import atomic_write_text

LIBRARY_FILE = 'libero_actions.yaml'
PRIMITIVE_VECTORS = {'pick': [1.0, 0.0], 'place': [0.0, 1.0]}


@dataclass(frozen=True)
class Job:
    """One demonstration episode: task ``task`` of ``suite``, the ``k``-th seeded placement."""
    suite: str
    task: int
    k: int

    def seed(self, base: int) -> int:
        """A placement seed from (base, suite, task, k), stable across processes and runs."""
        key = f'{base}/{self.suite}/{self.task}/{self.k}'.encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], 'little')

    def stem(self, work: Path) -> Path:
        return work / self.suite / f'{self.task:03d}' / f'{self.k:05d}'


def action_vector(primitive: str, point) -> list[float]:
    """``[pick, place, u, v]`` of one decision."""
    return PRIMITIVE_VECTORS[primitive] + [float(point[0]), float(point[1])]


def cached(job: Job, work: Path) -> str | None:
    """'kept', 'failed' or None (not run yet) for ``job`` in ``work``."""
    stem = job.stem(work)
    if stem.with_suffix('.npz').exists():
        return 'kept'
    if stem.with_suffix('.failed.json').exists():
        return 'failed'
    return None


def swapped(job: Job) -> bool:
    """Whether ``job``'s scene has its objects' places permuted (odd ``k`` of a suite whose
    instructions allow it)."""
    from .arrangement import SWAPPABLE_SUITES
    return job.suite in SWAPPABLE_SUITES and job.k % 2 == 1


def reset_demonstration(env, job: Job, seed: int) -> None:
    """Reset ``env`` to ``job``'s scene: LIBERO's random placement of ``job.seed(seed)``, its
    objects' places permuted when :func:`swapped` (the libero_sim node's ``placement:
    random`` resets the same way, so both paths give the same demonstrations)."""
    from .arrangement import swap_objects
    env.reset_random(job.seed(seed))
    if swapped(job):
        swap_objects(env, np.random.default_rng(job.seed(seed)))


class RecordingExpert:
    """The expert policy, recording each decision's frame, point and scene labels as it is
    made (before the executor moves anything)."""

    def __init__(self, env):
        from .expert import ExpertPolicy
        self.env, self.expert = env, ExpertPolicy(env)
        self.decisions = {}

    def __call__(self, frame, instruction: str, primitive: str):
        from .arrangement import scene_labels
        # stored as the episode executes it (float32, as an action vector over topics
        # carries it: the robot path's demonstrations are then identical)
        point = tuple(float(np.float32(c)) for c in self.expert(frame, instruction, primitive))
        exclude = ((self.expert.object,) if primitive == 'pick'
                   else (self.expert.object, self.expert.target))
        self.decisions[primitive] = (frame.rgb, point, scene_labels(
            self.env, frame, primitive, point, exclude))
        return point


def run_jobs(jobs: list[Job], work: str, seed: int, image_size: int = 256) -> list[str]:
    """Run ``jobs`` (all of one task) not already cached; return each one's 'kept'/'failed'.

    A worker's unit: one environment is built for the task and reused.
    """
    from .env import LiberoEnv
    from .episode import run_episode
    from .suites import task
    work = Path(work)
    todo = [j for j in jobs if cached(j, work) is None]
    if todo:
        with LiberoEnv(task(todo[0].suite, todo[0].task), image_size=image_size) as env:
            for job in todo:
                reset_demonstration(env, job, seed)
                expert = RecordingExpert(env)
                # one pick: a kept demonstration is the expert's first decisions on the scene
                # the seed drew, never a retry's frame of a scene its miss disturbed
                result = run_episode(env, expert, grasp_attempts=1)
                _store(job, work, result, expert.decisions, env.instruction, job.seed(seed))
    return [cached(j, work) for j in jobs]


def _store(job, work: Path, result, decisions, instruction: str, seed: int) -> None:
    stem = job.stem(work)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {'suite': job.suite, 'task': job.task, 'k': job.k, 'seed': seed,
            'swapped': swapped(job), 'instruction': instruction, 'success': result.success,
            'failure': result.failure, 'steps': result.steps}
    if not (result.success and set(decisions) == {'pick', 'place'}):
        atomic_write_text(stem.with_suffix('.failed.json'), json.dumps(meta))
        return
    meta['labels'] = {p: decisions[p][2] for p in ('pick', 'place')}
    tmp = stem.with_name(f'.{stem.name}.{os.getpid()}.npz')
    np.savez_compressed(tmp, pick_rgb=decisions['pick'][0], place_rgb=decisions['place'][0],
                        pick_point=np.array(decisions['pick'][1], np.float64),
                        place_point=np.array(decisions['place'][1], np.float64),
                        seed=np.array(seed), steps=np.array(result.steps))
    atomic_write_text(stem.with_suffix('.json'), json.dumps(meta))
    os.replace(tmp, stem.with_suffix('.npz'))       # last: its presence means complete


def samples(job: Job, work: Path):
    """The two samples ``(image, instruction, action_vector, timestamp, labels)`` of a kept
    episode (``labels``: :func:`.arrangement.scene_labels` of the decision)."""
    stem = job.stem(work)
    meta = json.loads(stem.with_suffix('.json').read_text(encoding='utf-8'))
    with np.load(stem.with_suffix('.npz'), allow_pickle=False) as data:
        for t, primitive in enumerate(('pick', 'place')):
            yield (data[f'{primitive}_rgb'], meta['instruction'],
                   action_vector(primitive, data[f'{primitive}_point']), float(t),
                   meta['labels'][primitive])
