"""Fine-tuning from a CLIP/SigLIP joint space (model.init) and zero-shot vla-eval, on tiny
CLIP and SigLIP checkpoints built and saved here and loaded by path (nothing downloads)."""
import json
import math

import numpy as np
import pytest
import torch
import yaml

from support.models import HIDDEN, IMAGE_SIZE, PATCH_SIZE, make_clip_tokenizer, make_word_tokenizer
from vla_embedding_ros.data.tabletop import TabletopConfig, TabletopGenerator
from vla_embedding_ros.model import VLAModel, library_contrastive_loss
from vla_embedding_ros.model.pretrained_space import PretrainedSpace
from vla_embedding_ros.selection import ActionLibrary, ActionSelector, ZeroShotCLIP
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training import evaluate as vla_eval
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.evaluation import LibraryScorer
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

LIBRARY = 'config/tabletop_actions.yaml'
PROMPT = 'a robot arm about to {description}'


def _vocabulary() -> list[str]:
    """Every library description and some tabletop instructions, so the tiny tokenizers know
    the words the tests say (different descriptions give different token ids)."""
    library = ActionLibrary.from_yaml(LIBRARY)
    generator = TabletopGenerator(TabletopConfig(image_size=48), 'val', 0)
    said = [s.instruction for s in generator.samples(200)]
    return [a.description for a in library.actions] + said + ['a robot arm about to']


def _towers(vocab_size: int, **text) -> tuple[dict, dict]:
    vision = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64,
                num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=24, **text)
    return text, vision


def _save_clip(path) -> str:
    from transformers import CLIPConfig, CLIPModel

    tokenizer, vocab_size = make_clip_tokenizer(_vocabulary())
    text, vision = _towers(vocab_size, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
              ).save_pretrained(path)
    tokenizer.save_pretrained(path)
    # A checkpoint's own normalisation, which the fine-tuned folder must keep.
    (path / 'preprocessor_config.json').write_text(json.dumps(
        {'image_mean': [0.4, 0.45, 0.5], 'image_std': [0.25, 0.26, 0.27]}))
    return str(path)


def _save_siglip(path) -> str:
    from transformers import SiglipConfig, SiglipModel

    tokenizer, vocab_size = make_word_tokenizer(_vocabulary())
    text, vision = _towers(vocab_size, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-3.0)   # non-zero, so a forgotten bias would show
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp('spaces')
    return {'clip': _save_clip(root / 'clip'), 'siglip': _save_siglip(root / 'siglip')}


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def space_config(tmp_path, path, kind='clip', steps=2, prompt=PROMPT, **optim) -> TrainConfig:
    return TrainConfig.from_dict({
        'run_name': 'space', 'output_dir': str(tmp_path / 'runs'), 'seed': 5, 'device': 'cpu',
        'model': {'init': kind, 'name_or_path': path, 'action_prompt': prompt},
        'data': {'source': 'tabletop', 'library': LIBRARY, 'image_size': 48},
        'optim': {'steps': steps, 'batch_size': 8, 'lr': 1e-3, 'encoder_lr': 3e-4,
                  'warmup_steps': 1, **optim},
        'schedule': {'log_every': 1, 'eval_every': 100, 'save_every': 1, 'eval_samples': 8,
                     'eval_splits': [], 'keep_last': 5},
    })


def _scenes(n=12, seed=1):
    """Real tabletop renders (the procedural benchmark's), with their instructions."""
    samples = list(TabletopGenerator(TabletopConfig(image_size=48), 'val', seed).samples(n))
    return np.stack([s.image for s in samples])[:, None], [s.instruction for s in samples]


