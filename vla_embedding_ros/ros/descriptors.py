"""``ParameterDescriptor`` builders the nodes declare their parameters with (a range, a
description, read-only or not), in one light module: the simulators use them without loading
the selector's dependencies."""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor


def float_range(description: str, lo: float, hi: float, **kw: Any) -> ParameterDescriptor:
    """A double parameter in [lo, hi] (``kw``: read_only=True, ...)."""
    return ParameterDescriptor(description=description, floating_point_range=[
        FloatingPointRange(from_value=lo, to_value=hi, step=0.0)], **kw)


def int_range(description: str, lo: int, hi: int, **kw: Any) -> ParameterDescriptor:
    """An integer parameter in [lo, hi] (``kw``: read_only=True, ...)."""
    return ParameterDescriptor(description=description, integer_range=[
        IntegerRange(from_value=lo, to_value=hi, step=1)], **kw)


def fixed_float_range(description: str, lo: float, hi: float) -> ParameterDescriptor:
    """A read-only double in [lo, hi]: set at start-up (the simulators' parameters)."""
    return float_range(description, lo, hi, read_only=True)


def fixed_int_range(description: str, lo: int, hi: int) -> ParameterDescriptor:
    """A read-only integer in [lo, hi]: set at start-up."""
    return int_range(description, lo, hi, read_only=True)
