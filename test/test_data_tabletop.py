"""Tabletop generator: determinism, rendering, grounding, splits and the simulator's actions."""
import hashlib
import itertools
import re

import numpy as np
import pytest

from vla_embedding_ros.data.tabletop import (
    COLORS,
    HELDOUT_PAIRS,
    HELDOUT_TEMPLATES,
    PRIMITIVES,
    SHAPE_WORDS,
    SHAPES,
    SPLIT_NAMES,
    TRAIN_TEMPLATES,
    Goal,
    Scene,
    SceneObject,
    TabletopConfig,
    TabletopGenerator,
    action_index,
    apply_action,
    draw_object,
    judge,
    parse_action_name,
    render,
)
from vla_embedding_ros.data.tabletop.language import (
    COLOR_WORDS,
    REWORDED_COLOR_WORDS,
    REWORDED_SHAPE_WORDS,
    REWORDED_TEMPLATES,
    REWORDED_VERBS,
    make_instruction,
    phrasing_pool,
    reworded_words,
    template_pattern,
    training_vocabulary,
    vocabulary,
)
from vla_embedding_ros.data.tabletop.scene import RGB, cell_size
from vla_embedding_ros.data.tabletop.splits import ALL_PAIRS

WORD_TO_SHAPE = {w: s for table in (SHAPE_WORDS, REWORDED_SHAPE_WORDS)
                 for s, words in table.items() for w in (s, *words)}
WORD_TO_COLOR = {w: c for table in (COLOR_WORDS, REWORDED_COLOR_WORDS)
                 for c, words in table.items() for w in (c, *words)}


def _patterns(templates):
    return [template_pattern(t) for group in templates.values() for t in group]


def _referred(instruction):
    """(colour, shape) named by an instruction, read from its words alone."""
    words = re.findall(r'[a-z]+', instruction)
    colors = [WORD_TO_COLOR[w] for w in words if w in WORD_TO_COLOR]
    shapes = [WORD_TO_SHAPE[w] for w in words if w in WORD_TO_SHAPE]
    assert len(colors) == 1 and len(shapes) == 1, instruction
    return colors[0], shapes[0]


def _mask(obj, size, full=False):
    """Pixels the object touches at all (or, with ``full``, covers completely)."""
    canvas = np.zeros((size, size), np.uint8)
    draw_object(canvas, obj, color=(255,))
    return canvas == 255 if full else canvas > 0


def test_same_seed_same_samples_and_other_seed_differs():
    a = list(TabletopGenerator(seed=7).samples(20))
    b = list(TabletopGenerator(seed=7).samples(20))
    c = list(TabletopGenerator(seed=8).samples(20))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.image, y.image)
        assert (x.instruction, x.action_name) == (y.instruction, y.action_name)
    assert sum(np.array_equal(x.image, z.image) for x, z in zip(a, c, strict=True)) == 0
    # batch() draws the same stream as sample().
    images, texts, indices = TabletopGenerator(seed=7).batch(20)
    assert images.dtype == np.uint8 and indices.dtype == np.int64
    assert np.array_equal(images, np.stack([s.image for s in a]))
    assert texts == [s.instruction for s in a]
    assert indices.tolist() == [s.action_index for s in a]


@pytest.mark.parametrize('size', [64, 96, 128])
def test_image_shape_dtype_and_rerender(size):
    gen = TabletopGenerator(TabletopConfig(image_size=size), seed=1)
    sample = gen.sample()
    assert sample.image.shape == (size, size, 3) and sample.image.dtype == np.uint8
    # A scene re-renders identically from its own noise seed, and at another resolution.
    assert np.array_equal(render(sample.scene), render(sample.scene))
    assert render(sample.scene, TabletopConfig(image_size=2 * size)).shape == (2 * size,) * 2 + (3,)


def test_objects_stay_in_their_own_cells_without_overlap():
    for split in ('train', 'clutter'):
        gen = TabletopGenerator(split=split, seed=2)
        for sample in gen.samples(100):
            size, step = sample.scene.image_size, cell_size(sample.scene.image_size)
            cells = [o.cell for o in sample.scene.objects]
            assert len(set(cells)) == len(cells)
            occupied = np.zeros((size, size), bool)
            for obj in sample.scene.objects:
                mask = _mask(obj, size)
                assert mask.sum() > 20, obj  # visible, not a speck
                ys, xs = np.nonzero(mask)
                row, col = obj.cell
                assert xs.min() >= col * step and xs.max() < (col + 1) * step, obj
                assert ys.min() >= row * step and ys.max() < (row + 1) * step, obj
                assert not (occupied & mask).any()
                occupied |= mask


