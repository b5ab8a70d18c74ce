"""One table from several ``vla-eval --task libero --json`` reports: per suite and policy,
success as the mean and spread over the runs' sampling seeds, and the point errors.

    python -m vla_embedding_ros.libero.report runs/libero_s0.json runs/libero_s1.json ...
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np


def combine(reports: list[dict]) -> dict:
    """``{(suite, policy): {'rates': [...], 'seeds': [...], 'episodes': n, 'pick_cm': [...],
    'place_cm': [...]}}`` over ``reports`` (each a whole :func:`.evaluation.evaluate` result)."""
    rows: dict = defaultdict(lambda: {'rates': [], 'seeds': [], 'episodes': [], 'pick_cm': [],
                                      'place_cm': []})
    for report in reports:
        placement = report.get('placement', 'official')
        for suite, s in report['suites'].items():
            row = rows[(suite, report['policy'], placement)]
            row['rates'].append(s['success_rate'])
            row['seeds'].append(report.get('seed'))
            row['episodes'].append(s['episodes'])
            for primitive in ('pick', 'place'):
                error = s.get('point_error_cm', {}).get(primitive)
                if error is not None:
                    row[f'{primitive}_cm'].append(error['median'])
    return dict(rows)


def format_rows(rows: dict) -> str:
    lines = ['| suite | policy | placements | runs (seeds) | episodes | success mean | spread '
             '(min-max) | pick err cm | place err cm |', '|---|---|---|---|---|---|---|---|---|']
    for (suite, policy, placement), r in sorted(rows.items()):
        rates = 100 * np.array(r['rates'])
        cm = {p: (f'{np.mean(r[f"{p}_cm"]):.1f}' if r[f'{p}_cm'] else '-')
              for p in ('pick', 'place')}
        seeds = ', '.join(str(s) for s in r['seeds'])
        lines.append(f'| {suite} | {policy} | {placement} | {len(rates)} ({seeds}) | '
                     f'{sum(r["episodes"])} | {rates.mean():.1f}% | '
                     f'{rates.min():.1f}-{rates.max():.1f} | {cm["pick"]} | {cm["place"]} |')
    lines.append('(point errors: median per run, averaged over runs; cm on the table against '
                 "the expert's point at the same frame)")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('reports', nargs='+', help='vla-eval --task libero --json files')
    args = parser.parse_args(argv)
    try:
        reports = [json.loads(open(path, encoding='utf-8').read()) for path in args.reports]
        print(format_rows(combine(reports)))
    except (OSError, ValueError, KeyError) as exc:
        parser.exit(2, f'error: {exc}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
