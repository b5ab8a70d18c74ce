"""First pass over a rosbag2 recording: what to read (:class:`ImportConfig`, the options of
``vla-bag-to-dataset``) and every stamp of it (:class:`BagScan`), without decoding a picture.

Time: with ``stamp='header'`` a message's header stamp is its time when it has one (images,
TwistStamped); ``String``, ``Float32MultiArray`` and ``Twist`` have no header, so they always
use the bag receive time, and a header stamp of exactly zero (never set) falls back to the
receive time too (counted in the summary). ``stamp='receive'`` uses receive times throughout,
which is right when the camera stamps with a clock other than the recorder's.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .bag_actions import ACTION_TYPES, action_payload
from .bag_pairing import Timeline
from .bag_reader import BagError, BagReader
from .bag_record import COMPRESSED_IMAGE, IMAGE, STRING

STAMP_MODES = ('header', 'receive')
FORMATS = ('jsonl', 'lerobot')
LEROBOT_IMAGES = ('video', 'parquet')
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)


@dataclass
class ImportConfig:
    """What to read and how to pair it (the CLI options of ``vla-bag-to-dataset``)."""

    image_topics: list[str] = field(default_factory=lambda: ['/camera/image_raw'])
    instruction_topic: str = '/instruction'
    action_topic: str = '/action_selector/selected_action'
    tolerance: float = 0.1                 # seconds a frame may be older than its action
    stamp: str = 'header'                  # 'header' or 'receive'
    library: str | None = None             # library YAML for name actions
    cluster: int = 0                       # K > 0: name vector actions by K k-means centres
    parameter_names: list[str] | None = None   # vector component names for the library
    resize: tuple[int, int] | None = None  # (width, height) of every stored image
    split: str | None = None               # value of the 'split' field of every sample
    seed: int = 0                          # k-means seed
    format: str = 'jsonl'                  # 'jsonl' (index + PNGs) or 'lerobot' (v3.0)
    fps: float | None = None               # lerobot: info.json fps (None: from the samples)
    lerobot_images: str = 'video'          # lerobot: 'video' (AV1 MP4) or 'parquet' (PNGs)
    # messages on this topic (any type) end an episode, e.g. a simulator's ~/episode_result:
    # without it an episode ends only when the instruction text changes (bag_episodes)
    episode_topic: str | None = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if not self.image_topics:
            raise ValueError('give at least one image topic')
        if len(set(self.image_topics)) != len(self.image_topics):
            raise ValueError(f'image topics repeat: {self.image_topics}')
        topics = wanted_topics(self)
        if len(set(topics)) != len(topics):
            raise ValueError(f'image, instruction, action and episode topics must differ: '
                             f'{topics}')
        if self.episode_topic is not None and not self.episode_topic.strip():
            raise ValueError('episode topic is empty: name one (e.g. /libero_sim/'
                             'episode_result) or leave it out')
        if not self.tolerance >= 0:
            raise ValueError(f'tolerance must be >= 0 seconds, got {self.tolerance}')
        if self.stamp not in STAMP_MODES:
            raise ValueError(f'stamp must be one of {STAMP_MODES}, got {self.stamp!r}')
        if self.cluster < 0:
            raise ValueError(f'cluster must be >= 0, got {self.cluster}')
        if self.resize is not None and min(self.resize) < 1:
            raise ValueError(f'resize must be positive, got {self.resize}')
        if self.format not in FORMATS:
            raise ValueError(f'format must be one of {FORMATS}, got {self.format!r}')
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f'fps must be > 0, got {self.fps}')
        if self.lerobot_images not in LEROBOT_IMAGES:
            raise ValueError(f'lerobot images must be one of {LEROBOT_IMAGES}, got '
                             f'{self.lerobot_images!r}')


@dataclass
class BagScan:
    """First pass over one bag: every stamp, the instructions and the action payloads."""

    path: Path
    types: dict[str, str]
    counts: dict[str, int]
    frames: dict[str, Timeline]
    instructions: Timeline
    texts: list[str]
    actions: Timeline
    payloads: list
    episode_ends: Timeline                # messages on the episode topic (empty without one)
    out_of_order: dict[str, int]
    header_fallbacks: dict[str, int]
    corrupt: dict[str, int]               # messages that did not deserialise, per topic
    clock_offsets: dict[str, float]       # median header - receive per image topic (s)
    other_topics: dict[str, str] = field(default_factory=dict)       # not asked for: msgtype
    unreadable_topics: dict[str, str] = field(default_factory=dict)  # skipped: why
    notes: list[str] = field(default_factory=list)                    # how the bag was read


def wanted_topics(cfg: ImportConfig) -> list[str]:
    return [*cfg.image_topics, cfg.instruction_topic, cfg.action_topic,
            *([cfg.episode_topic] if cfg.episode_topic is not None else [])]


def open_bag(path: Path, cfg: ImportConfig) -> BagReader:
    return BagReader(path, wanted_topics(cfg))


def _topic_types(reader: BagReader, path: Path, cfg: ImportConfig) -> dict[str, str]:
    """Check that every topic exists with a supported type; return topic -> msgtype."""
    available = {}
    for conn in reader.connections:
        available.setdefault(conn.topic, set()).add(conn.msgtype)
    others = {**reader.other_topics}
    wanted = {t: IMAGE_TYPES for t in cfg.image_topics}
    wanted[cfg.instruction_topic] = (STRING,)
    wanted[cfg.action_topic] = ACTION_TYPES
    if cfg.episode_topic is not None:
        wanted[cfg.episode_topic] = None      # any type: only its times are read
    types = {}
    for topic, allowed in wanted.items():
        if topic not in available:
            have = {t: '/'.join(sorted(m)) for t, m in available.items()} | others
            listed = ', '.join(f'{t} ({m})' for t, m in sorted(have.items()))
            raise BagError(path, f'not in the bag; it has: {listed or "no topics"}', topic)
        msgtypes = available[topic]
        if allowed is not None and (len(msgtypes) > 1 or next(iter(msgtypes)) not in allowed):
            raise BagError(path, f'has type {"/".join(sorted(msgtypes))}; expected one of '
                                 f'{", ".join(allowed)}', topic)
        types[topic] = next(iter(msgtypes))
    return types


def _stamp(msg, receive: int, mode: str) -> tuple[int, bool]:
    """(time in ns, whether a zero header stamp fell back to the receive time)."""
    header = getattr(msg, 'header', None) if mode == 'header' else None
    if header is None:
        return receive, False
    ns = int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)
    return (receive, True) if ns == 0 else (ns, False)


def bag_messages(reader: BagReader, types: dict[str, str]):
    """Messages of the chosen topics, in the bag's order (the same in both passes)."""
    return reader.messages([c for c in reader.connections if c.topic in types])


