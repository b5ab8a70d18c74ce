"""action_selector over real DDS: outputs and stamps, lifecycle, parameters, debug image,
several cameras, QoS warnings. The node spins in a background executor of a fresh Context;
the test's own node publishes frames and instructions and listens to every output."""
import threading
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32MultiArray, MultiArrayDimension, String  # noqa: E402

from support.ros import TEXT_ACTIONS, Harness, frame, make_text_checkpoint  # noqa: E402
from support.selector_client import Client  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import ActionSelectorNode  # noqa: E402
from vla_embedding_ros.selection import ActionSelector  # noqa: E402

NAME = {instruction: name for name, instruction, _, _ in TEXT_ACTIONS}


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp('ros_selector'))


def _selector(h, ckpt, **params):
    overrides = [Parameter('model_path', value=ckpt), Parameter('device', value='cpu'),
                 Parameter('max_rate_hz', value=0.0)]
    overrides += [Parameter(k, value=v) for k, v in params.items()]
    return h.start(ActionSelectorNode(context=h.context, parameter_overrides=overrides))


def test_image_and_instruction_in_action_out_with_the_image_stamp(ckpt):
    with Harness() as h:
        client = Client(h)
        node = _selector(h, ckpt, publish_cmd_vel=True, top_k=3)
        client.wait_connected(node)
        stamp, scores = client.decide('pick up the red cube', seed=1)
        assert h.spin_until(lambda: client.actions and client.vectors)
        assert client.actions[-1] == 'pick_red'
        assert scores['selected'] == 'pick_red' and not scores['abstained']
        assert scores['instruction'] == 'pick up the red cube'
        assert scores['stamp'] == {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert len(scores['top_names']) == 3 == len(scores['top_probs'])
        assert scores['latency_ms'] > 0
        # The node's answer is the selector's answer on the same frame: nothing lost on the way.
        direct = ActionSelector.from_pretrained(ckpt, device='cpu', top_k=3).select(
            frame(1), 'pick up the red cube')
        assert scores['top_names'] == direct.top_names
        assert scores['top_scores'] == pytest.approx(direct.top_scores, abs=1e-4)
        vector = client.vectors[-1]
        assert [d.label for d in vector.layout.dim] == ['params']
        assert vector.layout.dim[0].size == 3
        assert list(vector.data) == pytest.approx(TEXT_ACTIONS[0][2])
        assert client.twists == []  # pick_red has no twist

        # A changed instruction changes the choice, on a new frame with its own stamp.
        stamp2, scores2 = client.decide('push the blue ball left', seed=1)
        assert h.spin_until(lambda: client.actions[-1] == 'push_blue')
        assert scores2['selected'] == 'push_blue'
        assert (stamp2.sec, stamp2.nanosec) != (stamp.sec, stamp.nanosec)
        assert h.spin_until(lambda: client.twists)
        assert client.twists[-1].linear.x == pytest.approx(0.1)
        assert client.twists[-1].angular.z == pytest.approx(0.5)

        # N x D candidates from a topic replace the library; an empty message restores it.
        cand = Float32MultiArray(data=[float(v) for _, _, p, _ in TEXT_ACTIONS[:2] for v in p])
        cand.layout.dim = [MultiArrayDimension(label='candidates', size=2, stride=6),
                           MultiArrayDimension(label='params', size=3, stride=3)]
        client.candidates.publish(cand)
        h.spin_for(0.2)
        _, scores3 = client.decide(seed=2)
        assert scores3['candidates'] == 'topic'
        assert set(scores3['top_names']) == {'candidate_0', 'candidate_1'}

        # Diagnostics count what happened, stamped with the node clock's now (as
        # diagnostic_updater does; before, the last frame's stamp, 0 before the first frame).
        assert h.spin_until(lambda: any(
            kv.key == 'frames_processed' and int(kv.value) >= 3
            for d in client.diags for kv in d.status[0].values), 5.0)
        diag = client.diags[-1]
        values = {kv.key: kv.value for kv in diag.status[0].values}
        assert int(values['decisions']) >= 3 and values['frames_dropped'] == '0'
        assert all(d.header.stamp.sec > 0 for d in client.diags)
        age_ns = h.node.get_clock().now().nanoseconds - (
            diag.header.stamp.sec * 10**9 + diag.header.stamp.nanosec)
        assert 0 <= age_ns < 5 * 10**9


def test_abstains_without_instruction_and_below_min_confidence(ckpt):
    with Harness() as h:
        client = Client(h)
        node = _selector(h, ckpt)
        client.wait_connected(node)
        _, scores = client.decide(seed=3)  # no instruction yet
        assert scores['abstained'] and scores['reason'] == 'no instruction received'
        _, scores = client.decide('stop and wait', seed=3)
        assert scores['selected'] == 'wait'
        confidence = scores['confidence']
        # A live parameter change: the next frame abstains, and nothing goes to selected_action.
        result = node.set_parameters([Parameter('min_confidence', value=0.999)])[0]
        assert result.successful, result.reason
        count = len(client.actions)
        _, scores = client.decide(seed=4)
        assert scores['abstained'] and 'below min_confidence' in scores['reason']
        assert confidence < 0.999
        h.spin_for(0.2)
        assert len(client.actions) == count
        assert node.stats.snapshot()['abstentions'] == 2
        assert 'min_confidence' in node.stats.snapshot()['last_abstain_reason']


def test_bad_parameters_are_rejected_with_a_reason_over_the_service(ckpt):
    with Harness() as h:
        node = _selector(h, ckpt)
        assert h.spin_until(lambda: node.state == 'active', 30.0)
        client = h.node.create_client(SetParameters, '/action_selector/set_parameters')
        assert client.wait_for_service(timeout_sec=5.0)

        def set_param(name, value):
            future = client.call_async(SetParameters.Request(
                parameters=[Parameter(name, value=value).to_parameter_msg()]))
            assert h.spin_until(future.done, 5.0)
            return future.result().results[0]

        for name, value in [('max_rate_hz', -1.0), ('min_confidence', 1.5),
                            ('mode', 'sometimes'), ('top_k', 0), ('image_transport', 'theora'),
                            ('model_path', '/elsewhere'), ('autostart', False)]:
            result = set_param(name, value)
            assert not result.successful, (name, value)
            assert result.reason, (name, value)
        assert 'unknown mode' in set_param('mode', 'sometimes').reason
        assert 'unconfigured' in set_param('model_path', '/elsewhere').reason
        assert node.get_parameter('mode').value == 'continuous'
        result = set_param('top_k', 2)
        assert result.successful and node.selector.top_k == 2
        assert set_param('mode', 'on_instruction').successful
        assert node.settings['mode'] == 'on_instruction'
        descriptor = node.describe_parameter('min_confidence')
        assert descriptor.description and descriptor.floating_point_range[0].to_value == 1.0
        assert node.describe_parameter('top_k').integer_range[0].from_value == 1
        assert node.describe_parameter('autostart').read_only


def test_lifecycle_over_services_with_a_failing_then_fixed_configure(ckpt, tmp_path, capfd):
    missing = str(tmp_path / 'no_such_model')
    with Harness() as h:
        node = _selector(h, missing, autostart=False)
        change = h.node.create_client(ChangeState, '/action_selector/change_state')
        get = h.node.create_client(GetState, '/action_selector/get_state')
        assert change.wait_for_service(timeout_sec=5.0) and get.wait_for_service(timeout_sec=5.0)

        def transition(tid):
            future = change.call_async(ChangeState.Request(transition=Transition(id=tid)))
            assert h.spin_until(future.done, 30.0)
            return future.result().success

        def state():
            future = get.call_async(GetState.Request())
            assert h.spin_until(future.done, 5.0)
            return future.result().current_state.label

        assert state() == 'unconfigured'
        assert not transition(Transition.TRANSITION_CONFIGURE)
        assert state() == 'unconfigured'
        assert missing in node.last_error
        h.spin_for(0.2)
        assert missing in capfd.readouterr().err  # the log line names the path

        assert node.set_parameters([Parameter('model_path', value=ckpt)])[0].successful
        assert transition(Transition.TRANSITION_CONFIGURE) and state() == 'inactive'
        assert h.node.count_subscribers('/image') == 0  # topics closed
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == 'active'
        assert h.spin_until(lambda: h.node.count_subscribers('/image') == 1)
        assert node.selector is not None
        assert transition(Transition.TRANSITION_DEACTIVATE) and state() == 'inactive'
        assert node.selector is None and node._model is not None  # off the device, kept
        assert h.spin_until(lambda: h.node.count_subscribers('/image') == 0)
        assert transition(Transition.TRANSITION_ACTIVATE) and state() == 'active'
        client = Client(h)
        client.wait_connected(node)
        _, scores = client.decide('grab the purple cube', seed=5)
        assert scores['selected'] == 'grab_purple'  # works again after re-activation
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert transition(Transition.TRANSITION_CLEANUP) and state() == 'unconfigured'
        assert node._model is None and node.selector is None
        assert transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert state() == 'finalized'


def test_debug_image_is_built_only_when_subscribed(ckpt):
    with Harness() as h:
        client = Client(h)
        node = _selector(h, ckpt)
        client.wait_connected(node)
        for seed in range(3):
            client.decide('stop and wait', seed=seed)
        assert node.debug_images_built == 0  # nobody listens: no overlay drawn
        debug = []
        h.node.create_subscription(Image, '/action_selector/debug_image', debug.append, 1)
        assert h.spin_until(lambda: node._pubs['debug_image'].get_subscription_count() == 1)
        stamp, _ = client.decide(seed=7)
        assert h.spin_until(lambda: debug)
        assert node.debug_images_built >= 1
        msg = debug[-1]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)
        assert (msg.height, msg.width, msg.encoding) == (48, 64, 'rgb8')
        assert bytes(msg.data) != frame(7).tobytes()  # text was drawn on it


