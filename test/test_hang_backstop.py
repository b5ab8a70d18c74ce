"""A hang that holds the GIL still ends as a named failure: pytest-timeout's report needs the
GIL, so support/hangs.py arms faulthandler's C watchdog behind it (a real pytest run in a
subprocess, its test holding the GIL in one C call)."""
import os
import subprocess
import sys
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent


def test_a_test_holding_the_gil_is_named_and_ends_the_run(tmp_path):
    (tmp_path / 'conftest.py').write_text(
        f'import sys\nsys.path.insert(0, {str(SUPPORT)!r})\npytest_plugins = ["support.hangs"]\n')
    (tmp_path / 'test_gil.py').write_text(
        'def test_holds_the_gil():\n'
        '    sum(range(10 ** 15))   # one C call: the GIL is never released\n')
    env = dict(os.environ, VLA_TEST_HANG_BACKSTOP_S='2')
    run = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'no:cacheprovider', '-q',
                          '-o', 'timeout=1', '-o', 'timeout_method=thread', str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert 'Timeout (0:00:03)!' in run.stderr
    assert 'test_holds_the_gil' in run.stderr and 'test_gil.py' in run.stderr