def test_colours_are_recognisable_in_rendered_pixels():
    """Every object's median pixel colour is nearest its own reference chromaticity."""
    ref = {c: np.array(v, float) / sum(v) for c, v in RGB.items()}
    gen = TabletopGenerator(TabletopConfig(image_size=64), seed=3)
    checked = 0
    for sample in gen.samples(150):
        for obj in sample.scene.objects:
            pixels = sample.image[_mask(obj, 64, full=True)].astype(float)
            rgb = np.median(pixels, axis=0) + 1e-6
            chroma = rgb / rgb.sum()
            guess = min(ref, key=lambda c: np.linalg.norm(ref[c] - chroma))
            assert guess == obj.color, (obj, rgb)
            checked += 1
    assert checked > 300


@pytest.mark.parametrize('split', SPLIT_NAMES)
def test_ground_truth_is_the_referred_objects_cell(split):
    for sample in TabletopGenerator(split=split, seed=4).samples(150):
        pair = _referred(sample.instruction)
        matches = [o for o in sample.scene.objects if o.pair == pair]
        assert len(matches) == 1  # the instruction can mean only one object
        primitive, row, col = parse_action_name(sample.action_name)
        assert primitive == sample.primitive and sample.template.startswith(primitive + '/')
        assert matches[0].cell == (row, col) and matches[0] is sample.target
        assert sample.action_index == action_index(sample.action_name)
        assert sample.judge(sample.action_name)
        other_prim = PRIMITIVES[(PRIMITIVES.index(primitive) + 1) % len(PRIMITIVES)]
        assert not judge(sample, f'{other_prim}_r{row}_c{col}')
        for obj in sample.scene.objects:
            if obj is not sample.target:
                assert not judge(sample, f'{primitive}_r{obj.cell[0]}_c{obj.cell[1]}')


def test_distractors_often_share_colour_or_shape_with_the_target():
    samples = list(TabletopGenerator(seed=5).samples(400))
    confusable = sum(any(o is not s.target and (o.color == s.target.color
                                                or o.shape == s.target.shape)
                         for o in s.scene.objects) for s in samples)
    assert confusable / len(samples) > 0.5


def test_unseen_pairs_never_targets_in_training_but_only_targets_in_unseen_combo():
    train = list(TabletopGenerator(split='train', seed=0).samples(2000))
    assert not {s.target.pair for s in train} & set(HELDOUT_PAIRS)
    assert {s.target.pair for s in train} == set(ALL_PAIRS) - set(HELDOUT_PAIRS)
    # Held-out pairs never appear in training scenes, not even as distractors, while every
    # colour and every shape is still seen.
    assert not any(o.pair in HELDOUT_PAIRS for s in train for o in s.scene.objects)
    assert {o.color for s in train for o in s.scene.objects} == set(COLORS)
    assert {o.shape for s in train for o in s.scene.objects} == set(SHAPES)
    unseen = list(TabletopGenerator(split='unseen_combo', seed=0).samples(300))
    assert {s.target.pair for s in unseen} == set(HELDOUT_PAIRS)


def test_paraphrase_templates_are_held_out_of_training():
    heldout, trained = _patterns(HELDOUT_TEMPLATES), _patterns(TRAIN_TEMPLATES)
    for split in ('train', 'val', 'unseen_combo', 'clutter'):
        for s in TabletopGenerator(split=split, seed=0).samples(2000 if split == 'train' else 300):
            assert not any(p.match(s.instruction) for p in heldout), s.instruction
            assert '/train/' in s.template
    for s in TabletopGenerator(split='paraphrase', seed=0).samples(500):
        assert any(p.match(s.instruction) for p in heldout), s.instruction
        assert not any(p.match(s.instruction) for p in trained), s.instruction
    # Paraphrases, not new words: every held-out word also occurs in some training template.
    assert vocabulary(HELDOUT_TEMPLATES) <= vocabulary(TRAIN_TEMPLATES)
    all_train = {t for group in TRAIN_TEMPLATES.values() for t in group}
    assert not all_train & {t for group in HELDOUT_TEMPLATES.values() for t in group}


