"""The Makefile's install (issue 30 item 12): PIP_EXTRA_INDEX adds PyTorch's CPU index (or any
other) to pip, the default never contacts one, pip's progress is not hidden, and the README
quick start says why and how. Read with ``make -n`` (prints the commands, runs none)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CPU_INDEX = 'https://download.pytorch.org/whl/cpu'

pytestmark = pytest.mark.skipif(shutil.which('make') is None, reason='make not installed')


def install_commands(*make_args) -> list[str]:
    out = subprocess.run(['make', '-n', '-B', 'venv', *make_args], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if 'pip install' in line]


def test_the_default_install_names_no_extra_index_and_shows_progress():
    commands = install_commands()
    assert any('-r requirements.txt' in c for c in commands)
    for command in commands:
        assert '--extra-index-url' not in command and '--index-url' not in command
        assert '--quiet' not in command and ' -q' not in command


def test_pip_extra_index_reaches_the_requirements_install():
    commands = install_commands(f'PIP_EXTRA_INDEX={CPU_INDEX}')
    requirements = [c for c in commands if '-r requirements.txt' in c]
    assert requirements and f'--extra-index-url {CPU_INDEX}' in requirements[0]


def test_the_quick_start_says_how_to_get_the_cpu_build():
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    quick_start = readme.split('## How it works')[0]
    assert 'torch==2.13.0' in quick_start
    assert f'make demo PIP_EXTRA_INDEX={CPU_INDEX}' in quick_start
    assert 'torch==2.13.0' in (ROOT / 'requirements.txt').read_text()
