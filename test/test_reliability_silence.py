"""Nothing the user sends vanishes without a log line saying why, over real DDS.

A camera on another clock (frames stamped near the epoch) used to get no decision and no word:
now the node logs a rate-limited warning naming the age, the node's clock and the fixes, and
/diagnostics turns WARN. The routine skips (frames replaced by newer ones, frames between
instructions, an empty candidates message, no instruction yet) each log a line too, and a
compressed frame declaring a huge size is refused from its header, in the callback.
"""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from std_msgs.msg import Float32MultiArray, String  # noqa: E402

from support.fault_client import RED, Client  # noqa: E402
from support.fault_client import selector_overrides as _overrides  # noqa: E402
from support.images import png_declaring  # noqa: E402
from support.ros import Harness, frame, image_msg, make_text_checkpoint  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import ActionSelectorNode  # noqa: E402
from vla_embedding_ros.ros.image_conversion import numpy_to_compressed  # noqa: E402


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp('silence'))


def _level(value) -> int:
    """A DiagnosticStatus level (rclpy gives bytes, b'\\x01') as an int."""
    return int.from_bytes(value, 'little') if isinstance(value, bytes) else int(value)


class Statuses:
    """Every /diagnostics status of one node: (level, message)."""

    def __init__(self, h: Harness, hardware_id: str):
        self.seen: list[tuple[int, str]] = []
        h.node.create_subscription(DiagnosticArray, '/diagnostics', lambda m: self.seen.extend(
            (_level(s.level), s.message) for s in m.status if s.hardware_id == hardware_id), 10)

    def warned(self, needle: str) -> bool:
        return any(level == _level(DiagnosticStatus.WARN) and needle in message
                   for level, message in self.seen)


def _start(h: Harness, ns: str, ckpt: str, **params) -> tuple[ActionSelectorNode, Client]:
    client = Client(h, ns=f'/{ns}/')
    node = h.start(ActionSelectorNode(context=h.context, namespace=f'/{ns}',
                                      parameter_overrides=_overrides(ckpt, **params)))
    assert h.spin_until(lambda: node.state == 'active', 30.0)
    camera = client.compressed if params.get('image_transport') == 'compressed' else client.image
    assert h.spin_until(lambda: camera.get_subscription_count() > 0)
    return node, client


def _epoch_stamp(seconds: int = 1000) -> Time:
    return Time(sec=seconds, nanosec=0)


def test_frames_from_another_clock_are_skipped_with_a_warning_and_a_warn_status(ckpt, capfd):
    with Harness('silence_stale') as h:
        statuses = Statuses(h, '/stale/action_selector')
        node, client = _start(h, 'stale', ckpt, max_image_age_s=0.5)
        assert h.spin_until(lambda: statuses.seen, 10.0)
        client.say(RED)
        for i in range(8):   # a camera whose clock reads ~1000 s after the epoch
            client.image.publish(image_msg(frame(i), _epoch_stamp(1000 + i)))
            h.spin_for(0.05)
        assert h.spin_until(lambda: node.stats.snapshot()['frames_stale'] >= 3, 10.0)
        assert h.spin_until(lambda: statuses.warned('skipped without a decision'), 5.0), \
            statuses.seen[-3:]
        assert client.scores == []
        assert statuses.warned('max_image_age_s 0.5')
        err = capfd.readouterr().err
        warnings = [line for line in err.splitlines() if 'skipping stale frames' in line]
        assert len(warnings) == 1, warnings          # rate-limited: one line for the burst
        assert 'system time (use_sim_time false)' in warnings[0]
        assert 'max_image_age_s: 0' in warnings[0] and 'use_sim_time' in warnings[0]
        # Once the frames are fresh again the node decides as usual.
        assert client.decide(RED)['selected'] == 'pick_red'


