"""episode_recorder: record topics to a rosbag2 MCAP bag without ``ros2 bag``.

For recording the live simulator + selector loop (or a robot) where the ``ros2 bag`` CLI is not
installed, e.g. ROS 2 from PyPI. Messages arrive serialised (``raw=True`` subscriptions give
the CDR bytes that ``rclpy.serialization.serialize_message`` would produce, without a
deserialise/serialise round trip) and are written unchanged with ``rosbags``, under a
connection of the matching message type; the bag receive time is the node clock (so
``use_sim_time`` is honoured). The bag is closed, and readable, when the node shuts down
(Ctrl-C included). Convert it with ``vla-bag-to-dataset``.

Every topic the user names with its type (``topic:pkg/msg/Type``; the default topics have
theirs) is subscribed when the recorder starts, before any publisher is discovered: waiting
for discovery lost the first seconds of camera and instruction topics (3 of 20 demo episodes
had no frames). Each such topic gets three subscriptions, so every publisher matches at once
and gets the best delivery it offers: best effort + volatile (matches any publisher), reliable
+ volatile (reliable publishers lose nothing on the way), reliable + transient local (what a
latched publisher, e.g. the instruction, sent before the recorder started). A message arriving
through several is written once (publisher gid + sequence number). A topic named without a
type is subscribed once the ROS graph shows its type, and says so in the log.

Nothing goes unrecorded silently: the log names every topic when its recording starts, a
publisher whose first recorded message is not its first (published before the recorder
listened), and on close the messages missing between a publisher's first and last recorded
ones (best-effort losses) and every topic that recorded nothing.

Parameters:
    output (str): bag directory to create; default ``recordings/episodes_<date>_<time>``.
    topics (str[]): topics to record (default: camera, instruction, selected action).
    storage (str): ``mcap`` (default) or ``sqlite3``.
    discovery_period (float): seconds between looks at the ROS graph for the types of topics
        named without one.

Example::

    ros2 run vla_embedding_ros episode_recorder --ros-args -p output:=recordings/run1 \\
        -p "topics:=['/camera/image_raw', '/instruction', '/action_selector/selected_action']"
"""
from __future__ import annotations

import functools
import importlib
import sys
import threading
import time
from collections import deque

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..data.recordings.bag_record import ACTION_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC, BagWriter
from .node_program import print_help, program_name, wants_help

DEFAULT_TOPICS = [f'{IMAGE_TOPIC}:sensor_msgs/msg/Image',
                  f'{INSTRUCTION_TOPIC}:std_msgs/msg/String',
                  f'{ACTION_TOPIC}:std_msgs/msg/String']
# Deep queues: the recorder writes every message, and a burst must not displace any in DDS.
QUEUE_DEPTH = 100
SUBSCRIPTION_QOS = {
    'any': QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
                      reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE),
    'reliable': QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE),
    'latched': QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=QUEUE_DEPTH,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL),
}
# How many recent messages per topic are remembered to drop their copies from the other
# subscriptions (copies arrive within milliseconds of each other).
RECENT_MESSAGES = 4096


def message_class(msgtype: str):
    """``'sensor_msgs/msg/Image'`` -> the rclpy message class."""
    package, _, name = msgtype.partition('/msg/')
    if not package or not name:
        raise ValueError(f'message type must look like pkg/msg/Type, got {msgtype!r}')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def publication(info: dict, data: bytes) -> tuple[object, int | None]:
    """(the publisher's identity, the message's sequence number) from rclpy's message info.

    The same message through two subscriptions has the same pair. Without a gid (an RMW that
    does not give one) the source timestamp and the bytes stand in for the publisher.
    """
    gid = info.get('publisher_gid')
    sequence = info.get('publication_sequence_number')
    if gid and sequence is not None:
        return bytes(gid['data']) if isinstance(gid, dict) else bytes(gid), sequence
    return (info.get('source_timestamp'), data), None


class _TopicLog:
    """One topic's recent messages (to write each once) and each publisher's sequence numbers
    (to say what was not recorded)."""

    def __init__(self):
        self._recent: deque = deque(maxlen=RECENT_MESSAGES)
        self._recent_set: set = set()
        self.publishers: dict[object, list[int]] = {}   # gid -> [first, last, count]
        self.latched = False

    def is_new(self, key) -> bool:
        if key in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(key)
        self._recent_set.add(key)
        return True

    def count(self, publisher, sequence: int) -> bool:
        """Record a sequence number; True for the publisher's first recorded message."""
        known = self.publishers.get(publisher)
        if known is None:
            self.publishers[publisher] = [sequence, sequence, 1]
            return True
        known[0], known[1], known[2] = min(known[0], sequence), max(known[1], sequence), \
            known[2] + 1
        return False

    def missing(self) -> int:
        """Messages between each publisher's first and last recorded ones that never came."""
        return sum(last - first + 1 - n for first, last, n in self.publishers.values())


PARAMETERS = {   # name -> (default, descriptor): declared by the node, printed by --help
    'output': ('', ParameterDescriptor(
        description='bag directory to create (default recordings/episodes_<date>_<time>)',
        read_only=True)),
    'topics': (DEFAULT_TOPICS, ParameterDescriptor(
        description="topics to record; 'topic' or 'topic:pkg/msg/Type' (with the type, "
                    'recording starts at once)', read_only=True)),
    'storage': ('mcap', ParameterDescriptor(description='mcap or sqlite3', read_only=True)),
    'discovery_period': (0.5, ParameterDescriptor(
        description='seconds between looks at the ROS graph for the types of topics named '
                    'without one', read_only=True)),
}
HELP = ('Records topics to a rosbag2 MCAP bag without ros2 bag (e.g. the simulator + selector '
        'loop, for vla-bag-to-dataset); the bag is closed, and readable, on Ctrl-C.')
