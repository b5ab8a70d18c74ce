"""The node programs as a user runs them, without the ROS 2 CLI (issue 30 item 8).

``--help`` prints the parameters and exits 0 (it used to start the node); a selector whose
configure fails ends with the reason and exit status 1 (it used to wait forever for a
``ros2 lifecycle`` nobody sends) unless ``exit_on_configure_failure:=false``; the demo ends,
naming the reason, when its selector cannot configure, and prints one line per episode.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip('rclpy')

from support.ros import make_tabletop_checkpoint  # noqa: E402
from vla_embedding_ros.ros import selector_params  # noqa: E402
from vla_embedding_ros.ros.episode_recorder_node import PARAMETERS as RECORDER  # noqa: E402
from vla_embedding_ros.ros.libero_sim_node import PARAMETERS as LIBERO_SIM  # noqa: E402
from vla_embedding_ros.ros.tabletop_sim_node import PARAMETERS as SIMULATOR  # noqa: E402

PROGRAMS = {   # console script -> (module, its parameter table)
    'vla-action-selector': ('action_selector_node', selector_params.parameter_table()),
    'vla-tabletop-sim': ('tabletop_sim_node', SIMULATOR),
    'vla-episode-recorder': ('episode_recorder_node', RECORDER),
    'vla-libero-sim': ('libero_sim_node', LIBERO_SIM),
}


def _run(cmd, timeout, **kw):
    """Run ``cmd`` in its own session; one still running after ``timeout`` is killed with
    everything it started (the demo's two nodes hold its pipes) and fails the test (the bug
    these tests guard against is a program that never ends)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True,
                            **kw)
    start = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f'{cmd} still running after {timeout} s:\n{out[-2000:]}\n{err[-2000:]}')
    return proc.returncode, out, err, time.monotonic() - start


@pytest.mark.parametrize('program', sorted(PROGRAMS))
def test_help_prints_every_parameter_and_exits_0(program):
    module, table = PROGRAMS[program]
    rc, out, err, _ = _run([sys.executable, '-m', f'vla_embedding_ros.ros.{module}',
                            '--help'], 60)
    assert rc == 0, err
    assert out.startswith(f'usage: {program} '), out[:200]
    text = ' '.join(out.split())
    for name, (default, descriptor) in table.items():
        shown = (str(default).lower() if isinstance(default, bool) else repr(default)
                 if isinstance(default, str) else '[' if isinstance(default, list)
                 else str(default))
        assert re.search(rf'\b{name} \([a-z\[\]]+, default {re.escape(shown)}', text), name
        # the description (its first words: the text is re-wrapped)
        assert ' '.join(descriptor.description.split()[:4]) in text, name
    if program == 'vla-action-selector':
        assert 'exit_on_configure_failure (bool, default true)' in out


def test_help_of_the_installed_console_script_names_it():
    script = shutil.which('vla-action-selector') or os.path.join(
        os.path.dirname(sys.executable), 'vla-action-selector')
    if not os.path.exists(script):
        pytest.skip('vla-action-selector is not installed in this environment')
    rc, out, err, _ = _run([script, '-h', '--ros-args', '-p', 'device:=cpu'], 60)
    assert rc == 0 and out.startswith('usage: vla-action-selector '), err


def test_a_selector_program_whose_configure_fails_exits_1_with_the_reason():
    missing = '/nonexistent/vla_model'
    rc, out, err, took = _run([sys.executable, '-m',
                               'vla_embedding_ros.ros.action_selector_node', '--ros-args',
                               '-p', f'model_path:={missing}', '-p', 'device:=cpu'], 90)
    assert rc == 1, (out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith('vla-action-selector: configure failed: ') and missing in last, err
    assert 'exit_on_configure_failure' in last


def test_a_selector_that_may_wait_stays_unconfigured_until_interrupted():
    cmd = [sys.executable, '-m', 'vla_embedding_ros.ros.action_selector_node', '--ros-args',
           '-p', 'model_path:=/nonexistent/vla_model', '-p', 'exit_on_configure_failure:=false']
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1'), start_new_session=True)
    try:
        seen = ''
        deadline = time.monotonic() + 60
        while 'configure failed' not in seen and time.monotonic() < deadline:
            seen += proc.stderr.readline()
        assert 'configure failed' in seen, seen
        time.sleep(2.0)
        assert proc.poll() is None, 'exited although exit_on_configure_failure is false'
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _demo(*args, timeout):
    return _run([sys.executable, '-m', 'vla_embedding_ros.ros.demo', '--device', 'cpu',
                 *args], timeout)


def test_the_demo_ends_with_the_reason_when_its_selector_cannot_configure():
    # The model exists (the demo checks that itself), the library does not: only the
    # selector's configure finds out. The simulator alone would wait for it forever.
    missing = '/nonexistent/actions.yaml'
    rc, out, err, took = _demo('--episodes', '2', '--library', missing, '--timeout', '240',
                               timeout=120)
    assert rc == 1, (out, err)
    assert took < 90, f'took {took:.0f} s'
    line = [x for x in err.splitlines() if 'action_selector exited early' in x]
    assert line and 'code 1: configure failed: ' in line[0] and missing in line[0], err
    assert 'episodes completed' not in out   # no summary of a run that never started


def test_the_demo_without_a_model_ends_at_once_with_the_reason(tmp_path):
    rc, out, err, took = _demo('--model', '/nonexistent', '--episodes', '1', timeout=60)
    assert rc == 1 and 'no model at /nonexistent' in err, (out, err)


def test_the_demo_prints_one_line_per_episode_then_the_summary(tmp_path):
    # An untrained tiny model: the plumbing of the output, not the success rate.
    ckpt = make_tabletop_checkpoint(tmp_path)
    rc, out, err, _ = _demo('--model', ckpt, '--episodes', '2', '--rate', '20',
                            '--timeout', '90', timeout=150)
    assert rc == 0, (out, err)
    everything = (out + err).splitlines()
    for episode in (1, 2):
        lines = [x for x in everything if re.search(rf'\bepisode +{episode}\b', x)]
        assert len(lines) == 1, lines
        assert re.match(rf"\[demo\] episode +{episode} (ok  |FAIL) '.+' -> .+, \d+ ms$",
                        lines[0]), lines[0]
    assert 'episodes completed : 2 / 2' in out and 'success rate' in out
