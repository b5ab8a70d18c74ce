"""vla-instruct over real DDS, run as the user runs it (its own process): the instruction
reaches a subscriber with the action selector's two instruction QoS, and with --keep a
subscriber that joins after it was published."""
import os
import signal
import subprocess
import sys
import time

import pytest

rclpy = pytest.importorskip('rclpy')

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

TEXT = 'pick up the red cube'
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
VOLATILE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def instruct(*args):
    return subprocess.Popen([sys.executable, '-m', 'vla_embedding_ros.ros.instruct', *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def spin_until(executor, condition, timeout=15.0):
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    return condition()


@pytest.fixture
def listener():
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(os.environ['ROS_DOMAIN_ID']))
    executor = SingleThreadedExecutor(context=context)
    node = rclpy.create_node('instruct_listener', context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def _subscribe(node, qos, topic='/instruction'):
    got = []
    node.create_subscription(String, topic, lambda msg: got.append(msg.data), qos)
    return got


def test_the_instruction_reaches_a_running_node(listener):
    node, executor = listener
    latched, volatile = _subscribe(node, LATCHED), _subscribe(node, VOLATILE)
    process = instruct(TEXT, '--wait', '20')
    assert spin_until(executor, lambda: process.poll() is not None and latched and volatile)
    out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert latched == [TEXT] and volatile == [TEXT]
    assert f"instruction '{TEXT}' delivered on /instruction to 2 subscriber(s)" in out


def test_keep_reaches_a_node_that_starts_later(listener):
    node, executor = listener
    process = instruct(TEXT, '--keep', '--topic', '/robot1/instruction')
    try:
        assert 'published on /robot1/instruction (latched)' in process.stdout.readline()
        late = _subscribe(node, LATCHED, '/robot1/instruction')   # joins after the publish
        assert spin_until(executor, lambda: late == [TEXT])
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err


def test_no_subscriber_is_an_error_that_says_so(listener):
    process = instruct(TEXT, '--topic', '/nobody_listens', '--wait', '0.5')
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1
    assert 'no subscriber on /nobody_listens within 0.5 s' in err
