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


def test_scoring_scale_quick(tmp_path):
    out = _run('scoring_scale.py', '--quick', '--threads', '1', '--sizes', '10,1000,100000',
               '--json', str(tmp_path / 'scores.json'))
    header, *rows = _table(out)
    assert header[:3] == ['implementation', 'N', 'median ms'] and 'floor ms' in header
    assert [r[1] for r in rows if r[0] == 'matrix product'] == ['10', '1,000']
    assert [r[1] for r in rows if r[0] == 'Python loop'] == ['10', '1,000']
    assert 'not applicable, no GPU' in out or 'GPU target' in out
    data = json.loads((tmp_path / 'scores.json').read_text())
    assert data['bandwidth_bytes_per_s'] > 0 and len(data['rows']) == 4


def test_encoder_throughput_quick(tmp_path):
    out = _run('encoder_throughput.py', '--quick', '--threads', '1',
               '--json', str(tmp_path / 'enc.json'))
    header, *rows = _table(out)
    assert header == ['encoder', 'batch', 'ms / batch', 'images/s']
    assert [r[1] for r in rows] == ['1', '4', '1', '4']
    assert rows[0][0].startswith('shipped model vision') and 'ViT' in rows[2][0]
    assert len(json.loads((tmp_path / 'enc.json').read_text())['rows']) == 4


def test_train_throughput_quick(tmp_path):
    out = _run('train_throughput.py', '--quick', '--threads', '1',
               '--json', str(tmp_path / 'train.json'))
    header, *rows = _table(out)
    assert 'samples/s' in header and len(rows) == 1
    row = json.loads((tmp_path / 'train.json').read_text())['rows'][0]
    assert row['batch'] == 16 and row['steps'] == 5 and row['samples_per_s'] > 0
    assert not list(REPO.glob('runs/bench')), 'the bench must not write into runs/'


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