def test_two_cameras_make_one_decision_from_both_frames(ckpt):
    with Harness() as h:
        client = Client(h, image_topics=('cam_left', 'cam_right'))
        node = _selector(h, ckpt, image_topics=['cam_left', 'cam_right'])
        client.wait_connected(node)
        client.instruction.publish(String(data='stop and wait'))
        h.spin_for(0.1)
        _, scores = client.decide(seed=1)  # only the first camera has sent a frame so far
        assert scores['abstained'] and 'cam_right' in scores['reason']
        client.send(camera=1, array=frame(2))
        h.spin_for(0.2)
        _, scores = client.decide(seed=1)
        assert not scores['abstained'] and scores['cameras'] == 2
        both = ActionSelector.from_pretrained(ckpt, device='cpu').select(
            [frame(1), frame(2)], 'stop and wait')
        only_first = ActionSelector.from_pretrained(ckpt, device='cpu').select(
            frame(1), 'stop and wait')
        assert scores['top_scores'] == pytest.approx(both.top_scores, abs=1e-5)
        assert scores['top_scores'] != pytest.approx(only_first.top_scores, abs=1e-5)


def test_on_instruction_mode_decides_once_per_instruction(ckpt):
    with Harness() as h:
        client = Client(h)
        node = _selector(h, ckpt, mode='on_instruction')
        client.wait_connected(node)
        client.instruction.publish(String(data='stop and wait'))
        h.spin_for(0.1)
        for seed in range(4):
            client.send(seed=seed)
            h.spin_for(0.1)
        assert h.spin_until(lambda: client.actions == ['wait'])
        h.spin_for(0.2)
        assert client.actions == ['wait']
        client.instruction.publish(String(data='stop and wait'))  # same text, new message
        h.spin_for(0.1)
        client.send(seed=9)
        assert h.spin_until(lambda: client.actions == ['wait', 'wait'])
        assert node.stats.snapshot()['frames_ignored'] >= 3


