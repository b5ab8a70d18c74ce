"""Camera dropout (issue 20): two-camera tabletop views, masks that really drop cameras at the
configured rates, a fusion that decides without a camera, exact resume, refused settings."""
import csv

import numpy as np
import pytest
import torch

from support.models import tiny_vla_config
from vla_embedding_ros.data.tabletop import TabletopGenerator
from vla_embedding_ros.data.tabletop.cameras import check_cameras, oblique_view, render_views
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.model.deploy import QueryPlan
from vla_embedding_ros.selection.preprocess import ImagePreprocessor
from vla_embedding_ros.training.camera_dropout import CameraDropout
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.sources import TabletopSource
from vla_embedding_ros.training.train import Trainer

LIBRARY = 'config/tabletop_actions.yaml'


# text_path and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def two_camera_config(tmp_path, text_path, steps=6, data=None, **optim) -> TrainConfig:
    model = tiny_vla_config(text_path=text_path, fusion='transformer', dropout=0.1).to_dict()
    return TrainConfig.from_dict({
        'run_name': 'cams', 'output_dir': str(tmp_path / 'runs'), 'seed': 5, 'device': 'cpu',
        'model': model,
        'data': {'source': 'tabletop', 'library': LIBRARY, 'image_size': 48,
                 'cameras': ['top', 'oblique'], **(data or {})},
        'optim': {'steps': steps, 'batch_size': 8, 'lr': 3e-3, 'warmup_steps': 2,
                  'region_weight': 0.5, 'target_cell_weight': 0.5, **optim},
        'schedule': {'log_every': 1, 'eval_every': 100, 'save_every': 3, 'eval_samples': 10,
                     'eval_splits': ['val'], 'keep_last': 5},
    })


def losses(run_dir) -> dict[int, float]:
    with open(run_dir / 'train.csv', newline='') as handle:
        return {int(r['step']): float(r['loss']) for r in csv.DictReader(handle)}