@pytest.mark.parametrize('kind', ['clip', 'siglip'])
def test_before_the_first_update_it_scores_exactly_like_the_zero_shot_scorer(
        tmp_path, checkpoints, kind):
    trainer = Trainer(space_config(tmp_path, checkpoints[kind], kind))
    model = trainer.model
    assert isinstance(model, PretrainedSpace) and model.model_type == kind
    assert model.action_prompt == PROMPT and model.training
    library = ActionLibrary.from_yaml(LIBRARY)
    images, instructions = _scenes()
    got = LibraryScorer(model, library).logits(images, instructions)
    zero_shot = ZeroShotCLIP.from_pretrained(checkpoints[kind], device='cpu',
                                             action_prompt=PROMPT)
    expected = LibraryScorer(zero_shot, library).logits(images, instructions)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # Not trivially equal: the scenes, instructions and descriptions change the logits.
    assert got.std(dim=1).min() > 0 and (got[0] - got[1]).abs().max() > 1e-4
    if kind == 'siglip':   # the checkpoint's own scale and bias
        assert model.scale().item() == pytest.approx(10.0)
        assert model.clip.logit_bias.item() == -3.0
    # The checkpoint's normalisation is the preprocessor's.
    expected_mean = (0.4, 0.45, 0.5) if kind == 'clip' else (0.5, 0.5, 0.5)
    assert tuple(trainer.preprocess.mean) == pytest.approx(expected_mean)


def _batch_loss(trainer, batch) -> float:
    images, instructions, targets = batch
    with torch.no_grad():
        b, c = images.shape[:2]
        pixels = trainer.preprocess(list(images.reshape(b * c, *images.shape[2:])))
        query = trainer.model.fuse(trainer.model.encode_images(pixels),
                                   trainer.model.encode_text(instructions), c)
        actions = trainer.model.encode_actions(trainer.objective.library_params,
                                               trainer.objective.texts)
        return library_contrastive_loss(query, actions, torch.as_tensor(targets),
                                        trainer.model.logit_scale).item()


@pytest.mark.parametrize('kind', ['clip', 'siglip'])
def test_fine_tuning_trains_both_towers_at_encoder_lr_and_lowers_the_loss(
        tmp_path, checkpoints, kind):
    trainer = Trainer(space_config(tmp_path, checkpoints[kind], kind))
    model, opt = trainer.model, trainer.cfg.optim
    towers = {id(p) for part in (model.vision, model.text) for p in part.parameters()}
    assert len(towers) == sum(1 for n, _ in model.named_parameters()
                              if not n.startswith('clip.logit_'))
    for group in trainer.optimizer.param_groups:
        in_towers = {id(p) in towers for p in group['params']}
        assert len(in_towers) == 1   # a group is all tower or all not
        assert group['initial_lr'] == (opt.encoder_lr if in_towers.pop() else opt.lr)
    assert sum(len(g['params']) for g in trainer.optimizer.param_groups
               if g['initial_lr'] == opt.encoder_lr) == len(towers)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    # Two updates on one batch (the source rewound each time): its loss must fall.
    state = trainer.source.state_dict()
    batch = trainer.source.next_batch(opt.batch_size)
    first = _batch_loss(trainer, batch)
    for _ in range(2):
        trainer.source.load_state_dict(state)
        out = trainer.train_step()
        assert not out['skipped'] and math.isfinite(out['loss']) and out['grad_norm'] > 0
    assert _batch_loss(trainer, batch) < first

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith('clip.vision_model.') for k in changed)
    assert any(k.startswith('clip.text_model.') for k in changed)
    assert all(torch.isfinite(v).all() for v in after.values())
    if kind == 'siglip':   # a softmax loss is blind to a shift: the bias is the checkpoint's
        assert 'clip.logit_bias' not in changed and not model.clip.logit_bias.requires_grad


def test_resume_reaches_the_parameters_of_an_uninterrupted_run(tmp_path, checkpoints):
    straight = space_config(tmp_path / 'a', checkpoints['clip'])
    Trainer(straight).run(progress=False)

    interrupted = space_config(tmp_path / 'b', checkpoints['clip'])
    Trainer(interrupted).run(progress=False, stop_at=1)
    resumed = Trainer(space_config(tmp_path / 'b', checkpoints['clip']), resume=True)
    assert resumed.step == 1 and isinstance(resumed.model, PretrainedSpace)
    assert resumed.model.action_prompt == PROMPT
    resumed.run(progress=False)

    expected = PretrainedSpace.from_pretrained(
        ckpt.latest_checkpoint(straight.run_dir) / ckpt.MODEL_DIR, 'cpu').state_dict()
    got = resumed.model.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-6, atol=1e-7, msg=key)
    start = PretrainedSpace.from_pretrained(checkpoints['clip'], 'cpu').state_dict()
    assert any(not torch.equal(start[k], expected[k]) for k in start)


