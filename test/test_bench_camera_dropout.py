"""bench/camera_dropout.py runs end to end on a tiny budget and prints its table (a smoke test:
the numbers belong to bench/README.md, never asserted here)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_camera_dropout_bench_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / 'bench' / 'camera_dropout.py'), '--steps', '2',
         '--batch-size', '4', '--eval-samples', '10', '--runs-dir', str(tmp_path / 'runs'),
         '--jobs', '2', '--threads', '1'],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = [[c.strip() for c in line.strip('|').split('|')]
            for line in result.stdout.splitlines() if line.startswith('| ')]
    assert rows[0] == ['model', 'both cameras', 'top removed', 'oblique removed',
                       'instruction only']
    assert [r[0] for r in rows[1:]] == ['shipped model, not fine-tuned',
                                        'fine-tuned, no dropout',
                                        'fine-tuned, camera 0.5 + image 0.1']
    assert all(cell.endswith('%') for r in rows[1:] for cell in r[1:])