def test_on_instruction_with_a_camera_clock_behind_warns_instead_of_waiting_silently(ckpt,
                                                                                   capfd):
    with Harness('silence_clock') as h:
        statuses = Statuses(h, '/behind/action_selector')
        node, client = _start(h, 'behind', ckpt, mode='on_instruction', max_image_age_s=0.0)
        assert h.spin_until(lambda: statuses.seen, 10.0)
        client.say(RED)
        start = time.monotonic()
        while time.monotonic() - start < 2.0:   # frames keep coming, all stamped long ago
            client.image.publish(image_msg(frame(0), _epoch_stamp()))
            h.spin_for(0.1)
        assert h.spin_until(lambda: statuses.warned('before the instruction arrived'), 5.0)
        assert client.scores == []
        err = capfd.readouterr().err
        assert 'every frame is stamped before the instruction arrived' in err
        assert 'mode: continuous' in err
        assert node.stats.snapshot()['frames_ignored'] >= 10


def test_routine_skips_each_leave_a_log_line(ckpt, capfd):
    with Harness('silence_routine') as h:
        node, client = _start(h, 'routine', ckpt, max_rate_hz=2.0)
        stamp = h.now()
        client.image.publish(image_msg(frame(0), stamp))      # no instruction yet
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert h.spin_until(lambda: any(s['stamp'] == key for s in client.scores))
        client.say(RED)
        for i in range(6):   # at max_rate_hz 2 most of these are replaced in the slot
            client.image.publish(image_msg(frame(i), h.now()))
            h.spin_for(0.03)
        assert h.spin_until(lambda: node.stats.snapshot()['frames_dropped'] >= 1, 5.0)
        client.candidates.publish(Float32MultiArray())      # "back to the library"
        h.spin_for(0.3)
        err = capfd.readouterr().err
        assert 'abstaining: no instruction yet (publish one on /routine/instruction)' in err
        assert 'frames replaced by newer ones' in err
        assert 'scoring the action library again' in err


def test_on_instruction_frames_between_instructions_are_logged(ckpt, capfd):
    with Harness('silence_between') as h:
        node, client = _start(h, 'between', ckpt, mode='on_instruction')
        client.say(RED)
        h.spin_for(0.05)
        for i in range(3):   # the first is decided, the others wait for a new instruction
            client.image.publish(image_msg(frame(i), h.now()))
            h.spin_for(0.3)
        assert h.spin_until(lambda: node.stats.snapshot()['frames_ignored'] >= 1, 5.0)
        assert 'frames ignored until a new instruction arrives' in capfd.readouterr().err


def test_a_compressed_frame_declaring_a_huge_size_is_refused_from_its_header(ckpt):
    """The PNG declares 2000x2000 but carries one row: before the header check the worker
    tried to decode it (and failed as image_decode); now the callback refuses it unread."""
    with Harness('silence_png') as h:
        node, client = _start(h, 'png', ckpt, image_transport='compressed',
                              max_image_pixels=100_000)
        client.say(RED)
        bomb = CompressedImage(format='png', data=png_declaring(2000, 2000))
        for _ in range(5):
            client.compressed.publish(bomb)
            if h.spin_until(lambda: node.stats.snapshot()['rejected'], 1.0):
                break
        assert node.stats.snapshot()['rejected'] == {'image_oversized': 1}
        good = numpy_to_compressed(frame(2), 'rgb', 'png')
        good.header.stamp = h.now()
        client.compressed.publish(good)
        key = {'sec': good.header.stamp.sec, 'nanosec': good.header.stamp.nanosec}
        assert h.spin_until(lambda: any(s['stamp'] == key for s in client.scores), 10.0)
        assert np.isfinite([s['latency_ms'] for s in client.scores]).all()


