"""Fast paths of the selector: torch.compile, CUDA graphs and autocast, and their fallbacks.

A tiny VLAModel saved and loaded from disk; every fast path must choose exactly what the eager
path chooses. CUDA-only paths are checked where a GPU exists and skipped (with a reason)
elsewhere; the fallback on a machine without one is checked everywhere.
"""
import numpy as np
import pytest
import torch

from support.models import IMAGE_SIZE, make_tiny_bert, tiny_vla_config
from vla_embedding_ros.model.vla_model import VLAModel
from vla_embedding_ros.selection import Action, ActionLibrary, ActionSelector
from vla_embedding_ros.selection.accelerate import ImageEncoderRunner, check_options

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason='no CUDA device on this machine')
INSTRUCTIONS = ['pick up the red cube', 'push the blue ball left', 'stop and wait']


def _library():
    rng = np.random.default_rng(0)
    actions = [Action(f'a{i}', f'action {i}', rng.random(4).astype(np.float32))
               for i in range(12)]
    return ActionLibrary(actions, ['p0', 'p1', 'p2', 'p3'])


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp('accelerate')
    torch.manual_seed(0)
    model = VLAModel(tiny_vla_config(text_path=make_tiny_bert(root / 'bert'),
                                     fusion='transformer', param_dim=4))
    model.save_pretrained(root / 'ckpt')
    _library().to_yaml(root / 'ckpt' / 'actions.yaml')
    return root / 'ckpt'


def _frames(n=6, cameras=1):
    rng = np.random.default_rng(1)
    return [[rng.integers(0, 256, (IMAGE_SIZE + 10, IMAGE_SIZE + 20, 3), np.uint8)
             for _ in range(cameras)] for _ in range(n)]


def _choices(selector, frames):
    out = []
    for i, cams in enumerate(frames):
        s = selector.select(cams, INSTRUCTIONS[i % len(INSTRUCTIONS)], top_k=12)
        out.append((s.top_indices, np.array(s.top_scores)))
    return out


def _assert_same(fast, eager, atol=1e-4):
    for (idx_f, scores_f), (idx_e, scores_e) in zip(fast, eager, strict=True):
        np.testing.assert_allclose(scores_f, scores_e, atol=atol)
        assert idx_f[0] == idx_e[0]


def test_unknown_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="compile mode 'fast'.*torch_compile"):
        check_options('fast', 'fp32')
    with pytest.raises(ValueError, match="precision 'fp8'.*bf16"):
        check_options('none', 'fp8')
    with pytest.raises(ValueError, match='compile mode'):
        ImageEncoderRunner(lambda x: x, torch.device('cpu'), mode='jit')


def test_cuda_graph_without_cuda_falls_back_to_eager_with_a_reason(checkpoint):
    if CUDA:
        pytest.skip('this machine has CUDA: the fallback is for machines without it')
    eager = ActionSelector.from_pretrained(checkpoint, device='cpu')
    graph = ActionSelector.from_pretrained(checkpoint, device='cpu', compile_mode='cuda_graph')
    runner = graph.image_encoder
    assert (runner.requested_mode, runner.mode) == ('cuda_graph', 'none')
    assert 'needs a CUDA device' in runner.fallback_reason and 'cpu' in runner.fallback_reason
    frames = _frames()
    _assert_same(_choices(graph, frames), _choices(eager, frames), atol=0)


def test_precision_on_the_cpu_runs_fp32():
    runner = ImageEncoderRunner(lambda x: x, torch.device('cpu'), precision='bf16')
    assert runner.precision == 'fp32'
    with runner.autocast():
        assert not torch.is_autocast_enabled('cuda')


def test_torch_compile_chooses_what_eager_chooses(checkpoint):
    eager = ActionSelector.from_pretrained(checkpoint, device='cpu')
    compiled = ActionSelector.from_pretrained(checkpoint, device='cpu',
                                              compile_mode='torch_compile')
    compiled.warm_up(num_cameras=1)
    assert compiled.image_encoder.mode == 'torch_compile', compiled.image_encoder.fallback_reason
    frames = _frames()
    _assert_same(_choices(compiled, frames), _choices(eager, frames))
    # Two cameras: a new fixed shape, compiled once more, still the same choice.
    two = _frames(n=2, cameras=2)
    _assert_same(_choices(compiled, two), _choices(eager, two))
    assert compiled.image_encoder.mode == 'torch_compile'


def test_a_failing_compiled_encoder_falls_back_and_keeps_answering(checkpoint):
    selector = ActionSelector.from_pretrained(checkpoint, device='cpu',
                                              compile_mode='torch_compile')
    eager = ActionSelector.from_pretrained(checkpoint, device='cpu')

    def broken(pixels):
        raise RuntimeError('backend compiler failed: cc1plus not found')

    selector.image_encoder._compiled = broken   # what a missing compiler looks like at call time
    frames = _frames(n=2)
    _assert_same(_choices(selector, frames), _choices(eager, frames), atol=0)
    assert selector.image_encoder.mode == 'none'
    assert 'cc1plus not found' in selector.image_encoder.fallback_reason


@needs_cuda
@pytest.mark.parametrize('cameras', [1, 2])
def test_cuda_graph_replay_chooses_what_eager_chooses(checkpoint, cameras):
    eager = ActionSelector.from_pretrained(checkpoint, device='cuda')
    graph = ActionSelector.from_pretrained(checkpoint, device='cuda', compile_mode='cuda_graph')
    frames = _frames(cameras=cameras)
    _assert_same(_choices(graph, frames), _choices(eager, frames))
    assert graph.image_encoder.mode == 'cuda_graph', graph.image_encoder.fallback_reason


@needs_cuda
@pytest.mark.parametrize('precision', ['bf16', 'fp16'])
def test_autocast_on_cuda_keeps_the_choice(checkpoint, precision):
    eager = ActionSelector.from_pretrained(checkpoint, device='cuda')
    fast = ActionSelector.from_pretrained(checkpoint, device='cuda', precision=precision)
    assert fast.image_encoder.precision == precision
    frames = _frames()
    for (idx_f, scores_f), (idx_e, scores_e) in zip(_choices(fast, frames),
                                                    _choices(eager, frames), strict=True):
        # Half precision moves logits by ~1%; compare each action's score, not the argmax
        # of a random tiny model whose top scores may be that close.
        order_f, order_e = np.argsort(idx_f), np.argsort(idx_e)
        np.testing.assert_allclose(scores_f[order_f], scores_e[order_e], atol=0.5)
