"""What a second vla-train does to the first (issue 30 items 1-3): a new run never writes into
a folder holding another run (it gets a fresh one, or --overwrite-run clears it); --resume
continues the saved run's own settings, changed only by --set, and says so; a fine-tune keeps
every part of the model it starts from unless init_replace names one."""
import logging

import pytest
import torch
import yaml

from support.training import config
from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.evaluation import LibraryScorer, tabletop_ranks
from vla_embedding_ros.training.export import FACTS_FILE
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main


def config_file(tmp_path, cfg, name='cfg.yaml'):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def snapshot(run_dir):
    """Every file of a run folder with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob('*'))
            if p.is_file()}


def test_a_second_run_with_a_taken_name_writes_a_fresh_folder(tmp_path, text_path, capsys,
                                                                caplog):
    cfg = config(tmp_path, text_path, steps=3)
    file = config_file(tmp_path, cfg)
    assert train_main(['--config', file, '--no-progress']) == 0
    first = snapshot(cfg.run_dir)
    assert 'checkpoints/00000003/training_state.pt' in first
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger='vla_train'):
        assert train_main(['--config', file, '--no-progress', '--set', 'optim.steps=2']) == 0
    assert snapshot(cfg.run_dir) == first   # the first run untouched, byte for byte
    fresh = [p for p in cfg.run_dir.parent.iterdir() if p.name.startswith('tiny-')]
    assert len(fresh) == 1 and ckpt.latest_checkpoint(fresh[0]).name == '00000002'
    assert f'{cfg.run_dir} already holds a run (last checkpoint step 3): this new run ' \
           f'writes to {fresh[0]} instead' in caplog.text
    assert f'run folder {fresh[0]}' in caplog.text and \
        f'checkpoints in {fresh[0] / "checkpoints"}' in caplog.text
    out = capsys.readouterr().out
    assert f'run: {fresh[0]}; checkpoints: {fresh[0] / "checkpoints"}' in out
    # The fresh folder's own config names it, so --resume --set run_name=<it> continues it.
    assert yaml.safe_load((fresh[0] / 'config.yaml').read_text())['run_name'] == fresh[0].name


def test_overwrite_run_replaces_the_old_run_and_only_it(tmp_path, text_path, capsys):
    cfg = config(tmp_path, text_path, steps=3)
    file = config_file(tmp_path, cfg)
    assert train_main(['--config', file, '--no-progress']) == 0
    (cfg.run_dir / 'notes.txt').write_text('mine')
    assert train_main(['--config', file, '--no-progress', '--overwrite-run',
                       '--set', 'optim.steps=2']) == 0
    names = sorted(p.name for p in (cfg.run_dir / 'checkpoints').glob('0*'))
    assert names == ['00000002']   # no checkpoint of the old run left beside the new ones
    assert (cfg.run_dir / 'notes.txt').read_text() == 'mine'
    assert [p.name for p in cfg.run_dir.parent.iterdir()] == ['tiny']
    assert train_main(['--config', file, '--resume', '--overwrite-run']) == 2
    assert 'pick one' in capsys.readouterr().err


def test_resume_continues_the_saved_runs_steps_not_the_config_files(tmp_path, text_path,
                                                                     caplog):
    cfg = config(tmp_path, text_path, steps=2)
    assert train_main(['--config', config_file(tmp_path, cfg), '--no-progress']) == 0
    # The config file now says 7 steps (as the README's resume command reads the YAML's 7,000).
    longer = config(tmp_path, text_path, steps=7)
    longer.optim.warmup_steps = 3   # a setting resume may not change, left unused
    file = config_file(tmp_path, longer, 'longer.yaml')
    with caplog.at_level(logging.INFO, logger='vla_train'):
        assert train_main(['--config', file, '--resume', '--no-progress']) == 0
    assert ckpt.latest_checkpoint(cfg.run_dir).name == '00000002'
    assert f'resuming {cfg.run_dir} from step 2 of 2' in caplog.text
    assert 'settings changed: none' in caplog.text
    assert "optim.steps 7 (the run has 2)" in caplog.text
    assert 'optim.warmup_steps 3 (the run has 2)' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger='vla_train'):
        assert train_main(['--config', file, '--resume', '--no-progress',
                           '--set', 'optim.steps=4']) == 0
    assert ckpt.latest_checkpoint(cfg.run_dir).name == '00000004'
    assert 'from step 2 of 4' in caplog.text and 'settings changed: optim.steps 2 -> 4' \
        in caplog.text
    saved = yaml.safe_load((cfg.run_dir / 'config.yaml').read_text())
    assert saved['optim']['steps'] == 4 and saved['optim']['warmup_steps'] == 2


def test_a_fine_tune_starts_from_the_model_it_names(tmp_path, text_path):
    start = config(tmp_path / 'start', text_path, steps=4)
    trained = Trainer(start)
    trained.run(progress=False)
    source = ckpt.latest_checkpoint(start.run_dir) / ckpt.MODEL_DIR
    original = VLAModel.from_pretrained(source, device='cpu')
    # Every config has a model.action section (this one too): it must not replace anything.
    fine = config(tmp_path / 'fine', text_path, steps=2)
    assert 'action' in fine.model
    fine.init_from = str(source)
    fine.optim.lr = 1e-12
    trainer = Trainer(fine)
    library = ActionLibrary.from_yaml(trainer.library_path)
    for name, value in original.state_dict().items():
        assert torch.equal(value, trainer.model.state_dict()[name]), name
    # Step 0 scores exactly as the model it starts from: the same ranks on the same scenes.
    ranks_before, _ = tabletop_ranks(LibraryScorer(original, library), 'val', 16, 7, 48)
    ranks_now, _ = tabletop_ranks(LibraryScorer(trainer.model, library), 'val', 16, 7, 48)
    assert ranks_now.tolist() == ranks_before.tolist()
    # Asking for a new action encoder is what replaces it.
    fine.init_replace = ['action']
    fine.run_name = 'replaced'
    replaced = Trainer(fine)
    assert not torch.equal(replaced.model.action.mlp[0].weight, original.action.mlp[0].weight)
    assert torch.equal(replaced.model.vision.stem.net[0].weight,
                       original.vision.stem.net[0].weight)


@pytest.mark.parametrize('setting, message', [
    (['action', 'vision'], "init_replace: unknown part(s) ['vision']; replaceable: ['action']"),
    ('action', 'init_replace must be a list of model parts'),
])
def test_bad_init_replace_is_refused_by_name(tmp_path, text_path, setting, message):
    cfg = config(tmp_path, text_path, steps=1)
    cfg.init_from, cfg.init_replace = str(tmp_path), setting
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')
                       .replace('[', r'\[').replace(']', r'\]')):
        Trainer(cfg)


def test_the_continuous_recipe_still_replaces_the_action_encoder(monkeypatch, request):
    """config/train_tabletop_continuous.yaml starts a Fourier-feature action encoder on the
    grid model's other weights, as models/tabletop_continuous was made."""

    from vla_embedding_ros.model.checkpoint import load_config as load_model_config
    from vla_embedding_ros.training import model_factory
    from vla_embedding_ros.training.config import load_config
    monkeypatch.chdir(request.config.rootpath)
    cfg = load_config('config/train_tabletop_continuous.yaml')
    assert cfg.init_replace == ['action']
    library = ActionLibrary.from_yaml(cfg.data.library)
    model = model_factory.make_model(cfg, library, cfg.data.library, 'cpu')
    # the shipped config with today's defaults for the settings added after it
    shipped = load_model_config('models/tabletop_continuous').to_dict()['action']
    assert model.config.to_dict()['action'] == shipped
    assert model.action.fourier is not None
    grid = VLAModel.from_pretrained(cfg.init_from, device='cpu')
    for name, value in grid.fusion.state_dict().items():
        assert torch.equal(value, model.fusion.state_dict()[name]), name


def test_checkpoints_say_what_the_model_was_validated_on(tmp_path, text_path):
    cfg = config(tmp_path, text_path, steps=2)
    cfg.schedule.eval_splits, cfg.schedule.eval_every, cfg.schedule.eval_samples = \
        ['val'], 2, 4
    Trainer(cfg).run(progress=False)
    facts = yaml.safe_load((ckpt.latest_checkpoint(cfg.run_dir) / ckpt.MODEL_DIR /
                            FACTS_FILE).read_text())
    assert facts['validation']['eval_splits'] == ['val']
    assert facts['validation']['eval_samples'] == 4
    assert facts['last_evaluation']['step'] == 2
    assert facts['last_evaluation']['results']['val']['n'] == 4
