"""``python -m vla_embedding_ros.libero.report``: several evaluation reports (sampling seeds)
become one row per suite and policy with the mean and spread of success."""
import json

import pytest

from vla_embedding_ros.libero.report import combine, format_pro, format_rows, main


def _report(seed, rate, pick=None, policy='model m', placement='official',
            suite_name='libero_spatial'):
    suite = {'success_rate': rate, 'episodes': 500}
    if pick is not None:
        suite['point_error_cm'] = {'pick': {'median': pick, 'mean': 2 * pick, 'n': 500}}
    return {'policy': policy, 'seed': seed, 'placement': placement,
            'suites': {suite_name: suite}}


def test_seeds_of_one_policy_make_one_row_with_their_mean_and_spread():
    rows = combine([_report(0, 0.90, 1.0), _report(1, 0.96, 3.0), _report(2, 0.93, 2.0),
                    _report(0, 0.10, policy='random (seed 0)')])
    model = rows[('libero_spatial', 'model m', 'official')]
    assert model['rates'] == [0.90, 0.96, 0.93] and model['seeds'] == [0, 1, 2]
    table = format_rows(rows)
    assert ('| libero_spatial | model m | official | 3 (0, 1, 2) | 1500 | 93.0% | 90.0-96.0 | '
            '2.0 | - |') in table
    assert '| libero_spatial | random (seed 0) | official | 1 (0) | 500 | 10.0% |' in table


def test_random_placements_stay_apart_from_the_official_states(tmp_path, capsys):
    paths = []
    for i, report in enumerate([_report(0, 0.5), _report(0, 0.7, placement='random:1')]):
        paths.append(tmp_path / f'{i}.json')
        paths[-1].write_text(json.dumps(report))
    assert main([str(p) for p in paths]) == 0
    out = capsys.readouterr().out
    assert '| official | 1 (0) | 500 | 50.0% |' in out
    assert '| random:1 | 1 (0) | 500 | 70.0% |' in out
    (tmp_path / 'bad.json').write_text('{')
    with pytest.raises(SystemExit) as exited:
        main([str(tmp_path / 'bad.json')])
    assert exited.value.code == 2


def test_libero_pro_variants_line_up_under_their_base_suite():
    rows = combine([_report(0, 0.90), _report(1, 0.80),
                    _report(0, 0.40, suite_name='libero_spatial_swap'),
                    _report(0, 0.25, suite_name='libero_spatial_task'),
                    _report(0, 0.70, suite_name='libero_object_lan'),
                    _report(0, 0.99, suite_name='libero_spatial_swap', placement='random:1'),
                    _report(0, 0.05, policy='random (seed 0)', suite_name='libero_object_lan')])
    table = format_pro(rows)
    assert '| libero_spatial | model m | 0.85 (1000) | - | 0.40 (500) | - | 0.25 (500) |' in table
    assert '| libero_object | model m | - | - | - | 0.70 (500) | - |' in table
    assert '| libero_object | random | - | - | - | 0.05 (500) | - |' in table
    assert '0.99' not in table      # random placements are not LIBERO-PRO's states
