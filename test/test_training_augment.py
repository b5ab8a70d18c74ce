"""Image augmentation (training/augment.py) on real tabletop renders: seeded and reproducible,
part of an exact resume, geometry bounded (an object never changes cell, so left/right stay
what they were), neutral settings are the identity, and bad settings are refused by name."""
import logging

import numpy as np
import pytest
import torch

from support.training import config
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.data.tabletop import (
    TabletopConfig,
    TabletopGenerator,
    action_params,
    build_action_library,
)
from vla_embedding_ros.data.tabletop.scene import Scene, make_object, render
from vla_embedding_ros.selection.preprocess import ImagePreprocessor
from vla_embedding_ros.training.augment import AugmentConfig, Augmenter
from vla_embedding_ros.training.config import load_config
from vla_embedding_ros.training.train import Trainer

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SIZE = 64
NEUTRAL = dict(crop_scale=[1, 1], crop_ratio=[1, 1], max_shift=0, brightness=0, contrast=0,
               saturation=0, hue=0, blur_prob=0, noise_std=0)


def pixels(n=16, seed=0) -> torch.Tensor:
    """``n`` tabletop renders, preprocessed as training preprocesses them."""
    images, _, _ = TabletopGenerator(TabletopConfig(image_size=96), 'train', seed).batch(n)
    return ImagePreprocessor(SIZE, MEAN, STD)(list(images))


def augmenter(seed=0, **settings) -> Augmenter:
    return Augmenter(AugmentConfig(**settings), MEAN, STD, 'cpu', seed)


def test_the_same_seed_augments_alike_and_another_seed_differently():
    x = pixels()
    a, b, other = augmenter(1)(x), augmenter(1)(x), augmenter(2)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, other, atol=1e-3)
    assert (a - x).abs().mean() > 0.02     # it did something
    # A second call draws new parameters: every batch is augmented afresh.
    again = augmenter(1)
    again(x)
    assert not torch.allclose(again(x), a, atol=1e-3)


def test_ranks_augment_their_slice_of_the_global_batch_as_one_process_would():
    """Under torchrun every rank applies its own part of the global batch's draws, so two
    processes of B augment exactly what one process of 2B does (as the recorded sources shard
    the data), and the two halves are not augmented alike."""
    x = pixels(8)
    one = augmenter(3)(x)
    ranks = [Augmenter(AugmentConfig(), MEAN, STD, 'cpu', 3, rank, 2)(x[4 * rank:4 * rank + 4])
             for rank in (0, 1)]
    assert torch.equal(torch.cat(ranks), one)
    assert not torch.allclose(ranks[0] - x[:4], ranks[1] - x[4:], atol=1e-3)


def test_neutral_settings_and_zero_colour_jitter_are_the_identity():
    x = pixels(8)
    assert torch.equal(augmenter(0, **NEUTRAL)(x), x)
    # Colour jitter alone at zero strength, drawn through the folded colour map: identity up
    # to float rounding; any strength at all moves the pixels.
    colour_only = dict(NEUTRAL, brightness=0, contrast=0, saturation=0, hue=0)
    assert torch.allclose(augmenter(0, **colour_only)._colour(
        (x * 0.25 + 0.5), torch.rand(8, 4)), x * 0.25 + 0.5, atol=1e-5)
    for key, value in (('brightness', 0.3), ('contrast', 0.3), ('saturation', 0.3),
                       ('hue', 0.03), ('noise_std', 0.05), ('blur_prob', 1.0),
                       ('max_shift', 0.05)):
        moved = augmenter(0, **dict(NEUTRAL, **{key: value}))(x)
        assert (moved - x).abs().max() > 0.05, key


def test_hue_keeps_grey_grey_and_saturation_keeps_luma():
    grey = torch.full((4, 3, 8, 8), 0.0)    # normalised 0 = intensity 0.5 on every channel
    out = augmenter(0, **dict(NEUTRAL, hue=0.05, saturation=0.9))(grey)
    assert torch.allclose(out, grey, atol=1e-5)


def one_object_frame(cell, color='red', shape='cube'):
    """A real render of one object in ``cell`` on a plain table, and its mask's centroid."""
    cfg = TabletopConfig(image_size=SIZE)
    obj = make_object(np.random.default_rng(0), cfg, color, shape, cell)
    image = render(Scene([obj], background=(150.0, 150.0, 150.0), image_size=SIZE))
    return image


def centroids(x01: torch.Tensor) -> torch.Tensor:
    """(x, y) centroid in pixels of each image's non-table pixels ([N, 3, H, W], 0..1)."""
    weight = ((x01 - 150 / 255).abs().sum(1) > 0.25).float()   # [N, H, W]
    ys, xs = torch.meshgrid(torch.arange(x01.shape[2]), torch.arange(x01.shape[3]),
                            indexing='ij')
    total = weight.sum((1, 2))
    assert (total > 10).all(), 'the object left the image'
    return torch.stack([(weight * xs).sum((1, 2)) / total, (weight * ys).sum((1, 2)) / total], 1)


CORNERS = ((0, 0), (0, 3), (3, 0), (3, 3), (1, 2))
INNER = ((1, 1), (1, 2), (2, 1), (2, 2))


