"""Shared bits of the bench/ scripts: what machine ran them, timing, and the printed table.

Every script prints one table whose comparison rows were measured in the same run, headed by
the machine line below, so a table pasted into bench/README.md says where it came from.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

import torch


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA when present; otherwise the named device."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    return torch.device(name)


def write_json(path: str, payload: dict) -> None:
    """Write ``payload`` atomically (temp file + rename): a reader never sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix='.bench-', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w') as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as info:
            for line in info:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(device: torch.device | str | None = None) -> str:
    """'2026-11-24, AMD EPYC ... (2 cores), torch 2.13.0, device cpu (1 thread)'."""
    device = torch.device(device) if device is not None else torch.device('cpu')
    where = f'{cpu_name()} ({os.cpu_count()} cores)'
    if device.type == 'cuda':
        where += f', {torch.cuda.get_device_name(device)}'
    return (f'{datetime.date.today().isoformat()}, {where}, torch {torch.__version__}, '
            f'device {device} ({torch.get_num_threads()} CPU threads)')


def sync(device: torch.device | str) -> None:
    """Wait for queued GPU work so a wall-clock reading covers it (no-op on the CPU)."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device | str = 'cpu', warmup: int = 3,
              repeat: int = 20, min_seconds: float = 0.0) -> list[float]:
    """Wall-clock seconds of ``fn()`` per call, after ``warmup`` untimed calls.

    Runs at least ``repeat`` calls and keeps going until ``min_seconds`` have passed.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; NaN for no values."""
    if not values:
        return float('nan')
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float('nan')


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]],
                notes: Sequence[str] = ()) -> str:
    """Print (and return) a Markdown table: pastes straight into bench/README.md."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f'### {title}', '']
    for n, row in enumerate(cells):
        lines.append('| ' + ' | '.join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + ' |')
        if n == 0:
            lines.append('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    lines += [''] + [f'{note}' for note in notes]
    text = '\n'.join(lines)
    print(text, flush=True)
    return text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return '-'
        return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'
    return str(value)