EXAMPLE = ('vla-episode-recorder --ros-args -p output:=recordings/run1 \\\n'
           '    -p "topics:=[\'/camera/image_raw:sensor_msgs/msg/Image\', \'/instruction\']"')


class EpisodeRecorder(Node):
    """Subscribe to the configured topics and write every message to an MCAP bag."""

    def __init__(self, **kwargs):
        super().__init__('episode_recorder', **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        output = self.get_parameter('output').value or \
            time.strftime('recordings/episodes_%Y%m%d_%H%M%S')
        named: dict[str, str | None] = {}
        for entry in self.get_parameter('topics').value:
            topic, _, msgtype = entry.partition(':')
            named[topic] = msgtype or None
        for msgtype in filter(None, named.values()):
            message_class(msgtype)   # a typo in a type fails here, before the bag exists
        self._lock = threading.Lock()
        self._bag = BagWriter(output, storage=self.get_parameter('storage').value)
        self._recorder_subs: list = []
        self._logs: dict[str, _TopicLog] = {}
        self.recorded_topics: dict[str, str] = {}
        self._untyped = [t for t, m in named.items() if m is None]
        self.get_logger().info(f'recording to {self._bag.path}')
        for topic, msgtype in named.items():
            if msgtype is not None:
                self._record(topic, msgtype)
        self._timer = None
        if self._untyped:
            self.get_logger().warning(
                f'no message type given for {self._untyped}: each is recorded from when its '
                'type shows in the ROS graph, and messages before that are lost; name them '
                "'topic:pkg/msg/Type' to record from the start")
            self._timer = self.create_timer(self.get_parameter('discovery_period').value,
                                            self._discover)

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic so far."""
        return dict(self._bag.counts)

    def _record(self, topic: str, msgtype: str) -> None:
        """Subscribe to ``topic`` three ways (see the module docstring)."""
        self._logs[topic] = _TopicLog()
        # A volatile publisher refuses the latched subscription and a best-effort one both
        # reliable ones, by design: those mismatches are expected, not worth a warning.
        quiet = SubscriptionEventCallbacks(incompatible_qos=lambda event: None)
        for via, qos in SUBSCRIPTION_QOS.items():
            callback = functools.partial(self._on_message, topic, msgtype, via)
            self._recorder_subs.append(self.create_subscription(
                message_class(msgtype), topic, callback, qos, raw=True,
                event_callbacks=None if via == 'any' else quiet))
        self.recorded_topics[topic] = msgtype
        self.get_logger().info(f'recording {topic} ({msgtype}) from now')

    def _discover(self) -> None:
        graph = dict(self.get_topic_names_and_types())
        for topic in list(self._untyped):
            types = graph.get(topic)
            if types:
                self._untyped.remove(topic)
                self._record(topic, types[0])
        if not self._untyped:
            self._timer.cancel()

    def _on_message(self, topic: str, msgtype: str, via: str, data: bytes, info: dict) -> None:
        publisher, sequence = publication(info, bytes(data))
        with self._lock:
            log = self._logs[topic]
            if self._bag.closed or not log.is_new((publisher, sequence)):
                return
            if topic not in self._bag.counts:   # the bag's connection is made now, once
                log.latched = via == 'latched' or self._all_latched(topic)
            self._bag.write_raw(topic, msgtype, bytes(data),
                                self.get_clock().now().nanoseconds, log.latched)
            first = sequence is not None and log.count(publisher, sequence)
        if first and sequence > 1:
            kept = ' (a latched publisher keeps only its last ones)' if via == 'latched' else ''
            self.get_logger().warning(
                f'{topic}: the first message recorded from a publisher is its number '
                f'{sequence}; {sequence - 1} earlier one(s) were published before the '
                f'recorder received from it{kept}')

    def _all_latched(self, topic: str) -> bool:
        """Whether every publisher of ``topic`` is latched (the bag then replays it latched)."""
        publishers = self.get_publishers_info_by_topic(topic)
        return bool(publishers) and all(
            p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)

    def close(self) -> None:
        """Stop recording and close the bag (idempotent)."""
        with self._lock:
            if self._bag.closed:
                return
            for sub in self._recorder_subs:
                self.destroy_subscription(sub)
            self._recorder_subs.clear()
            self._bag.close()
        lines = [f'closed {self._bag.path}: {self._bag.counts}']
        for topic, log in self._logs.items():
            if not self._bag.counts.get(topic):
                lines.append(f'{topic}: nothing recorded (no publisher sent anything while '
                             'the recorder listened)')
            elif log.missing():
                lines.append(f'{topic}: {log.missing()} message(s) between recorded ones never '
                             'arrived (a best-effort publisher, or a full queue)')
        lines += [f'{topic}: not recorded, its type never showed in the ROS graph'
                  for topic in self._untyped]
        if not self.context.ok():   # after Ctrl-C the context is gone and /rosout with it
            for line in lines:
                print(f'[episode_recorder] {line}', file=sys.stderr)
            return
        self.get_logger().info(lines[0])
        for line in lines[1:]:
            self.get_logger().warning(line)


def main(args=None) -> int:
    """Run the recorder until shutdown; the bag is closed on the way out. Exit status 2, with
    one line saying why, when the bag cannot be created (the folder exists, a bad storage).
    ``--help`` prints the parameters."""
    if wants_help(args):
        return print_help(program_name('vla-episode-recorder'), HELP, PARAMETERS, EXAMPLE)
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
