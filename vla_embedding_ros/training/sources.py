"""Where training batches come from: the procedural tabletop stream, or recorded samples from
a JSONL dataset or a LeRobotDataset v3 folder.

Both give batches of (images uint8 [B, C, H, W, 3] RGB, instructions, action indices) and can
save and restore their position, so a resumed run draws exactly the batches an uninterrupted
run would have drawn.
"""
from __future__ import annotations

import copy
import logging
from collections import Counter

import numpy as np
import torch

from ..actions.library import ActionLibrary
from ..data.tabletop import TabletopConfig, TabletopGenerator
from ..data.tabletop.cameras import check_cameras, render_views
from ..data.tabletop.generator import collate
from .counter_examples import ContinuousTargets, sample_counter_examples
from .region import scene_labels
from .sample_stream import SampleStream

log = logging.getLogger(__name__)

# data.source values whose samples come from a dataset on disk.
RECORDED = ('jsonl', 'lerobot')


class TabletopSource:
    def __init__(self, split: str, seed: int, image_size: int, objects=None,
                 phrasings: int = 0, cameras=('top',)):
        """objects: [min, max] per scene; None keeps TabletopConfig's range. phrasings: the
        training split's pool of phrasings per goal (0 = the whole grammar). cameras: the
        views of each scene, in order (``data/tabletop/cameras.py``: top, oblique); the
        batches' images are ``[B, C, H, W, 3]``."""
        self.cameras = check_cameras(list(cameras))
        config = TabletopConfig(image_size=image_size, phrasings=phrasings,
                                **_object_range(objects))
        self.generator = TabletopGenerator(config, split, seed)

    def _views(self, images):
        if self.cameras == ('top',):
            return images[:, None]
        return np.stack([render_views(image, self.cameras) for image in images])

    def next_batch(self, n: int):
        images, instructions, indices = self.generator.batch(n)
        return self._views(images), instructions, indices

    def next_labelled_batch(self, n: int):
        """``next_batch`` plus the scenes' per-cell labels (see ``region.scene_labels``)."""
        samples = list(self.generator.samples(n))
        images, instructions, indices = collate(samples)
        return self._views(images), instructions, indices, scene_labels(samples)

    def state_dict(self) -> dict:
        return {'rng': self.generator.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.generator.rng.bit_generator.state = state['rng']


class ContinuousTabletopSource:
    """The continuous tabletop task (``data.source: tabletop_continuous``): batches of
    (images, instructions, ``ContinuousTargets``) for counter-example training."""

    def __init__(self, split: str, seed: int, image_size: int, objects=None,
                 phrasings: int = 0, space=None, counter_examples: int = 255,
                 positive_jitter: float = 0.3, other_primitive_elsewhere: float = 0.0):
        from ..data.tabletop.continuous import CONTINUOUS_SPACE, ContinuousTabletopGenerator
        if counter_examples < 1:
            raise ValueError(f'optim.counter_examples must be >= 1, got {counter_examples}')
        if not 0 <= positive_jitter < 1:
            raise ValueError(f'optim.positive_jitter must be in [0, 1) object radii, got '
                             f'{positive_jitter}')
        self.space = space or CONTINUOUS_SPACE
        if self.space.parameter_names != CONTINUOUS_SPACE.parameter_names:
            raise ValueError(f'the continuous tabletop task acts in {CONTINUOUS_SPACE.to_dict()}'
                             f'; the library\'s space is {self.space.to_dict()}')
        from .recorded_continuous import _share
        self.counter_examples, self.positive_jitter = counter_examples, positive_jitter
        self.elsewhere = _share(other_primitive_elsewhere)
        config = TabletopConfig(image_size=image_size, phrasings=phrasings,
                                **_object_range(objects))
        self.generator = ContinuousTabletopGenerator(config, split, seed)
        # Negatives have a stream of their own, saved with the source's position.
        self.negatives = torch.Generator().manual_seed(int(seed) + 1)

    def next_continuous_batch(self, n: int):
        """(images [n, 1, H, W, 3], instructions, ``CounterExamples``: the demonstration and
        its K negatives)."""
        images, instructions, targets = self.next_demonstrations(n)
        examples = sample_counter_examples(self.space, targets, self.counter_examples,
                                           self.negatives, self.positive_jitter,
                                           self.elsewhere)
        return images, instructions, examples

    def next_demonstrations(self, n: int):
        samples = list(self.generator.samples(n))
        size = self.generator.config.image_size
        others = [[((o.center[0] + 0.5) / size, (o.center[1] + 0.5) / size)
                   for o in s.others()] for s in samples]
        width = max(1, max(len(o) for o in others))
        padded = np.zeros((n, width, 2), np.float32)
        mask = np.zeros((n, width), bool)
        for i, row in enumerate(others):
            padded[i, :len(row)] = row
            mask[i, :len(row)] = True
        targets = ContinuousTargets(
            torch.from_numpy(np.stack([s.vector for s in samples])),
            torch.tensor([s.target.size / size for s in samples], dtype=torch.float32),
            torch.from_numpy(padded), torch.from_numpy(mask))
        images = np.stack([s.image for s in samples])[:, None]
        return images, [s.instruction for s in samples], targets

    def state_dict(self) -> dict:
        return {'rng': self.generator.rng.bit_generator.state,
                'negatives': self.negatives.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.rng.bit_generator.state = state['rng']
        self.negatives.set_state(torch.as_tensor(state['negatives'], dtype=torch.uint8))


def _object_range(objects) -> dict:
    if objects is None:
        return {}
    if (not isinstance(objects, (list, tuple)) or len(objects) != 2 or not all(
            isinstance(n, int) and not isinstance(n, bool) for n in objects)):
        raise ValueError(f'data.objects must be [min, max] integers, got {objects!r}')
    return {'min_objects': objects[0], 'max_objects': objects[1]}


class RecordedSource(SampleStream):
    """Shuffled epochs over the samples of a recorded dataset whose action is in the library.

    ``dataset`` is a ``JSONLDataset`` or a ``LeRobotV3Dataset``: items as ``JSONLDataset``
    returns them, and ``records`` (one dict per sample, its ``action`` name or None).
    Samples naming an action the library does not have are counted and reported once at the
    start and left out of every epoch; when none is left, or more than ``max_unknown`` of them
    are unknown, the source refuses to start (it used to loop forever looking for one). Bad
    samples are skipped and counted by the dataset.
    """

    def __init__(self, dataset, path: str, library: ActionLibrary, seed: int,
                 library_path: str | None = None, max_unknown: float = 1.0):
        self.dataset = dataset
        if len(self.dataset) == 0:
            raise ValueError(f'{path}: the dataset has no samples')
        known = set(library.names)
        names = [r.get('action') for r in self.dataset.records]
        self.usable = np.flatnonzero([name in known for name in names])
        unknown = Counter(name for name in names if name not in known)
        self.unknown_actions = sum(unknown.values())
        if unknown:
            listed = ', '.join(f'{n!r} ({c})' for n, c in unknown.most_common(5))
            where = f'the library {library_path}' if library_path else 'the library'
            reason = getattr(self.dataset, 'unnamed_reason', lambda: None)()
            refused = (len(self.usable) == 0
                       or self.unknown_actions > max_unknown * len(names))
            if reason and refused:   # vectors named by distance: the distance is the cause
                raise ValueError(
                    f'{path}: {reason}, so those samples have no action to learn. If the '
                    f'vectors do mean these library actions, raise data.max_action_distance '
                    f'(e.g. {_covering(self.dataset)} names all of them); else train with the '
                    'library the vectors were recorded with (data.library)')
            if len(self.usable) == 0:
                raise ValueError(
                    f'{path}: none of its {len(names)} samples names an action of {where} '
                    f'(it has e.g. {listed}); train with the library the dataset was written '
                    'with (its actions.yaml, used when data.library is empty) or one that has '
                    'these names')
            if self.unknown_actions > max_unknown * len(names):
                raise ValueError(
                    f'{path}: {self.unknown_actions} of its {len(names)} samples name actions '
                    f'not in {where} (e.g. {listed}), more than data.max_unknown_actions '
                    f'{max_unknown}: is it the library the dataset was written with?')
            log.warning('%s: %d of %d samples name actions not in %s and are left out: %s',
                        path, self.unknown_actions, len(names), where, listed)
        self._start_stream(seed)

    def held_out(self, seed: int) -> 'RecordedSource':
        """The held-out episodes' samples as a source of their own over the same dataset,
        unsharded, in one seeded order (``rewind`` before each evaluation)."""
        view = copy.copy(self)
        view.usable = self._held_out
        view.rank, view.world_size = 0, 1
        view.rng = np.random.default_rng(seed)
        view.order, view.position = view._shuffled(), 0
        return view

    def rewind(self) -> None:
        """Back to the first sample of the current order."""
        self.position = 0

    @property
    def skipped(self) -> int:
        return int(getattr(self.dataset, 'skipped', 0))

    def next_batch(self, n: int):
        """This rank's ``n`` samples of the next global batch of ``n * world_size``: rank r
        reads entries ``[r * n, (r + 1) * n)`` of it, so the ranks' shards are disjoint and
        together they are the batch one process would draw with ``n * world_size``."""
        mine = self._mine(n)
        images, instructions, indices = [], [], []
        for slot in mine:
            item = self._usable_item(int(slot))
            images.append(item['images'])
            instructions.append(item['instruction'])
            indices.append(item['action_index'])
        return np.stack(images), instructions, np.asarray(indices, np.int64)

    def _usable_item(self, index: int) -> dict:
        """Sample ``index``, or when it turns out unusable (a bad sample the dataset replaced
        with one of an unknown action) the next usable one in the dataset's order."""
        for k in range(len(self.usable)):
            candidate = int(self.usable[(np.searchsorted(self.usable, index) + k)
                                        % len(self.usable)])
            item = self.dataset[candidate]
            if item is not None and item['action_index'] >= 0:
                return item
        raise ValueError(f'{self.dataset.root}: no usable sample in a whole pass '
                         f'({self.skipped} bad, {self.unknown_actions} with unknown actions)')

def _covering(dataset) -> str:
    """A max_action_distance just above the farthest vector's distance to its nearest action."""
    return f'{float(np.nanmax(dataset.action_distance)) * 1.01:.3g}'


class JsonlSource(RecordedSource):
    """A JSONL dataset directory (``data.source: jsonl``)."""

    def __init__(self, path: str, library: ActionLibrary, seed: int, strict: bool = False,
                 allow_external_images: bool = False, library_path: str | None = None,
                 max_unknown: float = 1.0):
        from ..data.dataset import JSONLDataset
        dataset = JSONLDataset(path, library=library, skip_bad=not strict,
                               allow_external_images=allow_external_images)
        super().__init__(dataset, path, library, seed, library_path, max_unknown)


class LeRobotSource(RecordedSource):
    """A LeRobotDataset v3 folder (``data.source: lerobot``), ours or one LeRobot wrote; its
    action vectors are named by the library as ``data/FORMAT.md`` explains."""

    def __init__(self, path: str, library: ActionLibrary, seed: int, strict: bool = False,
                 library_path: str | None = None, max_unknown: float = 1.0,
                 max_action_distance: float | None = None):
        from ..data.recordings.lerobot_read import LeRobotV3Dataset
        dataset = LeRobotV3Dataset(path, library=library, skip_bad=not strict,
                                   max_action_distance=max_action_distance)
        super().__init__(dataset, path, library, seed, library_path, max_unknown)


def recorded_source(source: str, path: str, library: ActionLibrary, seed: int, **options):
    """The training source of a recorded dataset: ``source`` is 'jsonl' or 'lerobot'."""
    if source == 'lerobot':
        options.pop('allow_external_images', None)  # a LeRobot folder names no files
        return LeRobotSource(path, library, seed, **options)
    options.pop('max_action_distance', None)   # JSONL samples are named, not matched
    return JsonlSource(path, library, seed, **options)
