"""ActionSelector on a tiny VLAModel saved to and loaded from disk (real weights, no mocks)."""
import json

import numpy as np
import pytest
import torch

from support.models import IMAGE_SIZE, make_tiny_bert, tiny_vla_config
from vla_embedding_ros.model.vla_model import VLAModel
from vla_embedding_ros.selection import (
    Action,
    ActionLibrary,
    ActionSelector,
    Selection,
    selection_to_json,
)

PARAM_NAMES = ['pick', 'push', 'x', 'y']
ACTIONS = [
    ('pick_a', 'pick up the red cube', [1, 0, 0.125, 0.125]),
    ('pick_b', 'pick up the orange ball', [1, 0, 0.875, 0.125]),
    ('push_a', 'push the blue ball left', [0, 1, 0.125, 0.875]),
    ('push_b', 'push the green ring right', [0, 1, 0.875, 0.875]),
    ('push_c', 'push the red ring back', [0, 1, 0.5, 0.5]),
    ('wait', 'stop and wait', [0, 0, 0.5, 0.5]),
]
INSTRUCTION = 'pick up the red cube'


def _library(actions=ACTIONS):
    return ActionLibrary([Action(n, d, np.array(p, np.float32)) for n, d, p in actions],
                         PARAM_NAMES)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """A tiny VLAModel (conv stem, tiny BERT text, transformer fusion) saved with its library."""
    root = tmp_path_factory.mktemp('selector')
    text = make_tiny_bert(root / 'bert')
    torch.manual_seed(0)
    model = VLAModel(tiny_vla_config(text_path=text, fusion='transformer',
                                     param_dim=len(PARAM_NAMES)))
    ckpt = root / 'ckpt'
    model.save_pretrained(ckpt)
    _library().to_yaml(ckpt / 'actions.yaml')
    return ckpt


@pytest.fixture(scope='module')
def model(checkpoint):
    return VLAModel.from_pretrained(checkpoint, device='cpu')


@pytest.fixture
def selector(model):
    return ActionSelector(model, _library(), top_k=3)


def _frame(seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                                dtype=np.uint8)


def _pixels(frames, model):
    """Normalised pixels computed without the package (frames already at the model's size)."""
    mean, std = np.array(model.image_mean), np.array(model.image_std)
    out = [((f.astype(np.float64) / 255.0 - mean) / std).transpose(2, 0, 1) for f in frames]
    return torch.from_numpy(np.stack(out).astype(np.float32)).to(model.device)


def test_from_pretrained_loads_model_and_default_library(checkpoint):
    selector = ActionSelector.from_pretrained(checkpoint, device='cpu', top_k=2,
                                              min_confidence=0.1, cache_size=4)
    assert isinstance(selector.model, VLAModel)
    assert selector.library.names == [a[0] for a in ACTIONS]
    assert selector.library_embeddings.shape[0] == len(ACTIONS)
    assert (selector.top_k, selector.min_confidence) == (2, 0.1)
    assert selector.cache_info()['capacity'] == 4


def test_from_pretrained_missing_directory_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='model directory .*nowhere does not exist'):
        ActionSelector.from_pretrained(tmp_path / 'nowhere', device='cpu')


def test_select_equals_direct_model_computation(selector, model):
    frames = [_frame(1), _frame(2)]
    result = selector.select(frames, INSTRUCTION, top_k=len(ACTIONS))
    lib = _library()
    with torch.inference_mode():
        query = model.encode_query(_pixels(frames, model), model.encode_text([INSTRUCTION]),
                                   num_cameras=2)
        actions = model.encode_actions(torch.from_numpy(lib.params().copy()), lib.descriptions)
        logits = model.score(query, actions)[0]
    order = torch.argsort(logits, descending=True)
    assert isinstance(result, Selection)
    assert result.top_indices == order.tolist()
    assert result.index == int(order[0]) and result.name == lib.names[result.index]
    np.testing.assert_array_equal(result.vector, lib.params()[result.index])
    np.testing.assert_allclose(result.top_scores, logits[order].numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result.top_probs, torch.softmax(logits, 0)[order].numpy(),
                               rtol=1e-4, atol=1e-6)


