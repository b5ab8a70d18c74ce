"""Continuous actions over real DDS: the selector in candidate_mode sampled and the simulator
with task continuous.

The selector runs the shipped grid model with the continuous library
(config/tabletop_continuous_actions.yaml: the 80 grid actions plus the space): it scores any
7-vector, so everything asserted here holds for any model (vectors inside the bounds, the
same seed giving the same vector, the node equal to the in-process selector, refusals), not
a success rate. Sample counts are small to keep the file fast.
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip('rclpy')

from geometry_msgs.msg import Twist  # noqa: E402
from rclpy.exceptions import InvalidParameterValueException  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32, Float32MultiArray, String  # noqa: E402

from support.ros import Harness, image_msg  # noqa: E402
from vla_embedding_ros.data.tabletop import TabletopConfig  # noqa: E402
from vla_embedding_ros.data.tabletop.continuous import (  # noqa: E402
    CONTINUOUS_SPACE,
    ContinuousTabletopGenerator,
    object_under,
)
from vla_embedding_ros.ros import selector_params  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import (  # noqa: E402
    LATCHED_QOS,
    SENSOR_QOS,
    ActionSelectorNode,
)
from vla_embedding_ros.ros.debug_overlay import draw_overlay  # noqa: E402
from vla_embedding_ros.ros.tabletop_sim_node import (  # noqa: E402
    CAMERA_QOS,
    RESULTS_QOS,
    TabletopSimNode,
)
from vla_embedding_ros.selection import ActionSelector  # noqa: E402
from vla_embedding_ros.selection.sampling import MAX_SAMPLES, SamplingConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / 'models' / 'tabletop')
LIBRARY = str(ROOT / 'config' / 'tabletop_continuous_actions.yaml')
SAMPLES, ITERATIONS = 64, 2


def _selector(h, library=LIBRARY, **params):
    overrides = [Parameter('model_path', value=MODEL), Parameter('library_path', value=library),
                 Parameter('device', value='cpu'), Parameter('max_rate_hz', value=0.0),
                 Parameter('candidate_mode', value='sampled'),
                 Parameter('sample_count', value=SAMPLES),
                 Parameter('sample_iterations', value=ITERATIONS), Parameter('top_k', value=3)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return h.start(ActionSelectorNode(context=h.context, parameter_overrides=overrides))


class Client:
    def __init__(self, h):
        n = h.node
        self.h = h
        self.instruction = n.create_publisher(String, 'instruction', LATCHED_QOS)
        self.image = n.create_publisher(Image, 'image', SENSOR_QOS)
        self.actions, self.scores, self.vectors, self.twists = [], [], [], []
        n.create_subscription(String, '/action_selector/selected_action',
                              lambda m: self.actions.append(m.data), 10)
        n.create_subscription(String, '/action_selector/scores',
                              lambda m: self.scores.append(json.loads(m.data)), 10)
        n.create_subscription(Float32MultiArray, '/action_selector/action_vector',
                              lambda m: self.vectors.append(np.array(m.data, np.float32)), 10)
        n.create_subscription(Twist, 'cmd_vel', self.twists.append, 10)

    def wait_connected(self, node):
        assert self.h.spin_until(lambda: node.state == 'active', 60.0), node.last_error
        assert self.h.spin_until(lambda: self.image.get_subscription_count()
                                 and self.instruction.get_subscription_count())

    def decide(self, image, instruction=None, timeout=20.0):
        if instruction is not None:
            self.instruction.publish(String(data=instruction))
            self.h.spin_for(0.1)
        stamp = self.h.now()
        self.image.publish(image_msg(image, stamp))
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert self.h.spin_until(lambda: any(s['stamp'] == key for s in self.scores),
                                 timeout), f'no decision on frame {key}'
        return [s for s in self.scores if s['stamp'] == key][-1]


def _in_space(vector) -> bool:
    v = np.asarray(vector)
    one_hot = sorted(v[:5].tolist()) == [0, 0, 0, 0, 1]
    return one_hot and bool(np.all((v[5:] >= 0) & (v[5:] <= 1)))


@pytest.fixture(scope='module')
def scenes():
    return list(ContinuousTabletopGenerator(TabletopConfig(), 'val', seed=5).samples(2))


def test_sampled_mode_decides_in_the_space_reproducibly_and_draws_the_heatmap(scenes, tmp_path):
    # The continuous library plus a twist mapping, so cmd_vel comes from the space too.
    doc = yaml.safe_load(Path(LIBRARY).read_text())
    doc['space']['twist'] = {'linear.x': 'x', 'angular.z': 'y'}
    library = tmp_path / 'continuous_twist.yaml'
    library.write_text(yaml.safe_dump(doc))
    first, second = scenes
    with Harness() as h:
        client = Client(h)
        node = _selector(h, str(library), publish_cmd_vel=True, sample_seed=7)
        client.wait_connected(node)
        scores = client.decide(first.image, first.instruction)
        assert not scores['abstained']
        assert scores['candidate_mode'] == 'sampled' and scores['candidates'] == 'sampled'
        assert scores['evaluations'] == 1 + ITERATIONS
        assert scores['sampling']['samples'] == SAMPLES
        assert scores['sampling']['seed'] == 7
        assert len(scores['sampling']['history']) == 1 + ITERATIONS
        assert len(scores['top_names']) == 3 == len(scores['top_probs']) == \
            len(scores['top_scores'])
        assert scores['top_scores'] == sorted(scores['top_scores'], reverse=True)
        assert scores['parameter_names'] == CONTINUOUS_SPACE.parameter_names
        assert h.spin_until(lambda: client.vectors and client.actions and client.twists)
        vector = client.vectors[-1]
        assert vector.shape == (7,) and _in_space(vector)
        assert scores['vector'] == pytest.approx(vector.tolist())
        assert client.actions[-1] == scores['selected'] == CONTINUOUS_SPACE.describe(vector)
        assert client.twists[-1].linear.x == pytest.approx(float(vector[5]))
        assert client.twists[-1].angular.z == pytest.approx(float(vector[6]))
        assert client.twists[-1].linear.y == 0.0

        # The same frame and instruction again (a new stamp): the same vector; and the node's
        # answer is the in-process selector's with the same settings.
        again = client.decide(first.image)
        assert again['vector'] == pytest.approx(scores['vector'])
        direct = ActionSelector.from_pretrained(MODEL, str(library), device='cpu').select_sampled(
            first.image, first.instruction,
            SamplingConfig(samples=SAMPLES, iterations=ITERATIONS, seed=7))
        assert scores['vector'] == pytest.approx(direct.vector.tolist(), abs=1e-5)

        # Live settings: bad ones are refused with the reason, good ones take effect.
        for name, value, words in (('sample_count', MAX_SAMPLES + 1, 'sample_count'),
                                   ('sample_count', -1, 'sample_count'),
                                   ('sample_noise', 1.5, 'sample_noise'),
                                   ('candidate_mode', 'random', 'candidate_mode')):
            result = node.set_parameters([Parameter(name, value=value)])[0]
            assert not result.successful and words in result.reason, (name, value)
        assert selector_params.check_value('sample_count', MAX_SAMPLES + 1).startswith(
            f'sample_count must be in [0, {MAX_SAMPLES}]')
        assert node.set_parameters([Parameter('sample_seed', value=8),
                                    Parameter('sample_iterations', value=0)])[0].successful
        other = client.decide(first.image)
        assert other['evaluations'] == 1 and _in_space(other['vector'])

        # ~/debug_image: only with a subscriber; then the score heatmap over the table.
        client.decide(second.image, second.instruction)
        assert node.debug_images_built == 0
        debug = []
        h.node.create_subscription(Image, '/action_selector/debug_image', debug.append, 1)
        assert h.spin_until(lambda: node._pubs['debug_image'].get_subscription_count() == 1)
        scores = client.decide(second.image)
        assert h.spin_until(lambda: debug)
        msg = debug[-1]
        assert (msg.height, msg.width, msg.encoding) == (96, 96, 'rgb8')
        drawn = np.frombuffer(bytes(msg.data), np.uint8).reshape(96, 96, 3).astype(int)
        names = [n if len(n) < 40 else n[:37] + '...' for n in scores['top_names']]
        text_only = draw_overlay(second.image, 'rgb', second.instruction, names,
                                 scores['top_probs'], False).astype(int)
        # The heatmap tints the whole table, not just the text lines.
        changed = np.abs(drawn - text_only).sum(axis=2) > 12
        assert changed.mean() > 0.5, changed.mean()
        assert node.debug_image_ms and min(node.debug_image_ms) > 0

        # A model that scores NaN (a corrupted weight) is an error counted in /diagnostics;
        # the node keeps running and decides again once the weights are sane.
        weight = next(node.selector.model.action.parameters())
        saved = weight.detach().clone()
        errors = node.stats.snapshot()['errors'].get('inference', 0)
        with np.errstate(all='ignore'):
            weight.data.fill_(math.nan)
        client.image.publish(image_msg(second.image, h.now()))
        assert h.spin_until(lambda: node.stats.snapshot()['errors'].get('inference', 0)
                            > errors)
        assert 'non-finite' in node.stats.snapshot()['last_error']
        weight.data.copy_(saved)
        assert _in_space(client.decide(first.image)['vector'])


def test_action_choice_pins_the_option_and_a_bad_pin_is_counted(scenes):
    """A robot that knows its next primitive pins it: every candidate takes that option, the
    node answers as the in-process selector with the same pin; a bad pin is counted and the
    previous one stays; an empty message lets the model choose again."""
    first = scenes[0]
    options = list(CONTINUOUS_SPACE.options)
    with Harness() as h:
        client = Client(h)
        pin = h.node.create_publisher(String, 'action_choice', 10)
        node = _selector(h, sample_seed=3)
        client.wait_connected(node)
        assert h.spin_until(lambda: pin.get_subscription_count() == 1)
        free = client.decide(first.image, first.instruction)
        assert free['choice'] is None
        other = options[(int(np.argmax(free['vector'][:5])) + 1) % len(options)]
        pin.publish(String(data=other))
        assert h.spin_until(lambda: node._queue.choice == other)
        pinned = client.decide(first.image)
        assert pinned['choice'] == other
        assert int(np.argmax(pinned['vector'][:5])) == options.index(other)
        direct = ActionSelector.from_pretrained(MODEL, LIBRARY, device='cpu').select_sampled(
            first.image, first.instruction,
            SamplingConfig(samples=SAMPLES, iterations=ITERATIONS, seed=3), choice=other)
        assert pinned['vector'] == pytest.approx(direct.vector.tolist(), abs=1e-5)

        pin.publish(String(data='jump'))
        assert h.spin_until(
            lambda: node.stats.snapshot()['rejected'].get('choice_unknown') == 1)
        assert client.decide(first.image)['choice'] == other
        pin.publish(String(data=''))
        assert h.spin_until(lambda: node._queue.choice is None)
        again = client.decide(first.image)
        assert again['choice'] is None
        assert again['vector'] == pytest.approx(free['vector'])


def test_sampled_needs_a_space_and_sample_count_is_bounded():
    with Harness() as h:
        # The shipped model's own library has no space: configure fails and says why.
        node = h.start(ActionSelectorNode(context=h.context, parameter_overrides=[
            Parameter('model_path', value=MODEL), Parameter('device', value='cpu'),
            Parameter('candidate_mode', value='sampled'), Parameter('autostart', value=False)]))
        assert h.spin_until(lambda: node.state == 'unconfigured')
        node.trigger_configure()
        assert node.state == 'unconfigured'
        assert "candidate_mode: sampled needs an action library with a continuous 'space:'" \
            in node.last_error
        assert node.stats.snapshot()['errors']['configure'] == 1
        # In library mode it configures, and switching to sampled is then refused live.
        assert node.set_parameters([Parameter('candidate_mode', value='library')])[0].successful
        node.trigger_configure()
        assert node.state == 'inactive', node.last_error
        result = node.set_parameters([Parameter('candidate_mode', value='sampled')])[0]
        assert not result.successful and 'space' in result.reason
        # Beyond the memory bound the node refuses to exist, naming the parameter and bound.
        with pytest.raises(InvalidParameterValueException, match='sample_count') as info:
            ActionSelectorNode(node_name='too_many', context=h.context, parameter_overrides=[
                Parameter('sample_count', value=MAX_SAMPLES + 1)])
        assert str(MAX_SAMPLES) in str(info.value)
    # A library with only a space has nothing for candidate_mode library to score.
    from vla_embedding_ros.actions.library import ActionLibrary
    space_only = ActionLibrary.from_dict({'version': 1, 'space': CONTINUOUS_SPACE.to_dict()})
    assert 'only a continuous' in ActionSelectorNode._sampled_refusal('library', space_only)
    assert ActionSelectorNode._sampled_refusal('sampled', space_only) == ''
    assert selector_params.MAX_SAMPLES == MAX_SAMPLES
    assert selector_params.sample_count_for(0, 'cpu') == 1024
    assert selector_params.sample_count_for(0, 'cuda') == 16384
    assert selector_params.sample_count_for(5, 'cuda') == 5


def _off_object_vector(sample) -> np.ndarray:
    size = sample.scene.image_size
    for y in np.linspace(0.02, 0.98, 25):
        for x in np.linspace(0.02, 0.98, 25):
            point = np.array([x, y]) * size - 0.5
            if object_under(sample.scene, point) is None:
                vector = sample.vector.copy()
                vector[-2:] = [x, y]
                return vector
    raise AssertionError('no free point on the table')


def test_sim_continuous_task_judges_the_vectors_it_receives():
    expected = list(ContinuousTabletopGenerator(TabletopConfig(image_size=64), 'val',
                                                seed=3).samples(3))
    off = _off_object_vector(expected[1])
    with Harness() as h:
        n = h.node
        results, rates, images, instructions = [], [], [], []
        n.create_subscription(String, '/tabletop_sim/episode_result',
                              lambda m: results.append(json.loads(m.data)), RESULTS_QOS)
        n.create_subscription(Float32, '/tabletop_sim/success_rate',
                              lambda m: rates.append(m.data), 10)
        n.create_subscription(Image, 'camera/image_raw', images.append, CAMERA_QOS)
        n.create_subscription(String, 'instruction', lambda m: instructions.append(m.data),
                              LATCHED_QOS)
        sim = h.start(TabletopSimNode(context=h.context, parameter_overrides=[
            Parameter('task', value='continuous'), Parameter('episodes', value=3),
            Parameter('seed', value=3), Parameter('split', value='val'),
            Parameter('image_size', value=64), Parameter('camera_width', value=128),
            Parameter('camera_height', value=96), Parameter('rate_hz', value=20.0),
            Parameter('episode_timeout_s', value=5.0)]))
        h.spin_for(0.3)
        assert sim.episode == 0   # waits for a publisher on the selector's action_vector
        vectors = n.create_publisher(Float32MultiArray, 'action_selector/action_vector', 10)
        assert h.spin_until(lambda: instructions and images)
        assert instructions[0] == expected[0].instruction
        assert (images[-1].width, images[-1].height) == (128, 96)

        def send(values):
            vectors.publish(Float32MultiArray(data=[float(v) for v in values]))

        send(expected[0].vector)                    # the scene's own answer
        assert h.spin_until(lambda: len(results) == 1)
        assert h.spin_until(lambda: instructions[-1] == expected[1].instruction)
        send(off)                                   # right primitive, on no object
        assert h.spin_until(lambda: len(results) == 2)
        assert h.spin_until(lambda: instructions[-1] == expected[2].instruction)
        send([0.5, 0.5])                            # not a vector of the space
        assert h.spin_until(lambda: len(results) == 3)
        assert h.spin_until(lambda: len(rates) == 3)
    assert [r['success'] for r in results] == [True, False, False]
    assert all(r['task'] == 'continuous' for r in results)
    assert results[0]['position_error'] == pytest.approx(0.0, abs=1e-3)
    assert results[0]['expected'] == CONTINUOUS_SPACE.describe(expected[0].vector)
    assert results[0]['chosen'] == results[0]['expected']
    assert results[1]['position_error'] > 1.0     # off the object: beyond its radius
    assert results[1]['vector'] == pytest.approx(off.tolist())
    assert results[1]['expected_vector'] == pytest.approx(expected[1].vector.tolist())
    assert results[2]['position_error'] is None and results[2]['chosen'].startswith('invalid')
    assert rates == pytest.approx([1.0, 0.5, 1 / 3])


def test_demo_continuous_wires_sampled_mode_and_names_the_missing_model(tmp_path):
    import subprocess
    import sys

    from vla_embedding_ros.ros.demo import _args, child_commands

    args = _args(['--task', 'continuous', '--model', MODEL, '--library', LIBRARY,
                  '--samples', '256', '--iterations', '2', '--sample-seed', '4'])
    commands = child_commands(args)
    sim, selector = ' '.join(commands['tabletop_sim']), ' '.join(commands['action_selector'])
    assert 'task:=continuous' in sim
    for setting in ('candidate_mode:=sampled', 'sample_count:=256', 'sample_iterations:=2',
                    'sample_seed:=4', f'library_path:={LIBRARY}', 'mode:=on_instruction'):
        assert setting in selector, setting
    assert _args(['--task', 'continuous']).model.endswith('tabletop_continuous')
    assert 'candidate_mode' not in ' '.join(child_commands(_args([]))['action_selector'])
    baseline = child_commands(_args(['--task', 'continuous', '--candidates', 'library']))
    assert 'candidate_mode:=library' in ' '.join(baseline['action_selector'])
    run = subprocess.run([sys.executable, '-m', 'vla_embedding_ros.ros.demo', '--task',
                          'continuous', '--model', str(tmp_path / 'none'), '--episodes', '1'],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert 'no model at' in run.stderr and 'config/train_tabletop_continuous.yaml' in run.stderr
