"""optim.loss (infonce | nt_xent | triplet) and optim.projection_dim in real training runs on
tiny models: each objective trains, the head is optimised and resumed but never exported, bad
settings are refused by name."""
import pytest
import torch
from safetensors.torch import load_file

from support.training import losses, tiny_config
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

# text_path and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def test_each_objective_trains_with_its_own_loss(tmp_path, text_path):
    first = {}
    for loss in ('infonce', 'nt_xent', 'triplet'):
        cfg = tiny_config(tmp_path / loss, text_path, steps=3, loss=loss)
        trainer = Trainer(cfg)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.run(progress=False)
        got = losses(cfg.run_dir)
        assert all(torch.isfinite(torch.tensor(v)) for v in got.values())
        assert trainer.skipped_steps == 0
        after = trainer.model.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
        first[loss] = got[1]
    # Same seed, same first batch: the first losses differ only by the objective.
    assert len({round(v, 6) for v in first.values()}) == 3
    # The triplet loss is bounded by its margin plus the largest cosine distance gap (2).
    assert 0 <= first['triplet'] <= 2 + 0.2


def test_projection_head_trains_resumes_and_stays_out_of_the_model(tmp_path, text_path):
    straight = tiny_config(tmp_path / 'a', text_path, projection_dim=16)
    trainer = Trainer(straight)
    head = trainer.head
    assert head is not None
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g['params']}
    assert all(id(p) in optimised for p in head.parameters())
    start = {k: v.clone() for k, v in head.state_dict().items()}
    trainer.run(progress=False)
    assert any(not torch.equal(start[k], v) for k, v in head.state_dict().items())

    interrupted = tiny_config(tmp_path / 'b', text_path, projection_dim=16)
    Trainer(interrupted).run(progress=False, stop_at=3)
    resumed = Trainer(tiny_config(tmp_path / 'b', text_path, projection_dim=16), resume=True)
    resumed.run(progress=False)
    expected, got = losses(straight.run_dir), losses(interrupted.run_dir)
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step

    weights = load_file(ckpt.latest_checkpoint(straight.run_dir) / ckpt.MODEL_DIR
                        / 'model.safetensors')
    plain = tiny_config(tmp_path / 'c', text_path, steps=1)
    Trainer(plain).run(progress=False)
    plain_weights = load_file(ckpt.latest_checkpoint(plain.run_dir) / ckpt.MODEL_DIR
                              / 'model.safetensors')
    assert set(weights) == set(plain_weights)  # the exported model has no head


@pytest.mark.parametrize('setting, message', [
    ('optim.loss=hinge', "optim.loss must be one of ('infonce', 'nt_xent', 'triplet')"),
    ('optim.temperature=0', 'optim.temperature must be > 0'),
    ('optim.triplet_margin=-1', 'optim.triplet_margin must be >= 0'),
    ('optim.projection_dim=-4', 'optim.projection_dim must be >= 0'),
])
def test_bad_objective_settings_are_refused_by_name(tmp_path, capsys, setting, message):
    code = train_main(['--config', 'config/train_tabletop.yaml', '--set', setting,
                       '--set', f'output_dir={tmp_path}', '--no-progress'])
    assert code == 2 and message in capsys.readouterr().err