def test_a_simulator_that_is_done_logs_the_actions_it_ignores(capfd):
    from rclpy.parameter import Parameter

    from vla_embedding_ros.ros.tabletop_sim_node import TabletopSimNode

    with Harness('silence_sim') as h:
        pub = h.node.create_publisher(String, '/idle/action_selector/selected_action', 10)
        sim = h.start(TabletopSimNode(context=h.context, namespace='/idle', parameter_overrides=[
            Parameter('episodes', value=1), Parameter('episode_timeout_s', value=0.2),
            Parameter('rate_hz', value=20.0), Parameter('camera_width', value=64),
            Parameter('camera_height', value=48)]))
        assert h.spin_until(lambda: sim.finished, 10.0)   # its one episode timed out
        assert h.spin_until(lambda: pub.get_subscription_count() > 0)
        pub.publish(String(data='pick_red'))
        assert h.spin_until(lambda: sim.ignored_actions == 1, 5.0)
        h.spin_for(0.1)
        assert "ignoring action 'pick_red': all episodes are done" in capfd.readouterr().err


def test_a_burst_of_bad_frames_does_not_displace_a_good_one_waiting_in_dds(ckpt):
    """A good frame then four bad ones arrive before the node's executor runs: with depth 1
    the subscription kept only the last bad one and the good frame vanished uncounted."""
    with Harness('silence_burst') as h:
        client = Client(h, ns='/burst/')
        node = ActionSelectorNode(context=h.context, namespace='/burst',
                                  parameter_overrides=_overrides(ckpt, autostart=False))
        node.trigger_configure()
        node.trigger_activate()      # topics open; nothing spins the node yet
        assert node.state == 'active'
        assert h.spin_until(lambda: client.image.get_subscription_count() > 0
                            and client.instruction.get_subscription_count() > 0)
        client.say(RED)
        stamp = h.now()
        client.image.publish(image_msg(frame(0), stamp))
        bad = image_msg(frame(1), h.now())
        bad.encoding = 'yuv422'
        for _ in range(4):
            client.image.publish(bad)
        h.spin_for(0.2)
        h.start(node)                # now the node takes what DDS kept for it
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert h.spin_until(lambda: any(s['stamp'] == key for s in client.scores), 10.0), \
            node.stats.snapshot()
        # The good frame's score can come out before the executor takes the bad frames
        # behind it (a tiny model decides in 1 ms), so wait for them to be counted.
        def bad_ones():
            return node.stats.snapshot()['rejected'].get('image_encoding', 0)

        assert h.spin_until(lambda: bad_ones() >= 1, 5.0), node.stats.snapshot()
        h.spin_for(0.3)
        # Best effort: some of the bad ones may be lost on the way, never counted twice.
        assert 1 <= bad_ones() <= 4


def test_an_instruction_from_a_volatile_publisher_arrives_and_a_latched_one_counts_once(ckpt):
    """`ros2 topic pub --once /instruction ...` publishes reliable + volatile: the node used to
    refuse it (transient-local subscription). A latched publisher still reaches a node that
    starts later, and its message, delivered through both subscriptions, is decided once."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    with Harness('silence_qos') as h:
        latched = h.node.create_publisher(String, '/qos/instruction', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        latched.publish(String(data='pick up the blue ball'))   # before the node exists
        node, client = _start(h, 'qos', ckpt, mode='on_instruction')
        assert h.spin_until(lambda: node._instruction == 'pick up the blue ball', 10.0)
        h.spin_for(0.5)
        assert node._instruction_seq == 1          # one message, one instruction
        volatile = h.node.create_publisher(String, '/qos/instruction', QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.VOLATILE))
        assert h.spin_until(lambda: volatile.get_subscription_count() >= 1)
        volatile.publish(String(data=RED))
        assert h.spin_until(lambda: node._instruction == RED, 5.0)
        stamp = h.now()
        client.image.publish(image_msg(frame(0), stamp))
        key = {'sec': stamp.sec, 'nanosec': stamp.nanosec}
        assert h.spin_until(lambda: any(s['stamp'] == key for s in client.scores), 10.0)
        assert [s['selected'] for s in client.scores] == ['pick_red']
        assert node._instruction_seq == 2
        assert node.stats.snapshot()['incompatible_qos'] == 0
