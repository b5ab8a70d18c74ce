"""The continuous tabletop task and its counter-examples: placement, judging, negatives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vla_embedding_ros.data.tabletop import ACTION_NAMES, SHAPES, action_name
from vla_embedding_ros.data.tabletop.continuous import (
    CONTINUOUS_SPACE,
    PUSH_DISTANCE,
    ContinuousTabletopGenerator,
    action_vector,
    apply_vector,
    continuous_library,
    position_error,
)
from vla_embedding_ros.data.tabletop.scene import MARGIN_PX, render
from vla_embedding_ros.data.tabletop.splits import HELDOUT_PAIRS
from vla_embedding_ros.training.counter_examples import sample_counter_examples
from vla_embedding_ros.training.sources import ContinuousTabletopSource


@pytest.fixture(scope='module')
def val_samples():
    return list(ContinuousTabletopGenerator(split='val', seed=3).samples(200))


def test_objects_lie_anywhere_apart_and_the_demonstration_succeeds(val_samples):
    step = 96 / 4
    offsets = []
    for s in val_samples:
        objs = s.scene.objects
        for i, a in enumerate(objs):
            for b in objs[i + 1:]:
                gap = np.hypot(*np.subtract(a.center, b.center)) - a.size - b.size
                assert gap >= 2 * MARGIN_PX - 1e-6
        offsets += [((o.center[0] + 0.5) % step) / step for o in objs]
        assert s.judge(s.vector)
        assert position_error(s.target, s.vector, 96) == pytest.approx(0, abs=1e-4)
    # Not cell-aligned: positions within a cell are spread, not all at its centre.
    assert np.std(offsets) > 0.2
    assert {s.target.shape for s in val_samples} == set(SHAPES)
    assert not any(s.target.pair in HELDOUT_PAIRS for s in val_samples)
    rendered = render(val_samples[0].scene)
    assert rendered.shape == (96, 96, 3)


def test_success_needs_the_point_on_the_target_and_the_asked_primitive(val_samples):
    s = next(x for x in val_samples if x.primitive == 'pick' and len(x.others()) >= 1)
    r, (cx, cy) = s.target.size, s.target.center
    inside = action_vector('pick', (cx + 0.9 * r, cy), 96)
    outside = action_vector('pick', (cx + 1.1 * r, cy), 96)
    other = action_vector('pick', s.others()[0].center, 96)
    wrong_primitive = action_vector('push_left', (cx, cy), 96)
    assert s.judge(inside) and not s.judge(wrong_primitive) and not s.judge(other)
    assert not s.judge(outside)   # just off the object
    assert position_error(s.target, outside, 96) == pytest.approx(1.1, abs=1e-3)
    new, ok = apply_vector(s.scene, inside)
    assert ok and new.find(*s.target.pair).lifted and not s.target.lifted


def test_a_push_moves_the_object_a_cell_unless_blocked():
    gen = ContinuousTabletopGenerator(split='val', seed=11)
    moved = blocked = 0
    for s in gen.samples(100):
        if s.primitive == 'pick':
            continue
        new, ok = apply_vector(s.scene, s.vector)
        assert ok
        before, after = np.array(s.target.center), np.array(new.find(*s.target.pair).center)
        shift = np.abs(after - before).sum()
        if shift:
            assert shift == pytest.approx(PUSH_DISTANCE * 96)
            moved += 1
        else:
            blocked += 1
    assert moved > 10 and blocked > 0


def test_the_grid_actions_are_points_of_the_space_and_miss_off_centre_objects():
    library = continuous_library()
    assert library.names == list(ACTION_NAMES) and library.space == CONTINUOUS_SPACE
    samples = list(ContinuousTabletopGenerator(split='val', seed=5).samples(200))
    hits = [s.judge(library.params()[library.index(action_name(s.primitive, *s.target.cell))])
            for s in samples]
    # Even the right cell's centre often misses an object placed anywhere in it.
    assert 0.1 < np.mean(hits) < 0.8


def test_counter_examples_cover_the_space_and_never_teach_a_success_as_wrong():
    source = ContinuousTabletopSource('train', 0, 96, [3, 6], 0, CONTINUOUS_SPACE, 255, 0.3)
    images, instructions, examples = source.next_continuous_batch(16)
    assert images.shape == (16, 1, 96, 96, 3) and len(instructions) == 16
    # Each demonstration sees its positive and K = 255 negatives: its own structured ones and
    # the batch's shared uniform ones.
    assert examples.own.shape[1] - 1 + examples.shared.shape[0] == 255
    assert examples.flat().shape == (16 * examples.own.shape[1] + examples.shared.shape[0], 7)
    _, _, targets = source.next_demonstrations(32)
    examples = sample_counter_examples(CONTINUOUS_SPACE, targets, 255,
                                       torch.Generator().manual_seed(1))
    own = examples.own
    choice, xy = CONTINUOUS_SPACE.split(own)
    assert torch.equal(own[..., :5].sum(-1), torch.ones(own.shape[:2]))
    assert xy.min() >= 0 and xy.max() <= 1
    same = (choice == choice[:, :1])[:, 1:]
    centre = targets.vectors[:, None, 5:]
    radii = (xy - centre).norm(dim=-1)[:, 1:] / targets.radii[:, None]
    near_miss = same & (radii >= 1.19) & (radii <= 4.01)
    to_others = (xy[:, 1:, None] - targets.others[:, None]).norm(dim=-1) \
        / targets.radii[:, None, None] <= 0.31
    on_other = same & (to_others & targets.others_mask[:, None]).any(-1)
    right_place = ~same & (radii <= 0.31)
    # Near misses, other objects and the right place with another primitive.
    assert near_miss.float().mean() > 0.35
    assert on_other.float().mean() > 0.25
    assert right_place.float().mean() > 0.25
    # The uniform ones cover the table and every primitive.
    s_choice, s_xy = CONTINUOUS_SPACE.split(examples.shared)
    assert set(s_choice.tolist()) == set(range(5)) and s_xy.std(0).min() > 0.2
    # The positive lies on the object; a negative that does is masked, never taught as wrong.
    assert ((xy[:, 0] - targets.vectors[:, 5:]).norm(dim=-1) <= 0.3 * targets.radii + 1e-6).all()
    assert examples.own_valid[:, 0].all()
    assert not (examples.own_valid[:, 1:] & same & (radii <= 1.0)).any()


def test_counter_examples_mask_negatives_that_would_succeed():
    from vla_embedding_ros.training.counter_examples import ContinuousTargets
    vectors = torch.tensor([[1, 0, 0, 0, 0, 0.5, 0.5]], dtype=torch.float32)
    targets = ContinuousTargets(vectors, torch.tensor([0.4]), torch.zeros(1, 1, 2),
                                torch.zeros(1, 1, dtype=torch.bool))
    examples = sample_counter_examples(CONTINUOUS_SPACE, targets, 400,
                                       torch.Generator().manual_seed(0))
    choice, xy = CONTINUOUS_SPACE.split(examples.shared)
    would_succeed = (choice == 0) & ((xy - 0.5).norm(dim=-1) <= 0.4)
    assert would_succeed.any()                # a big target: some uniform ones land on it
    assert torch.equal(examples.shared_valid[0], ~would_succeed)


def test_the_loss_prefers_a_query_that_scores_the_positive_highest():
    from vla_embedding_ros.training.counter_examples import counter_example_loss
    source = ContinuousTabletopSource('train', 2, 96, None, 0, CONTINUOUS_SPACE, 31, 0.3)
    _, _, examples = source.next_continuous_batch(4)
    embedded = torch.nn.functional.normalize(torch.randn(examples.flat().shape[0], 8), dim=-1)
    own = examples.own.shape[1]
    aligned = embedded[torch.arange(4) * own]         # each query = its positive's embedding
    opposite = -aligned
    scale = torch.tensor(2.0)
    assert counter_example_loss(aligned, embedded, examples, scale) < \
        counter_example_loss(opposite, embedded, examples, scale)


def test_the_source_resumes_to_the_same_batches():
    a = ContinuousTabletopSource('train', 4, 96, None, 0, CONTINUOUS_SPACE, 31, 0.3)
    a.next_continuous_batch(3)
    state = a.state_dict()
    first = a.next_continuous_batch(3)
    b = ContinuousTabletopSource('train', 4, 96, None, 0, CONTINUOUS_SPACE, 31, 0.3)
    b.load_state_dict(state)
    second = b.next_continuous_batch(3)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]
    assert torch.equal(first[2].own, second[2].own)
    assert torch.equal(first[2].shared, second[2].shared)
