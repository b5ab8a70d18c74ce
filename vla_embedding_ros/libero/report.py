"""One table from several ``vla-eval --task libero --json`` reports: per suite and policy,
success as the mean and spread over the runs' sampling seeds, and the point errors.

    python -m vla_embedding_ros.libero.report runs/libero_s0.json runs/libero_s1.json ...
    python -m vla_embedding_ros.libero.report --pro runs/*.json   # + LIBERO-PRO's layout

``--pro`` adds LIBERO-PRO's leaderboard layout: one row per base suite and policy, success
(0-1) on the clean suite and on each perturbation (``_object``, ``_swap`` = position, ``_lan``
= semantic, ``_task``), the columns the published anchors are reported in.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

import numpy as np

from .suites import base_suite

# LIBERO-PRO's perturbation suffixes, in its leaderboard's column order
PRO_COLUMNS = (('', 'clean'), ('_object', 'object'), ('_swap', 'position (swap)'),
               ('_lan', 'semantic (language)'), ('_task', 'task'))


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


def format_pro(rows: dict) -> str:
    """LIBERO-PRO's layout of ``rows`` (from :func:`combine`): per base suite and policy, mean
    success (0-1) over the runs on the clean suite and on every perturbation, with the
    episodes behind each; '-' where no run was given. Official placements only."""
    table: dict = defaultdict(dict)
    for (suite, policy, placement), r in rows.items():
        base = base_suite(suite)
        suffix = suite[len(base):] if base else None
        if placement != 'official' or suffix not in dict(PRO_COLUMNS):
            continue
        table[(base, _policy_name(policy))][suffix] = r
    header = ' | '.join(name for _, name in PRO_COLUMNS)
    lines = [f'| suite | policy | {header} |', '|---|---|' + '---|' * len(PRO_COLUMNS)]
    for (base, policy), cells in sorted(table.items()):
        values = []
        for suffix, _ in PRO_COLUMNS:
            r = cells.get(suffix)
            values.append('-' if r is None else
                          f'{np.mean(r["rates"]):.2f} ({sum(r["episodes"])})')
        lines.append(f'| {base} | {policy} | ' + ' | '.join(values) + ' |')
    lines.append('(success 0-1, the mean over runs; episodes in brackets)')
    return '\n'.join(lines)


def _policy_name(policy: str) -> str:
    # a policy's seed is a run's, not a row's: 'random (seed 0)' and 'random (seed 1)' are one
    return policy.split(' (seed')[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('reports', nargs='+', help='vla-eval --task libero --json files')
    parser.add_argument('--pro', action='store_true',
                        help="also print LIBERO-PRO's layout: clean, object, position (swap), "
                             'semantic (language) and task per base suite')
    args = parser.parse_args(argv)
    try:
        reports = [json.loads(open(path, encoding='utf-8').read()) for path in args.reports]
        rows = combine(reports)
        print(format_rows(rows))
        if args.pro:
            print()
            print(format_pro(rows))
    except (OSError, ValueError, KeyError) as exc:
        parser.exit(2, f'error: {exc}\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
