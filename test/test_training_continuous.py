"""Counter-example training on the continuous tabletop task (data.source tabletop_continuous)
with tiny models: it trains, resumes exactly, records the trained range, and fine-tunes a
grid model with a new Fourier action encoder."""
import pytest
import torch

from support.models import tiny_vla_config
from support.training import losses
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.sampling import SamplingConfig
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

LIBRARY = 'config/tabletop_continuous_actions.yaml'
FOURIER = {'hidden': 32, 'fourier_features': 8, 'fourier_scale': 1.0}


# text_path and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def continuous_config(tmp_path, text_path, steps=4, **extra) -> TrainConfig:
    model = tiny_vla_config(text_path=text_path).to_dict()
    model['action'].update(FOURIER)
    raw = {'run_name': 'cont', 'output_dir': str(tmp_path / 'runs'), 'seed': 5,
           'device': 'cpu', 'model': model,
           'data': {'source': 'tabletop_continuous', 'library': LIBRARY, 'image_size': 48},
           'optim': {'steps': steps, 'batch_size': 4, 'lr': 3e-3, 'warmup_steps': 1,
                     'counter_examples': 31},
           'schedule': {'log_every': 1, 'eval_every': 2, 'save_every': 2, 'eval_samples': 4,
                        'eval_splits': ['val'], 'keep_last': 5}}
    raw.update(extra)
    return TrainConfig.from_dict(raw)


def test_counter_example_training_runs_resumes_and_loads_in_the_selector(tmp_path, text_path):
    straight = continuous_config(tmp_path / 'a', text_path)
    trainer = Trainer(straight)
    before = {k: v.clone() for k, v in trainer.model.action.state_dict().items()}
    results = trainer.run(progress=False)
    assert 0 <= results['val']['top1'] <= 1 and results['val']['n'] == 4
    after = trainer.model.action.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k != 'fourier')
    assert torch.equal(before['fourier'], after['fourier'])   # fixed frequencies
    got = losses(straight.run_dir)
    assert all(torch.isfinite(torch.tensor(v)) for v in got.values())
    # Started near log(1 + K): the positive among 32 candidates, none preferred yet.
    assert abs(got[1] - torch.log(torch.tensor(32.0)).item()) < 1.5

    interrupted = continuous_config(tmp_path / 'b', text_path)
    Trainer(interrupted).run(progress=False, stop_at=2)
    Trainer(continuous_config(tmp_path / 'b', text_path), resume=True).run(progress=False)
    again = losses(interrupted.run_dir)
    for step in (3, 4):
        assert again[step] == pytest.approx(got[step], rel=1e-5, abs=1e-6), step

    model_dir = ckpt.latest_checkpoint(straight.run_dir) / ckpt.MODEL_DIR
    model = VLAModel.from_pretrained(model_dir, device='cpu')
    assert list(model.config.action.continuous_dims) == [5, 6]
    assert list(model.config.action.continuous_high) == [1.0] * 7
    selector = ActionSelector.from_pretrained(model_dir, device='cpu')
    assert selector.library.space is not None
    choice = selector.select_sampled(torch.zeros(48, 48, 3, dtype=torch.uint8).numpy(),
                                     'pick up the red cube', SamplingConfig(samples=32))
    selector.library.space.check_vector(choice.vector)


def test_fine_tuning_a_grid_model_swaps_in_a_fourier_action_encoder(tmp_path, text_path):
    grid = VLAModel(tiny_vla_config(text_path=text_path))
    grid.save_pretrained(tmp_path / 'grid')
    # Only when asked (init_replace): a model.action section alone keeps the grid's encoder.
    kept = Trainer(continuous_config(tmp_path / 'kept', text_path, steps=1,
                                     init_from=str(tmp_path / 'grid')))
    assert kept.model.action.fourier is None
    for name, value in grid.action.state_dict().items():
        assert torch.equal(value, kept.model.action.state_dict()[name]), name
    cfg = continuous_config(tmp_path / 'ft', text_path, steps=1,
                            init_from=str(tmp_path / 'grid'), init_replace=['action'])
    trainer = Trainer(cfg)
    assert trainer.model.action.fourier is not None
    assert trainer.model.config.action.fourier_features == 8
    for name, value in grid.vision.state_dict().items():
        assert torch.equal(value, trainer.model.vision.state_dict()[name]), name
    # The standardisation is the space's uniform distribution (mean 0.5, std 1/sqrt(12)).
    assert trainer.model.action.param_mean[5:].tolist() == pytest.approx([0.5, 0.5])
    assert trainer.model.action.param_std[5:].tolist() == pytest.approx([0.2887] * 2, abs=1e-4)


@pytest.mark.parametrize('setting, message', [
    ('optim.counter_examples=0', 'optim.counter_examples must be >= 1'),
    ('optim.positive_jitter=1.5', 'optim.positive_jitter must be in'),
    ('data.library=config/tabletop_actions.yaml', "needs a library with a continuous 'space'"),
])
def test_bad_continuous_settings_are_refused_by_name(tmp_path, capsys, setting, message):
    code = train_main(['--config', 'config/train_tabletop_continuous.yaml', '--set', setting,
                       '--set', f'output_dir={tmp_path}', '--no-progress'])
    assert code == 2
    assert message in capsys.readouterr().err
