"""The two requirement files agree: a ROS machine gets the same versions as `make test`."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins(name):
    lines = (REPO / name).read_text().splitlines()
    # './packaging/...': a local path (the opencv-python shim), pinned by being in the repo
    pairs = [line.split('==') for line in lines
             if line and not line.startswith(('#', './'))]
    return {package.lower(): version for package, version in pairs}


def test_every_requirement_is_pinned_and_ros_file_matches():
    full, ros = pins('requirements.txt'), pins('requirements-ros.txt')
    assert full['torch'] == '2.13.0'  # the local CPU wheel; unpinned pulls GBs of CUDA
    for package, version in ros.items():
        assert full.get(package) == version, package
    assert not any(p.startswith('ros-') for p in ros), 'ROS comes from the ROS install'


# package.xml's apt keys and the pip names of the same packages.
APT_TO_PIP = {'python3-numpy': {'numpy'}, 'python3-opencv': {'opencv-python',
              'opencv-python-headless', 'opencv-contrib-python'}, 'python3-yaml': {'pyyaml'},
              'python3-pil': {'pillow'}, 'python3-matplotlib': {'matplotlib'}}


def test_ros_requirements_pin_nothing_apt_provides():
    """On Ubuntu with ROS 2 these come from apt (package.xml); a pip pin of another version in
    a --system-site-packages venv shadows what ROS was built against."""
    import xml.etree.ElementTree as ET
    declared = {e.text.strip() for e in ET.parse(REPO / 'package.xml').getroot()
                if e.tag in ('depend', 'exec_depend')}
    from_apt = set().union(*(APT_TO_PIP.get(key, set()) for key in declared))
    assert {'numpy', 'pyyaml', 'pillow'} <= from_apt    # the table knows package.xml's keys
    clashes = from_apt & set(pins('requirements-ros.txt'))
    assert clashes == set(), f'pinned in requirements-ros.txt but installed by apt: {clashes}'
