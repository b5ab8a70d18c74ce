"""Simulator + selector as separate processes over DDS, driven by the demo entry point."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('rclpy')

from support.ros import make_tabletop_checkpoint  # noqa: E402
from vla_embedding_ros.selection.selector import ActionSelector  # noqa: E402
from vla_embedding_ros.training.evaluate import replay_streams  # noqa: E402
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


# One 20-episode run is a coarse measure of a success rate, so the test runs stream 0 (the
# `make demo` default) over DDS, checks that the in-process replay makes the node's very
# choices, and measures the target on 50 replayed streams, as `vla-eval --replay-streams 50`
# does (1000 episodes, under a minute). Measured 2026-12-03 with the shipped model: 20/20 on
# stream 0, 100% over the 1000 episodes, every stream at 20/20.
CLOSED_LOOP_FLOOR = 18      # stream 0 over DDS: the demo's default run must reach 18/20
TARGET_RATE = 0.97
STREAMS = 50
STREAMS_AT_TARGET = 48      # of the 50 twenty-episode streams reaching 18/20


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / 'config.json').is_file(),
                    reason=f'the shipped model {SHIPPED} is missing')
def test_shipped_model_closes_the_loop_at_97_percent():
    rc, out = _demo(SHIPPED, 20, 240)
    assert rc == 0, out
    assert 'episodes completed : 20 / 20' in out, out
    line = next(x for x in out.splitlines() if x.startswith('success rate'))
    wins = int(line.split('(')[1].split('/')[0])
    assert wins >= CLOSED_LOOP_FLOOR, out
    # vla-eval --replay-streams measures the loop without DDS: the same 20 episodes decided
    # in-process must make the same choices the node made over DDS.
    # the demo's own line per episode: "... -> CHOSEN, 96 ms" (+ " (expected X)" on a miss)
    over_dds = [(chosen, expected or chosen) for chosen, expected in re.findall(
        r"^\[demo\] episode .* -> (\S+?)(?: \(expected (\S+)\))?, \d+ ms$", out, re.M)]
    selector = ActionSelector.from_pretrained(SHIPPED, device='cpu')
    replayed = [(str(chosen), expected) for chosen, expected, _ in
                replay_demo_episodes(selector, seed=0, episodes=20)]
    assert over_dds == replayed, out

    replay = replay_streams(selector, STREAMS, episodes=20)
    wins_per_stream, rate = replay['wins_per_stream'], replay['success_rate']
    assert wins_per_stream[0] == wins, (wins_per_stream, out)
    at_target = sum(w >= 18 for w in wins_per_stream)
    summary = f'{rate:.1%} over {20 * STREAMS} episodes, per stream {wins_per_stream}'
    assert rate >= TARGET_RATE, summary
    assert at_target >= STREAMS_AT_TARGET, summary
