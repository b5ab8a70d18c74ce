"""Convert rosbag2 recordings (MCAP or sqlite3) into the JSONL dataset format.

A bag holds camera frames (``sensor_msgs/Image`` or ``CompressedImage``, one or more topics),
instructions (``std_msgs/String``) and actions: names (``std_msgs/String``), vectors
(``std_msgs/Float32MultiArray``) or velocities (``geometry_msgs/Twist``/``TwistStamped``, as
``[linear xyz, angular xyz]``). Every action becomes one sample: the newest frame of each
camera at or before the action (within ``tolerance`` seconds) and the instruction in force;
see ``bag_pairing`` for the exact policy. Actions that cannot be paired are counted per reason
and reported, never dropped silently.

Which stamps count (header or receive) is ``bag_scan``'s; which actions form an episode
(the instruction text changes, or a message on ``--episode-topic``) is ``bag_episodes``'.

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
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ...actions.library import ActionLibrary, load_library
from ...files import atomic_write_text
from ..dataset import DatasetWriter
from .bag_actions import (
    NAME_TYPES,
    cluster_library,
    default_parameter_names,
    names_library,
)
from .bag_episodes import assign_episodes
from .bag_images import ImageDecodeError, decode_image
from .bag_pairing import pair_actions
from .bag_scan import BagScan, ImportConfig, bag_messages, open_bag, scan_bag

# Topic name parts that say nothing about which camera it is.
_GENERIC_TOPIC_PARTS = {'image_raw', 'image', 'compressed', 'image_rect', 'image_color',
                        'image_rect_color', 'rgb', 'color'}
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
                episode, start = episodes[p.action]
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
        with open_bag(scan.path, cfg) as reader:
            for conn, _, raw in bag_messages(reader, scan.types):
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
            episodes = assign_episodes(scan.texts, scan.instructions, scan.episode_ends,
                                       pairing.matched, first_episode)
            first_episode = max((e for e, _ in episodes.values()), default=first_episode - 1) + 1

            def name_of(action, scan=scan, b=b):
                payload = scan.payloads[action]
                if isinstance(payload, str):
                    return payload, None
                return (labels[(b, action)] if labels else None), payload

            n, eps = _write_bag(scan, pairing, writer, cfg, report, name_of, episodes,
                                progress)
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
                   'action': cfg.action_topic, 'episode': cfg.episode_topic},
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
