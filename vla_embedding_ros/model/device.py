"""Turn a user's device string into a ``torch.device``, failing loudly instead of falling back."""
from __future__ import annotations

import re

import torch

_CUDA = re.compile(r'^cuda(?::(\d+))?$')


def resolve_device(spec: str = 'auto') -> torch.device:
    """Resolve ``'auto' | 'cpu' | 'cuda' | 'cuda:N'`` to a device.

    A robot asked to run on the GPU must not silently run on the CPU at a tenth of the rate,
    so an explicit CUDA request that cannot be met is an error, not a fallback.

    Args:
        spec: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'.

    Returns:
        The device.

    Raises:
        RuntimeError: CUDA was asked for but is not available, or N is out of range.
        ValueError: the string is none of the accepted forms.
    """
    text = str(spec).strip().lower()
    if text == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if text == 'cpu':
        return torch.device('cpu')
    match = _CUDA.match(text)
    if match is None:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if not torch.cuda.is_available():
        raise RuntimeError(f'device {spec!r} was requested but CUDA is not available '
                           f'(torch {torch.__version__}, built for CUDA: '
                           f'{torch.version.cuda or "no"}); use device "cpu" or "auto"')
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise RuntimeError(f'device {spec!r} was requested but only {count} CUDA device(s) '
                           f'exist (valid: cuda:0..cuda:{count - 1})')
    return torch.device('cuda', index)
