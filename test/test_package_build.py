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


ROS_EXECUTABLES = ('action_selector', 'tabletop_sim', 'episode_recorder', 'instruct',
                   'libero_sim')
GENERIC_NAMES = ('train', 'evaluate', 'demo', 'make_dataset', 'bag_to_dataset',
                 *ROS_EXECUTABLES)


def test_executables_installed_where_ros2_run_looks(workspace):
    lib = workspace / 'install' / PACKAGE / 'lib' / PACKAGE
    for exe in (*ROS_EXECUTABLES, 'vla-train', 'vla-eval', 'vla-dds-profile'):
        assert (lib / exe).is_file(), f'missing {exe} in {lib}'
        assert os.access(lib / exe, os.X_OK)
    for exe in ('train', 'evaluate', 'demo', 'make_dataset'):
        assert not (lib / exe).exists(), exe


def test_a_pip_install_puts_only_prefixed_names_on_path():
    """`make test`'s venv is a pip (editable) install: its bin/ is what users get on PATH."""
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / 'vla-train').is_file() and (bin_dir / 'vla-action-selector').is_file()
    clashes = [name for name in GENERIC_NAMES if (bin_dir / name).exists()]
    assert clashes == [], f'generic names on PATH: {clashes}'
    profile = subprocess.run([str(bin_dir / 'vla-dds-profile')], capture_output=True,
                             text=True, check=True).stdout.strip()
    assert Path(profile).is_file() and profile.endswith('fastdds_large_frames.xml')


def test_the_ros_executables_run_their_nodes():
    for exe in ROS_EXECUTABLES:
        text = (REPO / 'scripts' / exe).read_text()
        assert text.startswith('#!/usr/bin/env python3') and os.access(REPO / 'scripts' / exe,
                                                                      os.X_OK)
        module = text.split('from ')[1].split(' import')[0]
        assert (REPO / (module.replace('.', '/') + '.py')).is_file(), module


def test_ament_index_finds_installed_share(workspace):
    prefix = workspace / 'install' / PACKAGE
    env = dict(os.environ, AMENT_PREFIX_PATH=str(prefix))
    code = ('from ament_index_python.packages import get_package_share_directory as g;'
            f'print(g("{PACKAGE}"))')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out) == prefix / 'share' / PACKAGE
