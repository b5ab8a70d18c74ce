"""episode_recorder over real DDS: publish a few messages, stop, read the bag back."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import (  # noqa: E402
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rosbags.highlevel import AnyReader  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from vla_embedding_ros.data.dataset import JSONLDataset  # noqa: E402
from vla_embedding_ros.data.recordings.bag_import import ImportConfig, convert_bags  # noqa: E402
from vla_embedding_ros.data.recordings.bag_record import typestore  # noqa: E402
from vla_embedding_ros.ros.episode_recorder_node import EpisodeRecorder  # noqa: E402

DOMAIN_ID = 74
TOPICS = ['/camera/image_raw', '/instruction', '/action_selector/selected_action']


def spin_until(executor, condition, timeout=8.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def test_recorder_writes_a_bag_that_converts(tmp_path):
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    executor = SingleThreadedExecutor(context=context)
    try:
        source = rclpy.create_node('recorder_test_source', context=context)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        image_pub = source.create_publisher(Image, TOPICS[0], qos_profile_sensor_data)
        instruction_pub = source.create_publisher(String, TOPICS[1], latched)
        action_pub = source.create_publisher(String, TOPICS[2], 10)
        # Published before the recorder exists: only a transient-local subscription gets it.
        instruction_pub.publish(String(data='pick up the red cube'))

        recorder = EpisodeRecorder(context=context, parameter_overrides=[
            Parameter('output', value=str(tmp_path / 'bag')),
            Parameter('topics', value=[TOPICS[0], TOPICS[1] + ':std_msgs/msg/String',
                                       TOPICS[2]]),
            Parameter('discovery_period', value=0.1)])
        executor.add_node(source)
        executor.add_node(recorder)
        assert spin_until(executor, lambda: len(recorder.recorded_topics) == 3
                          and all(p.get_subscription_count() for p in
                                  (image_pub, instruction_pub, action_pub)))
        assert recorder.recorded_topics[TOPICS[0]] == 'sensor_msgs/msg/Image'
        assert spin_until(executor, lambda: recorder.counts.get(TOPICS[1]) == 1)  # latched
        for k in range(3):
            img = Image(height=4, width=6, encoding='rgb8', step=18)
            img.header.stamp = recorder.get_clock().now().to_msg()
            img.data = np.full((4, 6, 3), 40 * k, np.uint8).tobytes()
            image_pub.publish(img)
            spin_until(executor, lambda k=k: recorder.counts.get(TOPICS[0], 0) > k, 2.0)
            action_pub.publish(String(data=f'act{k}'))
            spin_until(executor, lambda k=k: recorder.counts.get(TOPICS[2], 0) > k, 2.0)
        assert recorder.counts == {TOPICS[0]: 3, TOPICS[1]: 1, TOPICS[2]: 3}
        recorder.close()
        recorder.close()  # idempotent, as shutdown may call it again
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)

    with AnyReader([tmp_path / 'bag'], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        instruction = [c for c in reader.connections if c.topic == TOPICS[1]][0]
    assert counts == {TOPICS[0]: 3, TOPICS[1]: 1, TOPICS[2]: 3}
    assert instruction.ext.offered_qos_profiles[0].durability.name == 'TRANSIENT_LOCAL'
    summary = convert_bags([tmp_path / 'bag'], tmp_path / 'ds',
                           ImportConfig(stamp='receive', tolerance=2.0), progress=False)
    assert summary['written'] == 3, summary
    ds = JSONLDataset(tmp_path / 'ds')
    assert [ds[i]['action'] for i in range(3)] == ['act0', 'act1', 'act2']
    assert [int(ds[i]['images'][0, 0, 0, 0]) for i in range(3)] == [0, 40, 80]
