"""backend: onnxruntime: the exported query path chooses what the torch path chooses.

The shipped model is exported once (``vla-export-onnx``'s function, with the int8 text
graph) into a temporary folder; the selectors run it with ONNX Runtime's CPU provider.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from support.models import make_tiny_bert, make_tiny_clip, tiny_vla_config
from vla_embedding_ros.data.tabletop import TabletopConfig, TabletopGenerator
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.model import onnx_export as ox
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.backends import resolve_providers

SHIPPED = Path(__file__).resolve().parents[1] / 'models' / 'tabletop'
# 1000 benchmark scenes: the held-out splits the model card reports, 200 each.
SPLITS = ('val', 'unseen_combo', 'paraphrase', 'reworded', 'clutter')


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One torch thread (see test_model_deploy: two OpenMP threads on a busy 2-core machine
    wait on each other); ONNX Runtime gets one intra-op thread below for the same reason."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def export(tmp_path_factory):
    return ox.export_onnx(SHIPPED, tmp_path_factory.mktemp('onnx') / 'onnx', int8=True,
                          log=lambda *_: None)


def _selector(backend='torch', **kw):
    return ActionSelector.from_pretrained(SHIPPED, device='cpu', backend=backend,
                                          onnx_threads=1, **kw)


def _scenes():
    for i, split in enumerate(SPLITS):
        yield from TabletopGenerator(TabletopConfig(image_size=96), split, 9000 + i).samples(200)


def test_onnxruntime_chooses_like_torch_on_1000_scenes(export):
    torch_sel = _selector()
    ort_sel = _selector('onnxruntime', onnx_path=export)
    int8_sel = _selector('onnxruntime', onnx_path=export, onnx_text='int8')
    assert ort_sel.backend_name == 'onnxruntime' and ort_sel.backend_fallback_reason == ''
    scenes = list(_scenes())
    # The torch selector's instruction features, computed in batches of 50 and put in its
    # cache (the per-instruction MiniLM pass one at a time would take most of this test);
    # a sample of them is checked against the selector's own one-at-a-time path first.
    model, plan = torch_sel.model, torch_sel.backend.plan
    with torch.inference_mode():
        for start in range(0, len(scenes), 50):
            batch = [s.instruction for s in scenes[start:start + 50]]
            feats = model.encode_text(batch)
            for j, text in enumerate(batch):
                n = int(feats.mask[j].sum())
                one = feats._replace(tokens=feats.tokens[j:j + 1, :n],
                                     mask=feats.mask[j:j + 1, :n], pooled=feats.pooled[j:j + 1])
                prepared = plan.prepare(one)
                if start == 0 and j < 5:
                    for a, b in zip(prepared, torch_sel.backend.prepare(text), strict=True):
                        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
                torch_sel.text_cache.get_or_compute(text, lambda p=prepared: p)
    agree = agree_int8 = right_fp32 = right_int8 = 0
    worst = 0.0
    for sample in scenes:
        a = torch_sel.select(sample.image, sample.instruction, top_k=80)
        b = ort_sel.select(sample.image, sample.instruction, top_k=80)
        c = int8_sel.select(sample.image, sample.instruction)
        agree += a.name == b.name
        agree_int8 += a.name == c.name
        right_fp32 += sample.judge(b.name)
        right_int8 += sample.judge(c.name)
        sa = dict(zip(a.top_names, a.top_scores, strict=True))
        worst = max(worst, max(abs(sa[n] - s) for n, s in zip(b.top_names, b.top_scores,
                                                                strict=True)))
    assert agree == 1000, f'{agree} of 1000 choices agree'
    assert worst < 1e-3, worst          # logits ~ 100 x cosine; rounding is ~1e-5
    # int8 text (per-channel weights): measured 97% of choices unchanged and the same
    # success rate within noise (README); a broken quantisation (wrong scales, swapped
    # inputs) lands near chance.
    assert agree_int8 >= 940, agree_int8
    assert right_int8 >= right_fp32 - 20, (right_int8, right_fp32)


def test_exported_text_graph_matches_torch_for_any_length(export):
    sel = _selector('onnxruntime', onnx_path=export)
    torch_sel = _selector()
    for text in ('go', 'push the small blue ball two cells to the left, then wait for me '
                       'to say something else before you move again'):
        for a, b in zip(sel.backend.prepare(text), torch_sel.backend.prepare(text),
                        strict=True):
            np.testing.assert_allclose(a, b.numpy(), atol=2e-5)


def test_missing_export_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match='vla-export-onnx'):
        _selector('onnxruntime', onnx_path=tmp_path / 'nothing')
    with pytest.raises(ValueError, match='onnx_path'):
        ActionSelector(VLAModel.from_pretrained(SHIPPED, device='cpu'), backend='onnxruntime')
    with pytest.raises(ValueError, match="unknown backend 'tensorflow'"):
        _selector('tensorflow')


def test_an_export_of_other_weights_is_refused(export, tmp_path):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(SHIPPED, ckpt, ignore=shutil.ignore_patterns('*.png'))
    shutil.copytree(export, ckpt / 'onnx')
    assert _selector('onnxruntime', checkpoint_dir=ckpt).backend_name == 'onnxruntime'
    from safetensors.torch import load_file, save_file
    weights = load_file(ckpt / 'model.safetensors')
    weights['logit_scale'] = weights['logit_scale'] + 0.5    # "trained a bit more"
    save_file(weights, ckpt / 'model.safetensors')
    with pytest.raises(ValueError, match=r'other weights \(model.safetensors changed'):
        ActionSelector.from_pretrained(ckpt, device='cpu', backend='onnxruntime')


def test_no_int8_graph_and_no_onnxruntime_are_clear(export, tmp_path, monkeypatch):
    plain = tmp_path / 'plain'
    shutil.copytree(export, plain)
    manifest = json.loads((plain / ox.MANIFEST).read_text())
    del manifest['files'][ox.TEXT_INT8_FILE]
    (plain / ox.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match='--int8'):
        _selector('onnxruntime', onnx_path=plain, onnx_text='int8')
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)
    with pytest.raises(RuntimeError, match='pip install onnxruntime'):
        _selector('onnxruntime', onnx_path=export)


def test_a_missing_provider_falls_back_to_cpu_with_the_reason(export):
    sel = _selector('onnxruntime', onnx_path=export, onnx_providers='tensorrt,cuda')
    assert sel.backend.providers == ['CPUExecutionProvider']
    assert 'CUDAExecutionProvider' in sel.backend_fallback_reason
    assert sel.select(np.zeros((48, 64, 3), np.uint8), 'push the red cube left').name
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider 'tpu'"):
        _selector('onnxruntime', onnx_path=export, onnx_providers='tpu')


def test_provider_order():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    every = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert resolve_providers('auto', cpu, every) == (['CPUExecutionProvider'], '')
    assert resolve_providers('auto', cuda, every) == (every, '')
    assert resolve_providers('auto', cuda, ['CPUExecutionProvider']) == (
        ['CPUExecutionProvider'], '')
    chosen, reason = resolve_providers(['cuda', 'cpu'], cuda, every[1:])
    assert chosen == every[1:] and reason == ''


def test_export_of_hf_towers_and_late_fusion(tmp_path):
    """Not only the shipped architecture: a CLIP vision tower with a BERT text encoder, late
    fusion; export, then the two backends give the same query."""
    torch.manual_seed(0)
    vision = make_tiny_clip(tmp_path / 'clip', full=False)
    model = VLAModel(tiny_vla_config(make_tiny_bert(tmp_path / 'bert'), vision_path=vision,
                                     fusion='late'))
    model.save_pretrained(tmp_path / 'ckpt')
    out = ox.export_onnx(tmp_path / 'ckpt', log=lambda *_: None)
    assert out == tmp_path / 'ckpt' / 'onnx'
    a = ActionSelector(VLAModel.from_pretrained(tmp_path / 'ckpt', device='cpu'))
    b = ActionSelector(a.model, backend='onnxruntime', checkpoint_dir=tmp_path / 'ckpt')
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        for text in ('pick up the red cube', 'stop and wait'):
            torch.testing.assert_close(b.backend.query(pixels, b.text_features(text)),
                                       a.backend.query(pixels, a.text_features(text)),
                                       atol=1e-5, rtol=0)
    assert ox.main([str(tmp_path / 'ckpt'), '--no-overwrite']) == 2     # exists
    assert ox.main([str(tmp_path / 'bert')]) == 2                       # not a checkpoint
