"""episode_recorder: record topics to a rosbag2 MCAP bag without ``ros2 bag``.

For recording the live simulator + selector loop (or a robot) where the ``ros2 bag`` CLI is not
installed, e.g. ROS 2 from PyPI. Messages arrive serialised (``raw=True`` subscriptions give
the CDR bytes that ``rclpy.serialization.serialize_message`` would produce, without a
deserialise/serialise round trip) and are written unchanged with ``rosbags``, under a
connection of the matching message type; the bag receive time is the node clock (so
``use_sim_time`` is honoured). The bag is closed, and readable, when the node shuts down
(Ctrl-C included). Convert it with ``vla-bag-to-dataset``.

Each topic subscribes once it has a publisher, with QoS adapted to the publishers as
``ros2 bag record`` does: reliable only if every publisher is, transient local (latched, e.g.
the instruction) only if every publisher is. A ``topic:pkg/msg/Type`` entry fixes the type;
otherwise it is taken from the ROS graph.

Parameters:
    output (str): bag directory to create; default ``recordings/episodes_<date>_<time>``.
    topics (str[]): topics to record (default: camera, instruction, selected action).
    storage (str): ``mcap`` (default) or ``sqlite3``.
    discovery_period (float): seconds between looks for publishers of topics not yet recorded.

Example::

    ros2 run vla_embedding_ros episode_recorder --ros-args -p output:=recordings/run1 \\
        -p "topics:=['/camera/image_raw', '/instruction', '/action_selector/selected_action']"
"""
from __future__ import annotations

import importlib
import sys
import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..data.recordings.bag_record import ACTION_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC, BagWriter

DEFAULT_TOPICS = [f'{IMAGE_TOPIC}:sensor_msgs/msg/Image',
                  f'{INSTRUCTION_TOPIC}:std_msgs/msg/String',
                  f'{ACTION_TOPIC}:std_msgs/msg/String']


def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the rclpy message class."""
    package, _, name = msgtype.partition('/msg/')
    if not package or not name:
        raise ValueError(f'message type must look like pkg/msg/Type, got {msgtype!r}')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def adapted_qos(publishers) -> QoSProfile:
    """A subscription QoS that matches every publisher of a topic (as ``ros2 bag record``)."""
    profiles = [p.qos_profile for p in publishers]
    reliable = bool(profiles) and all(
        q.reliability == ReliabilityPolicy.RELIABLE for q in profiles)
    latched = bool(profiles) and all(
        q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in profiles)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=100,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class EpisodeRecorder(Node):
    """Subscribe to the configured topics and write every message to an MCAP bag."""

    def __init__(self, **kwargs):
        super().__init__('episode_recorder', **kwargs)
        self.declare_parameter('output', '', ParameterDescriptor(
            description='bag directory to create (default recordings/episodes_<date>_<time>)',
            read_only=True))
        self.declare_parameter('topics', DEFAULT_TOPICS, ParameterDescriptor(
            description="topics to record; 'topic' or 'topic:pkg/msg/Type'", read_only=True))
        self.declare_parameter('storage', 'mcap', ParameterDescriptor(
            description='mcap or sqlite3', read_only=True))
        self.declare_parameter('discovery_period', 0.5, ParameterDescriptor(
            description='seconds between looks for publishers of topics not yet recorded',
            read_only=True))
        output = self.get_parameter('output').value or \
            time.strftime('recordings/episodes_%Y%m%d_%H%M%S')
        self._pending: dict[str, str | None] = {}
        for entry in self.get_parameter('topics').value:
            topic, _, msgtype = entry.partition(':')
            self._pending[topic] = msgtype or None
        self._lock = threading.Lock()
        self._bag = BagWriter(output, storage=self.get_parameter('storage').value)
        self._recorder_subs: dict[str, object] = {}
        self.recorded_topics: dict[str, str] = {}
        self._timer = None
        self._discover()
        self._timer = self.create_timer(self.get_parameter('discovery_period').value,
                                        self._discover)
        waiting = f'; waiting for publishers on {sorted(self._pending)}' if self._pending else ''
        self.get_logger().info(f'recording to {self._bag.path}{waiting}')

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic so far."""
        return dict(self._bag.counts)

    def _discover(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        for topic, msgtype in list(self._pending.items()):
            publishers = self.get_publishers_info_by_topic(topic)
            if not publishers:
                continue
            msgtype = msgtype or (graph.get(topic) or [None])[0]
            if msgtype is None:
                continue
            qos = adapted_qos(publishers)
            latched = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            self._recorder_subs[topic] = self.create_subscription(
                message_class(msgtype), topic,
                lambda data, t=topic, m=msgtype, lt=latched: self._write(t, m, data, lt),
                qos, raw=True)
            self.recorded_topics[topic] = msgtype
            del self._pending[topic]
            self.get_logger().info(f'recording {topic} ({msgtype}, '
                                   f'{qos.reliability.name.lower()}, '
                                   f'{qos.durability.name.lower()})')
        if not self._pending and self._timer is not None:
            self._timer.cancel()

    def _write(self, topic: str, msgtype: str, data: bytes, latched: bool) -> None:
        with self._lock:
            if not self._bag.closed:
                self._bag.write_raw(topic, msgtype, bytes(data),
                                    self.get_clock().now().nanoseconds, latched)

    def close(self) -> None:
        """Stop recording and close the bag (idempotent)."""
        with self._lock:
            if self._bag.closed:
                return
            for sub in self._recorder_subs.values():
                self.destroy_subscription(sub)
            self._recorder_subs.clear()
            self._bag.close()
        message = f'closed {self._bag.path}: {self._bag.counts}'
        if self.context.ok():
            self.get_logger().info(message)
        else:  # after Ctrl-C the context is gone and /rosout with it
            print(f'[episode_recorder] {message}', file=sys.stderr)


def main(args=None) -> int:
    """Run the recorder until shutdown; the bag is closed on the way out. Exit status 2, with
    one line saying why, when the bag cannot be created (the folder exists, a bad storage)."""
    rclpy.init(args=args)
    node = None
    try:
        node = EpisodeRecorder()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (FileExistsError, ValueError) as err:   # never overwrite a recording
        print(f'episode_recorder: {err}; choose another output:=...', file=sys.stderr)
        return 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
