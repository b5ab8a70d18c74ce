"""``data.source: recorded_continuous``: counter-example training on a recorded JSONL dataset of
action vectors with scene labels (what ``vla-libero-dataset`` writes), on a dataset written by
the real writer here: a disc to pick, another disc to place it on, at random places."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.models import tiny_vla_config
from support.training import losses
from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.recorded_continuous import RecordedContinuousSource
from vla_embedding_ros.training.train import Trainer

LIBRARY = 'config/libero_actions.yaml'
FOURIER = {'hidden': 32, 'fourier_features': 8, 'fourier_scale': 2.0}
SIZE, RADIUS = 48, 0.08
GEOMETRY_OFF = {'crop_scale': [1.0, 1.0], 'crop_ratio': [1.0, 1.0], 'max_shift': 0.0}

pytestmark = pytest.mark.usefixtures('repo_cwd')   # text_path and repo_cwd: conftest.py


def _scene(rng):
    """The pick frame (a red disc to pick, a blue one to place it on), the place frame (the
    red disc gone: held, a white bar along the top) and the discs' points."""
    image = np.full((SIZE, SIZE, 3), 90, np.uint8)
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    points = rng.uniform(0.15, 0.85, (2, 2))
    while np.linalg.norm(points[0] - points[1]) < 0.3:
        points[1] = rng.uniform(0.15, 0.85, 2)
    discs = [np.hypot(xx - u * SIZE, yy - v * SIZE) < RADIUS * SIZE for u, v in points]
    image[discs[1]] = (30, 30, 220)
    held = image.copy()
    held[:4] = 255
    image[discs[0]] = (220, 30, 30)
    return image, held, points


def write_dataset(root, episodes=6, labels=True, seed=0) -> str:
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, library=LIBRARY) as writer:
        for episode in range(episodes):
            image, held, (pick, place) = _scene(rng)
            for t, (frame, vector, others) in enumerate(((image, [1.0, 0.0, *pick], [place]),
                                                         (held, [0.0, 1.0, *place], []))):
                extra = ({'labels': {'radius': RADIUS, 'others': [list(o) for o in others]}}
                         if labels else {})
                writer.add(frame, 'pick up the red cube', action_vector=vector,
                           episode=episode, timestamp=float(t), **extra)
    return str(root)


def config(tmp_path, text_path, data: dict, steps=4, **optim) -> TrainConfig:
    model = tiny_vla_config(text_path=text_path).to_dict()
    model['action'].update(FOURIER)
    data = {**data, 'augment': {**GEOMETRY_OFF, **data.get('augment', {})}}
    return TrainConfig.from_dict({
        'run_name': 'rc', 'output_dir': str(tmp_path / 'runs'), 'seed': 3, 'device': 'cpu',
        'model': model,
        'data': {'source': 'recorded_continuous', 'library': LIBRARY, 'val_episodes': 0,
                 **data},
        'optim': {'steps': steps, 'batch_size': 4, 'lr': 3e-3, 'warmup_steps': 1,
                  'counter_examples': 31, **optim},
        'schedule': {'log_every': 1, 'eval_every': 2, 'save_every': 2, 'eval_samples': 8,
                     'eval_splits': [], 'keep_last': 5}})


def test_batches_carry_the_labels_as_counter_example_targets(tmp_path):
    path = write_dataset(tmp_path / 'd')
    library = ActionLibrary.from_yaml(LIBRARY)
    source = RecordedContinuousSource(path, library, seed=1, counter_examples=15)
    images, instructions, targets = source.next_demonstrations(5)
    assert images.shape == (5, 1, SIZE, SIZE, 3) and len(instructions) == 5
    assert torch.allclose(targets.radii, torch.full((5,), RADIUS))
    assert targets.others.shape == (5, 1, 2)
    picks = targets.vectors[:, 0] == 1
    # a pick's other object is the place target; a place (the red disc held) has none
    assert torch.equal(targets.others_mask[:, 0], picks)
    for vector, other in zip(targets.vectors[picks], targets.others[picks, 0], strict=True):
        assert float((vector[2:] - other).norm()) >= 0.3
    _, _, examples = source.next_continuous_batch(4)
    assert examples.own.shape[:2] == (4, 1 + 3 + 2 + 2)   # positive, near, other, primitive
    # a negative inside the target's radius with the asked primitive is masked out
    own = examples.own
    near = ((own[:, 1:, 2:] - own[:, :1, 2:]).norm(dim=-1) <= RADIUS) & \
        (own[:, 1:, :2].argmax(-1) == own[:, :1, :2].argmax(-1))
    assert not bool((examples.own_valid[:, 1:] & near).any())


def test_episodes_held_out_never_reach_training(tmp_path):
    path = write_dataset(tmp_path / 'd', episodes=10)
    source = RecordedContinuousSource(path, ActionLibrary.from_yaml(LIBRARY), seed=2)
    held = source.hold_out_episodes(0.2, seed=2, source='jsonl')
    assert len(held.episodes) == 2 and held.samples == 4 and len(source) == 16
    trained = {str(source.dataset.records[int(i)]['episode']) for i in source._take(64)}
    assert trained.isdisjoint(held.episodes) and len(trained) == 8
    assert {s['episode'] for s in source.held_out()} == set(held.episodes)


