"""Encoders on real (tiny, built here) Hugging Face models and on the offline MiniLM."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from support import models as fx
from vla_embedding_ros.model import (
    ActionConfig,
    TextConfig,
    VisionConfig,
    resolve_model_path,
)
from vla_embedding_ros.model.config import ConvConfig
from vla_embedding_ros.model.encoders import (
    CLIP_MEAN,
    CLIP_STD,
    ActionEncoder,
    TextEncoder,
    VisionEncoder,
)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp('hf')
    return {
        'clip': fx.make_tiny_clip(root / 'clip'),
        'clip_vision': fx.make_tiny_clip(root / 'clip_vision', full=False),
        'clip_text': fx.make_tiny_clip_text(root / 'clip_text'),
        'siglip': fx.make_tiny_siglip(root / 'siglip'),
        'vit': fx.make_tiny_vit(root / 'vit'),
        'bert': fx.make_tiny_bert(root / 'bert'),
    }


def pixels(n=2, size=fx.IMAGE_SIZE, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def hf_vision(path, **kw):
    return VisionEncoder(VisionConfig(type='hf', name_or_path=path, **kw))


@pytest.mark.parametrize('kind, cls_tokens, mean', [
    ('clip', 1, CLIP_MEAN), ('clip_vision', 1, CLIP_MEAN), ('siglip', 0, (0.5,) * 3),
    ('vit', 1, (0.5,) * 3)])
def test_hf_vision_gives_patch_tokens_without_cls(models, kind, cls_tokens, mean):
    enc = hf_vision(models[kind])
    assert enc.image_size == 32 and enc.grid == (4, 4) and enc.hidden_size == fx.HIDDEN
    assert enc.image_mean == pytest.approx(mean)
    x = pixels()
    feats = enc(x)
    assert feats.patches.shape == (2, 16, fx.HIDDEN) and feats.pooled.shape == (2, fx.HIDDEN)
    assert feats.grid == (4, 4)
    # The same tower loaded directly: patches are its token states minus the CLS token.
    reference = AutoModel.from_pretrained(models[kind]).eval()
    tower = getattr(reference, 'vision_model', reference)
    with torch.no_grad():
        out = tower(pixel_values=x)
    assert torch.allclose(feats.patches, out.last_hidden_state[:, cls_tokens:], atol=1e-6)
    assert torch.allclose(feats.pooled, out.pooler_output, atol=1e-6)


def test_full_clip_checkpoint_yields_its_vision_tower_only(models):
    enc = hf_vision(models['clip'])
    assert type(enc.model).__name__ == 'CLIPVisionModel'
    assert not any('text' in name for name, _ in enc.named_parameters())


def test_preprocessor_config_overrides_model_defaults(models, tmp_path):
    path = fx.make_tiny_vit(tmp_path / 'vit')
    (tmp_path / 'vit' / 'preprocessor_config.json').write_text(json.dumps(
        {'image_mean': [0.1, 0.2, 0.3], 'image_std': [0.4, 0.5, 0.6], 'size': 32}))
    enc = hf_vision(path)
    assert enc.image_mean == pytest.approx((0.1, 0.2, 0.3))
    assert enc.image_std == pytest.approx((0.4, 0.5, 0.6))
    explicit = hf_vision(path, image_mean=(0.0, 0.0, 0.0), image_std=(1.0, 1.0, 1.0))
    assert explicit.image_mean == (0.0, 0.0, 0.0) and explicit.image_std == (1.0, 1.0, 1.0)
    assert hf_vision(models['clip']).image_std == pytest.approx(CLIP_STD)


def test_frozen_tower_has_no_grad_and_stays_in_eval(models):
    enc = hf_vision(models['clip'])
    enc.train()
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.parameters())
    assert enc(pixels()).patches.grad_fn is None


def test_trainable_tower_trains(models):
    enc = hf_vision(models['vit'], trainable=True)
    enc.train()
    assert enc.model.training
    enc(pixels()).pooled.sum().backward()
    grads = [p.grad for p in enc.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[:4])


def test_conv_stem_default_grid_and_pooling():
    enc = VisionEncoder(VisionConfig(type='conv'))
    assert enc.image_size == 96 and enc.grid == (12, 12) and enc.hidden_size == 128
    assert not enc.pretrained and all(p.requires_grad for p in enc.parameters())
    feats = enc(pixels(3, 96))
    assert feats.patches.shape == (3, 144, 128) and feats.grid == (12, 12)
    assert torch.allclose(feats.pooled, feats.patches.mean(dim=1))
    # Each token sees its own part of the image: changing one corner leaves the far corner.
    x = pixels(1, 96)
    y = x.clone()
    y[..., :8, :8] += 3.0
    enc.eval()
    a, b = enc(x).patches[0], enc(y).patches[0]
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[-1], b[-1])


def test_conv_stem_small_config():
    enc = VisionEncoder(VisionConfig(type='conv', conv=ConvConfig(32, 8, (8, 16, 32), 32)))
    assert enc.grid == (4, 4) and enc(pixels()).patches.shape == (2, 16, 32)


def test_patchify_tokens_see_only_their_own_patch():
    torch.manual_seed(0)
    enc = VisionEncoder(VisionConfig(type='conv', conv=ConvConfig(
        image_size=64, patch_size=16, channels=(8, 8, 16, 16), width=16, patchify=True)))
    enc.eval()
    assert enc.grid == (4, 4)
    x = pixels(1, 64)
    y = x.clone()
    y[..., 16:32, 16:32] += 3.0            # change patch (row 1, col 1) only
    changed = ~torch.isclose(enc(x).patches[0], enc(y).patches[0]).all(dim=1)
    assert changed.nonzero().flatten().tolist() == [1 * 4 + 1]
    overlapping = VisionEncoder(VisionConfig(type='conv', conv=ConvConfig(
        image_size=64, patch_size=16, channels=(8, 8, 16, 16), width=16)))
    changed = ~torch.isclose(overlapping(x).patches[0], overlapping(y).patches[0]).all(dim=1)
    assert changed.sum() > 1               # 3x3 receptive fields spill into neighbours


def test_resolve_model_path(tmp_path):
    assert resolve_model_path('sentence-transformers/all-MiniLM-L6-v2') == fx.minilm_path()
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)
    assert resolve_model_path('org/some-model') == 'org/some-model'


def test_bert_mean_pooling_matches_manual(models):
    enc = TextEncoder(TextConfig(name_or_path=models['bert'], max_length=16))
    assert enc.tokenizer.is_fast and enc.pooling == 'mean' and enc.hidden_size == fx.HIDDEN
    texts = ['pick up the red cube', 'stop']
    feats = enc(texts)
    tok = AutoTokenizer.from_pretrained(models['bert'])
    model = AutoModel.from_pretrained(models['bert']).eval()
    for i, text in enumerate(texts):
        ids = tok(text, return_tensors='pt')
        with torch.no_grad():
            states = model(**ids).last_hidden_state[0]
        n = states.shape[0]
        assert int(feats.mask[i].sum()) == n
        assert torch.allclose(feats.pooled[i], states.mean(dim=0), atol=1e-5)
        assert torch.allclose(feats.tokens[i, :n], states, atol=1e-5)
    assert feats.tokens.grad_fn is None


@pytest.mark.parametrize('kind', ['clip', 'clip_text', 'siglip'])
def test_clip_and_siglip_text_towers_use_their_pooled_output(models, kind):
    enc = TextEncoder(TextConfig(name_or_path=models[kind], max_length=16))
    assert enc.pooling == 'pooler'
    assert not any('vision' in name for name, _ in enc.named_parameters())
    texts = ['pick up the red cube', 'push the blue ball left']
    feats = enc(texts)
    reference = AutoModel.from_pretrained(models[kind]).eval()
    tower = getattr(reference, 'text_model', reference)
    with torch.no_grad():
        out = tower(**enc.tokenize(texts))
    assert feats.pooled.shape == (2, fx.HIDDEN)
    assert torch.allclose(feats.pooled, out.pooler_output, atol=1e-6)
    assert not torch.allclose(feats.pooled[0], feats.pooled[1])


def test_pooling_options(models):
    texts = ['pick up the red cube', 'stop']
    cls = TextEncoder(TextConfig(name_or_path=models['bert'], pooling='cls'))(texts)
    assert torch.equal(cls.pooled, cls.tokens[:, 0])
    pooler = TextEncoder(TextConfig(name_or_path=models['bert'], pooling='pooler'))(texts)
    assert not torch.allclose(pooler.pooled, cls.pooled)


def test_minilm_offline_sentence_embeddings():
    enc = TextEncoder(TextConfig())
    assert enc.hidden_size == 384 and enc.pooling == 'mean'
    feats = enc(['pick up the red cube', 'grab the red block', 'the weather is sunny today'])
    emb = F.normalize(feats.pooled, dim=-1)
    assert emb.shape == (3, 384) and torch.allclose(emb.norm(dim=-1), torch.ones(3))
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.2


def test_action_encoder_standardises_parameters():
    enc = ActionEncoder(ActionConfig(param_dim=3, hidden=16), embed_dim=8)
    params = np.array([[1.0, 10.0, 5.0], [0.0, 30.0, 5.0]], dtype=np.float32)
    enc.set_param_stats(params.mean(0), params.std(0))
    assert enc.param_std[2] == 1.0          # a constant parameter must not divide by zero
    # Scaling a parameter together with its stats leaves the embedding unchanged.
    out = enc(torch.from_numpy(params))
    scaled = params * np.array([1, 100, 1], dtype=np.float32)
    enc.set_param_stats(scaled.mean(0), scaled.std(0))
    assert torch.allclose(enc(torch.from_numpy(scaled)), out, atol=1e-5)
    with pytest.raises(ValueError, match=r'\[N, 3\]'):
        enc(torch.zeros(2, 4))
    with pytest.raises(ValueError, match='param_dim=3'):
        enc.set_param_stats(np.zeros(4), np.ones(4))


def test_action_encoder_uses_descriptions():
    enc = ActionEncoder(ActionConfig(param_dim=2, hidden=16, use_description=True), 8,
                        text_dim=5)
    params = torch.zeros(2, 2)          # identical parameters ...
    desc = torch.randn(2, 5)            # ... told apart by their descriptions
    out = enc(params, desc)
    assert not torch.allclose(out[0], out[1])
    assert torch.allclose(enc(params)[0], enc(params)[1])
