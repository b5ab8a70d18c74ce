"""The shipped LIBERO model (models/libero, config/train_libero.yaml) loads offline, fits the
size budget, and points near the expert's pick on LIBERO scenes it never saw: seeded random
placements of seed 2 (training used 0, validation 1; never an official initial state). The
floors sit well under what it measured on these scenes (see below), so they catch a broken
model, search or camera path, not noise."""
from pathlib import Path

import numpy as np
import pytest

from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.sampling import SamplingConfig

SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'libero'
SCENES = [('libero_spatial', 0), ('libero_spatial', 3), ('libero_spatial', 7),
          ('libero_object', 0), ('libero_object', 4), ('libero_object', 9)]


def test_shipped_libero_model_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in SHIPPED.iterdir() if p.is_file()}
    assert {'config.json', 'model.safetensors', 'actions.yaml', 'README.md'} <= set(files)
    assert sum(files.values()) <= 20 * 1024 * 1024
    selector = ActionSelector.from_pretrained(SHIPPED, device='cpu')
    assert selector.library.space.parameter_names == ['pick', 'place', 'u', 'v']


def test_it_points_near_the_experts_pick_on_unseen_placements():
    pytest.importorskip('libero.libero', reason='LIBERO not installed (requirements-libero.txt)')
    from vla_embedding_ros.libero.demonstrations import Job, reset_demonstration
    from vla_embedding_ros.libero.env import LiberoEnv
    from vla_embedding_ros.libero.expert import ExpertPolicy
    from vla_embedding_ros.libero.suites import task
    selector = ActionSelector.from_pretrained(SHIPPED, device='cpu')
    errors = []
    for suite, index in SCENES:
        with LiberoEnv(task(suite, index)) as env:
            reset_demonstration(env, Job(suite, index, 0), 2)
            env.settle()
            frame = env.render()
            # as deployed: the robot gives the primitive, the model chooses where
            chosen = selector.select_sampled(frame.rgb, env.instruction, SamplingConfig(seed=0),
                                             choice='pick')
            expert = ExpertPolicy(env)(frame, env.instruction, 'pick')
        assert chosen.vector[0] > chosen.vector[1]
        cal = frame.calibration
        at = [frame.lift(*cal.normalised_to_pixel(*p)) for p in (chosen.vector[2:], expert)]
        errors.append(100 * float(np.hypot(*(at[0] - at[1])[:2])))
    # measured (2026-12-07): the fourth model 0.46, 9.1, 7.0 (other bowls), 0.68, 0.46, 0.18 cm,
    # median 0.57 cm; the second model 0.55, 0.57, 6.3, 1.7, 13.7 (another object), 0.28 cm,
    # median 1.1 cm
    assert np.median(errors) < 6.0, errors
