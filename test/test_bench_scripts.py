"""The bench/ scripts run end to end (in --quick mode) and print the tables they promise.

These are smoke tests: the numbers are the scripts' business (bench/README.md holds them) and
are never asserted here; what is asserted is that each script runs on a machine like CI's,
prints a row for every size it was asked for, and writes JSON that parses.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(script, *args, timeout=180, env=None):
    result = subprocess.run([sys.executable, str(REPO / 'bench' / script), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=timeout,
                            env=env or dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _table(text):
    """Rows of the first Markdown table in ``text`` as lists of cells (header first)."""
    lines = [line for line in text.splitlines() if line.startswith('|')]
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines]
    return [r for r in rows if not all(re.fullmatch(r'-+', c) for c in r)]


QUICK = ('--quick', '--device', 'cpu', '--threads', '1')


def test_scoring_scale_quick(tmp_path):
    # --quick keeps N <= 1e4, so the 1e5 asked for here is dropped, not timed.
    out = _run('scoring_scale.py', *QUICK, '--sizes', '10,1000,100000',
               '--json', str(tmp_path / 'scores.json'))
    header, *rows = _table(out)
    assert header == ['implementation', 'N', 'median ms', 'p95 ms', 'floor ms', 'x floor',
                      'candidates/s']
    for impl in ('matrix product', '[E, N] store', 'Python loop'):
        assert [r[1] for r in rows if r[0] == impl] == ['10', '1,000'], impl
    assert 'GB/s' in out and 'not applicable, no GPU' in out
    data = json.loads((tmp_path / 'scores.json').read_text())
    assert data['bandwidth_bytes_per_s'] > 0 and len(data['rows']) == 6
    assert set(data['rows'][0]) == {'impl', 'n', 'median_ms', 'p95_ms', 'floor_ms', 'x_floor',
                                    'candidates_per_s'}


def test_encoder_throughput_quick(tmp_path):
    out = _run('encoder_throughput.py', *QUICK, '--precision', 'bf16',
               '--json', str(tmp_path / 'enc.json'))
    header, *rows = _table(out)
    assert header == ['encoder', 'batch', 'ms / batch', 'images/s']
    kinds = [(r[0].split(' (')[0], r[1]) for r in rows]
    assert kinds == [('shipped model vision', '1'), ('shipped model vision', '4'),
                     ('shipped model query', '1'), ('tiny ViT', '1'), ('tiny ViT', '4')]
    assert 'tiny ViT stands in for ViT-B/32' in out
    assert 'autocast is CUDA-only, so this ran fp32' in out
    data = json.loads((tmp_path / 'enc.json').read_text())
    assert data['precision'] == 'fp32' and len(data['rows']) == 5
    assert set(data['rows'][0]) == {'encoder', 'batch', 'ms_per_batch', 'images_per_s'}


def test_train_throughput_quick(tmp_path):
    out = _run('train_throughput.py', *QUICK, '--json', str(tmp_path / 'train.json'))
    header, *rows = _table(out)
    assert header[:5] == ['config', 'precision', 'torch threads', 'batch', 'steps']
    assert {'samples/s', 'median ms / step', 'of which data ms'} <= set(header)
    assert [r[:5] for r in rows] == [['train_tabletop.yaml', 'fp32', '1', '16', '5']]
    row = json.loads((tmp_path / 'train.json').read_text())['rows'][0]
    assert row['batch'] == 16 and row['steps'] == 5 and row['threads'] == 1
    assert {'samples_per_s', 'ms_per_step', 'data_ms', 'precision', 'config'} <= set(row)
    assert not list(REPO.glob('runs/bench')), 'the bench must not write into runs/'


def test_train_throughput_under_torchrun_quick(tmp_path):
    out = _run('train_throughput.py', *QUICK, '--world-sizes', '2', '--json',
               str(tmp_path / 'train.json'), timeout=300)
    scaling = json.loads((tmp_path / 'train.json').read_text())['world_sizes']
    assert [(r['world_size'], r['backend'], r['batch'], r['effective_batch'])
            for r in scaling] == [(2, 'gloo', 16, 32)]
    assert scaling[0]['samples_per_s'] > 0
    assert '| processes | backend | threads / process |' in out


def test_node_latency_quick(tmp_path):
    # Same ROS_DOMAIN_ID as the rest of this run (conftest / make test): unique per run.
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix, OMP_NUM_THREADS='1')
    out = _run('node_latency.py', '--quick', '--json', str(tmp_path / 'lat.json'),
               timeout=300, env=env)
    header, *rows = _table(out)
    assert header[:5] == ['node', 'frame', 'sent', 'decided', 'dropped']
    assert [(r[0].split()[0], r[1]) for r in rows] == [
        (impl, size) for size in ('96x96', '640x480') for impl in ('transport', 'fast', 'naive')]
    data = json.loads((tmp_path / 'lat.json').read_text())
    for row in data['rows']:
        assert row['sent'] > 0 and row['decided'] > 0, row
        assert row['node_p50'] > 0 and row['e2e_p50'] > 0
    assert 'naive/fast node p50' in out and 'target, CPU 640x480' in out


def test_query_path_quick(tmp_path):
    """Exports the shipped model to a temporary folder (none is committed) and times every
    backend: the rows, the FLOPs and the measured matrix-product throughput are printed."""
    out = _run('query_path.py', '--quick', '--json', str(tmp_path / 'q.json'), timeout=300)
    header, *rows = _table(out)
    assert header == ['backend', 'instruction', 'calls', 'p50', 'p95', 'MFLOP', 'floor',
                      'x floor']
    assert [(r[0], r[1]) for r in rows] == [
        (b, k) for b in ('torch (training path)', 'torch', 'onnxruntime',
                         'onnxruntime, int8 text') for k in ('cached', 'new')]
    assert 'GFLOP/s' in out and 'target, new instruction' in out
    data = json.loads((tmp_path / 'q.json').read_text())
    assert data['matmul_gflops'] > 0
    assert all(r['p50_ms'] > 0 and r['floor_ms'] > 0 for r in data['rows'])


def test_augmentation_quick(tmp_path):
    """Writes the recorded episode sets, trains 3 steps with and without augmentation and
    prints a row per run with a top-1 per evaluation set."""
    out = _run('augmentation.py', '--quick', '--json', str(tmp_path / 'aug.json'), timeout=300)
    header, *rows = _table(out)
    assert header[:3] == ['augmentation', 'steps', 'train min']
    assert [h.split(' (')[0] for h in header[3:]] == ['held_out', 'appearance_shift',
                                                     'pose_shift', 'both_shifts']
    assert [r[:2] for r in rows] == [['off', '3'], ['on', '3']]
    data = json.loads((tmp_path / 'aug.json').read_text())
    assert data['counts']['train'] == 12 and [r['augment'] for r in data['rows']] == [False, True]


def test_libero_decision_quick(tmp_path):
    import importlib.util

    import pytest
    if importlib.util.find_spec('libero') is None:
        pytest.skip('LIBERO not installed (requirements-libero.txt)')
    out = _run('libero_decision.py', '--quick', '--device', 'cpu', '--threads', '1',
               '--json', str(tmp_path / 'libero.json'),
               env=dict(os.environ, OMP_NUM_THREADS='1', MUJOCO_GL='egl'))
    header, *rows = _table(out)
    assert header == ['row', 'candidates', 'p50', 'p95', 'MFLOP', 'floor']
    assert [r[0] for r in rows] == ['sampled 256 x 1', 'sampled 1024 x 3']
    assert 'image encoder' in out and 'GFLOP/s' in out
    data = json.loads((tmp_path / 'libero.json').read_text())
    assert data['matmul_gflops'] > 0 and len(data['rows']) == 2