def test_reworded_words_never_occur_in_training():
    """No held-out verb or synonym is in a training template, a synonym list or a paraphrase."""
    held_out = reworded_words()
    assert set(REWORDED_VERBS) <= held_out and len(held_out) == 26
    assert not held_out & training_vocabulary()
    assert not held_out & vocabulary(HELDOUT_TEMPLATES)
    # A held-out word must not hide inside a training word either ("bead" in "beads").
    for word in held_out:
        assert not any(word in w for w in training_vocabulary()), word
    # Every canonical colour and shape has held-out names, and each one is new.
    assert set(REWORDED_COLOR_WORDS) == set(COLORS)
    assert set(REWORDED_SHAPE_WORDS) == set(SHAPES)


def test_reworded_sentences_have_shapes_no_training_template_has():
    trained, reworded = _patterns(TRAIN_TEMPLATES), _patterns(REWORDED_TEMPLATES)
    # Each reworded template says at least one held-out verb, and no training template can
    # produce it with any filling of its slots.
    for group in REWORDED_TEMPLATES.values():
        for template in group:
            assert set(re.findall(r'[a-z]+', template)) & set(REWORDED_VERBS), template
    kinds = set()
    for s in TabletopGenerator(split='reworded', seed=0).samples(600):
        assert any(p.match(s.instruction) for p in reworded), s.instruction
        assert not any(p.match(s.instruction) for p in trained), s.instruction
        assert '/reworded/' in s.template
        words = set(re.findall(r'[a-z]+', s.instruction))
        kind = s.template.split('/')[-1].split('+', 1)[1:]   # held-out slots, as the id says
        assert ('colour' in ''.join(kind)) == bool(
            words & {w for ws in REWORDED_COLOR_WORDS.values() for w in ws}), s.instruction
        assert ('shape' in ''.join(kind)) == bool(
            words & {w for ws in REWORDED_SHAPE_WORDS.values() for w in ws}), s.instruction
        kinds.add(s.template.count('+'))
    assert kinds == {0, 1, 2}   # frames alone, one new word, both new words all occur
    # No training-split sentence ever says a held-out word.
    for s in TabletopGenerator(split='train', seed=0).samples(3000):
        assert not set(re.findall(r'[a-z]+', s.instruction)) & reworded_words(), s.instruction


def test_training_phrasings_come_from_a_fixed_pool_per_goal():
    pool = phrasing_pool('pick', 'red', 'cube', 50)
    assert pool == phrasing_pool('pick', 'red', 'cube', 50)     # the same in every run
    assert len({text for text, _ in pool}) > 40
    rng = np.random.default_rng(0)
    drawn = {make_instruction(rng, 'pick', 'red', 'cube', 'train', pool=50)[0]
             for _ in range(500)}
    assert drawn <= {text for text, _ in pool} and len(drawn) > 40
    gen = TabletopGenerator(TabletopConfig(phrasings=8), split='train', seed=0)
    per_goal = {}
    for s in gen.samples(1500):
        per_goal.setdefault((s.primitive, *s.target.pair), set()).add(s.instruction)
    assert max(len(v) for v in per_goal.values()) <= 8
    # Val keeps drawing from the whole grammar, whatever the training pool.
    val = TabletopGenerator(TabletopConfig(phrasings=8), split='val', seed=0)
    assert len({s.instruction for s in val.samples(300)}) > 250
    with pytest.raises(ValueError, match='phrasings'):
        TabletopConfig(phrasings=-1)


def test_training_says_colour_synonyms_and_canonical_names():
    words = [set(re.findall(r'[a-z]+', s.instruction))
             for s in TabletopGenerator(split='train', seed=2).samples(1000)]
    canonical = sum(bool(w & set(COLORS)) for w in words) / len(words)
    assert 0.4 < canonical < 0.6
    synonyms = {x for ws in COLOR_WORDS.values() for x in ws[1:]}
    assert len(set().union(*words) & synonyms) >= 20


def test_clutter_has_more_objects_than_training():
    train = [len(s.scene.objects) for s in TabletopGenerator(seed=0).samples(300)]
    clutter = [len(s.scene.objects) for s in TabletopGenerator(split='clutter').samples(300)]
    assert min(train) == 2 and max(train) == 6
    assert min(clutter) == 7 and max(clutter) == 10


def test_val_never_repeats_train():
    def digest(s):
        return hashlib.sha1(s.image.tobytes()).hexdigest()
    train = {digest(s) for s in TabletopGenerator(split='train', seed=0).samples(300)}
    val = {digest(s) for s in TabletopGenerator(split='val', seed=0).samples(300)}
    assert len(train) == 300 and not train & val


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match='unseen_combo'):
        TabletopGenerator(split='test')
    with pytest.raises(ValueError, match='max_objects'):
        TabletopConfig(max_objects=17)
    with pytest.raises(ValueError, match='seed'):
        TabletopGenerator(seed=-1)
    with pytest.raises(ValueError, match='pick_r1_c2'):
        apply_action(TabletopGenerator().sample().scene, 'jump_r0_c0')


