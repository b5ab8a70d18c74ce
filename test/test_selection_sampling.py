"""Derivative-free optimisation over a continuous space, alone and through the selector."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support.models import make_tiny_bert, tiny_vla_config
from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.actions.space import ActionSpace
from vla_embedding_ros.model import VLAConfig, VLAModel
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.selection.sampling import MAX_SAMPLES, SamplingConfig, refine

SPACE = ActionSpace.from_dict({'choice': {'name': 'primitive', 'options': ['a', 'b', 'c']},
                               'continuous': [{'name': 'x', 'low': 0.0, 'high': 1.0},
                                              {'name': 'y', 'low': 0.0, 'high': 1.0}]})
PEAK = torch.tensor([0.71, 0.23])


def peaked(candidates: torch.Tensor) -> torch.Tensor:
    """Highest at option 'b' and PEAK; option 'c' has a broad, lower hill elsewhere."""
    choice, xy = SPACE.split(candidates)
    sharp = 60.0 - 400.0 * ((xy - PEAK) ** 2).sum(-1)
    broad = 40.0 - 20.0 * ((xy - 0.2) ** 2).sum(-1)
    return torch.where(choice == 1, sharp, torch.where(choice == 2, broad, torch.zeros_like(sharp)))


def error(found) -> float:
    return float(np.hypot(*(found.best[3:] - PEAK.numpy())))


def test_refinement_finds_the_peak_and_beats_sampling_alone():
    refined = [refine(peaked, SPACE, SamplingConfig(samples=256, iterations=3, seed=s))
               for s in range(10)]
    random_only = [refine(peaked, SPACE, SamplingConfig(samples=256, iterations=0, seed=s))
                   for s in range(10)]
    assert all(int(np.argmax(r.best[:3])) == 1 for r in refined)
    assert np.mean([error(r) for r in refined]) < 0.5 * np.mean([error(r) for r in random_only])
    assert max(error(r) for r in refined) < 0.03
    assert refined[0].evaluations == 4 and len(refined[0].history) == 4
    assert refined[0].history == sorted(refined[0].history)   # the best never gets worse


def test_a_pinned_choice_finds_the_best_of_that_option_and_never_leaves_it():
    # Free, the search finds option 'b''s sharp peak; pinned to 'c' it climbs c's broad hill.
    for seed in range(5):
        found = refine(peaked, SPACE.pinned_to('c'), SamplingConfig(samples=256, seed=seed))
        assert int(np.argmax(found.best[:3])) == 2
        assert set(np.argmax(found.final[:, :3], axis=1).tolist()) == {2}
        assert np.hypot(*(found.best[3:] - 0.2)) < 0.1


def test_the_same_seed_gives_the_same_action_and_another_seed_other_samples():
    a = refine(peaked, SPACE, SamplingConfig(samples=128, seed=5))
    b = refine(peaked, SPACE, SamplingConfig(samples=128, seed=5))
    c = refine(peaked, SPACE, SamplingConfig(samples=128, seed=6))
    assert np.array_equal(a.best, b.best) and np.array_equal(a.final, b.final)
    assert not np.array_equal(a.initial, c.initial)


def test_gradient_steps_refine_a_smooth_peak_further():
    plain = [error(refine(peaked, SPACE, SamplingConfig(samples=64, iterations=1, seed=s)))
             for s in range(8)]
    stepped = [error(refine(peaked, SPACE, SamplingConfig(
        samples=64, iterations=1, seed=s, gradient_steps=20, gradient_lr=0.002)))
        for s in range(8)]
    assert np.mean(stepped) < np.mean(plain)


@pytest.mark.parametrize('settings, message', [
    (dict(samples=0), 'sample count'), (dict(samples=MAX_SAMPLES + 1), 'memory bound'),
    (dict(samples=2.5), 'sample count'), (dict(noise=2.0), 'noise'), (dict(shrink=0), 'shrink'),
    (dict(iterations=-1), 'iterations'), (dict(seed=-1), 'seed')])
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        refine(peaked, SPACE, SamplingConfig(**settings))


def test_non_finite_scores_are_an_error_not_an_action():
    def broken(candidates):
        out = peaked(candidates)
        out[3] = float('nan')
        return out
    with pytest.raises(ValueError, match='1 of 32 candidates as non-finite'):
        refine(broken, SPACE, SamplingConfig(samples=32))


@pytest.fixture(scope='module')
def continuous_model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp('continuous')
    config = tiny_vla_config(text_path=make_tiny_bert(root / 'bert'), param_dim=5).to_dict()
    config['action'].update(continuous_dims=[3, 4], fourier_features=8,
                            continuous_low=[0, 0, 0, 0, 0], continuous_high=[1, 1, 1, 1, 1])
    torch.manual_seed(0)
    model = VLAModel(VLAConfig.from_dict(config))
    model.save_pretrained(root / 'model')
    ActionLibrary([], SPACE.parameter_names, SPACE).to_yaml(root / 'model' / 'actions.yaml')
    return root / 'model'


def test_selector_chooses_a_vector_of_the_space_reproducibly(continuous_model_dir):
    selector = ActionSelector.from_pretrained(continuous_model_dir, device='cpu', top_k=3)
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    config = SamplingConfig(samples=64, iterations=2, seed=1)
    first = selector.select_sampled(frame, 'pick up the red cube', config)
    again = selector.select_sampled(frame, 'pick up the red cube', config)
    assert np.array_equal(first.vector, again.vector)
    SPACE.check_vector(first.vector)
    assert first.name == SPACE.describe(first.vector)
    assert len(first.top_names) == 3 and first.refinement.final.shape == (64, 5)
    assert 0 < first.confidence <= 1
    # The scores are the model's: the chosen vector is the best the model gave anything.
    with torch.inference_mode():
        query = selector.model.encode_query(selector.preprocess(frame), ['pick up the red cube'])
        logits = selector.model.score(query, selector.model.encode_actions(
            torch.from_numpy(np.concatenate([first.refinement.final,
                                             first.vector[None]])), None))[0]
    assert float(logits[-1]) == pytest.approx(float(logits.max()), abs=1e-4)
    # A pinned choice: every candidate takes that option; an option the space lacks is refused.
    for index, option in enumerate(SPACE.options):
        pinned = selector.select_sampled(frame, 'pick up the red cube', config, choice=option)
        assert int(np.argmax(pinned.vector[:3])) == index
        assert set(np.argmax(pinned.refinement.final[:, :3], axis=1).tolist()) == {index}
    with pytest.raises(ValueError, match="cannot pin primitive to 'd'"):
        selector.select_sampled(frame, 'pick up the red cube', config, choice='d')
    with pytest.raises(ValueError, match='only a continuous space'):
        selector.select(frame, 'pick up the red cube')
    assert selector.select_sampled(frame, '  ').abstained


def test_a_space_wider_than_training_is_refused(continuous_model_dir):
    selector = ActionSelector.from_pretrained(continuous_model_dir, device='cpu')
    wide = ActionSpace.from_dict({'choice': {'name': 'primitive', 'options': ['a', 'b', 'c']},
                                  'continuous': [{'name': 'x', 'low': 0.0, 'high': 2.0},
                                                 {'name': 'y', 'low': 0.0, 'high': 1.0}]})
    with pytest.raises(ValueError, match=r"'x' spans \[0, 2\], the model was trained on \[0, 1\]"):
        selector.set_library(ActionLibrary([], wide.parameter_names, wide))


def test_candidates_outside_the_trained_range_are_refused(continuous_model_dir):
    selector = ActionSelector.from_pretrained(continuous_model_dir, device='cpu')
    frame = np.zeros((32, 32, 3), np.uint8)
    inside = np.array([[1, 0, 0, 0.5, 0.5], [0, 1, 0, 0.1, 0.9]], np.float32)
    assert selector.select(frame, 'pick up the red cube', candidates=inside).index in (0, 1)
    with pytest.raises(ValueError, match=r'candidate 1 column 4 is 1.5, outside \[0, 1\]'):
        selector.select(frame, 'pick up the red cube',
                        candidates=np.array([[1, 0, 0, 0.5, 0.5], [1, 0, 0, 0.5, 1.5]]))


def test_warm_up_covers_the_sampled_search(continuous_model_dir):
    # The library declares only a space: the warm-up runs the sampled search (with the given
    # settings), not a library decision that would raise.
    selector = ActionSelector.from_pretrained(continuous_model_dir, device='cpu')
    calls = []
    search = selector.select_sampled
    selector.select_sampled = lambda *a, **kw: calls.append(a) or search(*a, **kw)
    config = SamplingConfig(samples=32, iterations=1)
    assert selector.warm_up(num_cameras=1, sampling=config) > 0
    assert len(calls) == 1 and calls[0][2] is config
    assert 'warm up' in selector.text_cache


def test_select_and_select_sampled_check_their_inputs_alike(continuous_model_dir):
    selector = ActionSelector.from_pretrained(continuous_model_dir, device='cpu')
    frame = np.zeros((32, 32, 3), np.uint8)
    candidates = np.array([[1, 0, 0, 0.5, 0.5]], np.float32)
    config = SamplingConfig(samples=16, iterations=0)
    calls = {'select': lambda **kw: selector.select(candidates=candidates, **kw),
             'select_sampled': lambda **kw: selector.select_sampled(sampling=config, **kw)}
    for name, call in calls.items():
        with pytest.raises(ValueError, match='instruction must be a string'):
            call(images=frame, instruction=None)
        with pytest.raises(ValueError, match=r'1 frames but 2 camera indices \[0, 1\]'):
            call(images=frame, instruction='pick', cameras=[0, 1])
        empty = call(images=frame, instruction=' ')
        assert (empty.abstained, empty.reason, empty.index) == (True, 'empty instruction', -1), name
        with pytest.raises(ValueError):   # bad frames are refused even with nothing to decide
            call(images=np.zeros((4, 4), np.uint8), instruction=' ')
