"""Convert rosbag2 recordings (MCAP or sqlite3) into the JSONL dataset format.

A bag holds camera frames (``sensor_msgs/Image`` or ``CompressedImage``, one or more topics),
instructions (``std_msgs/String``) and actions: names (``std_msgs/String``), vectors
(``std_msgs/Float32MultiArray``) or velocities (``geometry_msgs/Twist``/``TwistStamped``, as
``[linear xyz, angular xyz]``). Every action becomes one sample: the newest frame of each
camera at or before the action (within ``tolerance`` seconds) and the instruction in force;
see ``bag_pairing`` for the exact policy. Actions that cannot be paired are counted per reason
and reported, never dropped silently.

Time: with ``stamp='header'`` a message's header stamp is its time when it has one (images,
TwistStamped); ``String``, ``Float32MultiArray`` and ``Twist`` have no header, so they always
use the bag receive time, and a header stamp of exactly zero (never set) falls back to the
receive time too (counted in the summary). ``stamp='receive'`` uses receive times throughout,
which is right when the camera stamps with a clock other than the recorder's.

Vector actions always keep their raw vector (``action_vector``); ``cluster=K`` also names each
one after the nearest of K k-means centres and stores those centres as the dataset's action
library, so the library-contrastive trainer can use the data (see ``bag_actions``). Without it
the samples have vectors only, for trainers that contrast continuous candidates.

Conversion reads each bag twice: first every timestamp (images are not decoded), then only the
frames that were paired, decoding each once and writing samples in action-time order while
holding just the frames still needed, so memory does not grow with the bag.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...actions.library import ActionLibrary, load_library
from ...files import atomic_write_text
from ..dataset import DatasetWriter
from .bag_actions import (
    ACTION_TYPES,
    NAME_TYPES,
    action_payload,
    cluster_library,
    default_parameter_names,
    names_library,
)
from .bag_images import ImageDecodeError, decode_image
from .bag_pairing import Timeline, pair_actions
from .bag_reader import BagError, BagReader
from .bag_record import COMPRESSED_IMAGE, IMAGE, STRING

STAMP_MODES = ('header', 'receive')
FORMATS = ('jsonl', 'lerobot')
LEROBOT_IMAGES = ('video', 'parquet')
# Topic name parts that say nothing about which camera it is.
_GENERIC_TOPIC_PARTS = {'image_raw', 'image', 'compressed', 'image_rect', 'image_color',
                        'image_rect_color', 'rgb', 'color'}
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
SUMMARY = 'summary.json'
MAX_EXAMPLES = 3
# Header stamps this far from the receive times suggest another clock (e.g. a camera's own).
CLOCK_WARNING_NS = 10**9


def undecodable_reason(topic: str) -> str:
    """Skip reason of an action whose frame on camera ``topic`` does not decode."""
    return f'undecodable image on camera {topic}'


SIZE_MISMATCH = 'cameras differ in size (use --resize)'
UNKNOWN_NAME = 'action name not in the library'
EMPTY_NAME = 'empty action name'
BAD_LENGTH = 'action vector length differs'
NOT_FINITE = 'action vector not finite'
CORRUPT_ACTION = 'action message does not deserialise'


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

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if not self.image_topics:
            raise ValueError('give at least one image topic')
        if len(set(self.image_topics)) != len(self.image_topics):
            raise ValueError(f'image topics repeat: {self.image_topics}')
        topics = [*self.image_topics, self.instruction_topic, self.action_topic]
        if len(set(topics)) != len(topics):
            raise ValueError(f'image, instruction and action topics must differ: {topics}')
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
    out_of_order: dict[str, int]
    header_fallbacks: dict[str, int]
    corrupt: dict[str, int]               # messages that did not deserialise, per topic
    clock_offsets: dict[str, float]       # median header - receive per image topic (s)
    other_topics: dict[str, str] = field(default_factory=dict)       # not asked for: msgtype
    unreadable_topics: dict[str, str] = field(default_factory=dict)  # skipped: why
    notes: list[str] = field(default_factory=list)                    # how the bag was read


def _wanted_topics(cfg: ImportConfig) -> list[str]:
    return [*cfg.image_topics, cfg.instruction_topic, cfg.action_topic]


def _open(path: Path, cfg: ImportConfig) -> BagReader:
    return BagReader(path, _wanted_topics(cfg))


def _topic_types(reader: BagReader, path: Path, cfg: ImportConfig) -> dict[str, str]:
    """Check that every topic exists with a supported type; return topic -> msgtype."""
    available = {}
    for conn in reader.connections:
        available.setdefault(conn.topic, set()).add(conn.msgtype)
    others = {**reader.other_topics}
    wanted = {t: IMAGE_TYPES for t in cfg.image_topics}
    wanted[cfg.instruction_topic] = (STRING,)
    wanted[cfg.action_topic] = ACTION_TYPES
    types = {}
    for topic, allowed in wanted.items():
        if topic not in available:
            have = {t: '/'.join(sorted(m)) for t, m in available.items()} | others
            listed = ', '.join(f'{t} ({m})' for t, m in sorted(have.items()))
            raise BagError(path, f'not in the bag; it has: {listed or "no topics"}', topic)
        msgtypes = available[topic]
        if len(msgtypes) > 1 or next(iter(msgtypes)) not in allowed:
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


def _messages(reader: BagReader, types: dict[str, str]):
    """Messages of the chosen topics, in the bag's order (the same in both passes)."""
    return reader.messages([c for c in reader.connections if c.topic in types])