def test_top_k_sorted_and_probabilities_over_the_scored_set(selector):
    result = selector.select(_frame(), INSTRUCTION)
    assert len(result.top_indices) == 3 == len(result.top_names) == len(result.top_probs)
    assert result.top_scores == sorted(result.top_scores, reverse=True)
    assert result.top_probs == sorted(result.top_probs, reverse=True)
    assert result.confidence == result.top_probs[0]
    assert [selector.library.names[i] for i in result.top_indices] == result.top_names
    everything = selector.select(_frame(), INSTRUCTION, top_k=100)  # clamps to N
    assert len(everything.top_probs) == len(ACTIONS)
    assert sum(everything.top_probs) == pytest.approx(1.0, abs=1e-5)
    # The top-3 probabilities are the same numbers, not renormalised over the top 3.
    np.testing.assert_allclose(result.top_probs, everything.top_probs[:3], rtol=1e-6)


def test_abstain_and_live_attribute_changes(selector):
    frame = _frame(3)
    first = selector.select(frame, INSTRUCTION)
    assert not first.abstained and first.reason == ''
    selector.min_confidence = 0.999
    abstained = selector.select(frame, INSTRUCTION)
    assert abstained.abstained and 'below min_confidence' in abstained.reason
    # What it would have chosen is still reported, for diagnostics.
    assert abstained.index == first.index and abstained.confidence == first.confidence
    selector.min_confidence = first.confidence - 1e-6
    assert not selector.select(frame, INSTRUCTION).abstained
    selector.top_k = 1
    assert len(selector.select(frame, INSTRUCTION).top_names) == 1
    selector.top_k = 0
    with pytest.raises(ValueError, match='top_k must be a positive integer'):
        selector.select(frame, INSTRUCTION)
    selector.top_k, selector.min_confidence = 2, 1.5
    with pytest.raises(ValueError, match=r'min_confidence must be in \[0, 1\]'):
        selector.select(frame, INSTRUCTION)


def test_empty_instruction_abstains_without_encoding(selector):
    result = selector.select(_frame(), '   ')
    assert result.abstained and result.reason == 'empty instruction'
    assert result.index == -1 and result.name is None and result.top_names == []
    assert selector.cache_info()['misses'] == 0
    with pytest.raises(ValueError, match='expected dtype uint8'):  # frames still validated
        selector.select(np.zeros((8, 8, 3), np.float32), '')


def test_instruction_cache_hits_and_lru_eviction(model):
    selector = ActionSelector(model, _library(), cache_size=2)
    frame = _frame()
    first = selector.select(frame, INSTRUCTION)
    again = selector.select(_frame(9), INSTRUCTION)
    assert selector.cache_info() == {'hits': 1, 'misses': 1, 'size': 1, 'capacity': 2}
    assert again.top_indices != [] and first.top_scores != again.top_scores  # new frame scored
    # Surrounding whitespace is the same instruction.
    selector.select(frame, f'  {INSTRUCTION}\n')
    assert selector.cache_info()['hits'] == 2
    selector.select(frame, 'stop and wait')
    selector.select(frame, INSTRUCTION)  # refreshes it: 'stop and wait' is now oldest
    selector.select(frame, 'push the red ring back')  # evicts 'stop and wait'
    assert selector.text_cache.keys() == [INSTRUCTION, 'push the red ring back']
    info = selector.cache_info()
    assert (info['hits'], info['misses'], info['size']) == (3, 3, 2)
    selector.select(frame, 'stop and wait')
    assert selector.cache_info()['misses'] == 4
    # Cached features give exactly the scores a fresh computation gives.
    fresh = ActionSelector(model, _library(), cache_size=0).select(frame, INSTRUCTION)
    np.testing.assert_allclose(selector.select(frame, INSTRUCTION).top_scores,
                               fresh.top_scores, rtol=1e-6)


def test_candidates_score_like_the_library(selector):
    frame = _frame(4)
    from_library = selector.select(frame, INSTRUCTION, top_k=len(ACTIONS))
    vectors = _library().params().copy()
    from_vectors = selector.select(frame, INSTRUCTION, candidates=vectors, top_k=len(ACTIONS))
    assert from_vectors.top_indices == from_library.top_indices
    np.testing.assert_allclose(from_vectors.top_scores, from_library.top_scores, rtol=1e-4,
                               atol=1e-4)
    assert from_vectors.name is None
    assert from_vectors.top_names == [f'candidate_{i}' for i in from_vectors.top_indices]
    np.testing.assert_array_equal(from_vectors.vector, vectors[from_vectors.index])
    # A subset is scored on its own: probabilities renormalise over what was given.
    subset = selector.select(frame, INSTRUCTION, candidates=vectors[:2], top_k=5)
    assert len(subset.top_probs) == 2 and sum(subset.top_probs) == pytest.approx(1.0)


