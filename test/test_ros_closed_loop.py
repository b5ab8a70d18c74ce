"""Simulator + selector as separate processes over DDS, driven by the demo entry point."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')

from test_ros_support import make_tabletop_checkpoint  # noqa: E402

from vla_embedding_ros.selection.selector import ActionSelector  # noqa: E402
from vla_embedding_ros.training.evaluation import replay_demo_episodes  # noqa: E402

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


# The shipped model is right on ~90% of val samples, so over 20 closed-loop episodes it lands
# around the 18/20 target, not safely above it (measured 2026-12-03 over seeds 0-4 of the
# episode stream: 17, 19, 19, 18, 17). The floor catches a broken loop (a model that does not
# load, frames that never arrive, actions the simulator does not apply, episodes that time
# out: all far below it) without flaking on that spread; the 90% target is reported as an
# expected failure until a model clears it.
CLOSED_LOOP_FLOOR = 15
CLOSED_LOOP_TARGET = 18


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / 'config.json').is_file(),
                    reason=f'the shipped model {SHIPPED} is missing')
def test_shipped_model_closes_the_loop_over_20_episodes():
    rc, out = _demo(SHIPPED, 20, 240)
    assert rc == 0, out
    assert 'episodes completed : 20 / 20' in out, out
    line = next(x for x in out.splitlines() if x.startswith('success rate'))
    wins = int(line.split('(')[1].split('/')[0])
    # vla-eval --replay-streams predicts this run without DDS: the same 20 episodes decided
    # in-process must make the same choices the node made over DDS.
    over_dds = re.findall(r'chose (\S+) \(expected (\S+)\)', out)
    selector = ActionSelector.from_pretrained(SHIPPED, device='cpu')
    replayed = [(str(chosen), expected) for chosen, expected, _ in
                replay_demo_episodes(selector, seed=0, episodes=20)]
    assert over_dds == replayed, out
    assert wins >= CLOSED_LOOP_FLOOR, out
    if wins < CLOSED_LOOP_TARGET:
        pytest.xfail(f'known gap, issue 4: {wins}/20 closed-loop successes, target '
                     f'{CLOSED_LOOP_TARGET}/20 (90%); the shipped model is ~88-91% top-1')