def scan_bag(path: str | os.PathLike, cfg: ImportConfig, progress: bool = False) -> BagScan:
    """First pass: stamps of every message, instruction texts and action payloads."""
    path = Path(path)
    with _open(path, cfg) as reader:
        types = _topic_types(reader, path, cfg)
        stamps: dict[str, list[int]] = {t: [] for t in types}
        fallbacks, corrupt, texts, payloads = Counter(), Counter(), [], []
        offsets = {t: [] for t in cfg.image_topics}
        for conn, receive, raw in tqdm(_messages(reader, types), desc=f'{path.name} (scan)',
                                       unit='msg', disable=not progress):
            topic = conn.topic
            is_image = topic in offsets
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
        out_of_order={t: n for t, n in out_of_order.items() if n},
        header_fallbacks={t: n for t, n in fallbacks.items() if n}, corrupt=dict(corrupt),
        clock_offsets={t: float(np.median(o)) / 1e9 for t, o in offsets.items() if o},
        other_topics=dict(reader.other_topics), unreadable_topics=dict(reader.unreadable_topics),
        notes=list(reader.notes))


def _episodes(texts: list[str], stamps: Timeline, first: int) -> tuple[list[int], list[int]]:
    """Per instruction id: episode number and episode start (ns).

    A new episode starts whenever the instruction text changes (a republished, identical
    instruction continues the episode).
    """
    episode, start = [0] * len(texts), [0] * len(texts)
    current, previous, begin = first - 1, None, 0
    for t, i in zip(stamps.stamps.tolist(), stamps.ids.tolist(), strict=True):
        if texts[i] != previous:
            current, previous, begin = current + 1, texts[i], t
        episode[i], start[i] = current, begin
    return episode, start


class _Report:
    """Skip counts per reason, with a few examples of each."""

    def __init__(self):
        self.skipped: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def skip(self, bag: Path, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < MAX_EXAMPLES:
            examples.append(f'{bag.name}: {detail}')


def _payload_errors(scans: list[BagScan], cfg: ImportConfig, names: set[str] | None,
                    dim: int | None) -> list[dict[int, str]]:
    """Per bag: action id -> reason, for payloads no sample can be made of."""
    errors = []
    for scan in scans:
        bad = {}
        for i, payload in enumerate(scan.payloads):
            if payload is None:
                bad[i] = CORRUPT_ACTION
            elif isinstance(payload, str):
                if not payload.strip():
                    bad[i] = EMPTY_NAME
                elif names is not None and payload not in names:
                    bad[i] = UNKNOWN_NAME
            elif len(payload) != dim:
                bad[i] = BAD_LENGTH
            elif not np.all(np.isfinite(payload)):
                bad[i] = NOT_FINITE
        errors.append(bad)
    return errors


def _action_kind(scans: list[BagScan], cfg: ImportConfig) -> str:
    kinds = {scan.types[cfg.action_topic] for scan in scans}
    if len({k in NAME_TYPES for k in kinds}) > 1:
        raise ValueError(f'{cfg.action_topic} carries names in some bags and vectors in others')
    kind = sorted(kinds)[0]
    if kind in NAME_TYPES and cfg.cluster:
        raise ValueError(f'--cluster applies to vector actions; {cfg.action_topic} has names')
    if kind not in NAME_TYPES and cfg.library:
        raise ValueError(f'--library applies to action names; {cfg.action_topic} has vectors '
                         '(use --cluster K to build a library from them)')
    return kind


def camera_keys(topics: list[str]) -> list[str]:
    """LeRobot feature keys for image topics: '/front/image_raw' -> 'front',
    '/wrist/color/image_raw/compressed' -> 'wrist'; cam0, cam1, ... when names collide."""
    keys = []
    for topic in topics:
        parts = [p for p in topic.strip('/').split('/') if p and p not in _GENERIC_TOPIC_PARTS]
        keys.append('_'.join(parts) or 'camera')
    return keys if len(set(keys)) == len(keys) else [f'cam{i}' for i in range(len(topics))]


def _writer(out: Path, library, overwrite: bool, cfg: ImportConfig):
    """The dataset writer of the chosen format (both write atomically, with the same add())."""
    if cfg.format == 'lerobot':
        from .lerobot_write import LeRobotWriter
        return LeRobotWriter(out, library=library, overwrite=overwrite, fps=cfg.fps,
                             images=cfg.lerobot_images, camera_keys=camera_keys(cfg.image_topics))
    return DatasetWriter(out, library=library, overwrite=overwrite)


def _resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)


