"""tabletop_sim over real DDS, answered by the test: right, wrong, then silent (timeout)."""
import json

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32, String  # noqa: E402

from support.ros import Harness  # noqa: E402
from vla_embedding_ros.data.tabletop import (  # noqa: E402
    TabletopConfig,
    TabletopGenerator,
    apply_action,
)
from vla_embedding_ros.ros.tabletop_sim_node import (  # noqa: E402
    CAMERA_QOS,
    LATCHED_QOS,
    RESULTS_QOS,
    TabletopSimNode,
)


def test_episodes_are_judged_and_reported(capfd):
    # The same seed and split give the same episodes, so the test knows the right answers.
    expected = TabletopGenerator(TabletopConfig(image_size=64), split='val', seed=3)
    samples = list(expected.samples(3))
    wrong = next(n for n in ('pick_r0_c0', 'pick_r3_c3', 'push_left_r0_c0')
                 if not apply_action(samples[1].scene, n)[1])
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
            Parameter('episodes', value=3), Parameter('seed', value=3),
            Parameter('split', value='val'), Parameter('image_size', value=64),
            Parameter('camera_width', value=160), Parameter('camera_height', value=120),
            Parameter('rate_hz', value=20.0), Parameter('episode_timeout_s', value=1.0)]))
        h.spin_for(0.4)
        assert sim.episode == 0 and not images  # waits for a publisher on selected_action
        # ... and says so, naming the topic: the selector's default output, no remap needed.
        assert 'waiting for a publisher on /action_selector/selected_action' in \
            capfd.readouterr().err
        action = n.create_publisher(String, 'action_selector/selected_action', 10)
        assert h.spin_until(lambda: instructions and images)
        assert instructions[0] == samples[0].instruction
        img = images[-1]
        assert (img.width, img.height, img.encoding) == (160, 120, 'rgb8')
        assert len(img.data) == 160 * 120 * 3

        action.publish(String(data=samples[0].action_name))
        assert h.spin_until(lambda: len(results) == 1)
        assert h.spin_until(lambda: instructions[-1] == samples[1].instruction)
        action.publish(String(data=wrong))
        assert h.spin_until(lambda: len(results) == 2)
        assert h.spin_until(lambda: len(results) == 3, 3.0)  # no answer: timeout
        assert h.spin_until(lambda: len(rates) == 3)
        assert [r['success'] for r in results] == [True, False, False]
        assert [r['expected'] for r in results] == [s.action_name for s in samples]
        assert [r['chosen'] for r in results] == [samples[0].action_name, wrong, None]
        assert results[2]['timeout'] and results[2]['latency'] >= 1.0
        assert rates == pytest.approx([1.0, 0.5, 1 / 3])
        assert h.spin_until(lambda: sim.finished, 2.0)  # set just after the last publish


def test_publish_clock_stamps_images_with_sim_time():
    with Harness() as h:
        clocks, images = [], []
        h.node.create_subscription(Clock, '/clock', clocks.append, 10)
        h.node.create_subscription(Image, 'camera/image_raw', images.append, CAMERA_QOS)
        h.start(TabletopSimNode(context=h.context, parameter_overrides=[
            Parameter('publish_clock', value=True), Parameter('wait_for_selector', value=False),
            Parameter('camera_width', value=96), Parameter('camera_height', value=96),
            Parameter('rate_hz', value=20.0)]))
        assert h.spin_until(lambda: len(images) >= 2 and clocks)
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in images]
        assert all(0 < s < 30 for s in stamps)  # seconds since the simulator started
        assert stamps == sorted(stamps)
        assert np.frombuffer(images[-1].data, np.uint8).std() > 0  # a rendered scene
