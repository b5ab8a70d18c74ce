"""The inference query plan (model/deploy.py) scores exactly like the training path.

The plan precomputes instruction terms, drops padded tokens, fuses q/k/v products and runs the
last fusion layer for the CLS row only; every one of those steps must leave the query where
``VLAModel.encode_query`` puts it, for the shipped weights and for every fusion variant.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from support.models import make_tiny_bert, make_tiny_siglip, make_tiny_vit, tiny_vla_config
from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.data.tabletop import TabletopConfig, TabletopGenerator
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.model.deploy import QueryPlan, query_flops
from vla_embedding_ros.selection.preprocess import ImagePreprocessor

SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'tabletop'


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One torch thread: with a second process busy on a 2-core machine, two OpenMP threads
    wait on each other (10x slower here); the numbers checked do not depend on it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def shipped():
    return VLAModel.from_pretrained(SHIPPED, device='cpu')


def test_plan_scores_like_the_model_on_tabletop_scenes(shipped):
    """200 val scenes, one decision each, as the selector makes them: the same choice and
    logits within float rounding (the plan adds numbers in another order)."""
    model = shipped
    plan = QueryPlan(model).eval()
    library = ActionLibrary.from_yaml(SHIPPED / 'actions.yaml')
    pre = ImagePreprocessor(model.image_size, model.image_mean, model.image_std)
    gen = TabletopGenerator(TabletopConfig(image_size=96), 'val', 31337)
    worst, same = 0.0, 0
    with torch.inference_mode():
        actions = model.encode_actions(torch.tensor(library.params()))
        for sample in gen.samples(200):
            pixels = pre(sample.image)
            text = model.encode_text([sample.instruction])
            ref = model.score(model.encode_query(pixels, text), actions)
            fast = model.score(plan(pixels, *plan.prepare(text)), actions)
            worst = max(worst, (ref - fast).abs().max().item())
            same += int(ref.argmax() == fast.argmax())
    assert same == 200
    assert worst < 1e-3, worst   # logits are ~30 x cos; rounding is ~1e-5


def test_plan_handles_several_cameras(shipped):
    model = shipped
    plan = QueryPlan(model).eval()
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, 64, 64, generator=gen)
    with torch.inference_mode():
        text = model.encode_text(['push the blue ball to the right'])
        ref = model.encode_query(pixels, text, num_cameras=3)
        fast = plan(pixels, *plan.prepare(text))
        with pytest.raises(ValueError, match='max_cameras'):
            plan(torch.zeros(5, 3, 64, 64), *plan.prepare(text))
        with pytest.raises(ValueError, match='one instruction'):
            plan.prepare(model.encode_text(['a', 'b']))
    torch.testing.assert_close(fast, ref, atol=2e-6, rtol=0)


@pytest.mark.parametrize('fusion, kw', [
    ('late', {}), ('gated', {}),
    ('transformer', {'layers': 1}),
    ('transformer', {'layers': 3, 'cls_init': 'learned', 'patch_pos': 'learned'}),
])
def test_plan_matches_every_fusion_variant(tmp_path, fusion, kw):
    torch.manual_seed(0)
    model = VLAModel(tiny_vla_config(make_tiny_bert(tmp_path / 'bert'), fusion=fusion,
                                     **kw)).eval()
    # Trained weights are not the init: move every parameter so nothing cancels by accident.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    plan = QueryPlan(model).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        text = model.encode_text(['push the red ring back'])
        ref = model.encode_query(pixels, text, num_cameras=2)
        fast = plan(pixels, *plan.prepare(text))
    torch.testing.assert_close(fast, ref, atol=2e-6, rtol=0)


def test_padded_tokens_are_dropped_exactly(tmp_path):
    """SigLIP pads every instruction to max_length; the plan drops the pad rows instead of
    masking them, and must land on the masked result; an HF vision tower goes through too."""
    torch.manual_seed(1)
    siglip = make_tiny_siglip(tmp_path / 'siglip')
    model = VLAModel(tiny_vla_config(siglip, vision_path=make_tiny_vit(tmp_path / 'vit'),
                                     layers=2)).eval()
    plan = QueryPlan(model).eval()
    with torch.inference_mode():
        text = model.encode_text(['pick up the red cube'])
        assert not bool(text.mask.all())     # padded to max_length
        rows = plan.prepare(text)[0]
        assert rows.shape[0] == 1 + int(text.mask.sum())
        pixels = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(plan(pixels, *plan.prepare(text)),
                                   model.encode_query(pixels, text), atol=2e-6, rtol=0)


def test_query_flops_counts_the_plan(shipped):
    flops = query_flops(shipped, num_cameras=1, text_len=10)
    # conv stem of the shipped model: 5 convolutions, hand-counted in the profile.
    assert flops['vision'] == 26_542_080
    # the plan's fusion is about half of running both layers over every row (~22 MFLOP).
    assert 10e6 < flops['fusion'] < 15e6
    assert query_flops(shipped, num_cameras=2)['vision'] == 2 * flops['vision']
    assert np.isfinite(flops['fusion'])