@pytest.mark.parametrize('bad, pattern', [
    (np.zeros((3, 5), np.float32), r'width 5, the model expects param_dim=4'),
    (np.array([[0, 0, np.nan, 0]], np.float32), r'non-finite values \(1\), first at row 0, '
                                                 r'column 2'),
    (np.zeros((0, 4), np.float32), r'candidates is empty'),
    (np.zeros(4, np.float32), r'2-D array N×D, got shape \(4,\)'),
    ([['a', 'b', 'c', 'd']], r'N×D array of numbers'),
])
def test_bad_candidates_raise(selector, bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        selector.select(_frame(), INSTRUCTION, candidates=bad)


def test_two_cameras_differ_from_one(selector):
    one = selector.select(_frame(5), INSTRUCTION, top_k=len(ACTIONS))
    two = selector.select([_frame(5), _frame(6)], INSTRUCTION, top_k=len(ACTIONS))
    assert not np.allclose(sorted(one.top_scores), sorted(two.top_scores))
    # bgr input of the channel-swapped frame is the same selection.
    bgr = selector.select(_frame(5)[..., ::-1], INSTRUCTION, color='bgr', top_k=len(ACTIONS))
    np.testing.assert_allclose(bgr.top_scores, one.top_scores, rtol=1e-5, atol=1e-5)


def test_set_library_re_embeds_and_checks_layout(selector):
    before = selector.library_embeddings
    smaller = _library(ACTIONS[3:])
    selector.set_library(smaller)
    assert selector.library is smaller and selector.library_embeddings.shape[0] == 3
    torch.testing.assert_close(selector.library_embeddings, before[3:], rtol=1e-5, atol=1e-5)
    result = selector.select(_frame(), INSTRUCTION)
    assert set(result.top_names) <= set(smaller.names)
    wrong = ActionLibrary([Action('x', '', np.zeros(3, np.float32))], ['a', 'b', 'c'])
    with pytest.raises(ValueError, match='3 parameters per action.*model expects 4'):
        selector.set_library(wrong)
    assert selector.library is smaller  # a rejected library changes nothing


def test_without_library_candidates_are_required(model):
    selector = ActionSelector(model, None)
    with pytest.raises(ValueError, match='no action library is set'):
        selector.select(_frame(), INSTRUCTION)
    result = selector.select(_frame(), INSTRUCTION, candidates=_library().params())
    assert result.name is None and result.index >= 0


def test_selection_to_json_round_trips(selector):
    result = selector.select(_frame(), INSTRUCTION)
    data = json.loads(selection_to_json(result, stamp=1.5, latency_ms=3.0))
    assert data['name'] == result.name and data['top_probs'] == result.top_probs
    assert data['vector'] == pytest.approx(result.vector.tolist())
    assert (data['stamp'], data['latency_ms']) == (1.5, 3.0)


@pytest.mark.parametrize('bad, kind', [
    (np.zeros((3, 5), np.float32), 'shape'),
    (np.zeros((0, 4), np.float32), 'shape'),
    ([['a', 'b', 'c', 'd']], 'shape'),
    (np.array([[0, 0, np.inf, 0]], np.float32), 'nonfinite'),
])
def test_check_candidates_names_the_kind(selector, bad, kind):
    # The node counts rejected candidates by this kind (candidates_shape, ...).
    from vla_embedding_ros.selection.selector import CandidateError

    with pytest.raises(CandidateError) as info:
        selector.check_candidates(bad)
    assert info.value.kind == kind
    good = np.ones((2, 4), np.float64)
    checked = selector.check_candidates(good)
    assert checked.dtype == np.float32 and checked.shape == (2, 4)
    good[0, 0] = 7.0
    assert checked[0, 0] == 1.0   # a private copy: the caller's buffer may change


def test_warm_up_decides_once_and_caches_the_instruction(model):
    selector = ActionSelector(model, _library())
    seconds = selector.warm_up(num_cameras=2, instruction='warm up please')
    assert seconds > 0
    assert selector.cache_info()['size'] == 1 and 'warm up please' in selector.text_cache
    # Without a library there is nothing to warm up on, and no error either.
    assert ActionSelector(model, None).warm_up() >= 0
