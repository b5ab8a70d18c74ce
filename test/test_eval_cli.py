"""vla-eval's command line as a new user meets it (issue 30 items 10, 11 and the smaller
ones): a typo in a folder is one line naming it (exit 2), not a traceback; the README's
--train-variants on the shipped config trains every fusion; --json says where it wrote; the
default sample count is the README tables' 300; every column of the continuous table has a
unit."""
import shutil
import subprocess
import sys

import pytest
import yaml

from support.models import tiny_vla_config
from support.training import LIBRARY_PATH, tiny_config
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import evaluate as vla_eval
from vla_embedding_ros.training.continuous_eval import format_continuous
from vla_embedding_ros.training.train import main as train_main

pytestmark = pytest.mark.usefixtures('repo_cwd')


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory, text_path):
    path = tmp_path_factory.mktemp('model') / 'tiny'
    VLAModel(tiny_vla_config(text_path=text_path)).save_pretrained(path)
    shutil.copyfile(LIBRARY_PATH, path / 'actions.yaml')
    return path


def one_line_exit_2(capsys, argv, main=vla_eval.main) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'Traceback' not in err, err
    return err


def test_a_mistyped_model_folder_is_one_line(capsys, tmp_path):
    err = one_line_exit_2(capsys, ['--model', 'models/tabletopp'])
    assert err == ('vla-eval: --model models/tabletopp: no such model folder; did you mean '
                   'models/tabletop?')
    missing = str(tmp_path / 'models' / 'clip-vit-base-patch32')
    assert missing in one_line_exit_2(capsys, ['--model', missing])
    err = one_line_exit_2(capsys, ['--model', 'models/tabletop', '--compare', 'x=runs/nope'])
    assert 'vla-eval: --compare x=runs/nope: no such model folder' in err
    err = one_line_exit_2(capsys, ['--model', 'models/tabletopp', '--task', 'continuous'])
    assert 'no such model folder' in err


def test_a_mistyped_dataset_path_is_named_as_missing(capsys, tmp_path):
    err = one_line_exit_2(capsys, ['--config', 'config/train_tabletop.yaml', '--set',
                                   'data.source=jsonl', '--set', 'data.path=nope'], train_main)
    assert err == 'vla-train: data.path: nope does not exist'
    err = one_line_exit_2(capsys, ['--config', 'config/train_tabletop.yaml', '--set',
                                   'init_from=models/tabletopp'], train_main)
    assert err == 'vla-train: init_from: models/tabletopp does not exist'


def test_train_variants_drop_what_only_transformer_fusion_takes(tmp_path, text_path, capsys):
    cfg = tiny_config(tmp_path, text_path, steps=1, target_cell_weight=0.5, region_weight=0.5)
    cfg.schedule.eval_splits = []
    file = tmp_path / 'variants.yaml'
    file.write_text(yaml.safe_dump(cfg.to_dict()))
    dirs = vla_eval.train_variants(str(file), ['threads=1'], tmp_path / 'variants')
    assert sorted(dirs) == ['gated', 'late', 'transformer']
    assert all((d / 'model.safetensors').is_file() for d in dirs.values())
    out = capsys.readouterr().out
    for fusion in ('late', 'gated'):
        assert f'variant {fusion}: optim.target_cell_weight 0.5 -> 0.0 (its head reads the ' \
               'fused patch tokens of transformer fusion)' in out
    assert 'variant transformer:' not in out
    saved = yaml.safe_load((tmp_path / 'variants/variant-late/config.yaml').read_text())
    assert saved['optim']['target_cell_weight'] == 0.0 and saved['optim']['region_weight'] == 0.5


def test_json_says_where_it_wrote_and_the_default_is_300(tiny_model, tmp_path, capsys):
    report = tmp_path / 'report.json'
    assert vla_eval.main(['--model', str(tiny_model), '--splits', 'val', '--num', '4',
                          '--device', 'cpu', '--json', str(report)]) == 0
    assert f'report: {report}' in capsys.readouterr().out and report.is_file()
    assert vla_eval.parse_args(['--model', 'm']).num == 300
    help_text = subprocess.run([sys.executable, '-m', 'vla_embedding_ros.training.evaluate',
                                '--help'], capture_output=True, text=True, check=True).stdout
    assert 'default: 300' in ' '.join(help_text.split())


def test_every_continuous_column_names_its_unit():
    row = {'n': 3, 'success': 0.5, 'pick_error_radii': 0.25, 'error_radii': 0.75,
           'primitive': 1.0}
    table = format_continuous({'val': {'model': row}}, 3, 7)
    header = table.splitlines()[2]
    assert header.split() == ['success', 'pick', 'err/r', 'all', 'err/r', 'primitive']
    assert 'pick err/r: mean distance' in table and 'all err/r: the same over every ' \
        'decision' in table and 'in object radii' in table
