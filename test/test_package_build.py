"""The package builds with colcon the way a ROS 2 workspace builds it.

colcon must recognise it as ros.ament_python (a bad maintainer email silently turns it into a
plain python package), and the installed files must sit where `ros2 launch` / `ros2 run` and
ament_index look for them.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = 'vla_embedding_ros'
SKIP_DIRS = {'.venv', 'build', 'install', 'log', 'runs', '.git', '.pytest_cache', '.ruff_cache'}

pytest.importorskip('colcon_core', reason='colcon is installed by `make test`')


def _copy_package(dest: Path) -> None:
    def ignore(directory, names):
        return [n for n in names if n in SKIP_DIRS or n.endswith('.egg-info') or n == '__pycache__']
    shutil.copytree(REPO, dest, ignore=ignore)


def _colcon(workspace: Path, *args: str) -> str:
    env = dict(os.environ, COLCON_LOG_PATH=str(workspace / 'log'))
    result = subprocess.run(
        [sys.executable, '-m', 'colcon', *args], cwd=workspace, env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    ws = tmp_path_factory.mktemp('colcon_ws')
    _copy_package(ws / 'src' / PACKAGE)
    _colcon(ws, 'build', '--base-paths', 'src')
    return ws


def test_colcon_recognises_ament_python(workspace):
    listing = _colcon(workspace, 'list', '--base-paths', 'src')
    assert f'{PACKAGE}\t' in listing
    assert '(ros.ament_python)' in listing, listing


def test_share_files_installed_where_ros2_launch_looks(workspace):
    share = workspace / 'install' / PACKAGE / 'share' / PACKAGE
    assert (share / 'package.xml').is_file()
    for launch_file in (REPO / 'launch').glob('*.launch.py'):
        assert (share / 'launch' / launch_file.name).is_file()
    for config_file in [*(REPO / 'config').glob('*.yaml'), *(REPO / 'config').glob('*.xml')]:
        assert (share / 'config' / config_file.name).is_file()
    for model_file in (REPO / 'models' / 'tabletop').glob('*'):
        if model_file.is_file():
            assert (share / 'models' / 'tabletop' / model_file.name).is_file()
    marker = (workspace / 'install' / PACKAGE / 'share' / 'ament_index' / 'resource_index'
              / 'packages' / PACKAGE)
    assert marker.is_file()


def test_executables_installed_where_ros2_run_looks(workspace):
    lib = workspace / 'install' / PACKAGE / 'lib' / PACKAGE
    for exe in ('action_selector', 'tabletop_sim', 'train', 'evaluate'):
        assert (lib / exe).is_file(), f'missing {exe} in {lib}'
        assert os.access(lib / exe, os.X_OK)


def test_ament_index_finds_installed_share(workspace):
    prefix = workspace / 'install' / PACKAGE
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    code = ('from ament_index_python.packages import get_package_share_directory as g;'
            f'print(g("{PACKAGE}"))')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out) == prefix / 'share' / PACKAGE