def test_cli_trains_exports_and_the_selector_loads_it_like_a_clip_folder(
        tmp_path, checkpoints, capsys):
    config = tmp_path / 'clip.yaml'
    shipped = yaml.safe_load(open('config/train_clip.yaml'))
    assert shipped['model']['init'] == 'clip' and shipped['optim']['region_weight'] == 0
    config.write_text(yaml.safe_dump(shipped))
    export = tmp_path / 'exported'
    assert train_main([
        '--config', str(config), '--no-progress', '--export', str(export),
        '--set', f'model.name_or_path={checkpoints["clip"]}', '--set', 'optim.steps=2',
        '--set', 'optim.warmup_steps=1',
        '--set', 'optim.batch_size=4', '--set', 'data.image_size=48', '--set',
        'schedule.eval_samples=8', '--set', 'schedule.eval_splits=[val]', '--set',
        'device=cpu', '--set', f'output_dir={tmp_path / "runs"}']) == 0
    names = {p.name for p in export.iterdir()}
    assert {'config.json', 'model.safetensors', 'actions.yaml', 'vla_space.json',
            'preprocessor_config.json', 'tokenizer.json'} <= names
    # Nothing that a loader would unpickle, and no staging left behind.
    assert not [n for n in names if n.endswith(('.bin', '.pt', '.pth', '.pkl'))]
    assert not [n for n in names if n.startswith('.')]
    assert json.loads((export / 'vla_space.json').read_text())['action_prompt'] == \
        shipped['model']['action_prompt']

    # The node's path: ActionSelector.from_pretrained, no option telling it what the folder is.
    selector = ActionSelector.from_pretrained(export, device='cpu', top_k=3)
    assert isinstance(selector.model, ZeroShotCLIP)
    assert selector.model.action_prompt == shipped['model']['action_prompt']
    assert selector.model.image_mean == pytest.approx((0.4, 0.45, 0.5))
    trained = PretrainedSpace.from_pretrained(
        ckpt.latest_checkpoint(tmp_path / 'runs' / 'clip_finetune') / ckpt.MODEL_DIR, 'cpu')
    raw = PretrainedSpace.from_pretrained(checkpoints['clip'], 'cpu')
    key = 'clip.text_projection.weight'
    assert torch.equal(selector.model.state_dict()[key], trained.state_dict()[key])
    assert not torch.equal(trained.state_dict()[key], raw.state_dict()[key])

    images, instructions = _scenes(n=2, seed=4)
    frame = images[0, 0]
    result = selector.select(frame, instructions[0])
    assert result.name in selector.library.names and len(result.top_names) == 3
    library = ActionLibrary.from_yaml(export / 'actions.yaml')
    expected = LibraryScorer(trained.eval(), library).logits(images[:1], instructions[:1])[0]
    np.testing.assert_allclose(result.top_scores, expected[result.top_indices].numpy(),
                               rtol=1e-4, atol=1e-4)
    assert expected[result.top_indices[0]] >= expected.max() - 1e-4   # the best (to ties)

    # vla-eval says what it is: fine-tuned, not zero-shot.
    capsys.readouterr()
    assert vla_eval.main(['--model', str(export), '--splits', 'val', '--num', '8',
                          '--device', 'cpu']) == 0
    out = capsys.readouterr().out
    assert 'model [fine-tuned clip]' in out and 'ZERO-SHOT' not in out

    # A VLAModel loader given such a folder says what it is and how to use it.
    with pytest.raises(ValueError, match='is a clip checkpoint.*model.init: clip'):
        VLAModel.from_pretrained(export, device='cpu')


