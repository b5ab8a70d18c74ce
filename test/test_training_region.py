"""Scene-ground-truth supervision (training/region.py), the reworded split in vla-eval and
the text-encoder prior, on tiny real models."""
import json
import logging

import numpy as np
import pytest
import torch

from support.training import losses, tiny_config
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.data.tabletop import (
    COLORS,
    GRID,
    SHAPES,
    TabletopConfig,
    TabletopGenerator,
    build_action_library,
    parse_action_name,
)
from vla_embedding_ros.model.encoders import TextFeatures
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training import evaluate as vla_eval
from vla_embedding_ros.training.region import RegionSupervision, scene_labels
from vla_embedding_ros.training.text_prior import text_prior
from vla_embedding_ros.training.train import Trainer, export_model
from vla_embedding_ros.training.train import main as train_main

# text_path (the tiny text model) and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def test_scene_labels_name_every_cell_and_the_target():
    samples = list(TabletopGenerator(TabletopConfig(image_size=48), seed=1).samples(40))
    labels = scene_labels(samples)
    for i, sample in enumerate(samples):
        occupied = {o.cell[0] * GRID + o.cell[1]: o for o in sample.scene.objects}
        for cell in range(GRID * GRID):
            obj = occupied.get(cell)
            assert labels['color'][i, cell] == (COLORS.index(obj.color) if obj else len(COLORS))
            assert labels['shape'][i, cell] == (SHAPES.index(obj.shape) if obj else len(SHAPES))
        _, row, col = parse_action_name(sample.action_name)
        assert labels['target_cell'][i] == row * GRID + col


def test_region_terms_train_the_stem_and_heads_and_resume_exactly(tmp_path, text_path):
    terms = {'region_weight': 0.5, 'target_cell_weight': 0.5}
    plain = Trainer(tiny_config(tmp_path / 'plain', text_path))
    assert plain.region is None
    trainer = Trainer(tiny_config(tmp_path / 'p', text_path, **terms))
    head_before = trainer.region.color.weight.detach().clone()
    stem_before = next(trainer.model.vision.parameters()).detach().clone()
    trainer.train_step()
    assert not torch.equal(head_before, trainer.region.color.weight)
    assert not torch.equal(stem_before, next(trainer.model.vision.parameters()))

    # The terms are in the logged loss: larger at step 1 than without them (same seed, same
    # first batch, same initial model weights).
    straight = tiny_config(tmp_path / 'a', text_path, **terms)
    Trainer(straight).run(progress=False)
    without = tiny_config(tmp_path / 'c', text_path)
    Trainer(without).run(progress=False)
    assert losses(straight.run_dir)[1] > losses(without.run_dir)[1]

    interrupted = tiny_config(tmp_path / 'b', text_path, **terms)
    Trainer(interrupted).run(progress=False, stop_at=3)
    resumed = Trainer(tiny_config(tmp_path / 'b', text_path, **terms), resume=True)
    assert resumed.step == 3
    resumed.run(progress=False)
    expected, got = losses(straight.run_dir), losses(interrupted.run_dir)
    for step in (4, 5, 6):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    # The heads are training-only: the exported model has the same tensors as a plain one.
    from safetensors.torch import load_file
    tensors = {}
    for name, cfg in (('with', straight), ('without', without)):
        export_model(ckpt.latest_checkpoint(cfg.run_dir), tmp_path / name)
        tensors[name] = load_file(str(tmp_path / name / 'model.safetensors'))
    assert set(tensors['with']) == set(tensors['without'])
    assert not any(k.startswith(('aux.', 'color', 'shape', 'target')) for k in tensors['with'])


