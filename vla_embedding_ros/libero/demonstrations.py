"""Expert demonstrations on SEEDED RANDOM PLACEMENTS (LIBERO's reset), never the official
initial states (the benchmark's test set). Per kept episode: the frame before the pick and the
frame before the place, the instruction, and each decision's action vector
``[pick, place, u, v]`` (``config/libero_actions.yaml``), and its scene labels
(:func:`.arrangement.scene_labels`: the other objects' image points, the target's radius) for
counter-example training. Only episodes that LIBERO's ``check_success`` accepts are kept.

LIBERO's reset only jitters each object in its region, so three scene changes keep the data
from tying an object to a place:

* the arrangement: every other run of LAYOUT_EPISODES placements of a task (``k // 5`` odd)
  is built from the task's BDDL with all the table's regions moved by one rigid motion
  (:mod:`.layouts`: mirrored half the time, turned, shifted), every relation kept
  (:func:`demonstration_spec`);

* every odd ``k``: once the object is in the hand, the place target (the plate, the basket) is
  moved to a free spot of the table before the place frame (:func:`.arrangement.
  move_to_free_spot`); no instruction is falsified, since the relation that named the object
  is behind, and the place decision must find the target by its look;
* ``k % 4`` of 2 or 3, in a suite whose instructions name objects by what they are
  (``arrangement.SWAPPABLE_SUITES``): the objects' places permuted after the reset
  (:func:`.arrangement.swap_objects`).

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
# What a cached episode was made by: 3 = the scene changes below; 2 (commit 2e6cc5d, never
# used for a model) = without the layouts; 1 (no field) = the permutation on odd k only.
GENERATOR = 3
LAYOUT_EPISODES = 5    # consecutive placements of a task share one layout (one build)
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


class StaleEpisode(ValueError):
    """A cached episode made by another version of the generator (other scene changes)."""


def cached(job: Job, work: Path) -> str | None:
    """'kept', 'failed' or None (not run yet) for ``job`` in ``work``.

    Raises:
        StaleEpisode: the cached episode was made by another :data:`GENERATOR`: mixing them
            would give a data set of two recipes under one command.
    """
    stem = job.stem(work)
    for state, meta in (('kept', stem.with_suffix('.json')),
                        ('failed', stem.with_suffix('.failed.json'))):
        if state == 'kept' and not stem.with_suffix('.npz').exists():
            continue
        if meta.exists():
            made_by = json.loads(meta.read_text(encoding='utf-8')).get('generator', 1)
            if made_by != GENERATOR:
                raise StaleEpisode(f'{meta} was made by generator {made_by}, this is '
                                   f'{GENERATOR} (other scene changes): give another '
                                   '--work-dir')
            return state
    return None


def swapped(job: Job) -> bool:
    """Whether ``job``'s scene has its objects' places permuted (``k % 4`` of 2 or 3, in a
    suite whose instructions allow it)."""
    from .arrangement import SWAPPABLE_SUITES
    return job.suite in SWAPPABLE_SUITES and job.k % 4 >= 2


def layout_of(job: Job, seed: int):
    """The :class:`.layouts.Layout` of ``job``'s scene: LIBERO's own arrangement for even runs
    of LAYOUT_EPISODES placements, a random rigid motion of it (drawn from the run's seed)
    for odd ones."""
    from .layouts import Layout, draw_layout
    if not layout_moved(job):
        return Layout()
    run = job.k // LAYOUT_EPISODES
    return draw_layout(np.random.default_rng([Job(job.suite, job.task, run).seed(seed), 2]))


def layout_moved(job: Job) -> bool:
    """Whether ``job``'s scene stands in a rigidly moved arrangement (odd runs of
    LAYOUT_EPISODES placements) rather than LIBERO's own."""
    return (job.k // LAYOUT_EPISODES) % 2 == 1


def demonstration_spec(job: Job, seed: int, folder: str | Path | None = None):
    """The :class:`.suites.TaskSpec` to build ``job``'s environment from (its layout's BDDL,
    written to ``folder`` or a temporary one: :func:`.layouts.layout_spec`)."""
    from .layouts import layout_spec
    from .suites import task
    return layout_spec(task(job.suite, job.task), layout_of(job, seed), folder)


def trial_spec(job: Job, placement_seed: int | None):
    """The spec an evaluation trial builds from: the task's own for the official initial
    states (``placement_seed`` None), :func:`demonstration_spec` for random placements."""
    from .suites import task
    if placement_seed is None:
        return task(job.suite, job.task)
    return demonstration_spec(job, placement_seed)


def target_moved(job: Job) -> bool:
    """Whether ``job``'s place target moves to a free spot before the place frame (odd k)."""
    return job.k % 2 == 1


MOVE_SETTLE_STEPS = 5    # steps holding still after the move, while the target settles


def reset_demonstration(env, job: Job, seed: int) -> SceneChange | None:
    """Reset ``env`` (built from :func:`demonstration_spec`) to ``job``'s scene: LIBERO's
    random placement of ``job.seed(seed)``, its objects' places permuted when :func:`swapped`.
    Returns the episode's scene change (give it to ``run_episode(before_frame=)``), None when
    :func:`target_moved` is false. The libero_sim node's ``placement: random`` and ``vla-eval
    --placement-seed`` build and reset the same way, so every path gives the same scenes."""
    from .arrangement import swap_objects
    env.reset_random(job.seed(seed))
    if swapped(job):
        swap_objects(env, np.random.default_rng(job.seed(seed)))
    return scene_change(env, job, seed) if target_moved(job) else None


def scene_change(env, job: Job, seed: int) -> SceneChange:
    """``job``'s change between the decisions (see :class:`SceneChange`)."""
    return SceneChange(env, np.random.default_rng([job.seed(seed), 1]))


class SceneChange:
    """Before the place frame: the goal's target moved to a free spot of the table, then
    MOVE_SETTLE_STEPS holding the grasp (before the pick, and a retried pick, nothing).
    ``moved_to`` is the spot ``(x, y)``, None while not moved (or where the table had no free
    spot: the episode goes on with the target where it was, and says so)."""

    def __init__(self, env, rng: np.random.Generator):
        from .expert import goal_pair
        self.env, self.rng = env, rng
        self.held, self.target = goal_pair(env)
        self.moved_to = None

    def __call__(self, primitive: str) -> None:
        from .arrangement import NoFreeSpot, move_to_free_spot
        from .executor import CLOSE
        if primitive != 'place' or self.moved_to is not None:
            return
        try:
            spot = move_to_free_spot(self.env, self.target, self.rng, ignore=(self.held,))
        except NoFreeSpot:
            return
        self.moved_to = [round(float(c), 4) for c in spot]
        for _ in range(MOVE_SETTLE_STEPS):
            self.env.step(np.array([0, 0, 0, 0, 0, 0, CLOSE]))


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
    """Run ``jobs`` (all of one task and layout) not already cached; return each one's
    'kept'/'failed'.

    A worker's unit: one environment is built for the task's layout and reused.

    Raises:
        ValueError: ``jobs`` of more than one task or layout.
    """
    scenes = sorted({(j.suite, j.task, j.k // LAYOUT_EPISODES) for j in jobs})
    if len(scenes) > 1:
        raise ValueError(f'run_jobs runs the jobs of one task and layout, got jobs of '
                         f'(suite, task, layout run) {scenes}')
    from .env import LiberoEnv
    from .episode import run_episode
    work = Path(work)
    todo = [j for j in jobs if cached(j, work) is None]
    if todo:
        spec = demonstration_spec(todo[0], seed, work / 'layouts')
        with LiberoEnv(spec, image_size=image_size) as env:
            for job in todo:
                change = reset_demonstration(env, job, seed)
                expert = RecordingExpert(env)
                # one pick: a kept demonstration is the expert's first decisions on the scene
                # the seed drew, never a retry's frame of a scene its miss disturbed
                result = run_episode(env, expert, grasp_attempts=1, before_frame=change)
                _store(job, work, result, expert.decisions, env.instruction, job.seed(seed),
                       change.moved_to if change is not None else None)
    return [cached(j, work) for j in jobs]


def _store(job, work: Path, result, decisions, instruction: str, seed: int,
           moved_to) -> None:
    stem = job.stem(work)
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {'suite': job.suite, 'task': job.task, 'k': job.k, 'seed': seed,
            'generator': GENERATOR, 'swapped': swapped(job), 'target_moved_to': moved_to,
            'instruction': instruction, 'success': result.success,
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
