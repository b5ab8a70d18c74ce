"""Write rosbag2 MCAP recordings without ROS, and record tabletop episodes as a robot would.

``BagWriter`` wraps the pure-Python ``rosbags`` writer (rosbag2 format version 9, MCAP storage,
message definitions from the newest ROS 2 type store in ``rosbags``) with helpers for the
messages this package reads: ``sensor_msgs/Image``, ``sensor_msgs/CompressedImage``,
``std_msgs/String``, ``std_msgs/Float32MultiArray`` and ``geometry_msgs/Twist``. Times are
seconds (float) or integer nanoseconds; every message has a bag *receive* time, and messages with
a header also get a header *stamp* (the receive time defaults to the stamp).

``record_tabletop_episodes`` runs the procedural tabletop generator offline (no DDS) and writes
what a robot recording of a teleoperated demonstration on the simulator's topics looks like::

    /instruction                       std_msgs/String, latched, once at the episode start
    /camera/image_raw                  sensor_msgs/Image rgb8 frames at ``rate_hz``, header stamps
    /action_selector/selected_action   std_msgs/String, the expert action name after the frames

The result converts with ``vla-bag-to-dataset`` like any robot bag.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .bag_images import encode_compressed, encode_raw

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
STRING = 'std_msgs/msg/String'
FLOAT32_ARRAY = 'std_msgs/msg/Float32MultiArray'
TWIST = 'geometry_msgs/msg/Twist'
TWIST_STAMPED = 'geometry_msgs/msg/TwistStamped'

IMAGE_TOPIC = '/camera/image_raw'
INSTRUCTION_TOPIC = '/instruction'
ACTION_TOPIC = '/action_selector/selected_action'


@functools.cache
def typestore():
    """The newest ROS 2 type store shipped with ``rosbags`` (Kilted or later).

    Standard message definitions (and their RIHS01 hashes) are the same from Jazzy on, so a bag
    written with it reads back in any of those distributions.
    """
    from rosbags.typesys import Stores, get_typestore

    ros2 = [s for s in Stores if s.name.startswith('ROS2_')]
    return get_typestore(ros2[-1])  # Stores lists distributions oldest first


def to_ns(t: float | int) -> int:
    """Seconds (float) or nanoseconds (int) -> integer nanoseconds."""
    return t if isinstance(t, (int, np.integer)) else int(round(float(t) * 1e9))


def latched_qos():
    """QoS of a latched topic (reliable, transient local, depth 1), for ``ros2 bag play``."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class BagWriter:
    """A rosbag2 bag being written (a directory holding ``metadata.yaml`` and the data file).

    Args:
        path: bag directory to create; it must not exist.
        storage: ``'mcap'`` (default, what ``ros2 bag record -s mcap`` writes) or ``'sqlite3'``.

    Use as a context manager, or call ``close()``: the metadata is written on close, and a bag
    that is not closed cannot be read.
    """

    def __init__(self, path: str | os.PathLike, storage: str = 'mcap'):
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f'{self.path} exists; a bag is written to a new directory')
        self.store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, tuple[str, object]] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    # -- connections and raw writing ------------------------------------------------------
    def connection(self, topic: str, msgtype: str, latched: bool = False):
        """The connection of ``topic`` (created on first use with ``msgtype``)."""
        known = self._connections.get(topic)
        if known is not None:
            if known[0] != msgtype:
                raise ValueError(f'topic {topic} was opened as {known[0]}, not {msgtype}')
            return known[1]
        if msgtype not in self.store.fielddefs:
            raise ValueError(f'unknown message type {msgtype!r} (not in the rosbags type store)')
        conn = self._writer.add_connection(
            topic, msgtype, typestore=self.store,
            offered_qos_profiles=[latched_qos()] if latched else ())
        self._connections[topic] = (msgtype, conn)
        self.counts[topic] = 0
        return conn

    def write_raw(self, topic: str, msgtype: str, data: bytes, receive: float | int,
                  latched: bool = False) -> None:
        """Write already CDR-serialised bytes (e.g. from rclpy) received at ``receive``."""
        if self.closed:
            raise RuntimeError(f'bag {self.path} is closed')
        self._writer.write(self.connection(topic, msgtype, latched), to_ns(receive), data)
        self.counts[topic] += 1

    def write(self, topic: str, msgtype: str, msg, receive: float | int,
              latched: bool = False) -> None:
        """Serialise a ``rosbags`` message object and write it."""
        self.write_raw(topic, msgtype, bytes(self.store.serialize_cdr(msg, msgtype)), receive,
                       latched)

    def _msg(self, msgtype: str):
        return self.store.types[msgtype]

    def header(self, stamp: float | int, frame_id: str = ''):
        """A ``std_msgs/Header`` with ``stamp`` (seconds or ns)."""
        ns = to_ns(stamp)
        time = self._msg('builtin_interfaces/msg/Time')(sec=ns // 10**9, nanosec=ns % 10**9)
        return self._msg('std_msgs/msg/Header')(stamp=time, frame_id=frame_id)

    # -- typed helpers ---------------------------------------------------------------------
    def write_image(self, topic: str, rgb: np.ndarray, stamp: float | int,
                    receive: float | int | None = None, encoding: str = 'rgb8',
                    frame_id: str = 'camera', row_padding: int = 0) -> None:
        """A ``sensor_msgs/Image`` of the RGB array ``rgb`` in ``encoding`` (rgb8, bgr8, rgba8,
        bgra8, mono8); ``row_padding`` bytes per row make ``step`` larger than the pixels."""
        height, width = np.asarray(rgb).shape[:2]
        encoding, step, data = encode_raw(rgb, encoding, row_padding)
        msg = self._msg(IMAGE)(header=self.header(stamp, frame_id), height=height, width=width,
                               encoding=encoding, is_bigendian=0, step=step,
                               data=np.frombuffer(data, np.uint8))
        self.write(topic, IMAGE, msg, stamp if receive is None else receive)

    def write_compressed_image(self, topic: str, rgb: np.ndarray | None, stamp: float | int,
                               receive: float | int | None = None, fmt: str = 'jpeg',
                               frame_id: str = 'camera', data: bytes | None = None) -> None:
        """A ``sensor_msgs/CompressedImage`` (JPEG or PNG of ``rgb``, or the given ``data``)."""
        payload = data if data is not None else encode_compressed(rgb, fmt)
        msg = self._msg(COMPRESSED_IMAGE)(header=self.header(stamp, frame_id), format=fmt,
                                          data=np.frombuffer(payload, np.uint8))
        self.write(topic, COMPRESSED_IMAGE, msg, stamp if receive is None else receive)

    def write_string(self, topic: str, text: str, receive: float | int,
                     latched: bool = False) -> None:
        """A ``std_msgs/String`` (no header: only the receive time)."""
        self.write(topic, STRING, self._msg(STRING)(data=text), receive, latched)

    def write_float32_array(self, topic: str, values, receive: float | int,
                            label: str = '') -> None:
        """A 1-D ``std_msgs/Float32MultiArray`` (no header: only the receive time)."""
        values = np.asarray(values, np.float32).reshape(-1)
        dim = self._msg('std_msgs/msg/MultiArrayDimension')(label=label, size=values.size,
                                                            stride=values.size)
        layout = self._msg('std_msgs/msg/MultiArrayLayout')(dim=[dim], data_offset=0)
        self.write(topic, FLOAT32_ARRAY, self._msg(FLOAT32_ARRAY)(layout=layout, data=values),
                   receive)

    def _twist(self, linear, angular):
        vec = self._msg('geometry_msgs/msg/Vector3')
        return self._msg(TWIST)(linear=vec(*map(float, linear)), angular=vec(*map(float, angular)))

    def write_twist(self, topic: str, linear, angular, receive: float | int) -> None:
        """A ``geometry_msgs/Twist`` (no header: only the receive time)."""
        self.write(topic, TWIST, self._twist(linear, angular), receive)

    def write_twist_stamped(self, topic: str, linear, angular, stamp: float | int,
                            receive: float | int | None = None, frame_id: str = '') -> None:
        """A ``geometry_msgs/TwistStamped`` (header stamp plus receive time)."""
        msg = self._msg(TWIST_STAMPED)(header=self.header(stamp, frame_id),
                                       twist=self._twist(linear, angular))
        self.write(topic, TWIST_STAMPED, msg, stamp if receive is None else receive)

    def close(self) -> Path:
        """Write the metadata and close the bag; returns its path."""
        if not self.closed:
            self._writer.close()
            self.closed = True
        return self.path

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RecordedEpisode:
    """Ground truth of one recorded episode (what the bag should convert back to).

    ``frame_stamps`` are the header stamps (s) of the episode's frames; the last one is the
    frame after the action, so the action pairs with ``frame_stamps[-2]``.
    """

    index: int
    instruction: str
    action: str
    frame_stamps: list[float] = field(default_factory=list)
    action_time: float = 0.0


def record_tabletop_episodes(path: str | os.PathLike, episodes: int, seed: int = 0,
                             split: str = 'train', camera_size: int = 96, rate_hz: float = 5.0,
                             frames_per_episode: int = 3, action_delay: float = 0.05,
                             latency: float = 0.01, gap: float = 0.5,
                             start_time: float = 1_700_000_000.0, compressed: bool = False,
                             storage: str = 'mcap', image_topic: str = IMAGE_TOPIC,
                             instruction_topic: str = INSTRUCTION_TOPIC,
                             action_topic: str = ACTION_TOPIC) -> list[RecordedEpisode]:
    """Record ``episodes`` tabletop demonstrations (``split``, ``seed``) to a new bag at ``path``.

    Per episode, on a simulated clock starting at ``start_time`` (seconds): the instruction
    (latched String) at the episode start; ``frames_per_episode`` camera frames at ``rate_hz``
    whose header stamps are the capture times and whose receive times are ``latency`` later
    (each frame has fresh sensor noise); ``action_delay`` seconds after the last frame, the
    expert's action name (the ground truth); then one frame of the scene after the action, as
    the camera keeps running. Episodes are ``gap`` seconds apart.

    Args:
        camera_size: rendered image side in pixels (>= 48).
        compressed: publish JPEG ``CompressedImage`` on ``image_topic + '/compressed'`` instead
            of raw rgb8 frames.
        storage: 'mcap' or 'sqlite3'.

    Returns:
        one ``RecordedEpisode`` per episode (instruction, action, frame stamps, action time).
    """
    from ..tabletop import TabletopGenerator
    from ..tabletop.scene import TabletopConfig, apply_action, render

    if episodes < 1 or frames_per_episode < 1 or rate_hz <= 0:
        raise ValueError('episodes and frames_per_episode must be >= 1 and rate_hz > 0')
    config = TabletopConfig(image_size=camera_size)
    generator = TabletopGenerator(config, split, seed)
    noise = np.random.default_rng([seed, 7])
    # Integer nanoseconds, so stamps are exact (floats near 1.7e9 s are not).
    period, delay, lag, pause = (to_ns(float(v)) for v in (1.0 / rate_hz, action_delay,
                                                            latency, gap))
    camera = image_topic + '/compressed' if compressed else image_topic
    recorded = []
    t = to_ns(float(start_time))
    with BagWriter(path, storage=storage) as bag:
        bag_image = bag.write_compressed_image if compressed else bag.write_image
        for index in range(episodes):
            sample = generator.sample()
            bag.write_string(instruction_topic, sample.instruction, t, latched=True)
            frames = [sample.image] + [render(sample.scene, config, noise)
                                       for _ in range(frames_per_episode - 1)]
            stamps = [t + period * (k + 1) for k in range(frames_per_episode)]
            for frame, stamp in zip(frames, stamps, strict=True):
                bag_image(camera, frame, stamp, stamp + lag)
            acted = stamps[-1] + delay
            bag.write_string(action_topic, sample.action_name, acted)
            # The camera keeps running: one frame of the scene after the action.
            after, _ = apply_action(sample.scene, sample.action_name)
            stamps.append(acted + period // 2)
            bag_image(camera, render(after, config, noise), stamps[-1], stamps[-1] + lag)
            recorded.append(RecordedEpisode(index, sample.instruction, sample.action_name,
                                            [v / 1e9 for v in stamps], acted / 1e9))
            t = stamps[-1] + pause
    return recorded


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m vla_embedding_ros.data.recordings.bag_record --out BAG --episodes N``."""
    import argparse

    from ..tabletop.splits import SPLIT_NAMES

    parser = argparse.ArgumentParser(
        prog='vla-record-tabletop-bag',
        description='Record tabletop expert demonstrations to a rosbag2 bag (no ROS needed).')
    parser.add_argument('--out', required=True, help='bag directory to create')
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--split', default='train', choices=SPLIT_NAMES)
    parser.add_argument('--camera-size', type=int, default=96, help='image side in pixels')
    parser.add_argument('--rate', type=float, default=5.0, help='camera rate (Hz)')
    parser.add_argument('--frames', type=int, default=3, help='frames before each action')
    parser.add_argument('--compressed', action='store_true', help='JPEG CompressedImage frames')
    parser.add_argument('--storage', choices=('mcap', 'sqlite3'), default='mcap')
    args = parser.parse_args(argv)
    try:
        episodes = record_tabletop_episodes(
            args.out, args.episodes, seed=args.seed, split=args.split,
            camera_size=args.camera_size, rate_hz=args.rate, frames_per_episode=args.frames,
            compressed=args.compressed, storage=args.storage)
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    print(f'recorded {len(episodes)} {args.split} episodes to {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