def test_region_supervision_refuses_what_it_cannot_label(tmp_path, text_path, capsys):
    cfg = tiny_config(tmp_path, text_path, target_cell_weight=0.5)
    cfg.model['fusion']['type'] = 'late'
    with pytest.raises(ValueError, match='target_cell_weight needs .*transformer'):
        Trainer(cfg)
    with pytest.raises(ValueError, match='4x4 patch grid'):
        RegionSupervision(32, 32, (6, 6))
    # From the command line: one line naming the setting, exit 2, no traceback.
    import yaml
    config_path = tmp_path / 'late.yaml'
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert train_main(['--config', str(config_path), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        'vla-train: optim.target_cell_weight needs model.fusion.type: transformer']


def test_recorded_data_trains_without_region_terms_and_says_so(tmp_path, text_path, caplog):
    root = tmp_path / 'ds'
    samples = TabletopGenerator(TabletopConfig(image_size=48), seed=0).samples(12)
    with DatasetWriter(root, library=build_action_library()) as writer:
        for i, s in enumerate(samples):
            writer.add(s.image, s.instruction, action=s.action_name, episode=i, timestamp=0.0)
    cfg = tiny_config(tmp_path, text_path, steps=2, region_weight=0.5, target_cell_weight=0.5)
    cfg.data.source, cfg.data.path = 'jsonl', str(root)
    with caplog.at_level(logging.WARNING, logger='vla_train'):
        trainer = Trainer(cfg)
    assert trainer.region is None
    assert 'no scene ground truth' in caplog.text
    trainer.run(progress=False)
    assert trainer.step == 2


def test_vla_eval_breaks_the_reworded_split_down_by_what_is_new(tmp_path, text_path, capsys):
    cfg = tiny_config(tmp_path, text_path, steps=1)
    Trainer(cfg).run(progress=False)
    export = tmp_path / 'm'
    export_model(ckpt.latest_checkpoint(cfg.run_dir), export)
    report_path = tmp_path / 'r.json'
    assert vla_eval.main(['--model', str(export), '--splits', 'reworded', '--num', '60',
                          '--device', 'cpu', '--json', str(report_path),
                          '--text-prior']) == 0
    report = json.loads(report_path.read_text())
    reworded = report['models']['model']['reworded']
    groups = reworded['per_novelty']
    assert set(groups) == set(vla_eval.NOVELTY.values())
    assert sum(g['n'] for g in groups.values()) == 60
    # The split's top-1 is the n-weighted mean of its groups.
    assert reworded['top1'] == pytest.approx(
        sum(g['n'] * g['top1'] for g in groups.values()) / 60)
    assert set(report['text_prior']) == {'training synonyms', 'held-out (reworded) synonyms'}
    out = capsys.readouterr().out
    assert 'by what is new' in out and 'frozen text encoder alone' in out


def _table_encoder(vectors):
    """encode_text over a fixed word -> vector table: a sentence is the mean of its words."""
    def encode(texts):
        pooled = torch.stack([torch.stack([vectors[w] for w in t.split()]).mean(0)
                              for t in texts])
        tokens = pooled[:, None]
        return TextFeatures(tokens, torch.ones(len(texts), 1, dtype=torch.bool), pooled)
    return encode


def test_text_prior_scores_an_encoder_that_knows_synonyms_and_one_that_does_not():
    from vla_embedding_ros.data.tabletop.language import (
        COLOR_WORDS,
        REWORDED_COLOR_WORDS,
        REWORDED_SHAPE_WORDS,
        SHAPE_WORDS,
    )
    rng = np.random.default_rng(0)
    canonical = {name: torch.tensor(rng.normal(size=64), dtype=torch.float32)
                 for name in (*COLORS, *SHAPES, 'pick', 'up', 'the')}
    knows, guesses = dict(canonical), dict(canonical)
    for table in (COLOR_WORDS, SHAPE_WORDS, REWORDED_COLOR_WORDS, REWORDED_SHAPE_WORDS):
        for name, words in table.items():
            for word in words:
                if word != name:
                    knows[word] = canonical[name] + 0.05 * torch.randn(64)
                    guesses[word] = torch.tensor(rng.normal(size=64), dtype=torch.float32)
    perfect = text_prior(_table_encoder(knows))
    blind = text_prior(_table_encoder(guesses))
    for label in perfect:
        assert all(perfect[label][t] == 1.0 for t in ('colour word', 'shape word',
                                                       'colour sentence', 'shape sentence'))
        assert blind[label]['colour word'] < 0.6 and blind[label]['colour sentence'] < 0.6
