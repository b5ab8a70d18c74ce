"""The LIBERO adapter imports without LIBERO, and asking for LIBERO then says how to get it."""
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Hide libero, robosuite and mujoco from imports, as on a machine without them.
SCRIPT = textwrap.dedent('''
    import importlib.abc, sys
    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split('.')[0] in ('libero', 'robosuite', 'mujoco'):
                raise ModuleNotFoundError(f"No module named {name!r}")
    sys.meta_path.insert(0, Hide())
    import vla_embedding_ros.libero as L
    from vla_embedding_ros.libero import (camera, demonstrations, env, episode, evaluation,
                                          executor, expert, make_dataset, suites)
    assert suites.step_budget('libero_object_swap') == 280
    for ask in (suites.suite_names, lambda: suites.task('libero_spatial', 0),
                lambda: env.LiberoEnv(None)):
        try:
            ask()
        except L.LiberoNotInstalled as exc:
            assert 'pip install -r requirements-libero.txt' in str(exc), exc
        else:
            raise AssertionError('no LiberoNotInstalled')
    print('ok')
''')


def test_package_imports_without_libero_and_names_the_fix():
    done = subprocess.run([sys.executable, '-c', SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'ok'
