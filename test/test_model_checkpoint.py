"""save_pretrained / from_pretrained: identical scores, relocatable dirs, clear errors."""
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from support import models as fx
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.model import checkpoint as ckpt

INSTRUCTIONS = ['pick up the red cube', 'push the blue ball left']
PARAMS = torch.tensor([[1, 0, 0, 0, 0, 0.625, 0.375], [0, 1, 0, 0, 0, 0.125, 0.875],
                       [0, 0, 0, 1, 0, 0.375, 0.125]])


@pytest.fixture(scope='module')
def bert(tmp_path_factory):
    return fx.make_tiny_bert(tmp_path_factory.mktemp('bert') / 'bert')


@pytest.fixture(scope='module')
def saved(bert, tmp_path_factory):
    """A trained-looking model (non-default stats and scale) saved once for error tests."""
    torch.manual_seed(0)
    model = VLAModel(fx.tiny_vla_config(text_path=bert))
    model.action.set_param_stats(PARAMS.mean(0).numpy(), PARAMS.std(0).numpy())
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
    path = tmp_path_factory.mktemp('ckpt') / 'model'
    model.save_pretrained(path)
    return model.eval(), path


def scores(model, seed=0):
    images = torch.randn(4, 3, model.image_size, model.image_size,
                         generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        q = model.encode_query(images, model.encode_text(INSTRUCTIONS), num_cameras=2)
        return model.score(q, model.encode_actions(PARAMS, ['pick', 'push', 'move']))


def copy_of(path, tmp_path):
    target = tmp_path / 'copy'
    shutil.copytree(path, target)
    return target


def test_round_trip_gives_identical_scores(saved):
    model, path = saved
    loaded = VLAModel.from_pretrained(path, device='cpu')
    assert not loaded.training
    assert torch.equal(scores(model), scores(loaded))
    assert torch.equal(loaded.action.param_std, model.action.param_std)
    assert loaded.logit_scale.item() == 3.0


def test_frozen_encoders_are_referenced_not_copied(saved, bert):
    _, path = saved
    assert sorted(p.name for p in path.iterdir()) == ['config.json', 'model.safetensors']
    config = json.loads((path / 'config.json').read_text())
    assert config['text']['name_or_path'] == bert
    keys = load_file(str(path / 'model.safetensors'))
    assert not any(k.startswith('text.') for k in keys)
    assert any(k.startswith('vision.stem.') for k in keys)
    assert 'action.param_mean' in keys and 'logit_scale' in keys


def test_trainable_encoders_are_saved_and_the_dir_can_move(tmp_path):
    clip = fx.make_tiny_clip(tmp_path / 'src' / 'clip')
    (tmp_path / 'src' / 'clip' / 'preprocessor_config.json').write_text(json.dumps(
        {'image_mean': [0.3, 0.3, 0.3], 'image_std': [0.2, 0.2, 0.2]}))
    bert = fx.make_tiny_bert(tmp_path / 'src' / 'bert')
    model = VLAModel(fx.tiny_vla_config(text_path=bert, vision_path=clip, fusion='gated',
                                        vision_trainable=True, text_trainable=True,
                                        use_description=True))
    with torch.no_grad():   # "fine-tuned": the saved towers must differ from their sources
        for p in list(model.vision.model.parameters()) + list(model.text.model.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    before = scores(model)
    model.save_pretrained(tmp_path / 'ckpt')
    config = json.loads((tmp_path / 'ckpt' / 'config.json').read_text())
    assert config['vision']['name_or_path'] == 'vision_encoder'
    assert config['text']['name_or_path'] == 'text_encoder'
    assert (tmp_path / 'ckpt' / 'vision_encoder' / 'preprocessor_config.json').is_file()
    assert (tmp_path / 'ckpt' / 'text_encoder' / 'tokenizer.json').is_file()
    shutil.move(tmp_path / 'ckpt', tmp_path / 'elsewhere')
    shutil.rmtree(tmp_path / 'src')            # the sources are gone
    loaded = VLAModel.from_pretrained(tmp_path / 'elsewhere', device='cpu')
    assert loaded.image_mean == pytest.approx((0.3, 0.3, 0.3))
    assert any(p.requires_grad for p in loaded.vision.parameters())
    assert torch.equal(before, scores(loaded))
    # Saving the loaded model again (over its own directory) keeps it loadable.
    loaded.save_pretrained(tmp_path / 'elsewhere')
    again = VLAModel.from_pretrained(tmp_path / 'elsewhere', device='cpu')
    assert torch.equal(before, scores(again))


def test_save_leaves_no_temporary_files_and_survives_a_failed_write(saved, tmp_path,
                                                                    monkeypatch):
    model, path = saved
    target = copy_of(path, tmp_path)
    original = (target / 'model.safetensors').read_bytes()

    def broken(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr('safetensors.torch.save_file', broken)
    with torch.no_grad():
        model.logit_scale.fill_(1.0)
    try:
        with pytest.raises(OSError, match='disk full'):
            model.save_pretrained(target)
    finally:
        with torch.no_grad():
            model.logit_scale.fill_(3.0)
    assert (target / 'model.safetensors').read_bytes() == original
    assert sorted(p.name for p in target.iterdir()) == ['config.json', 'model.safetensors']


def test_missing_files_are_named(saved, tmp_path):
    _, path = saved
    with pytest.raises(FileNotFoundError, match='does not exist'):
        VLAModel.from_pretrained(tmp_path / 'nowhere', device='cpu')
    target = copy_of(path, tmp_path)
    (target / 'model.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='model.safetensors'):
        VLAModel.from_pretrained(target, device='cpu')
    (target / 'config.json').unlink()
    with pytest.raises(FileNotFoundError, match='config.json'):
        VLAModel.from_pretrained(target, device='cpu')


def edit_config(path, edit):
    config = json.loads((path / 'config.json').read_text())
    edit(config)
    (path / 'config.json').write_text(json.dumps(config))


def test_unknown_option_names_file_and_field(saved, tmp_path):
    target = copy_of(saved[1], tmp_path)
    edit_config(target, lambda c: c['fusion'].update(depth=3))
    with pytest.raises(ValueError, match=r"config\.json.*'fusion\.depth'"):
        VLAModel.from_pretrained(target, device='cpu')


def test_bad_value_names_file_and_field(saved, tmp_path):
    target = copy_of(saved[1], tmp_path)
    edit_config(target, lambda c: c['fusion'].update(type='mean'))
    with pytest.raises(ValueError, match=r'config\.json.*fusion\.type'):
        VLAModel.from_pretrained(target, device='cpu')


def test_shape_mismatch_names_file_and_tensor(saved, tmp_path):
    target = copy_of(saved[1], tmp_path)
    edit_config(target, lambda c: c.update(embed_dim=16))
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor '[\w.]+' has shape"):
        VLAModel.from_pretrained(target, device='cpu')


def test_missing_and_unexpected_tensors_are_named(saved, tmp_path):
    target = copy_of(saved[1], tmp_path)
    weights = load_file(str(target / 'model.safetensors'))
    del weights['fusion.cls']
    save_file(weights, str(target / 'model.safetensors'))
    with pytest.raises(ValueError, match=r"model\.safetensors: missing tensor 'fusion\.cls'"):
        VLAModel.from_pretrained(target, device='cpu')
    weights['fusion.cls'] = torch.zeros(1, 1, 32)
    weights['extra.weight'] = torch.zeros(2)
    save_file(weights, str(target / 'model.safetensors'))
    with pytest.raises(ValueError, match=r"unexpected tensor 'extra\.weight'"):
        VLAModel.from_pretrained(target, device='cpu')
    (target / 'model.safetensors').write_bytes(b'not safetensors')
    with pytest.raises(ValueError, match=r'model\.safetensors: cannot read'):
        VLAModel.from_pretrained(target, device='cpu')


def test_missing_trainable_encoder_dir_is_named(saved, tmp_path):
    target = copy_of(saved[1], tmp_path)
    edit_config(target, lambda c: c['text'].update(name_or_path='text_encoder', trainable=True))
    with pytest.raises(FileNotFoundError, match='text_encoder'):
        VLAModel.from_pretrained(target, device='cpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_request_fails_clearly(saved):
    with pytest.raises(RuntimeError, match='CUDA is not available'):
        VLAModel.from_pretrained(saved[1], device='cuda')


def test_saved_state_matches_checkpoint_helper(saved):
    model, path = saved
    keys = set(load_file(str(path / 'model.safetensors')))
    assert keys == set(ckpt.saved_state(model))
    assert np.isfinite(model.logit_scale.item())