def test_oblique_view_is_a_perspective_of_the_top_render():
    image = TabletopGenerator(split='val', seed=3).sample().image
    views = render_views(image, ['top', 'oblique'])
    assert views.shape == (2, *image.shape) and views.dtype == np.uint8
    assert np.array_equal(views[0], image)
    oblique = views[1]
    assert np.array_equal(oblique, oblique_view(image))      # a pure function: no draw
    assert not np.array_equal(oblique, image)
    # The floor shows beside the far (narrow) edge, the table fills the near edge.
    assert tuple(oblique[2, 2]) == (55, 55, 60)
    assert tuple(oblique[-5, image.shape[1] // 2]) != (55, 55, 60)
    with pytest.raises(ValueError, match='unknown camera'):
        check_cameras(['top', 'side'])
    with pytest.raises(ValueError, match='twice'):
        check_cameras(['top', 'top'])


def test_two_camera_source_keeps_the_single_camera_stream():
    one = TabletopSource('train', 4, 48)
    two = TabletopSource('train', 4, 48, cameras=('top', 'oblique'))
    a, ia, ta = one.next_batch(5)
    b, ib, tb = two.next_batch(5)
    assert a.shape == (5, 1, 48, 48, 3) and b.shape == (5, 2, 48, 48, 3)
    assert np.array_equal(a[:, 0], b[:, 0]) and ia == ib and np.array_equal(ta, tb)


def test_dropout_masks_drop_at_the_configured_rates_and_never_all_cameras():
    torch.manual_seed(0)
    mask = CameraDropout(camera_rate=0.5).sample(20_000, 2)
    assert mask.any(dim=1).all()                             # never every camera
    # p - p**C / C = 0.375 per camera: both drawn dropped puts one back.
    assert (~mask).float().mean().item() == pytest.approx(0.375, abs=0.01)
    assert (~mask[:, 0]).float().mean().item() == pytest.approx(0.375, abs=0.015)
    mask = CameraDropout(camera_rate=0.3, image_rate=0.2).sample(20_000, 2)
    blind = ~mask.any(dim=1)
    assert blind.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert CameraDropout().sample(4, 2) is None                # off: nothing drawn
    state = torch.get_rng_state()
    CameraDropout().sample(4, 2)
    assert torch.equal(state, torch.get_rng_state())
    # One camera: camera dropout leaves it (it would always be put back).
    assert CameraDropout(camera_rate=0.9).sample(100, 1).all()


def test_training_applies_the_masks_it_draws(tmp_path, text_path, monkeypatch):
    trainer = Trainer(two_camera_config(tmp_path, text_path, camera_dropout=0.5,
                                        image_dropout=0.25))
    seen = []
    forward = trainer.forward.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get('camera_mask'))
        return forward(*args, **kwargs)

    monkeypatch.setattr(trainer.forward, 'forward', spy)
    for _ in range(6):
        assert not trainer.train_step()['skipped']
    masks = torch.cat(seen)
    assert masks.shape == (48, 2)
    assert (~masks).any(), 'no camera was dropped in 48 samples at rates 0.5 / 0.25'
    assert masks.all(dim=1).any(), 'no sample kept both cameras'


def test_dropout_training_is_reproducible_and_resumes_exactly(tmp_path, text_path):
    opts = dict(camera_dropout=0.5, image_dropout=0.2)
    straight = two_camera_config(tmp_path / 'a', text_path, **opts)
    Trainer(straight).run(progress=False)
    again = two_camera_config(tmp_path / 'c', text_path, **opts)
    Trainer(again).run(progress=False)
    assert losses(straight.run_dir) == losses(again.run_dir)

    interrupted = two_camera_config(tmp_path / 'b', text_path, **opts)
    Trainer(interrupted).run(progress=False, stop_at=3)
    resumed = Trainer(two_camera_config(tmp_path / 'b', text_path, **opts), resume=True)
    assert resumed.step == 3
    resumed.run(progress=False)
    expected, got = losses(straight.run_dir), losses(interrupted.run_dir)
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    # Dropout changes what is trained: not the run without it.
    plain = two_camera_config(tmp_path / 'd', text_path)
    Trainer(plain).run(progress=False)
    assert losses(plain.run_dir)[6] != pytest.approx(expected[6], rel=1e-6)


@pytest.mark.parametrize('field, value, match', [
    ('camera_dropout', 1.0, r'optim\.camera_dropout must be in \[0, 1\)'),
    ('image_dropout', -0.1, r'optim\.image_dropout must be in \[0, 1\)'),
])
def test_bad_rates_are_refused_by_name(tmp_path, text_path, field, value, match):
    with pytest.raises(ValueError, match=match):
        Trainer(two_camera_config(tmp_path, text_path, **{field: value}))


def test_camera_dropout_with_one_camera_is_refused(tmp_path, text_path):
    with pytest.raises(ValueError, match=r'optim\.camera_dropout .* two or more cameras'):
        Trainer(two_camera_config(tmp_path, text_path, data={'cameras': ['top']},
                                  camera_dropout=0.3))
    with pytest.raises(ValueError, match=r'data\.cameras: unknown camera'):
        Trainer(two_camera_config(tmp_path, text_path, data={'cameras': ['top', 'side']}))


def test_masked_camera_gives_a_finite_different_query_on_the_shipped_model():
    model = VLAModel.from_pretrained('models/tabletop', device='cpu')
    pre = ImagePreprocessor(model.image_size, model.image_mean, model.image_std, model.device)
    samples = list(TabletopGenerator(split='val', seed=11).samples(4))
    pixels = pre([v for s in samples for v in render_views(s.image, ['top', 'oblique'])])
    with torch.inference_mode():
        text = model.encode_text([s.instruction for s in samples])
        both = model.encode_query(pixels, text, 2)
        masks = {'no oblique': [True, False], 'no top': [False, True],
                 'instruction only': [False, False]}
        queries = {k: model.encode_query(pixels, text, 2, torch.tensor([m] * 4))
                   for k, m in masks.items()}
        top_only = model.encode_query(pixels[0::2], text, 1)
        plan = QueryPlan(model).eval()
        for i in range(4):
            prepared = plan.prepare(model.encode_text([samples[i].instruction]))
            oblique = plan.fuse(model.encode_images(pixels[2 * i + 1:2 * i + 2]), *prepared,
                                cameras=[1])
            # The fast path leaves the rows out; the training path masks them: one result.
            assert torch.allclose(oblique[0], queries['no top'][i], atol=1e-5)
    for name, query in queries.items():
        assert torch.isfinite(query).all(), name
        assert torch.allclose(query.norm(dim=-1), torch.ones(4), atol=1e-5)
        assert not torch.allclose(query, both, atol=1e-4), name
    # A masked camera is the camera left out (its tokens get no attention weight).
    assert torch.allclose(queries['no oblique'], top_only, atol=1e-5)
    with pytest.raises(ValueError, match='camera_mask has shape'), torch.inference_mode():
        model.encode_query(pixels, text, 2, torch.ones(4, 3, dtype=torch.bool))