def test_it_trains_validates_and_resumes_exactly(tmp_path, text_path):
    train, val = write_dataset(tmp_path / 'train'), write_dataset(tmp_path / 'val', seed=9)
    straight = config(tmp_path / 'a', text_path, {'path': train, 'val_path': val})
    results = Trainer(straight).run(progress=False)
    assert results['val_dataset']['n'] == 8 and 0 <= results['val_dataset']['top1'] <= 1
    assert 0 <= results['val_dataset']['free_top1'] <= 1      # the model choosing the primitive
    got = losses(straight.run_dir)
    # started near log(1 + K): the positive among 32 candidates, none preferred yet
    assert abs(got[1] - np.log(32.0)) < 1.5
    interrupted = config(tmp_path / 'b', text_path, {'path': train, 'val_path': val})
    Trainer(interrupted).run(progress=False, stop_at=2)
    Trainer(config(tmp_path / 'b', text_path, {'path': train, 'val_path': val}),
            resume=True).run(progress=False)
    again = losses(interrupted.run_dir)
    for step in (3, 4):
        assert again[step] == pytest.approx(got[step], rel=1e-5, abs=1e-6), step


def test_validation_pins_the_asked_primitive_as_deployed(text_path):
    """The decision as libero_sim and vla-eval make it: the search stays on each sample's own
    primitive, whatever an (untrained) model prefers."""
    from vla_embedding_ros.model import VLAConfig, VLAModel
    from vla_embedding_ros.selection.sampling import SamplingConfig
    from vla_embedding_ros.training.continuous_eval import decide_sampled
    space = ActionLibrary.from_yaml(LIBRARY).space
    torch.manual_seed(0)
    config_dict = tiny_vla_config(text_path=text_path, param_dim=4).to_dict()
    config_dict['action'].update(FOURIER, continuous_dims=[2, 3])   # u, v
    model = VLAModel(VLAConfig.from_dict(config_dict)).eval()
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        queries = model.encode_query(torch.from_numpy(
            rng.uniform(-1, 1, (6, 3, model.image_size, model.image_size)).astype(np.float32)),
            ['put the bowl on the plate'] * 6)
    asked = ['pick', 'place', 'pick', 'place', 'place', 'pick']
    found = decide_sampled(model, space, queries, SamplingConfig(samples=64, iterations=1),
                           asked)
    assert [space.options[int(np.argmax(v[:2]))] for v in found] == asked
    free = decide_sampled(model, space, queries, SamplingConfig(samples=64, iterations=1))
    assert [space.options[int(np.argmax(v[:2]))] for v in free] != asked   # the pin mattered


@pytest.mark.parametrize('data,says', [
    ({'augment': {'max_shift': 0.02}}, 'data.augment.max_shift'),
    ({'augment': {'crop_scale': [0.8, 1.0], 'max_shift': 0.0}}, 'data.augment.crop_scale'),
    ({'objects': [3, 4]}, 'data.objects'),
    ({'image_size': 128}, 'data.image_size'),
    ({'max_unknown_actions': 0.2}, 'data.max_unknown_actions'),
    ({'path': ''}, 'data.path'),
])
def test_settings_it_cannot_honour_are_refused_by_name(tmp_path, text_path, data, says):
    path = write_dataset(tmp_path / 'd')
    cfg = config(tmp_path, text_path, {'path': path, **data})
    with pytest.raises(ValueError, match=says.replace('.', r'\.')):
        Trainer(cfg)


def test_a_dataset_without_labels_is_refused_naming_the_sample(tmp_path, text_path):
    path = write_dataset(tmp_path / 'd', labels=False)
    with pytest.raises(ValueError, match=r'sample 0 has no labels\.radius'):
        Trainer(config(tmp_path, text_path, {'path': path}))


def test_other_primitive_negatives_can_sit_where_the_other_decision_acts(tmp_path):
    path = write_dataset(tmp_path / 'd')
    library = ActionLibrary.from_yaml(LIBRARY)
    source = RecordedContinuousSource(path, library, seed=4, counter_examples=63,
                                      other_primitive_elsewhere=1.0)
    _, _, targets = source.next_demonstrations(8)
    from vla_embedding_ros.training.counter_examples import sample_counter_examples
    for share, on_other in ((0.0, False), (1.0, True)):
        examples = sample_counter_examples(library.space, targets, 63,
                                           torch.Generator().manual_seed(0), 0.3, share)
        # the last 9 (15% of 63) own candidates are the other primitive's
        prim = examples.own[:, -9:]
        asked = targets.vectors[:, :2].argmax(-1)
        assert bool((prim[..., :2].argmax(-1) != asked[:, None]).all())
        for i in range(8):
            if targets.others_mask[i].any():   # picks: the place target is the other object
                dist = (prim[i, :, 2:] - targets.others[i, 0]).norm(dim=-1)
                assert bool((dist <= 0.3 * RADIUS + 1e-6).all()) == on_other, (share, i)
    with pytest.raises(ValueError, match='other_primitive_elsewhere'):
        RecordedContinuousSource(path, library, seed=4, other_primitive_elsewhere=1.5)


def test_point_features_train_save_and_load_in_the_selector(tmp_path, text_path):
    """``model.action.point_dim`` through the trainer: the discs' points read from the cells."""
    from vla_embedding_ros.selection import ActionSelector
    from vla_embedding_ros.training.export import export_model
    train, val = write_dataset(tmp_path / 'train'), write_dataset(tmp_path / 'val', seed=9)
    cfg = config(tmp_path / 'p', text_path, {'path': train, 'val_path': val})
    cfg.model['action'].update(image_point=[2, 3], point_dim=4)
    results = Trainer(cfg).run(progress=False)
    assert 0 <= results['val_dataset']['top1'] <= 1
    export_model(cfg.run_dir / 'checkpoints' / '00000004', tmp_path / 'model')
    selector = ActionSelector.from_pretrained(tmp_path / 'model', device='cpu')
    assert selector.model.config.action.point_dim == 4
    assert list(selector.model.config.action.image_point) == [2, 3]
