"""Action library: named actions with a description, a parameter vector and an optional Twist.

The library is the set of candidates the selector scores. It lives in a YAML file::

    version: 1
    parameter_names: [pick, push_left, push_right, push_forward, push_back, x, y]
    actions:
      - name: pick_r1_c2
        description: pick up the object in row 1, column 2
        params: [1, 0, 0, 0, 0, 0.625, 0.375]
        twist: {linear: [0.1, 0, 0], angular: [0, 0, 0]}     # optional
    space:                                                     # optional
      choice: {name: primitive, options: [pick, push_left, ...]}
      continuous: [{name: x, low: 0, high: 1}, {name: y, low: 0, high: 1}]

``space`` declares a continuous action space (:mod:`.action_space`) whose vectors share the
layout of ``params``; a library with a space may list no fixed actions at all (then only
sampled candidates are scored, ``candidate_mode: sampled``).

Every validation error is a ``ValueError`` that names the file, the entry (index and name)
and the field, because a library is hand-edited and a bare "invalid value" is useless there.
"""
from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import yaml

from ..files import atomic_write_text, read_text_bounded
from .space import ActionSpace

SCHEMA_VERSION = 1
_TOP_KEYS = ('version', 'parameter_names', 'actions', 'space')
_ACTION_KEYS = ('name', 'description', 'params', 'twist')
_TWIST_KEYS = ('linear', 'angular')


@dataclass(frozen=True)
class Twist:
    """A velocity command attached to an action (maps to geometry_msgs/Twist)."""

    linear: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angular: tuple[float, float, float] = (0.0, 0.0, 0.0)


@dataclass
class Action:
    """One library entry."""

    name: str
    description: str
    params: np.ndarray
    twist: Twist | None = None

    def __post_init__(self) -> None:
        self.params = np.asarray(self.params, dtype=np.float32).reshape(-1)


def _is_number(value: Any) -> bool:
    # bool is an int subclass; `params: [true, 0]` is a typo, not a vector.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _entry(index: int, name: Any) -> str:
    return f'actions[{index}]' + (f' {name!r}' if isinstance(name, str) and name else '')


