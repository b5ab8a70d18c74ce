"""Fusion variants: shapes, unit norm, gradient flow, cameras, patch position, padding."""
import pytest
import torch

from support import models as fx
from vla_embedding_ros.model import (
    FusionConfig,
    TextFeatures,
    VisionFeatures,
    VLAModel,
    build_fusion,
    library_contrastive_loss,
    symmetric_infonce,
)

FUSIONS = ['late', 'gated', 'transformer']
DV, DT, E, GRID = 12, 20, 16, (3, 3)


def make_fusion(kind, **kw):
    torch.manual_seed(0)
    cfg = FusionConfig(type=kind, d_model=16, layers=1, heads=2, dropout=0.0, **kw)
    return build_fusion(cfg, DV, DT, E, GRID).eval()


def vision_features(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    patches = torch.randn(n, GRID[0] * GRID[1], DV, generator=g)
    return VisionFeatures(patches, patches.mean(dim=1), GRID)


def text_features(b, length=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(b, length, DT, generator=g)
    mask = torch.ones(b, length, dtype=torch.bool)
    mask[0, 3:] = False       # the first instruction is shorter
    return TextFeatures(tokens, mask, tokens[:, 0])


@pytest.mark.parametrize('kind', FUSIONS)
def test_output_is_unit_and_shaped(kind):
    q = make_fusion(kind)(vision_features(6), text_features(3), num_cameras=2)
    assert q.shape == (3, E)
    assert torch.allclose(q.norm(dim=-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize('kind', FUSIONS)
def test_adding_a_camera_changes_the_query(kind):
    fusion = make_fusion(kind)
    text = text_features(2)
    one = vision_features(2, seed=3)
    other = vision_features(2, seed=4)
    # Two cameras per sample, camera-major: rows (b0c0, b0c1, b1c0, b1c1).
    two = VisionFeatures(torch.stack([one.patches, other.patches], 1).flatten(0, 1),
                         torch.stack([one.pooled, other.pooled], 1).flatten(0, 1), GRID)
    q1, q2 = fusion(one, text, 1), fusion(two, text, 2)
    assert (q1 - q2).norm(dim=-1).min() > 1e-3


def swap_patches(feats, i, j):
    patches = feats.patches.clone()
    patches[:, [i, j]] = patches[:, [j, i]]
    return VisionFeatures(patches, feats.pooled, feats.grid)


@pytest.mark.parametrize('kind, sensitive', [('late', False), ('gated', False),
                                             ('transformer', True)])
def test_only_token_fusion_knows_where_a_patch_is(kind, sensitive):
    fusion = make_fusion(kind)
    vision, text = vision_features(2), text_features(2)
    moved = fusion(swap_patches(vision, 0, 8), text, 1)
    same = torch.allclose(fusion(vision, text, 1), moved, atol=1e-6)
    assert same != sensitive


@pytest.mark.parametrize('patch_pos', ['sincos', 'learned'])
def test_transformer_position_encodings(patch_pos):
    fusion = make_fusion('transformer', patch_pos=patch_pos)
    vision, text = vision_features(2), text_features(2)
    assert not torch.allclose(fusion(vision, text), fusion(swap_patches(vision, 1, 4), text))


def test_transformer_ignores_padding_tokens():
    fusion = make_fusion('transformer')
    text = text_features(2)
    padded_tokens = torch.cat([text.tokens, 50 * torch.randn(2, 3, DT)], dim=1)
    padded_mask = torch.cat([text.mask, torch.zeros(2, 3, dtype=torch.bool)], dim=1)
    padded = TextFeatures(padded_tokens, padded_mask, text.pooled)
    vision = vision_features(2)
    assert torch.allclose(fusion(vision, text), fusion(vision, padded), atol=1e-5)


def test_transformer_camera_order_matters_late_does_not():
    vision, text = vision_features(4), text_features(2)
    order = [1, 0, 3, 2]
    swapped = VisionFeatures(vision.patches[order], vision.pooled[order], GRID)
    transformer, late = make_fusion('transformer'), make_fusion('late')
    assert not torch.allclose(transformer(vision, text, 2), transformer(swapped, text, 2))
    assert torch.allclose(late(vision, text, 2), late(swapped, text, 2), atol=1e-6)


def test_bad_camera_counts_raise():
    fusion = make_fusion('transformer', max_cameras=2)
    with pytest.raises(ValueError, match='max_cameras'):
        fusion(vision_features(6), text_features(2), 3)
    for kind in FUSIONS:
        with pytest.raises(ValueError, match='cameras'):
            make_fusion(kind)(vision_features(5), text_features(2), 2)


@pytest.fixture(scope='module')
def bert(tmp_path_factory):
    return fx.make_tiny_bert(tmp_path_factory.mktemp('bert') / 'bert')


def test_text_initialised_cls_makes_the_query_depend_on_the_pooled_instruction():
    fusion = make_fusion('transformer', cls_init='text')
    vision, text = vision_features(2), text_features(2)
    other = TextFeatures(text.tokens, text.mask, text.pooled + 1.0)  # same tokens, new pooled
    assert not torch.allclose(fusion(vision, text), fusion(vision, other))
    plain = make_fusion('transformer')
    assert torch.allclose(plain(vision, text), plain(vision, other))


@pytest.mark.parametrize('kind, fusion_kw', [('late', {}), ('gated', {}), ('transformer', {}),
                                             ('transformer', {'cls_init': 'text'})])
def test_gradient_reaches_every_trainable_parameter(bert, kind, fusion_kw):
    torch.manual_seed(0)
    model = VLAModel(fx.tiny_vla_config(text_path=bert, fusion=kind, use_description=True,
                                        **fusion_kw))
    model.train()
    images = torch.randn(4, 3, 32, 32)           # 2 samples x 2 cameras
    text = model.encode_text(['pick up the red cube', 'stop and wait'])
    query = model.encode_query(images, text, num_cameras=2)
    actions = model.encode_actions(torch.randn(3, 7), ['pick', 'push left', 'wait'])
    loss = library_contrastive_loss(query, actions, torch.tensor([0, 2]), model.logit_scale)
    loss = loss + symmetric_infonce(*model.encode_alignment(images, text, 2), None,
                                    model.logit_scale)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith('vision.stem') for n in trainable)
    assert not any(n.startswith('text.') for n in trainable)   # the frozen tower
    no_grad = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    assert all(p.grad is None for p in model.text.parameters())


def test_query_through_model_has_one_unit_row_per_sample(bert):
    model = VLAModel(fx.tiny_vla_config(text_path=bert)).eval()
    with torch.no_grad():
        q = model.encode_query(torch.randn(3, 3, 32, 32), ['a', 'b', 'c'])
        a = model.encode_actions(torch.randn(5, 7))
        logits = model.score(q, a)
    assert q.shape == (3, 32) and a.shape == (5, 32) and logits.shape == (3, 5)
    assert torch.allclose(a.norm(dim=-1), torch.ones(5), atol=1e-5)
    assert torch.allclose(logits, model.scale() * q @ a.t())
    assert float(model.scale().detach()) == pytest.approx(1 / 0.07, rel=1e-5)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert float(model.scale().detach()) == pytest.approx(100.0, rel=1e-5)
