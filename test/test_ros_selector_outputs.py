"""What one action_selector decision publishes, without ROS: the action name, vector and
twist, the ~/scores payload (library, candidates topic, sampled, abstentions) and the
/diagnostics values, from hand-built selections."""
import json
import math

import numpy as np
import pytest

from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.ros.decision_queue import Job
from vla_embedding_ros.ros.selector_outputs import (
    Decision,
    action_name,
    action_twist,
    diagnostics_values,
    scores_payload,
)
from vla_embedding_ros.selection.sampling import Refinement
from vla_embedding_ros.selection.selector import Selection

LIBRARY = ActionLibrary.from_dict({
    'version': 1, 'parameter_names': ['go', 'stay', 'speed', 'turn'],
    'actions': [
        {'name': 'drive', 'description': 'drive on', 'params': [1, 0, 0.5, 0.0],
         'twist': {'linear': [0.5, 0, 0], 'angular': [0, 0, 0.1]}},
        {'name': 'wait', 'description': 'stop', 'params': [0, 1, 0.0, 0.0]}],
    'space': {'choice': {'name': 'mode', 'options': ['go', 'stay']},
              'continuous': [{'name': 'speed', 'low': 0, 'high': 1},
                             {'name': 'turn', 'low': -1, 'high': 1}],
              'twist': {'linear.x': 'speed', 'angular.z': 'turn'}}})
SETTINGS = {'candidate_mode': 'library', 'sample_iterations': 3, 'sample_noise': 0.33,
            'sample_seed': 7, 'gradient_steps': 0}


def library_selection(index=0, abstained=False):
    return Selection(index=index, name=LIBRARY.names[index],
                     vector=LIBRARY.params()[index].copy(), confidence=0.8,
                     abstained=abstained, reason='confidence low' if abstained else '',
                     top_names=['drive', 'wait'], top_indices=[0, 1], top_scores=[3.0, 1.0],
                     top_probs=[0.8, 0.2])


def job(candidates=None, msgs=('top', 'side'), missing=()):
    return Job(list(msgs), 'drive on', 1, candidates, missing=list(missing))


def test_a_library_decision_names_its_action_and_echoes_the_frame():
    decision = Decision(job(missing=['side']), library_selection(), '', 12.5, 10.0)
    assert action_name(decision.selection) == 'drive'
    scores = scores_payload(decision, (42, 7), 'camera', LIBRARY, SETTINGS)
    json.dumps(scores)   # all of it JSON
    assert scores['selected'] == 'drive' and not scores['abstained']
    assert scores['stamp'] == {'sec': 42, 'nanosec': 7} and scores['frame_id'] == 'camera'
    assert scores['vector'] == [1.0, 0.0, 0.5, 0.0]
    assert scores['parameter_names'] == ['go', 'stay', 'speed', 'turn']
    assert (scores['cameras'], scores['missing_cameras']) == (1, ['side'])
    assert scores['candidates'] == 'library' and 'sampling' not in scores
    assert (scores['latency_ms'], scores['inference_ms']) == (12.5, 10.0)
    assert action_twist(decision, LIBRARY) == ((0.5, 0.0, 0.0), (0.0, 0.0, 0.1))
    assert action_twist(Decision(job(), library_selection(1), '', 1.0), LIBRARY) is None


def test_abstentions_publish_scores_but_no_action_or_twist():
    low = Decision(job(), library_selection(abstained=True), 'confidence low', 3.0)
    scores = scores_payload(low, (1, 2), '', LIBRARY, SETTINGS)
    assert scores['abstained'] and scores['selected'] is None
    assert scores['reason'] == 'confidence low' and scores['top_names'] == ['drive', 'wait']
    assert action_twist(low, LIBRARY) is None
    unscored = Decision(job(), None, 'no instruction received', 3.0)
    scores = scores_payload(unscored, (1, 2), '', None, SETTINGS)
    assert unscored.abstained and scores['confidence'] is None and scores['vector'] == []
    assert scores['parameter_names'] == [] and scores['top_probs'] == []


def test_candidates_from_the_topic_are_named_by_index_and_have_no_twist():
    selection = Selection(index=2, name=None, vector=np.array([1, 0, 0.2, 0.3], np.float32),
                          confidence=0.5, abstained=False, reason='')
    decision = Decision(job(candidates=np.zeros((3, 4), np.float32)), selection, '', 1.0)
    assert action_name(selection) == 'candidate_2'
    scores = scores_payload(decision, (0, 0), '', LIBRARY, SETTINGS)
    assert scores['selected'] == 'candidate_2' and scores['candidates'] == 'topic'
    assert action_twist(decision, LIBRARY) is None


def test_a_sampled_decision_reports_the_search_and_maps_the_space_twist():
    best = np.array([1, 0, 0.25, -0.5], np.float32)
    found = Refinement(best, 4.0, np.zeros((64, 4), np.float32), np.zeros(64, np.float32),
                       np.zeros((64, 4), np.float32), np.zeros(64, np.float32), 4,
                       [1.0, 2.0, 3.0, 4.0])
    selection = Selection(index=0, name=LIBRARY.space.describe(best), vector=best,
                          confidence=0.3, abstained=False, reason='', refinement=found)
    decision = Decision(job(), selection, '', 30.0, 25.0)
    scores = scores_payload(decision, (0, 0), '', LIBRARY,
                            dict(SETTINGS, candidate_mode='sampled'))
    assert scores['candidates'] == 'sampled' and scores['candidate_mode'] == 'sampled'
    assert scores['evaluations'] == 4
    assert scores['sampling'] == {'samples': 64, 'iterations': 3, 'noise': 0.33, 'seed': 7,
                                  'gradient_steps': 0, 'best_logit': 4.0,
                                  'history': [1.0, 2.0, 3.0, 4.0]}
    linear, angular = action_twist(decision, LIBRARY)
    assert linear[0] == pytest.approx(0.25) and angular[2] == pytest.approx(-0.5)


def test_diagnostics_values_without_a_model_say_what_is_asked():
    settings = {'mode': 'continuous', 'precision': 'bf16', 'compile': 'none',
                'backend': 'torch', 'image_topics': ['a', 'b/'],
                'image_transport': 'compressed', 'candidate_mode': 'library'}
    values = diagnostics_values(None, settings, None, 0, [])
    assert values['precision'] == 'bf16' and values['backend'] == 'torch'
    assert values['cameras'] == 'a/compressed, b/compressed'
    assert math.isnan(values['debug_image_ms']) and values['threads'] >= 1
    assert diagnostics_values(None, settings, None, 0, [3.0, 1.0, 2.0])['debug_image_ms'] == 2.0