def _scene(goal=None):
    step = cell_size(96)

    def obj(color, shape, row, col):
        return SceneObject(color, shape, (row, col), 8.0, ((col + 0.5) * step, (row + 0.5) * step),
                           rgb=RGB[color])
    objects = [obj('red', 'ball', 1, 1), obj('blue', 'cube', 1, 2),
               obj('green', 'ring', 0, 3), obj('yellow', 'triangle', 3, 0)]
    return Scene(objects, background=(150.0, 150.0, 150.0), image_size=96, goal=goal)


@pytest.mark.parametrize('action, moved_to', [
    ('push_left_r1_c1', (1, 0)), ('push_back_r1_c1', (2, 1)), ('push_forward_r1_c1', (0, 1)),
    ('push_right_r1_c2', (1, 3)),
    ('push_right_r1_c1', (1, 1)),      # blocked by the blue cube in (1, 2)
    ('push_forward_r0_c3', (0, 3)),    # blocked by the far edge
    ('push_right_r0_c3', (0, 3)),      # blocked by the right edge
    ('push_back_r3_c0', (3, 0)),       # blocked by the near edge
    ('push_left_r3_c0', (3, 0)),       # blocked by the left edge
])
def test_push_moves_one_cell_unless_blocked(action, moved_to):
    scene = _scene()
    _, row, col = parse_action_name(action)
    before = scene.object_at(row, col)
    new, changed = apply_action(scene, action)
    assert scene.object_at(row, col) is before and before.cell == (row, col)  # input untouched
    moved = new.find(*before.pair)
    assert moved.cell == moved_to and changed == (moved_to != (row, col))
    step = cell_size(96)
    dx, dy = (moved_to[1] - col) * step, (moved_to[0] - row) * step
    assert moved.center == pytest.approx((before.center[0] + dx, before.center[1] + dy))
    drawn = np.median(render(new)[_mask(moved, 96, full=True)], axis=0)
    assert np.abs(drawn - RGB[moved.color]).max() < 30  # drawn where it went


def test_pick_lifts_the_object_off_the_table():
    scene = _scene()
    new, changed = apply_action(scene, 'pick_r1_c1')
    assert changed and new.find('red', 'ball').lifted and new.object_at(1, 1) is None
    image = render(new)
    assert np.abs(image[36, 36].astype(int) - 150).max() < 5  # table where the ball was
    again, changed = apply_action(new, 'pick_r1_c1')  # nothing left to pick there
    assert not changed and again.history == ['pick_r1_c1', 'pick_r1_c1']
    _, changed = apply_action(scene, 'pick_r2_c2')
    assert not changed


def test_success_needs_the_goal_object_and_primitive():
    goal = Goal('push_left', 'red', 'ball')
    assert apply_action(_scene(goal), 'push_left_r1_c1')[1]
    assert not apply_action(_scene(goal), 'push_right_r1_c1')[1]   # wrong primitive
    assert not apply_action(_scene(goal), 'push_left_r1_c2')[1]    # wrong object
    assert not apply_action(_scene(goal), 'push_left_r2_c2')[1]    # empty cell
    # The right choice succeeds even when the push is blocked at the border.
    new, success = apply_action(_scene(Goal('push_forward', 'green', 'ring')), 'push_forward_r0_c3')
    assert success and new.find('green', 'ring').cell == (0, 3)


def test_ground_truth_actions_carry_out_the_instruction():
    for sample in TabletopGenerator(split='clutter', seed=6).samples(100):
        new, success = apply_action(sample.scene, sample.action_name)
        assert success
        after = new.find(*sample.target.pair)
        row, col = sample.target.cell
        if sample.primitive == 'pick':
            assert after.lifted
        else:
            steps = {'push_left': (0, -1), 'push_right': (0, 1),
                     'push_forward': (-1, 0), 'push_back': (1, 0)}[sample.primitive]
            dest = (row + steps[0], col + steps[1])
            free = all(0 <= v < 4 for v in dest) and sample.scene.object_at(*dest) is None
            assert after.cell == (dest if free else (row, col))
        assert render(new).shape == sample.image.shape


def test_every_primitive_and_cell_is_a_target():
    names = {s.action_name for s in TabletopGenerator(seed=9).samples(2000)}
    expected = {f'{p}_r{r}_c{c}' for p, r, c in itertools.product(PRIMITIVES, range(4), range(4))}
    assert names == expected
