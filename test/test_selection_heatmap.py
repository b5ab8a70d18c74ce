"""selection/heatmap.py: the grid of a space's plane, and the score map equal to scoring its
cells as candidates (the shipped grid model with the continuous library; no ROS)."""
from pathlib import Path

import numpy as np
import pytest

from vla_embedding_ros.actions.library import load_library
from vla_embedding_ros.data.tabletop.continuous import CONTINUOUS_SPACE
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.heatmap import (
    option_mask,
    plane_vectors,
    score_map,
    unit_coordinates,
)

ROOT = Path(__file__).resolve().parents[1]


def _vector(option='push_left', x=0.3, y=0.6):
    v = np.zeros(7, np.float32)
    v[CONTINUOUS_SPACE.options.index(option)] = 1
    v[5:] = [x, y]
    return v


def test_plane_vectors_sweep_cell_centres_row_major_and_keep_the_choice():
    grid = plane_vectors(CONTINUOUS_SPACE, _vector(), 4).numpy()
    assert grid.shape == (16, 7)
    assert (grid[:, :5] == _vector()[:5]).all()
    centres = [0.125, 0.375, 0.625, 0.875]
    assert grid[:4, 5].tolist() == centres and (grid[:4, 6] == 0.125).all()   # first row
    assert grid[::4, 6].tolist() == centres and (grid[::4, 5] == 0.125).all()  # first column
    uv = unit_coordinates(CONTINUOUS_SPACE, grid)
    assert uv[5].tolist() == pytest.approx([0.375, 0.375])
    assert option_mask(CONTINUOUS_SPACE, np.stack([_vector('pick'), _vector()]),
                       'pick').tolist() == [True, False]


@pytest.mark.parametrize('kwargs,words', [
    ({'resolution': 1}, 'resolution'), ({'resolution': 1000}, 'resolution'),
    ({'dims': (0, 2)}, 'dims'), ({'vector': np.full(7, np.nan)}, 'non-finite'),
    ({'vector': np.zeros(3)}, '3 values'),
])
def test_bad_requests_are_refused_by_name(kwargs, words):
    args = {'vector': _vector(), 'resolution': 4, 'dims': (0, 1)} | kwargs
    with pytest.raises(ValueError, match=words):
        plane_vectors(CONTINUOUS_SPACE, args['vector'], args['resolution'], args['dims'])


def test_score_map_equals_the_cells_scored_as_candidates():
    selector = ActionSelector.from_pretrained(
        ROOT / 'models' / 'tabletop', ROOT / 'config' / 'tabletop_continuous_actions.yaml',
        device='cpu', top_k=64)
    frame = np.random.default_rng(1).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    instruction = 'push the red cube to the left'
    smap = score_map(selector, frame, instruction, _vector(), resolution=8)
    assert smap.logits.shape == (8, 8) and smap.option == 'push_left' and smap.seconds > 0
    cells = plane_vectors(CONTINUOUS_SPACE, _vector(), 8).numpy()
    direct = selector.select(frame, instruction, candidates=cells)
    by_index = dict(zip(direct.top_indices, direct.top_scores, strict=True))
    flat = smap.logits.reshape(-1)
    for index, logit in by_index.items():
        assert flat[index] == pytest.approx(logit, abs=1e-4)
    grid_only = ActionSelector(selector.model,
                               load_library(ROOT / 'models' / 'tabletop' / 'actions.yaml'))
    with pytest.raises(ValueError, match='space'):
        score_map(grid_only, frame, instruction, _vector())
