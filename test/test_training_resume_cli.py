"""--resume is what it says: it fails when there is nothing to resume, continues the saved
run's settings, refuses overrides that would change what the run learns (by name), and takes
the ones that are safe (a longer optim.steps)."""
import yaml

from support.training import config
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main


def _config_file(tmp_path, cfg):
    path = tmp_path / 'cfg.yaml'
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return str(path)


def test_resume_with_nothing_to_resume_fails_clearly(tmp_path, text_path, capsys):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    assert train_main(['--config', _config_file(tmp_path, cfg), '--resume',
                       '--no-progress']) == 2
    assert '--resume: nothing to resume, no checkpoint under' in capsys.readouterr().err
    assert not (cfg.run_dir / 'checkpoints').exists()   # no run was started instead


def test_resume_refuses_a_changed_setting_by_name_and_keeps_the_saved_config(
        tmp_path, text_path, capsys):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    Trainer(cfg).run(progress=False)
    saved = (cfg.run_dir / 'config.yaml').read_text()
    code = train_main(['--config', _config_file(tmp_path, cfg), '--resume', '--no-progress',
                       '--set', 'optim.lr=0.5', '--set', 'optim.steps=4'])
    assert code == 2
    err = capsys.readouterr().err
    assert 'optim.lr is 0.003 there, 0.5 now' in err and 'optim.steps is' not in err
    assert (cfg.run_dir / 'config.yaml').read_text() == saved   # untouched


def test_resume_with_more_steps_continues_the_saved_run(tmp_path, text_path):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    Trainer(cfg).run(progress=False)
    resumed = Trainer(config(tmp_path, text_path, steps=4), resume=True)
    assert resumed.step == 2 and resumed.cfg.optim.steps == 4
    resumed.run(progress=False)
    assert ckpt.latest_checkpoint(cfg.run_dir).name == '00000004'
    written = yaml.safe_load((cfg.run_dir / 'config.yaml').read_text())
    assert written['optim']['steps'] == 4 and written['optim']['lr'] == cfg.optim.lr