def _write_bag(scan: BagScan, pairing, writer: DatasetWriter, cfg: ImportConfig,
               report: _Report, name_of, episodes, progress: bool) -> tuple[int, set]:
    """Second pass over one bag: decode the paired frames and write the samples in order.

    Returns (samples written, episode ids written).
    """
    cameras = {t: c for c, t in enumerate(cfg.image_topics)}
    queue = deque(pairing.matched)
    need = Counter((c, f) for p in queue for c, f in enumerate(p.frames))
    cache: dict[tuple[int, int], np.ndarray] = {}
    broken: dict[tuple[int, int], str] = {}
    seen = Counter()
    episode_ids = set()  # episodes with at least one sample
    bar = tqdm(total=len(queue), desc=scan.path.name, unit='sample', disable=not progress)

    count = [0]  # samples written (a list so flush() can update it)

    def flush() -> None:
        while queue:
            p = queue[0]
            keys = list(enumerate(p.frames))
            if not all(k in cache or k in broken for k in keys):
                return  # wait for a frame still ahead in the bag
            queue.popleft()
            bad = next((k for k in keys if k in broken), None)
            images = [cache[k] for k in keys] if bad is None else []
            when = f't={p.stamp / 1e9:.6f}s'
            if bad is not None:
                report.skip(scan.path, undecodable_reason(cfg.image_topics[bad[0]]),
                            f'{when}: {broken[bad]}')
            elif len({im.shape for im in images}) > 1:
                report.skip(scan.path, SIZE_MISMATCH, f'{when}: {[im.shape for im in images]}')
            else:
                action, vector = name_of(p.action)
                episode, start = episodes[p.instruction]
                writer.add(images, scan.texts[p.instruction], action=action,
                           action_vector=vector, episode=episode,
                           timestamp=(p.stamp - start) / 1e9, split=cfg.split)
                episode_ids.add(episode)
                count[0] += 1
            for k in keys:
                need[k] -= 1
                if need[k] == 0:
                    cache.pop(k, None)
            bar.update()

    try:
        with _open(scan.path, cfg) as reader:
            for conn, _, raw in _messages(reader, scan.types):
                camera = cameras.get(conn.topic)
                if camera is None:
                    continue
                key = (camera, seen[camera])
                seen[camera] += 1
                if need[key] <= 0:
                    continue
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    cache[key] = _resize(decode_image(msg, conn.msgtype), cfg.resize)
                except (ImageDecodeError, cv2.error) as e:
                    broken[key] = str(e)
                except Exception as e:  # a corrupt message is counted, not fatal
                    broken[key] = f'cannot deserialise ({type(e).__name__}: {e})'
                flush()
        flush()
    finally:
        bar.close()
    if queue:  # cannot happen unless the bag changed between the passes
        raise RuntimeError(f'{scan.path}: {len(queue)} paired frames were not found again')
    return count[0], episode_ids


def _built_library(actions: list[dict], parameter_names: list[str],
                   comment: str) -> ActionLibrary:
    """A library this importer made (validated like any other), its origin as the header."""
    return ActionLibrary.from_dict({'parameter_names': parameter_names, 'actions': actions},
                                   'vla-bag-to-dataset', comment)


