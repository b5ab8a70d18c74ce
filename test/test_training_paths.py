"""Paths in a training config resolve next to the config file (then in the installed share/),
never in the shell's folder: `vla-train --config <share>/config/...` works from anywhere."""
import shutil
from pathlib import Path

import yaml

from vla_embedding_ros.training.config import load_config
from vla_embedding_ros.training.train import library_for

REPO = Path(__file__).resolve().parents[1]


def test_inputs_resolve_next_to_the_config_not_the_current_folder(tmp_path, monkeypatch):
    project = tmp_path / 'project'
    (project / 'data' / 'mine').mkdir(parents=True)
    shutil.copy(REPO / 'config' / 'tabletop_actions.yaml', project / 'my_actions.yaml')
    (project / 'train.yaml').write_text(yaml.safe_dump({
        'data': {'source': 'jsonl', 'path': 'data/mine', 'library': 'my_actions.yaml'},
        'init_from': 'models/missing'}))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(project / 'train.yaml'), ['data.val_path=val'])
    assert cfg.data.library == str(project / 'my_actions.yaml')
    assert cfg.data.path == str(project / 'data' / 'mine')
    # Missing inputs name where they were looked for: next to the config.
    assert cfg.init_from == str(project / 'models' / 'missing')
    # --set values are the shell's, relative to its folder; outputs go where vla-train runs.
    assert cfg.data.val_path == 'val'
    assert cfg.run_dir == Path('runs') / cfg.run_name


def test_the_shipped_config_trains_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO / 'config' / 'train_tabletop.yaml'))
    library = library_for(cfg.data)
    assert library.is_file() and library.name == 'tabletop_actions.yaml'


def test_an_older_config_naming_config_slash_library_finds_the_installed_one(tmp_path,
                                                                            monkeypatch):
    (tmp_path / 'old.yaml').write_text(yaml.safe_dump(
        {'data': {'library': 'config/tabletop_actions.yaml'}}))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(tmp_path / 'old.yaml'))
    assert Path(cfg.data.library).is_file()
    assert Path(cfg.data.library).is_absolute()