@pytest.mark.parametrize('kind', ['clip', 'siglip'])
def test_vla_eval_reports_a_raw_folder_zero_shot(tmp_path, checkpoints, kind, capsys):
    report_path = tmp_path / 'report.json'
    assert vla_eval.main(['--model', checkpoints[kind], '--splits', 'val', 'paraphrase',
                          '--num', '8', '--device', 'cpu', '--json', str(report_path),
                          '--action-prompt', PROMPT]) == 0
    out = capsys.readouterr().out
    assert f'is a raw {kind} checkpoint, evaluated ZERO-SHOT (no training)' in out
    assert f'model [zero-shot {kind}]' in out and 'chance' in out
    report = json.loads(report_path.read_text())
    assert report['model_kinds'] == {'model': f'zero-shot {kind}'}
    assert report['chance']['top1'] == pytest.approx(1 / 80)   # the tabletop library
    for split in ('val', 'paraphrase'):
        m = report['models']['model'][split]
        assert m['n'] == 8 and 0 <= m['top1'] <= m['top5'] <= 1

    # The numbers are the zero-shot scorer's own ranks.
    from vla_embedding_ros.training import metrics
    from vla_embedding_ros.training.evaluation import tabletop_ranks
    scorer = LibraryScorer(ZeroShotCLIP.from_pretrained(checkpoints[kind], device='cpu',
                                                        action_prompt=PROMPT),
                           ActionLibrary.from_yaml(LIBRARY))
    ranks, _ = tabletop_ranks(scorer, 'val', 8, vla_eval.EVAL_SEED, 96)
    assert report['models']['model']['val']['mrr'] == pytest.approx(
        metrics.summarise(ranks)['mrr'])


def test_bad_settings_are_refused_by_name(tmp_path, checkpoints, capsys):
    cases = [
        ({'model': {'init': 'clip', 'name_or_path': checkpoints['clip'], 'fusion': {}}},
         'unknown option model.fusion'),
        ({'model': {'init': 'siglip', 'name_or_path': checkpoints['clip']}},
         "model.init is 'siglip' but .* is a clip checkpoint"),
        ({'model': {'init': 'clip'}}, 'needs model.name_or_path'),
        ({'model': {'init': 'clip', 'name_or_path': checkpoints['clip'],
                    'action_prompt': 'a robot arm'}}, r'must be a string containing \{desc'),
        ({'optim': {'region_weight': 0.5}}, 'optim.region_weight needs the patch tokens'),
    ]
    for change, message in cases:
        cfg = space_config(tmp_path, checkpoints['clip'])
        raw = cfg.to_dict()
        for section, values in change.items():
            raw[section] = values if section == 'model' else {**raw[section], **values}
        with pytest.raises(ValueError, match=message):
            Trainer(TrainConfig.from_dict(raw))
    with pytest.raises(FileNotFoundError, match='no_such_clip_folder: not a local folder'):
        Trainer(space_config(tmp_path, 'no_such_clip_folder'))
    assert vla_eval.main(['--model', checkpoints['clip'], '--splits', 'val', '--num', '4',
                          '--action-prompt', 'no slot']) == 2
    assert '{description}' in capsys.readouterr().err


def test_vla_eval_scores_a_raw_folder_zero_shot_on_your_own_dataset(tmp_path, checkpoints,
                                                                     capsys):
    from vla_embedding_ros.data.make_dataset import main as make_dataset
    from vla_embedding_ros.data.tabletop import ACTION_NAMES

    data = tmp_path / 'mine'
    assert make_dataset(['--out', str(data), '--num', '10', '--image-size', '48',
                         '--quiet']) == 0
    report_path = tmp_path / 'report.json'
    capsys.readouterr()
    assert vla_eval.main(['--model', checkpoints['siglip'], '--dataset', str(data),
                          '--num', '6', '--device', 'cpu', '--json', str(report_path)]) == 0
    out = capsys.readouterr().out
    assert 'ZERO-SHOT' in out and f'== dataset {data}' in out
    assert '== val' not in out   # with --dataset, tabletop splits only when asked for
    report = json.loads(report_path.read_text())
    assert report['dataset']['library'] == str(data / 'actions.yaml')
    got = report['models']['model']['dataset']
    assert got['n'] == 6 and 0 <= got['top1'] <= got['top5'] <= 1
    assert report['models']['instruction only (image blanked)']['dataset']['n'] == 6

    # The same ranks as scoring the dataset's samples with the zero-shot scorer directly.
    from vla_embedding_ros.training import metrics
    from vla_embedding_ros.training.evaluation import dataset_ranks
    from vla_embedding_ros.training.sources import recorded_source
    library = ActionLibrary.from_yaml(data / 'actions.yaml')
    assert library.names == list(ACTION_NAMES)
    scorer = LibraryScorer(ZeroShotCLIP.from_pretrained(checkpoints['siglip'], device='cpu'),
                           library)
    source = recorded_source('jsonl', str(data), library, vla_eval.EVAL_SEED, strict=True)
    assert got['mrr'] == pytest.approx(metrics.summarise(dataset_ranks(scorer, source, 6))['mrr'])
