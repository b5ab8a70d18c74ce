"""vla-train / vla-eval on tiny real models: checkpoints, exact resume, logs, evaluation."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from support.training import losses, tiny_config
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training import evaluate as vla_eval
from vla_embedding_ros.training.config import TrainConfig, apply_override, load_config
from vla_embedding_ros.training.train import Trainer, export_model, lr_lambda
from vla_embedding_ros.training.train import main as train_main

# text_path and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def test_short_run_writes_loadable_checkpoints_and_logs(tmp_path, text_path):
    cfg = tiny_config(tmp_path, text_path)
    Trainer(cfg).run(progress=False)
    last = ckpt.latest_checkpoint(cfg.run_dir)
    assert last.name == '00000006'
    assert (cfg.run_dir / 'checkpoints' / 'last').is_symlink()
    assert sorted(p.name for p in (cfg.run_dir / 'checkpoints').glob('0*')) == \
        ['00000003', '00000006']
    model_dir = last / ckpt.MODEL_DIR
    assert {'config.json', 'model.safetensors', 'actions.yaml'} <= \
        {p.name for p in model_dir.iterdir()}
    model = VLAModel.from_pretrained(model_dir, device='cpu')
    assert model.config.fusion.type == 'transformer'
    assert sorted(losses(cfg.run_dir)) == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for v in losses(cfg.run_dir).values())
    with open(cfg.run_dir / 'eval.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert {(r['step'], r['split']) for r in rows} == {
        ('3', 'val'), ('3', 'unseen_combo'), ('6', 'val'), ('6', 'unseen_combo')}
    assert list((cfg.run_dir / 'tensorboard').glob('events.out.tfevents.*'))


def test_checkpoints_and_exports_are_readable_by_other_users(tmp_path, text_path):
    # mkstemp/mkdtemp make 0600/0700; a node running as a service user must read the files.
    import os
    import stat

    cfg = tiny_config(tmp_path, text_path, steps=3)
    Trainer(cfg).run(progress=False)
    export = tmp_path / 'exported'
    export_model(ckpt.latest_checkpoint(cfg.run_dir), export)
    old_mask = os.umask(0o022)
    os.umask(old_mask)
    for root in (ckpt.latest_checkpoint(cfg.run_dir), export):
        for path in [root, *root.rglob('*')]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o044 == 0o044 & ~old_mask, f'{path}: {oct(mode)}'


def test_init_from_fine_tunes_a_saved_model(tmp_path, text_path):
    first = tiny_config(tmp_path / 'a', text_path, steps=3)
    Trainer(first).run(progress=False)
    start = ckpt.latest_checkpoint(first.run_dir) / ckpt.MODEL_DIR
    cfg = tiny_config(tmp_path / 'b', text_path, steps=3)
    cfg.init_from = str(start)
    cfg.model = {}   # the architecture comes from the checkpoint
    trainer = Trainer(cfg)
    saved = VLAModel.from_pretrained(start, device='cpu').state_dict()
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, saved[name]), name
    trainer.run(progress=False)
    tuned = VLAModel.from_pretrained(ckpt.latest_checkpoint(cfg.run_dir) / ckpt.MODEL_DIR,
                                     device='cpu').state_dict()
    assert any(not torch.equal(tuned[k], saved[k]) for k in saved)

    other_library = tmp_path / 'wide.yaml'
    other_library.write_text(
        'parameter_names: [a, b]\nactions:\n  - {name: x, description: x, params: [0, 1]}\n')
    cfg.data.library = str(other_library)
    with pytest.raises(ValueError, match='init_from .* 7 parameters.*wide.yaml has 2'):
        Trainer(cfg)


def test_resume_continues_exactly(tmp_path, text_path):
    straight = tiny_config(tmp_path / 'a', text_path)
    Trainer(straight).run(progress=False)

    interrupted = tiny_config(tmp_path / 'b', text_path)
    Trainer(interrupted).run(progress=False, stop_at=3)  # as if killed after the step-3 save
    resumed = Trainer(tiny_config(tmp_path / 'b', text_path), resume=True)
    assert resumed.step == 3
    resumed.run(progress=False)

    expected, got = losses(straight.run_dir), losses(interrupted.run_dir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_non_finite_loss_skips_update_and_keeps_weights(tmp_path, text_path):
    trainer = Trainer(tiny_config(tmp_path, text_path))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with torch.no_grad():
        trainer.model.logit_scale.fill_(float('nan'))
    out = trainer.train_step()
    assert out['skipped'] and trainer.skipped_steps == 1
    after = trainer.model.state_dict()
    for key, value in before.items():
        if key != 'logit_scale':
            assert torch.equal(value, after[key]), key


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig.from_dict({'optim': {'steps': 100, 'warmup_steps': 10,
                                           'min_lr_ratio': 0.1}})
    f = lr_lambda(cfg)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)
    assert f(100) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


def test_config_rejects_unknown_options_and_parses_overrides(tmp_path):
    raw = {}
    apply_override(raw, 'optim.lr=3e-4')
    apply_override(raw, 'schedule.eval_splits=[val, clutter]')
    cfg = TrainConfig.from_dict(raw)
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.schedule.eval_splits == ['val', 'clutter']
    with pytest.raises(ValueError, match='optim.*lrr'):
        TrainConfig.from_dict({'optim': {'lrr': 1}})
    with pytest.raises(ValueError, match='optim.steps must be a number'):
        TrainConfig.from_dict({'optim': {'steps': 'many'}})
    with pytest.raises(ValueError, match='key.path=value'):
        apply_override({}, 'optim.lr')
    path = tmp_path / 'c.yaml'
    path.write_text('run_name: x\noptim: {steps: 5}\n')
    assert load_config(str(path), ['optim.steps=7']).optim.steps == 7


def test_data_objects_sets_the_training_scenes_object_count(tmp_path, text_path):
    cfg = tiny_config(tmp_path, text_path)
    assert cfg.data.objects == [2, 6]   # the default matches the val split's scenes
    raw = cfg.to_dict()
    apply_override(raw, 'data.objects=[5, 6]')
    generator = Trainer(TrainConfig.from_dict(raw)).source.generator
    counts = {len(generator.sample().scene.objects) for _ in range(60)}
    assert counts == {5, 6}
    for bad, message in (([0, 3], 'min_objects'), ([4, 3], 'min_objects'),
                         ([2.5, 4], r'data.objects must be \[min, max\] integers'),
                         (5, r'data.objects must be \[min, max\] integers')):
        raw['data']['objects'] = bad
        with pytest.raises(ValueError, match=message):
            Trainer(TrainConfig.from_dict(raw))


def test_shipped_training_config_is_valid():
    cfg = load_config('config/train_tabletop.yaml')
    assert cfg.model['fusion']['type'] == 'transformer'


def test_cli_trains_exports_and_eval_reports_baselines(tmp_path, text_path, capsys):
    cfg = tiny_config(tmp_path, text_path, steps=3)
    config_path = tmp_path / 'train.yaml'
    import yaml
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    export = tmp_path / 'exported'
    assert train_main(['--config', str(config_path), '--no-progress',
                       '--export', str(export)]) == 0
    assert (export / 'model.safetensors').is_file() and (export / 'actions.yaml').is_file()

    report_path, plot_path = tmp_path / 'report.json', tmp_path / 'curves.png'
    assert vla_eval.main(['--model', str(export), '--splits', 'val', 'paraphrase',
                          '--num', '30', '--device', 'cpu', '--json', str(report_path),
                          '--plot', str(plot_path), '--runs', str(cfg.run_dir),
                          '--replay-streams', '2', '--episodes', '3']) == 0
    report = json.loads(report_path.read_text())
    assert set(report['closed_loop_replay']) == {'val', 'paraphrase'}   # one per --splits
    replay = report['closed_loop_replay']['paraphrase']
    assert replay['split'] == 'paraphrase'
    assert len(replay['wins_per_stream']) == 2 and all(0 <= w <= 3 for w in
                                                       replay['wins_per_stream'])
    assert replay['success_rate'] == pytest.approx(sum(replay['wins_per_stream']) / 6)
    assert report['chance']['top1'] == pytest.approx(1 / 80)
    assert set(report['models']) == {'model', 'instruction only (image blanked)'}
    for split in ('val', 'paraphrase'):
        m = report['models']['model'][split]
        assert m['n'] == 30 and 0 <= m['top1'] <= m['top5'] <= 1
        assert sum(p['n'] for p in m['per_primitive'].values()) == 30
    assert plot_path.stat().st_size > 1000
    out = capsys.readouterr().out
    assert 'instruction only' in out and 'chance' in out
    assert ("closed-loop replay, paraphrase (the demo's episode streams, seeds 0-1, 3 episodes "
            "each)") in out
    assert vla_eval.main(['--model', str(export), '--splits', 'val', '--num', '5',
                          '--replay-streams', '1', '--episodes', '0']) == 2


def test_metrics_ranks_against_direct_computation():
    from vla_embedding_ros.training import metrics
    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(50, 80)))
    targets = torch.tensor(rng.integers(0, 80, size=50))
    ranks = metrics.target_ranks(logits, targets)
    for i in range(50):
        assert ranks[i] == 1 + sum(logits[i, j] > logits[i, targets[i]] for j in range(80))
    m = metrics.summarise(ranks)
    assert m['mrr'] == pytest.approx(np.mean([1 / r for r in ranks]))
    assert metrics.chance(80)['mrr'] == pytest.approx(sum(1 / k for k in range(1, 81)) / 80)