def test_incompatible_qos_is_warned_and_counted(ckpt, capfd):
    with Harness() as h:
        node = _selector(h, ckpt)
        assert h.spin_until(lambda: node.state == 'active', 30.0)
        # A best-effort instruction publisher cannot serve a reliable subscription (a volatile
        # one can: see test_reliability_silence's instruction tests).
        h.node.create_publisher(String, 'instruction', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        assert h.spin_until(lambda: node.stats.snapshot()['incompatible_qos'] >= 1, 5.0)
        time.sleep(0.1)
        assert 'has QoS incompatible with this subscription' in capfd.readouterr().err


def test_compressed_transport_stale_frames_and_dropped_frames(ckpt):
    from sensor_msgs.msg import CompressedImage

    from vla_embedding_ros.ros.image_conversion import numpy_to_compressed

    with Harness() as h:
        client = Client(h)
        pub = h.node.create_publisher(CompressedImage, 'image/compressed', 1)
        node = _selector(h, ckpt, image_transport='compressed', max_image_age_s=0.5,
                         max_rate_hz=2.0)
        assert h.spin_until(lambda: node.state == 'active', 30.0)
        assert h.spin_until(lambda: pub.get_subscription_count() == 1)
        client.instruction.publish(String(data='push the blue ball left'))
        h.spin_for(0.2)

        def send(stamp):
            msg = numpy_to_compressed(frame(1), 'rgb', 'png')
            msg.header.stamp = stamp
            pub.publish(msg)

        old = h.now()
        old.sec -= 5  # five seconds old: skipped, counted as stale, nothing published
        send(old)
        assert h.spin_until(lambda: node.stats.snapshot()['frames_stale'] == 1)
        assert client.scores == []
        for _ in range(6):  # 6 frames in ~0.3 s at max_rate_hz 2: most are overwritten
            send(h.now())
            h.spin_for(0.05)
        assert h.spin_until(lambda: client.actions, 3.0)
        assert client.actions[0] == 'push_blue'  # PNG decoded (BGR) gives the same answer
        h.spin_for(0.6)
        snap = node.stats.snapshot()
        assert snap['frames_received'] == 7
        assert snap['frames_dropped'] >= 3
        assert snap['frames_processed'] + snap['frames_dropped'] + snap['frames_stale'] == 7


def _in_new_thread(function):
    result = []
    thread = threading.Thread(target=lambda: result.append(function()))
    thread.start()
    thread.join()
    return result[0]


def test_fast_path_parameters_warm_up_at_configure_and_report_the_mode(ckpt):
    """cuda_graph on a machine without CUDA: the node still configures (eager, with the reason
    in /diagnostics); latency is counted from the frame's arrival and covers the inference."""
    import torch

    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the fallback is for machines without it')
    threads_before = torch.get_num_threads()
    with Harness() as h:
        client = Client(h)
        node = _selector(h, ckpt, compile='cuda_graph', precision='bf16', torch_threads=1)
        client.wait_connected(node)
        # What a thread started after configure sees (the inference worker is one). The main
        # thread keeps its own OpenMP setting, so asserting on it passed only when an earlier
        # test had set 1 there too.
        assert _in_new_thread(torch.get_num_threads) == 1
        _in_new_thread(lambda: torch.set_num_threads(threads_before))   # leave it as it was
        runner = node.selector.image_encoder
        assert (runner.mode, runner.precision) == ('none', 'fp32')
        # The warm-up decision already filled the cache; the first frame is not a cold start.
        assert node.selector.cache_info()['size'] >= 1
        _, scores = client.decide('pick up the red cube', seed=1)
        assert scores['selected'] == 'pick_red'
        assert 0 < scores['inference_ms'] <= scores['latency_ms']
        assert h.spin_until(lambda: any(
            {kv.key: kv.value for kv in d.status[0].values}.get('compile_fallback', '')
            for d in client.diags), 5.0)
        values = {kv.key: kv.value for kv in client.diags[-1].status[0].values}
        assert values['compile'] == 'none' and values['precision'] == 'fp32'
        assert 'needs a CUDA device' in values['compile_fallback']
