"""The shipped default model loads offline and ranks actions far above chance on fresh scenes.

The scenes come from a seed used neither in training (seed 0) nor in evaluation during
training (10007). Thresholds are well above chance (top-1 1.25%, top-5 6.25%) and below the
measured values in models/tabletop/README.md, so they catch a broken model or a broken
loading path, not run-to-run noise.
"""
from pathlib import Path

import pytest

from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.selection.library import ActionLibrary
from vla_embedding_ros.training import metrics
from vla_embedding_ros.training.evaluation import LibraryScorer, tabletop_ranks

SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'tabletop'
UNSEEN_SEED = 424242


@pytest.fixture(scope='module')
def scorer():
    model = VLAModel.from_pretrained(SHIPPED, device='cpu')
    return LibraryScorer(model, ActionLibrary.from_yaml(SHIPPED / 'actions.yaml'))


def test_shipped_model_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir() if p.is_file()}
    assert {'config.json', 'model.safetensors', 'actions.yaml', 'README.md'} <= set(files)
    assert sum(files.values()) <= 20 * 1024 * 1024


def test_shipped_model_is_far_above_chance_on_unseen_scenes(scorer):
    ranks, _ = tabletop_ranks(scorer, 'val', 200, UNSEEN_SEED)
    m = metrics.summarise(ranks)
    assert m['top1'] >= 0.20, m     # 16x chance
    assert m['top5'] >= 0.60, m     # 10x chance


def test_image_matters_to_the_shipped_model(scorer):
    seen, _ = tabletop_ranks(scorer, 'val', 200, UNSEEN_SEED)
    blind, _ = tabletop_ranks(scorer, 'val', 200, UNSEEN_SEED, blank_images=True)
    assert metrics.summarise(seen)['top1'] > 2 * metrics.summarise(blind)['top1']
