"""Lint in the ament_flake8 spirit: fails on real findings (ruff, pyflakes + pycodestyle)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which('ruff', path=str(Path(sys.executable).parent)) or shutil.which('ruff')
    if ruff is None:
        pytest.skip('ruff is installed by `make test`')
    targets = [p for p in ('vla_embedding_ros', 'test', 'bench', 'launch', 'setup.py')
               if (REPO / p).exists()]
    result = subprocess.run([ruff, 'check', *targets], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
