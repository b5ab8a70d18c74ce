"""The two requirement files agree: a ROS machine gets the same versions as `make test`."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(name):
    lines = (REPO / name).read_text().splitlines()
    pairs = [line.split('==') for line in lines if line and not line.startswith('#')]
    return {package.lower(): version for package, version in pairs}


def test_every_requirement_is_pinned_and_ros_file_matches():
    full, ros = pins('requirements.txt'), pins('requirements-ros.txt')
    assert full['torch'] == '2.13.0'  # the local CPU wheel; unpinned pulls GBs of CUDA
    for package, version in ros.items():
        assert full.get(package) == version, package
    assert not any(p.startswith('ros-') for p in ros), 'ROS comes from the ROS install'