def _library(scans, cfg: ImportConfig, kind: str, pairings):
    """(library for the writer or None, names accepted or None, summary, label per action)."""
    if kind in NAME_TYPES:
        if cfg.library:
            library = load_library(cfg.library)
            return library, set(library.names), {'source': str(cfg.library),
                                                 'size': len(library)}, None
        seen = [p for scan in scans for p in scan.payloads if p is not None and p.strip()]
        actions = names_library(seen)
        library = _built_library(actions, [a['name'] for a in actions],
                                 'Action library built by vla-bag-to-dataset from the action '
                              'names seen\n(one-hot parameters, the name as description).')
        return library, None, {'source': 'names seen', 'size': len(actions)}, None
    if not cfg.cluster:
        return None, None, {'source': None, 'size': 0}, None
    vectors, owners = [], []
    for b, (scan, pairing) in enumerate(zip(scans, pairings, strict=True)):
        for p in pairing.matched:
            vectors.append(scan.payloads[p.action])
            owners.append((b, p.action))
    if not vectors:
        return None, None, {'source': 'clusters', 'size': 0}, None
    vectors = np.stack(vectors)
    k = min(cfg.cluster, len(np.unique(vectors, axis=0)))
    names = cfg.parameter_names or default_parameter_names(kind, vectors.shape[1])
    actions, labels, sizes = cluster_library(vectors, k, names, cfg.seed, twist='Twist' in kind)
    library = _built_library(actions, names,
                             f'Action library built by vla-bag-to-dataset: k-means (k={k}) '
                             f'centres of the\n{cfg.action_topic} vectors; params are the '
                             'centres.')
    label = {owner: actions[j]['name'] for owner, j in zip(owners, labels.tolist(), strict=True)}
    summary = {'source': 'clusters', 'size': k, 'requested': cfg.cluster,
               'cluster_sizes': sizes.tolist()}
    return library, None, summary, label