def scan_bag(path: str | os.PathLike, cfg: ImportConfig, progress: bool = False) -> BagScan:
    """First pass: stamps of every message, instruction texts and action payloads."""
    path = Path(path)
    with open_bag(path, cfg) as reader:
        types = _topic_types(reader, path, cfg)
        stamps: dict[str, list[int]] = {t: [] for t in types}
        fallbacks, corrupt, texts, payloads = Counter(), Counter(), [], []
        offsets = {t: [] for t in cfg.image_topics}
        for conn, receive, raw in tqdm(bag_messages(reader, types), desc=f'{path.name} (scan)',
                                       unit='msg', disable=not progress):
            topic = conn.topic
            is_image = topic in offsets
            if topic == cfg.episode_topic:   # its times only, always as received (any type)
                stamps[topic].append(receive)
                continue
            if is_image and cfg.stamp == 'receive':
                stamps[topic].append(receive)  # no need to deserialise the picture
                continue
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception:  # a corrupt message is counted, not fatal
                corrupt[topic] += 1
                if topic != cfg.instruction_topic:  # an unreadable instruction is never in force
                    stamps[topic].append(receive)   # frames fail again, and are counted, later
                    if topic == cfg.action_topic:
                        payloads.append(None)
                continue
            t, fell_back = _stamp(msg, receive, cfg.stamp)
            fallbacks[topic] += fell_back
            stamps[topic].append(t)
            if is_image:
                if not fell_back:
                    offsets[topic].append(t - receive)
            elif topic == cfg.instruction_topic:
                texts.append(str(msg.data))
            elif topic == cfg.action_topic:
                payloads.append(action_payload(msg, conn.msgtype))
    out_of_order = {t: int(np.sum(np.asarray(s[1:]) < np.maximum.accumulate(s)[:-1]))
                    if len(s) > 1 else 0 for t, s in stamps.items()}
    return BagScan(
        path=path, types=types, counts={t: len(s) for t, s in stamps.items()},
        frames={t: Timeline(stamps[t]) for t in cfg.image_topics},
        instructions=Timeline(stamps[cfg.instruction_topic]), texts=texts,
        actions=Timeline(stamps[cfg.action_topic]), payloads=payloads,
        episode_ends=Timeline(stamps.get(cfg.episode_topic, [])),
        out_of_order={t: n for t, n in out_of_order.items() if n},
        header_fallbacks={t: n for t, n in fallbacks.items() if n}, corrupt=dict(corrupt),
        clock_offsets={t: float(np.median(o)) / 1e9 for t, o in offsets.items() if o},
        other_topics=dict(reader.other_topics), unreadable_topics=dict(reader.unreadable_topics),
        notes=list(reader.notes))
