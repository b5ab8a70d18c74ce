"""episode_recorder over real DDS: the topics the user names are subscribed when the recorder
starts (not after polling discovery found their publishers), every publisher's messages are
written once whatever its QoS, and what was not recorded is said in the log."""
import os
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

from vla_embedding_ros.data.recordings.bag_record import typestore  # noqa: E402
from vla_embedding_ros.ros.episode_recorder_node import EpisodeRecorder  # noqa: E402

IMAGE, INSTRUCTION, ACTION, SILENT = ('/camera/image_raw', '/instruction',
                                      '/action_selector/selected_action', '/never_published')
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
EPISODES = 20


def spin_until(executor, condition, timeout=10.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.02)
    return condition()


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
    executor = SingleThreadedExecutor(context=context)
    try:
        yield context, executor
    finally:
        executor.shutdown()
        rclpy.try_shutdown(context=context)


def test_named_topics_are_recorded_from_the_start(ros, tmp_path, capfd):
    """Publishers that appear after the recorder publish the moment they are matched; with
    discovery polling slowed to a minute, every message still lands in the bag, once."""
    context, executor = ros
    source = rclpy.create_node('recorder_source', context=context)
    executor.add_node(source)
    # Published before the recorder exists: the latched one must still be recorded, the
    # volatile ones cannot be, and the log must say so.
    early_instruction = source.create_publisher(String, INSTRUCTION, LATCHED)
    early_instruction.publish(String(data='pick up the red cube'))
    early_action = source.create_publisher(String, ACTION, 10)
    for k in range(2):
        early_action.publish(String(data=f'before{k}'))

    recorder = EpisodeRecorder(context=context, parameter_overrides=[
        Parameter('output', value=str(tmp_path / 'bag')),
        Parameter('topics', value=[f'{IMAGE}:sensor_msgs/msg/Image',
                                   f'{INSTRUCTION}:std_msgs/msg/String',
                                   f'{ACTION}:std_msgs/msg/String',
                                   f'{SILENT}:std_msgs/msg/String']),
        Parameter('discovery_period', value=60.0)])
    executor.add_node(recorder)
    # Subscribed at once: the graph shows the recorder on every named topic, before any
    # publisher of the camera exists.
    assert recorder.recorded_topics == {IMAGE: 'sensor_msgs/msg/Image',
                                        INSTRUCTION: 'std_msgs/msg/String',
                                        ACTION: 'std_msgs/msg/String',
                                        SILENT: 'std_msgs/msg/String'}
    assert spin_until(executor, lambda: all(source.count_subscribers(t) >= 3
                                            for t in (IMAGE, INSTRUCTION, ACTION, SILENT)))

    camera = source.create_publisher(Image, IMAGE, qos_profile_sensor_data)
    action = source.create_publisher(String, ACTION, 10)
    # A robot starts acting as soon as its topics connect: no wait for the recorder's polls.
    assert spin_until(executor, lambda: camera.get_subscription_count() >= 1
                      and action.get_subscription_count() >= 2)
    for k in range(EPISODES):
        img = Image(height=4, width=6, encoding='rgb8', step=18)
        img.header.stamp = source.get_clock().now().to_msg()
        img.data = np.full((4, 6, 3), k, np.uint8).tobytes()
        camera.publish(img)
        action.publish(String(data=f'act{k}'))
        executor.spin_once(timeout_sec=0.01)
    assert spin_until(executor, lambda: recorder.counts.get(ACTION, 0) >= EPISODES
                      and recorder.counts.get(IMAGE, 0) >= EPISODES
                      and recorder.counts.get(INSTRUCTION, 0) >= 1)
    spin_until(executor, lambda: False, 0.3)   # late duplicates would arrive now
    recorder.close()
    recorder.destroy_node()
    source.destroy_node()

    # Each message once, though reliable ones reached two subscriptions and latched three.
    assert recorder.counts == {IMAGE: EPISODES, INSTRUCTION: 1, ACTION: EPISODES}
    with AnyReader([tmp_path / 'bag'], default_typestore=typestore()) as reader:
        instruction = [c for c in reader.connections if c.topic == INSTRUCTION][0]
        actions = [reader.deserialize(raw, c.msgtype).data
                   for c, _, raw in reader.messages() if c.topic == ACTION]
    assert actions == [f'act{k}' for k in range(EPISODES)]
    assert instruction.ext.offered_qos_profiles[0].durability.name == 'TRANSIENT_LOCAL'
    log = capfd.readouterr().err
    assert f'{SILENT}: nothing recorded' in log
    # The early volatile publisher's two messages were never seen: its own later messages
    # would have said so; here it published nothing after the recorder started. The latched
    # instruction came through its history, number 1: no warning for it.
    assert f'{INSTRUCTION}: the first message recorded' not in log


def test_a_publisher_that_started_before_the_recorder_is_named(ros, tmp_path, capfd):
    context, executor = ros
    source = rclpy.create_node('recorder_early_source', context=context)
    executor.add_node(source)
    action = source.create_publisher(String, ACTION, 10)
    for k in range(3):
        action.publish(String(data=f'before{k}'))
    recorder = EpisodeRecorder(context=context, parameter_overrides=[
        Parameter('output', value=str(tmp_path / 'bag')),
        Parameter('topics', value=[f'{ACTION}:std_msgs/msg/String'])])
    executor.add_node(recorder)
    assert spin_until(executor, lambda: action.get_subscription_count() >= 2)
    action.publish(String(data='after'))
    assert spin_until(executor, lambda: recorder.counts.get(ACTION) == 1)
    recorder.close()
    recorder.destroy_node()
    source.destroy_node()
    log = capfd.readouterr().err
    assert (f'{ACTION}: the first message recorded from a publisher is its number 4; 3 '
            'earlier one(s) were published before the recorder received from it') in log