def convert_bags(bags: list[str | os.PathLike], out: str | os.PathLike, cfg: ImportConfig,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Convert ``bags`` into a dataset directory ``out`` (written atomically).

    Returns the summary (also written as ``out/summary.json``): samples written, actions
    skipped per reason, with examples, and per-topic counts. When no sample can be written
    nothing is created and the summary has ``written == 0``.
    """
    cfg.validate()
    if not bags:
        raise ValueError('give at least one bag')
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f'{out} exists; pass overwrite=True (--overwrite) to replace it')
    started = time.monotonic()
    scans = [scan_bag(b, cfg, progress) for b in bags]
    kind = _action_kind(scans, cfg)
    tolerance = int(round(cfg.tolerance * 1e9))
    if kind in NAME_TYPES:
        dim = None
    else:
        lengths = Counter(len(p) for scan in scans for p in scan.payloads if p is not None)
        dim = len(cfg.parameter_names) if cfg.parameter_names else \
            (lengths.most_common(1)[0][0] if lengths else 0)
    # The library decides which names are valid, so payloads are checked against it first.
    library, valid_names, library_summary, labels = None, None, {}, None
    if kind in NAME_TYPES:
        library, valid_names, library_summary, _ = _library(scans, cfg, kind, [])
    errors = _payload_errors(scans, cfg, valid_names, dim)
    pairings = [pair_actions(s.actions, s.frames, s.instructions, tolerance, e)
                for s, e in zip(scans, errors, strict=True)]
    if kind not in NAME_TYPES:
        library, _, library_summary, labels = _library(scans, cfg, kind, pairings)

    report = _Report()
    for scan, pairing in zip(scans, pairings, strict=True):
        for _, reason, detail in pairing.skipped:
            report.skip(scan.path, reason, detail)
    written, first_episode, episodes_written = 0, 0, set()
    writer = _writer(out, library, overwrite, cfg)
    try:
        for b, (scan, pairing) in enumerate(zip(scans, pairings, strict=True)):
            episode, start = _episodes(scan.texts, scan.instructions, first_episode)
            first_episode = max(episode, default=first_episode - 1) + 1

            def name_of(action, scan=scan, b=b):
                payload = scan.payloads[action]
                if isinstance(payload, str):
                    return payload, None
                return (labels[(b, action)] if labels else None), payload

            n, eps = _write_bag(scan, pairing, writer, cfg, report, name_of,
                                list(zip(episode, start, strict=True)), progress)
            written += n
            episodes_written |= eps
        summary = _summary(scans, cfg, kind, out, written, report, library_summary,
                           len(episodes_written), time.monotonic() - started)
        if written == 0:
            writer.abort()
            return summary
        atomic_write_text(writer.tmp / SUMMARY, json.dumps(summary, indent=2) + '\n')
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return summary


def _summary(scans, cfg, kind, out, written, report, library_summary, episodes,
             seconds) -> dict:
    actions = sum(len(s.actions) for s in scans)
    warnings = []
    for scan in scans:
        for topic, offset in scan.clock_offsets.items():
            if abs(offset) * 1e9 > CLOCK_WARNING_NS:
                warnings.append(f'{scan.path.name}: header stamps on {topic} are {offset:.3f}s '
                                'from receive times (another clock?); consider --stamp receive')
    skipped = dict(report.skipped.most_common())
    assert actions == written + sum(skipped.values()), 'every action is written or skipped'
    return {
        'out': str(out), 'format': cfg.format, 'bags': [str(s.path) for s in scans],
        'topics': {'images': cfg.image_topics, 'instruction': cfg.instruction_topic,
                   'action': cfg.action_topic},
        'types': {t: m for s in scans for t, m in s.types.items()},
        'stamp': cfg.stamp, 'tolerance': cfg.tolerance, 'action_type': kind,
        'messages': dict(sum((Counter(s.counts) for s in scans), Counter())),
        'actions': actions, 'written': written, 'skipped_total': sum(skipped.values()),
        'skipped': skipped, 'skipped_examples': report.examples, 'episodes': episodes,
        'library': library_summary,
        'out_of_order_stamps': dict(sum((Counter(s.out_of_order) for s in scans), Counter())),
        'header_stamp_fallbacks': dict(sum((Counter(s.header_fallbacks) for s in scans),
                                           Counter())),
        'corrupt_messages': dict(sum((Counter(s.corrupt) for s in scans), Counter())),
        'other_topics': {t: m for s in scans for t, m in sorted(s.other_topics.items())},
        'unreadable_topics': {t: r for s in scans for t, r in sorted(s.unreadable_topics.items())},
        'notes': [n for s in scans for n in s.notes],
        'warnings': warnings,
        'seconds': round(seconds, 3), 'samples_per_s': round(written / max(seconds, 1e-9), 1),
    }


def format_summary(summary: dict) -> str:
    """The summary as the few lines the CLI prints."""
    lines = [f"{summary['written']} samples written to {summary['out']} from "
             f"{summary['actions']} actions in {len(summary['bags'])} bag(s) "
             f"({summary['episodes']} episodes, stamps: {summary['stamp']}, "
             f"tolerance {summary['tolerance']}s) in {summary['seconds']:.1f} s "
             f"({summary['samples_per_s']:.0f} samples/s)"]
    if summary['skipped_total']:
        lines.append(f"{summary['skipped_total']} actions skipped:")
        for reason, n in summary['skipped'].items():
            example = summary['skipped_examples'].get(reason, [''])[0]
            lines.append(f'  {n:6d}  {reason}' + (f'   (e.g. {example})' if example else ''))
    lib = summary['library']
    if lib.get('source'):
        lines.append(f"action library: {lib['size']} actions ({lib['source']})")
    elif summary['action_type'] not in NAME_TYPES:
        lines.append('action library: none (vectors only; --cluster K names them for the '
                     'library-contrastive trainer)')
    for topic, n in summary['out_of_order_stamps'].items():
        lines.append(f'note: {n} messages on {topic} had out-of-order stamps (sorted)')
    for topic, n in summary['header_stamp_fallbacks'].items():
        lines.append(f'note: {n} messages on {topic} had a zero header stamp; used receive time')
    for topic, n in summary['corrupt_messages'].items():
        lines.append(f'warning: {n} messages on {topic} did not deserialise')
    others, unreadable = summary['other_topics'], summary['unreadable_topics']
    if others:
        lines.append(f'{len(others)} other topic(s) in the bag(s) not read'
                     + (f', {len(unreadable)} of them unreadable here:' if unreadable else ''))
        lines += [f'  {topic}: {why}' for topic, why in unreadable.items()]
    lines += [f'note: {n}' for n in summary['notes']]
    lines += [f'warning: {w}' for w in summary['warnings']]
    return '\n'.join(lines)
