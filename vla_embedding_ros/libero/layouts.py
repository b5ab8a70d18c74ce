"""Whole-scene layouts for demonstrations: every region of the table in a task's BDDL file moved
together by one rigid motion (an optional mirror across the table's long axis, a turn, a small
shift), so the scene keeps every relation an instruction names ("between the plate and the
ramekin", "on the cookie box", "in the top drawer") while the arrangement stands somewhere else.

LIBERO's own regions let each object jitter by ~2 cm, so every libero_spatial task is one fixed
arrangement and a model can learn where its bowl always is instead of reading the relation;
rigid motions of the arrangement (distances between objects kept, fixtures moved and turned
with the rest) take that shortcut away without falsifying a word. Regions on a fixture (a
drawer, a stove's cook region) move with their fixture. The transformed BDDL is written to a
demonstration run's work folder or a per-process one (content-named, so one text is one file)
and built like any task.

Demonstrations only, from the task's own BDDL file: never an official initial state or a
LIBERO-PRO file.
"""
from __future__ import annotations

import atexit
import hashlib
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..files import atomic_write_text
from .suites import TaskSpec

MAX_TURN = math.radians(15.0)   # the arrangement turns by at most this about the table's middle
MAX_SHIFT = 0.03                # m: and moves by at most this along each axis
WORKSPACES = ('table', 'floor')  # fixture types whose regions are the arrangement


@dataclass(frozen=True)
class Layout:
    """A rigid motion of the table's regions: mirror ``y -> -y`` first (when ``mirror``), then
    turn by ``turn`` radians about the table frame's origin, then shift by ``shift`` metres."""
    mirror: bool = False
    turn: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)

    @property
    def identity(self) -> bool:
        return not self.mirror and self.turn == 0.0 and self.shift == (0.0, 0.0)

    def point(self, x: float, y: float) -> tuple[float, float]:
        if self.mirror:
            y = -y
        c, s = math.cos(self.turn), math.sin(self.turn)
        return c * x - s * y + self.shift[0], s * x + c * y + self.shift[1]

    def yaw(self, angle: float) -> float:
        # A mirror maps a heading phi to -phi; LIBERO's fixtures face along their local y
        # (a cabinet's drawers), so their yaw theta goes to pi - theta (-theta would turn the
        # drawers away from the camera). Every other object with a yaw range here looks
        # the same turned by pi (a box, a basket).
        return (math.pi - angle if self.mirror else angle) + self.turn


def draw_layout(rng: np.random.Generator) -> Layout:
    """A random layout: mirrored half the time, turned within MAX_TURN, shifted within
    MAX_SHIFT."""
    return Layout(mirror=bool(rng.random() < 0.5), turn=float(rng.uniform(-MAX_TURN, MAX_TURN)),
                  shift=(float(rng.uniform(-MAX_SHIFT, MAX_SHIFT)),
                         float(rng.uniform(-MAX_SHIFT, MAX_SHIFT))))


def layout_bddl(text: str, layout: Layout) -> str:
    """The BDDL ``text`` with every region of the workspace (a fixture of type table or floor)
    moved by ``layout``: each range box's middle moved (its size kept: LIBERO's boxes are a few
    cm), each yaw range turned (mirrored first)."""
    workspaces = _workspaces(text)
    out, end = [], 0
    for start, stop in _children(text, _block(text, ':regions')):
        region = text[start:stop]
        target = re.search(r'\(:target\s+(\S+?)\)', region)
        if target and target.group(1) in workspaces:
            out += [text[end:start], _move_region(region, layout)]
            end = stop
    return ''.join(out) + text[end:]


_FOLDER: Path | None = None


def layout_spec(spec: TaskSpec, layout: Layout, folder: str | Path | None = None) -> TaskSpec:
    """``spec`` with its BDDL file replaced by the ``layout``-moved one (``spec`` itself for
    the identity), written to ``folder`` (a demonstration run's work folder keeps them
    beside its episodes) or else to a folder of this process, removed at exit."""
    if layout.identity:
        return spec
    if folder is None:
        global _FOLDER
        if _FOLDER is None:
            _FOLDER = Path(tempfile.mkdtemp(prefix='vla_libero_layouts_'))
            atexit.register(shutil.rmtree, _FOLDER, True)
        folder = _FOLDER
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = layout_bddl(Path(spec.bddl_path).read_text(encoding='utf-8'), layout)
    path = folder / f'{hashlib.sha256(text.encode()).hexdigest()[:16]}.bddl'
    if not path.exists():
        atomic_write_text(path, text)
    return replace(spec, bddl_path=str(path))


def _workspaces(text: str) -> set[str]:
    fixtures = text[slice(*_block(text, ':fixtures'))]
    return {name for line in fixtures.splitlines()
            for names, _, kind in [line.partition(' - ')] if kind.strip() in WORKSPACES
            for name in names.split()}


def _block(text: str, keyword: str) -> tuple[int, int]:
    """(start, stop) of the parenthesised block opened by ``(keyword``."""
    start = text.index(f'({keyword}')
    depth = 0
    for i in range(start, len(text)):
        depth += {'(': 1, ')': -1}.get(text[i], 0)
        if depth == 0:
            return start, i + 1
    raise ValueError(f'unbalanced ({keyword} block')


def _children(text: str, span: tuple[int, int]) -> list[tuple[int, int]]:
    """(start, stop) of each parenthesised child directly inside ``span``."""
    children, depth, start = [], 0, None
    for i in range(span[0], span[1]):
        ch = text[i]
        if ch == '(':
            depth += 1
            if depth == 2:
                start = i
        elif ch == ')':
            if depth == 2:
                children.append((start, i + 1))
            depth -= 1
    return children


_NUMBER = r'-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?'
_BOX = re.compile(rf'\(\s*({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s+({_NUMBER})\s*\)')
_PAIR = re.compile(rf'\(\s*({_NUMBER})\s+({_NUMBER})\s*\)')


def _move_region(region: str, layout: Layout) -> str:
    def box(match) -> str:
        x0, y0, x1, y1 = (float(g) for g in match.groups())
        hx, hy = (x1 - x0) / 2, (y1 - y0) / 2
        cx, cy = layout.point((x0 + x1) / 2, (y0 + y1) / 2)
        return f'({cx - hx!r} {cy - hy!r} {cx + hx!r} {cy + hy!r})'

    def yaw(match) -> str:
        a, b = sorted(layout.yaw(float(g)) for g in match.groups())
        return f'({a!r} {b!r})'

    out = region
    ranges = re.search(r'\(:ranges\s*\(', out)
    if ranges:
        start, stop = _block(out, ':ranges')
        out = out[:start] + _BOX.sub(box, out[start:stop]) + out[stop:]
    if '(:yaw_rotation' in out:
        start, stop = _block(out, ':yaw_rotation')
        out = out[:start] + _PAIR.sub(yaw, out[start:stop]) + out[stop:]
    return out
