"""Simulator + selector as separate processes over DDS, driven by the demo entry point."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')

from test_ros_support import make_tabletop_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / 'models' / 'tabletop'


def _demo(model, episodes, timeout, *extra):
    cmd = [sys.executable, '-m', 'vla_embedding_ros.ros.demo', '--episodes', str(episodes),
           '--model', str(model), '--device', 'cpu', '--timeout', str(timeout), *extra]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout + 40)
    finally:  # never leave a demo (and its two children) behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out


def test_demo_runs_episodes_across_processes_and_reports(tmp_path):
    # An untrained tiny model: this checks the plumbing (processes, remaps, results, summary),
    # not the success rate.
    ckpt = make_tabletop_checkpoint(tmp_path)
    rc, out = _demo(ckpt, 3, 60, '--rate', '20')
    assert rc == 0, out
    assert 'episodes completed : 3 / 3' in out, out
    assert 'success rate' in out and 'end-to-end latency : p50' in out
    assert re.search(r'frames +: received \d+, processed \d+, dropped \d+', out), out
    assert out.count('[demo] episode') == 3


def test_demo_fails_without_a_model(tmp_path):
    rc, out = _demo(tmp_path / 'nothing', 1, 5)
    assert rc == 1 and 'no model at' in out


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / 'config.json').is_file(),
                    reason=f'the shipped model {SHIPPED} is missing')
@pytest.mark.xfail(strict=True, reason=(
    'known gap, issue 4 stays open: the shipped model (88.3% top-1 on val) succeeds in 17 of '
    '20 closed-loop episodes, measured 2026-11-24; the target is 18. strict: a model that '
    'reaches it turns this into a failure so the marker gets removed'))
def test_shipped_model_succeeds_in_90_percent_of_20_episodes():
    rc, out = _demo(SHIPPED, 20, 240)
    assert rc == 0, out
    line = next(x for x in out.splitlines() if x.startswith('success rate'))
    wins, total = line.split('(')[1].rstrip(')').split('/')
    assert int(total) == 20, out
    assert int(wins) >= 18, out