def _vector(value: Any, length: int, where: str, field: str) -> list[float]:
    """Check that ``value`` is a list of ``length`` finite numbers; return it as floats."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f'{where}: field {field!r} must be a list of {length} numbers, '
                         f'got {type(value).__name__}')
    bad = [i for i, v in enumerate(value) if not _is_number(v)]
    if bad:
        raise ValueError(f'{where}: field {field!r} must hold numbers only; element {bad[0]} '
                         f'is {value[bad[0]]!r}')
    if len(value) != length:
        raise ValueError(f'{where}: field {field!r} has {len(value)} values, expected {length}')
    out = [float(v) for v in value]
    bad = [i for i, v in enumerate(out) if not math.isfinite(v)]
    if bad:
        raise ValueError(f'{where}: field {field!r} element {bad[0]} is {out[bad[0]]} '
                         '(must be finite)')
    return out


def _parse_twist(value: Any, where: str) -> Twist:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field 'twist' must be a mapping with 'linear' and "
                         f"'angular' (3 numbers each), got {type(value).__name__}")
    unknown = sorted(set(map(str, value)) - set(_TWIST_KEYS))
    if unknown:
        raise ValueError(f"{where}: field 'twist' has unknown key(s) {unknown}; "
                         f'allowed: {list(_TWIST_KEYS)}')
    linear = _vector(value.get('linear', [0.0, 0.0, 0.0]), 3, where, 'twist.linear')
    angular = _vector(value.get('angular', [0.0, 0.0, 0.0]), 3, where, 'twist.angular')
    return Twist(tuple(linear), tuple(angular))


def _check_parameter_names(names: Any, where: str) -> list[str]:
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{where}: field 'parameter_names' must be a non-empty list of strings")
    for i, n in enumerate(names):
        if not isinstance(n, str) or not n:
            raise ValueError(f"{where}: field 'parameter_names' element {i} must be a non-empty "
                             f'string, got {n!r}')
    seen = set()
    for n in names:
        if n in seen:
            raise ValueError(f"{where}: field 'parameter_names' repeats {n!r}")
        seen.add(n)
    return list(names)


def _check_twist_object(twist: Any, where: str) -> None:
    if twist is None:
        return
    if not isinstance(twist, Twist):
        raise ValueError(f"{where}: field 'twist' must be a Twist or None")
    for field, vec in (('twist.linear', twist.linear), ('twist.angular', twist.angular)):
        _vector(list(vec), 3, where, field)


class ActionLibrary:
    """An ordered, validated set of actions sharing one parameter layout.

    Args:
        actions: the entries, in the order their indices refer to.
        parameter_names: one label per parameter dimension (the layout of every ``params``).
        space: an optional continuous :class:`ActionSpace` of the same layout; with one the
            library may have no fixed actions.
        comment: free text written as the YAML file's ``#`` header (where it came from).

    Raises:
        ValueError: naming the entry (index and name) and field that is wrong.
    """

    def __init__(self, actions: Sequence[Action], parameter_names: Sequence[str],
                 space: ActionSpace | None = None, comment: str = ''):
        self.comment = comment   # written as the YAML file's header (provenance), not data
        self.parameter_names = _check_parameter_names(list(parameter_names), 'library')
        dim = len(self.parameter_names)
        if space is not None and space.parameter_names != self.parameter_names:
            raise ValueError(f"library: field 'parameter_names' {self.parameter_names} does not "
                             f'match the space\'s layout {space.parameter_names} (choice '
                             'options, then continuous dimensions)')
        self.space = space
        if not actions and space is None:
            raise ValueError("library: field 'actions' must list at least one action (or "
                             "declare a 'space')")
        self._index: dict[str, int] = {}
        for i, action in enumerate(actions):
            where = _entry(i, getattr(action, 'name', None))
            if not isinstance(action.name, str) or not action.name.strip():
                raise ValueError(f"{where}: field 'name' must be a non-empty string")
            if action.name in self._index:
                raise ValueError(f"{where}: field 'name' duplicates "
                                 f'actions[{self._index[action.name]}]')
            if not isinstance(action.description, str):
                raise ValueError(f"{where}: field 'description' must be a string")
            if action.params.shape != (dim,):
                raise ValueError(f"{where}: field 'params' has {action.params.size} values, "
                                 f'expected {dim} (parameter_names)')
            if not np.all(np.isfinite(action.params)):
                raise ValueError(f"{where}: field 'params' must be finite")
            _check_twist_object(action.twist, where)
            self._index[action.name] = i
        self.actions = list(actions)
        self._params = (np.stack([a.params for a in self.actions]).astype(np.float32)
                        if self.actions else np.zeros((0, dim), np.float32))
        self._params.setflags(write=False)

    # -- access ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __getitem__(self, index: int) -> Action:
        return self.actions[index]

    @property
    def names(self) -> list[str]:
        """Action names in index order."""
        return [a.name for a in self.actions]

    @property
    def descriptions(self) -> list[str]:
        """Action descriptions in index order."""
        return [a.description for a in self.actions]

    def texts(self) -> list[str]:
        """The text each action is embedded with, in index order: its description, or its
        name read as words when the description is empty ('push_left_r1_c2' ->
        'push left r1 c2'). Training, evaluation and serving all embed these, so a model is
        scored at run time on the texts it was trained on."""
        return [a.description or a.name.replace('_', ' ') for a in self.actions]

    @property
    def param_dim(self) -> int:
        """Length of every parameter vector."""
        return len(self.parameter_names)

    @property
    def has_twist(self) -> bool:
        """True when at least one action maps to a Twist."""
        return any(a.twist is not None for a in self.actions)

    def params(self) -> np.ndarray:
        """Return all parameter vectors as a read-only ``[N, D]`` float32 array."""
        return self._params

    def index(self, name: str) -> int:
        """Return the index of the action called ``name``.

        Raises:
            KeyError: if there is no such action.
        """
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f'no action named {name!r} in the library '
                           f'({len(self)} actions)') from None

    # -- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = 'library', comment: str = '') -> 'ActionLibrary':
        """Build a library from the parsed YAML structure, validating every field.

        Args:
            data: the mapping with ``version``, ``parameter_names`` and ``actions``.
            source: prefix for error messages (normally the file path).
        """
        if not isinstance(data, dict):
            raise ValueError(f'{source}: expected a mapping with keys {list(_TOP_KEYS)}, '
                             f'got {type(data).__name__}')
        unknown = sorted(set(map(str, data)) - set(_TOP_KEYS))
        if unknown:
            raise ValueError(f'{source}: unknown top-level key(s) {unknown}; '
                             f'allowed: {list(_TOP_KEYS)}')
        version = data.get('version', SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ValueError(f"{source}: field 'version' is {version!r}, this code reads "
                             f'version {SCHEMA_VERSION}')
        space = (ActionSpace.from_dict(data['space'], source)
                 if data.get('space') is not None else None)
        if 'parameter_names' not in data and space is None:
            raise ValueError(f"{source}: missing field 'parameter_names'")
        names = _check_parameter_names(data.get('parameter_names', space and
                                                space.parameter_names), source)
        if space is not None and names != space.parameter_names:
            raise ValueError(f"{source}: field 'parameter_names' {names} does not match the "
                             f'space {space.parameter_names} (choice options, then continuous '
                             'dimensions, in that order)')
        entries = data.get('actions', [] if space is not None else None)
        if not isinstance(entries, list) or (not entries and space is None):
            raise ValueError(f"{source}: field 'actions' must be a non-empty list (or declare "
                             "a 'space')")
        actions: list[Action] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(entries):
            where = f'{source}: ' + _entry(i, entry.get('name') if isinstance(entry, dict)
                                           else None)
            if not isinstance(entry, dict):
                raise ValueError(f'{where}: entry must be a mapping, got {type(entry).__name__}')
            unknown = sorted(set(map(str, entry)) - set(_ACTION_KEYS))
            if unknown:
                raise ValueError(f'{where}: unknown field(s) {unknown}; '
                                 f'allowed: {list(_ACTION_KEYS)}')
            name = entry.get('name')
            if name is None:
                raise ValueError(f"{where}: missing field 'name'")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}: field 'name' must be a non-empty string, "
                                 f'got {name!r}')
            if name in seen:
                raise ValueError(f"{where}: field 'name' duplicates actions[{seen[name]}]")
            seen[name] = i
            description = entry.get('description', '')
            if description is None:
                description = ''
            if not isinstance(description, str):
                raise ValueError(f"{where}: field 'description' must be a string, "
                                 f'got {type(description).__name__}')
            if 'params' not in entry:
                raise ValueError(f"{where}: missing field 'params'")
            params = _vector(entry['params'], len(names), where, 'params')
            twist = entry.get('twist')
            twist = None if twist is None else _parse_twist(twist, where)
            actions.append(Action(name, description, np.asarray(params, np.float32), twist))
        return cls(actions, names, space, comment)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> 'ActionLibrary':
        """Load and validate a library YAML file.

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the YAML is malformed or an entry is invalid (names file, entry, field).
        """
        path = os.fspath(path)
        try:
            data = yaml.safe_load(read_text_bounded(path))
        except yaml.YAMLError as exc:
            raise ValueError(f'{path}: not valid YAML: {exc}') from exc
        return cls.from_dict(data, source=path)

    def to_dict(self) -> dict:
        """Return the YAML structure (plain Python types)."""
        entries = []
        for a in self.actions:
            entry: dict[str, Any] = {'name': a.name, 'description': a.description,
                                     'params': [_short_float(v) for v in a.params]}
            if a.twist is not None:
                entry['twist'] = {'linear': [float(v) for v in a.twist.linear],
                                  'angular': [float(v) for v in a.twist.angular]}
            entries.append(entry)
        out = {'version': SCHEMA_VERSION, 'parameter_names': list(self.parameter_names),
               'actions': entries}
        if self.space is not None:
            out['space'] = self.space.to_dict()
        return out

    def to_yaml(self, path: str | os.PathLike) -> None:
        """Write the library to ``path`` atomically (temp file in the same folder + rename),
        ``comment`` as a ``#`` header. A reader (a running node reloading its library) never
        sees a half-written file."""
        header = ''.join(f'# {line}\n' for line in self.comment.splitlines())
        atomic_write_text(path, header + yaml.safe_dump(self.to_dict(), sort_keys=False,
                                                        default_flow_style=None, width=100))


def _short_float(value: np.float32) -> float:
    # str(np.float32) is the shortest text that reads back to the same float32, so the YAML
    # shows 0.1 rather than 0.10000000149011612 and still round-trips exactly.
    return float(str(np.float32(value)))


def load_library(path: str | os.PathLike) -> ActionLibrary:
    """Load and validate an action library YAML file (see :meth:`ActionLibrary.from_yaml`)."""
    return ActionLibrary.from_yaml(path)


def as_library(library: Any, parameter_names: Sequence[str] | None = None,
               source: str = 'library') -> ActionLibrary:
    """The one normaliser for the forms a library is handed around in, validated.

    Args:
        library: an :class:`ActionLibrary` (returned as is), a path to a library YAML, an
            object with ``actions`` (dicts) and ``parameter_names``, or a list of action
            dicts (``name``, ``description``, ``params``, ``twist``).
        parameter_names: the layout of a bare list of action dicts (which carries none);
            None labels its columns ``p0, p1, ...``.
        source: prefix for error messages.

    Raises:
        ValueError: naming the entry and field that is wrong.
    """
    if isinstance(library, ActionLibrary):
        return library
    if isinstance(library, (str, os.PathLike)):
        return load_library(library)
    entries = list(getattr(library, 'actions', library))
    names = getattr(library, 'parameter_names', parameter_names)
    if names is None:   # a bare list carries no layout: label the columns by position
        first = entries[0].get('params') if entries and isinstance(entries[0], dict) else None
        names = [f'p{i}' for i in range(len(first) if isinstance(first, (list, tuple)) else 0)]
    return ActionLibrary.from_dict({'parameter_names': list(names), 'actions': entries},
                                   source, getattr(library, 'comment', ''))
