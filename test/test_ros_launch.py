"""Launch files: generate_launch_description() declares the documented arguments.

Needs the ROS 2 ``launch`` / ``launch_ros`` packages, which are not on PyPI: skipped without
them (e.g. in the pip-only venv), run on a machine with a ROS 2 install.
"""
import importlib.util
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / 'launch'


def _arguments(filename):
    launch = pytest.importorskip('launch', reason='ROS 2 launch is not installed (not on PyPI)')
    if not hasattr(launch, 'LaunchDescription'):  # only this repo's launch/ folder imported
        pytest.skip('ROS 2 launch is not installed (not on PyPI)')
    pytest.importorskip('launch_ros', reason='ROS 2 launch_ros is not installed')
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location(filename.replace('.', '_'), LAUNCH / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    return {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}


def test_action_selector_launch_arguments():
    assert {'params_file', 'model_path', 'device', 'namespace', 'image_topic',
            'autostart'} <= _arguments('action_selector.launch.py')


def test_tabletop_demo_launch_arguments():
    assert {'model_path', 'device', 'episodes', 'use_sim_time'} <= \
        _arguments('tabletop_demo.launch.py')