@pytest.mark.parametrize('settings, cells', [
    ({}, CORNERS),   # the defaults
    (dict(crop_scale=[0.7, 0.75], crop_ratio=[0.9, 1.1], max_shift=0.05), INNER)])
def test_an_object_moves_at_most_the_configured_bound_and_never_changes_cell(settings, cells):
    """The centroid of a rendered object moves no farther than max_displacement (corner cells
    are where zoom moves points farthest), and with the defaults every object stays in its
    cell of the 4x4 grid: no left/right or forward/back swap."""
    defaults = AugmentConfig()
    geometry = {k: getattr(defaults, k) for k in ('crop_scale', 'crop_ratio', 'max_shift')}
    cfg = AugmentConfig(**{**NEUTRAL, **geometry, **settings})
    bound = cfg.max_displacement() * SIZE
    n = 64
    for cell in cells:
        frame = torch.from_numpy(one_object_frame(cell)).permute(2, 0, 1).float() / 255
        x = ((frame - 0.5) / 0.25).expand(n, 3, SIZE, SIZE).contiguous()
        out = Augmenter(cfg, MEAN, STD, 'cpu', 0)(x) * 0.25 + 0.5
        before, after = centroids(x * 0.25 + 0.5), centroids(out)
        moved = (after - before).norm(dim=1)
        assert moved.max() <= bound * 1.05 + 0.5, (cell, moved.max().item(), bound)
        assert moved.max() > 0.3 * bound, 'the crop/shift did not move anything'
        if not settings:
            assert (after // (SIZE / 4)).eq(torch.tensor(cell[::-1])).all(), cell
    # The defaults stay under half a cell (0.125 of the side); the larger settings do not,
    # and max_displacement says so.
    assert defaults.max_displacement() < 0.1 and (not settings or cfg.max_displacement() > 0.125)


def test_bad_settings_are_refused_naming_the_field():
    for override, field in (('data.augment.hue=0.5', 'data.augment.hue'),
                            ('data.augment.enabled=maybe', 'data.augment.enabled'),
                            ('data.augment.crop_scale=[0.2, 1]', 'data.augment.crop_scale'),
                            ('data.augment.crop_ratio=[2, 1]', 'data.augment.crop_ratio'),
                            ('data.augment.max_shift=abc', 'data.augment.max_shift'),
                            ('data.augment.blur_sigma=1', 'data.augment.blur_sigma'),
                            ('data.augment.noise_std=-1', 'data.augment.noise_std'),
                            ('data.augment.flip=true', "data.augment: unknown option.*'flip'")):
        with pytest.raises(ValueError, match=field):
            load_config(None, [override])
    assert load_config(None, ['data.augment.enabled=false']).data.augment.enabled is False


@pytest.fixture(scope='module')
def recorded(tmp_path_factory):
    """A small JSONL dataset written by the package's writer from tabletop renders."""
    root = tmp_path_factory.mktemp('recorded') / 'data'
    generator = TabletopGenerator(TabletopConfig(image_size=48), 'train', 5)
    with DatasetWriter(root, build_action_library()) as writer:
        for i, s in enumerate(generator.samples(24)):
            writer.add(s.image, s.instruction, action=s.action_name,
                       action_vector=action_params(s.primitive, *s.target.cell), episode=i // 4)
    return root


def test_auto_is_on_for_recorded_data_and_off_for_the_tabletop_stream(tmp_path, text_path,  # noqa: F811
                                                                      recorded, caplog):
    with caplog.at_level(logging.INFO, logger='vla_train'):
        trainer = Trainer(config(tmp_path / 'a', text_path, source='jsonl', path=str(recorded)))
    assert isinstance(trainer.augment, Augmenter)
    assert 'image augmentation on (data.augment.enabled: auto and data.source jsonl' in \
        caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vla_train'):
        assert Trainer(config(tmp_path / 'b', text_path)).augment is None
    assert 'image augmentation off (data.augment.enabled: auto and data.source tabletop is ' \
        'procedural' in caplog.text
    off = config(tmp_path / 'c', text_path, source='jsonl', path=str(recorded))
    off.data.augment.enabled = False
    assert Trainer(off).augment is None


def test_resume_reproduces_the_uninterrupted_runs_augmented_batches(tmp_path, text_path,  # noqa: F811
                                                                    recorded, monkeypatch):
    seen: list[torch.Tensor] = []
    call = Augmenter.__call__

    def record(self, x):
        out = call(self, x)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(Augmenter, '__call__', record)

    def run(where, stop_at=None, resume=False):
        cfg = config(where, text_path, steps=4, source='jsonl', path=str(recorded))
        cfg.schedule.save_every = 2
        trainer = Trainer(cfg, resume=resume)
        trainer.run(progress=False, stop_at=stop_at)
        return trainer

    run(tmp_path / 'whole')
    whole, seen[:] = list(seen), []
    run(tmp_path / 'split', stop_at=2)
    resumed = run(tmp_path / 'split', resume=True)
    assert resumed.step == 4
    split = list(seen)
    assert len(whole) == len(split) == 4
    for step, (a, b) in enumerate(zip(whole, split, strict=True), 1):
        assert torch.equal(a, b), f'step {step} was augmented differently after the resume'
    assert not torch.allclose(whole[2], whole[3])
