"""A declared continuous action space: a discrete choice plus bounded continuous dimensions.

Declared in the library YAML next to (or instead of) fixed actions::

    space:
      choice: {name: primitive, options: [pick, push_left, push_right, push_forward, push_back]}
      continuous:
        - {name: x, low: 0.0, high: 1.0}
        - {name: y, low: 0.0, high: 1.0}
      twist: {linear.x: vx, angular.z: wz}      # optional: continuous dims that make cmd_vel

An action of the space is the vector ``[one-hot choice, continuous values]``: the layout the
library's ``parameter_names`` must spell (options, then continuous names), so a fixed library
action and a sampled one are scored by the same action encoder. The choice may be left out
(continuous dimensions only). Every validation error names the field.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

_SPACE_KEYS = ('choice', 'continuous', 'twist')
TWIST_FIELDS = tuple(f'{part}.{axis}' for part in ('linear', 'angular') for axis in 'xyz')


@dataclass(frozen=True)
class ContinuousDim:
    """One bounded continuous dimension of the space."""

    name: str
    low: float
    high: float

    @property
    def span(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class ActionSpace:
    """``options`` of the discrete choice (may be empty) and the continuous ``dims``."""

    choice_name: str
    options: tuple[str, ...]
    dims: tuple[ContinuousDim, ...]
    twist: tuple[tuple[str, str], ...] = ()     # (twist field, continuous dim name)
    # The option every sampled vector takes (None: drawn uniformly). Not part of the declared
    # space: a robot's task state pins it per decision (see :meth:`pinned_to`).
    pinned: int | None = None

    def pinned_to(self, option: str | None) -> 'ActionSpace':
        """This space with its choice fixed to ``option`` (None: free again). A robot whose
        task state says which primitive comes next (pick, then place) asks only *where*: the
        search then spends every candidate on that option's values.

        Raises:
            ValueError: ``option`` is not one of the choice's options.
        """
        if option is None:
            return replace(self, pinned=None)
        if option not in self.options:
            raise ValueError(f'cannot pin {self.choice_name or "the choice"} to {option!r}: '
                             f'the space\'s options are {list(self.options)}')
        return replace(self, pinned=self.options.index(option))

    # -- layout -----------------------------------------------------------------------------
    @property
    def parameter_names(self) -> list[str]:
        """The vector layout: one entry per option, then one per continuous dimension."""
        return [*self.options, *(d.name for d in self.dims)]

    @property
    def param_dim(self) -> int:
        return len(self.options) + len(self.dims)

    @property
    def continuous_slice(self) -> slice:
        return slice(len(self.options), self.param_dim)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Low and high of the continuous dimensions as float32 arrays."""
        return (np.array([d.low for d in self.dims], np.float32),
                np.array([d.high for d in self.dims], np.float32))

    # -- vectors ----------------------------------------------------------------------------
    def vectors(self, choice: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Action vectors ``[N, param_dim]`` from option indices ``[N]`` and values ``[N, d]``."""
        parts = [values]
        if self.options:
            parts.insert(0, torch.nn.functional.one_hot(choice.long(), len(self.options))
                         .to(values.dtype))
        return torch.cat(parts, dim=-1)

    def split(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(option index ``[N]``, continuous values ``[N, d]``) of action vectors."""
        if self.options:
            choice = vectors[..., :len(self.options)].argmax(dim=-1)
        else:
            choice = torch.zeros(vectors.shape[:-1], dtype=torch.long, device=vectors.device)
        return choice, vectors[..., self.continuous_slice]

    def clip(self, values: torch.Tensor) -> torch.Tensor:
        low, high = (torch.as_tensor(b, device=values.device, dtype=values.dtype)
                     for b in self.bounds())
        return torch.minimum(torch.maximum(values, low), high)

    def sample_uniform(self, n: int, generator: torch.Generator,
                       device: torch.device | str = 'cpu') -> torch.Tensor:
        """``n`` vectors drawn uniformly: a uniform option (or the pinned one) and uniform
        values in the bounds."""
        low, high = (torch.as_tensor(b, device=device) for b in self.bounds())
        values = low + (high - low) * torch.rand(n, len(self.dims), generator=generator,
                                                 device=device)
        choice = torch.randint(max(1, len(self.options)), (n,), generator=generator,
                               device=device)
        if self.pinned is not None:   # drawn all the same: the values match a free search's
            choice = torch.full_like(choice, self.pinned)
        return self.vectors(choice, values)

    def describe(self, vector) -> str:
        """A readable name for one vector, e.g. ``pick(x=0.412, y=0.730)``."""
        v = np.asarray(vector, np.float64).reshape(-1)
        head = self.options[int(np.argmax(v[:len(self.options)]))] if self.options else 'act'
        values = ', '.join(f'{d.name}={v[len(self.options) + i]:.3f}'
                           for i, d in enumerate(self.dims))
        return f'{head}({values})'

    def check_vector(self, vector, where: str = 'vector') -> np.ndarray:
        """The vector as float32, or ValueError naming what is wrong (width, NaN, bounds)."""
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.size != self.param_dim:
            raise ValueError(f'{where} has {v.size} values, the space has {self.param_dim} '
                             f'({self.parameter_names})')
        if not np.all(np.isfinite(v)):
            raise ValueError(f'{where} has non-finite values: {v.tolist()}')
        low, high = self.bounds()
        values = v[self.continuous_slice]
        outside = np.flatnonzero((values < low - 1e-6) | (values > high + 1e-6))
        if outside.size:
            d = self.dims[int(outside[0])]
            raise ValueError(f'{where}: {d.name}={values[outside[0]]:.4g} is outside the '
                             f'space bounds [{d.low:g}, {d.high:g}]')
        return v

    def twist_of(self, vector) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(linear, angular) of the Twist the ``twist`` mapping makes from ``vector``."""
        v = np.asarray(vector, np.float64).reshape(-1)
        index = {d.name: len(self.options) + i for i, d in enumerate(self.dims)}
        out = {f: 0.0 for f in TWIST_FIELDS}
        for field, dim in self.twist:
            out[field] = float(v[index[dim]])
        return (tuple(out[f'linear.{a}'] for a in 'xyz'),
                tuple(out[f'angular.{a}'] for a in 'xyz'))

    # -- (de)serialisation ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, source: str = 'library') -> 'ActionSpace':
        where = f'{source}: space'
        if not isinstance(data, dict):
            raise ValueError(f'{where} must be a mapping with {list(_SPACE_KEYS)}, got '
                             f'{type(data).__name__}')
        unknown = sorted(set(map(str, data)) - set(_SPACE_KEYS))
        if unknown:
            raise ValueError(f'{where}: unknown key(s) {unknown}; allowed: {list(_SPACE_KEYS)}')
        choice_name, options = _parse_choice(data.get('choice'), where)
        dims = _parse_dims(data.get('continuous'), where)
        if not dims and not options:
            raise ValueError(f'{where} is empty: give continuous dimensions (and optionally a '
                             'choice)')
        names = [*options, *(d.name for d in dims)]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f'{where}: name(s) {repeated} used twice among options and '
                             'continuous dimensions')
        twist = _parse_twist_map(data.get('twist'), {d.name for d in dims}, where)
        return cls(choice_name, tuple(options), tuple(dims), twist)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.options:
            out['choice'] = {'name': self.choice_name, 'options': list(self.options)}
        out['continuous'] = [{'name': d.name, 'low': d.low, 'high': d.high} for d in self.dims]
        if self.twist:
            out['twist'] = dict(self.twist)
        return out


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _parse_choice(choice: Any, where: str) -> tuple[str, list[str]]:
    if choice is None:
        return '', []
    if not isinstance(choice, dict) or set(map(str, choice)) - {'name', 'options'}:
        raise ValueError(f"{where}.choice must be a mapping with 'name' and 'options'")
    options = choice.get('options')
    if not isinstance(options, list) or not options:
        raise ValueError(f'{where}.choice.options must be a non-empty list of names')
    for i, o in enumerate(options):
        if not isinstance(o, str) or not o:
            raise ValueError(f'{where}.choice.options[{i}] must be a non-empty string, got {o!r}')
    name = choice.get('name', 'choice')
    if not isinstance(name, str) or not name:
        raise ValueError(f'{where}.choice.name must be a non-empty string')
    return name, list(options)


def _parse_dims(entries: Any, where: str) -> list[ContinuousDim]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ValueError(f'{where}.continuous must be a list of {{name, low, high}}')
    dims = []
    for i, entry in enumerate(entries):
        at = f'{where}.continuous[{i}]'
        if not isinstance(entry, dict) or set(map(str, entry)) - {'name', 'low', 'high'}:
            raise ValueError(f"{at} must be a mapping with 'name', 'low' and 'high'")
        name = entry.get('name')
        if not isinstance(name, str) or not name:
            raise ValueError(f'{at}.name must be a non-empty string, got {name!r}')
        bounds = []
        for key in ('low', 'high'):
            value = entry.get(key)
            if not _number(value) or not math.isfinite(float(value)):
                raise ValueError(f'{at} ({name}): {key} must be a finite number, got {value!r}')
            bounds.append(float(value))
        if not bounds[0] < bounds[1]:
            raise ValueError(f'{at} ({name}): low {bounds[0]:g} must be below high '
                             f'{bounds[1]:g}')
        dims.append(ContinuousDim(name, *bounds))
    return dims


def _parse_twist_map(twist: Any, dim_names: set[str], where: str) -> tuple:
    if twist is None:
        return ()
    if not isinstance(twist, dict) or not twist:
        raise ValueError(f'{where}.twist must map Twist fields ({", ".join(TWIST_FIELDS)}) to '
                         'continuous dimension names')
    for field, dim in twist.items():
        if field not in TWIST_FIELDS:
            raise ValueError(f'{where}.twist: unknown field {field!r}; allowed: '
                             f'{list(TWIST_FIELDS)}')
        if dim not in dim_names:
            raise ValueError(f'{where}.twist.{field}: {dim!r} is not a continuous dimension '
                             f'({sorted(dim_names)})')
    return tuple((str(f), str(d)) for f, d in twist.items())
