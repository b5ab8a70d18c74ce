"""Ranking metrics for action selection: top-1, top-5 and mean reciprocal rank."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


def target_ranks(logits: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """1-based rank of each row's target among its scores (ties count against the target)."""
    target_scores = logits.gather(1, targets.view(-1, 1))
    return ((logits >= target_scores).sum(dim=1)).cpu().numpy()


def summarise(ranks: np.ndarray) -> dict:
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return {'n': 0, 'top1': float('nan'), 'top5': float('nan'), 'mrr': float('nan')}
    return {'n': int(ranks.size), 'top1': float(np.mean(ranks <= 1)),
            'top5': float(np.mean(ranks <= 5)), 'mrr': float(np.mean(1.0 / ranks))}


def chance(num_actions: int) -> dict:
    """Expected metrics of a uniformly random ranking over `num_actions`."""
    n = num_actions
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    return {'n': 0, 'top1': 1.0 / n, 'top5': min(5, n) / n, 'mrr': harmonic / n}


def by_group(ranks: np.ndarray, groups: list[str]) -> dict[str, dict]:
    buckets: dict[str, list[float]] = defaultdict(list)
    for rank, group in zip(ranks, groups, strict=True):
        buckets[group].append(rank)
    return {group: summarise(np.array(values)) for group, values in sorted(buckets.items())}


def format_table(rows: list[tuple[str, dict]], title: str = '') -> str:
    """A fixed-width text table of (label, metrics) rows."""
    header = f'{"":34s} {"n":>6s} {"top1":>7s} {"top5":>7s} {"MRR":>7s}'
    lines = [title] if title else []
    lines += [header, '-' * len(header)]
    for label, m in rows:
        n = str(m['n']) if m.get('n') else '-'
        lines.append(f'{label:34s} {n:>6s} {100 * m["top1"]:6.1f}% {100 * m["top5"]:6.1f}% '
                     f'{m["mrr"]:7.3f}')
    return '\n'.join(lines)
