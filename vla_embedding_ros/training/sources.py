"""Where training batches come from: the procedural tabletop stream or a JSONL dataset.

Both give batches of (images uint8 [B, C, H, W, 3] RGB, instructions, action indices) and can
save and restore their position, so a resumed run draws exactly the batches an uninterrupted
run would have drawn.
"""
from __future__ import annotations

import numpy as np

from ..data.tabletop import TabletopConfig, TabletopGenerator
from ..data.tabletop.generator import collate
from ..selection.library import ActionLibrary
from .region import scene_labels


class TabletopSource:
    def __init__(self, split: str, seed: int, image_size: int, objects=None,
                 phrasings: int = 0):
        """objects: [min, max] per scene; None keeps TabletopConfig's range. phrasings: the
        training split's pool of phrasings per goal (0 = the whole grammar)."""
        ranges = {}
        if objects is not None:
            if (not isinstance(objects, (list, tuple)) or len(objects) != 2 or not all(
                    isinstance(n, int) and not isinstance(n, bool) for n in objects)):
                raise ValueError(f'data.objects must be [min, max] integers, got {objects!r}')
            ranges = {'min_objects': objects[0], 'max_objects': objects[1]}
        config = TabletopConfig(image_size=image_size, phrasings=phrasings, **ranges)
        self.generator = TabletopGenerator(config, split, seed)

    def next_batch(self, n: int):
        images, instructions, indices = self.generator.batch(n)
        return images[:, None], instructions, indices

    def next_labelled_batch(self, n: int):
        """``next_batch`` plus the scenes' per-cell labels (see ``region.scene_labels``)."""
        samples = list(self.generator.samples(n))
        images, instructions, indices = collate(samples)
        return images[:, None], instructions, indices, scene_labels(samples)

    def state_dict(self) -> dict:
        return {'rng': self.generator.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.generator.rng.bit_generator.state = state['rng']


class JsonlSource:
    """Shuffled epochs over a dataset directory; bad samples are skipped and counted."""

    def __init__(self, path: str, library: ActionLibrary, seed: int, strict: bool = False,
                 allow_external_images: bool = False):
        from ..data.dataset import JSONLDataset
        self.dataset = JSONLDataset(path, library=library, skip_bad=not strict,
                                    allow_external_images=allow_external_images)
        if len(self.dataset) == 0:
            raise ValueError(f'{path}: the dataset has no samples')
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(self.dataset))
        self.position = 0

    @property
    def skipped(self) -> int:
        return int(getattr(self.dataset, 'skipped', 0))

    def next_batch(self, n: int):
        images, instructions, indices = [], [], []
        while len(images) < n:
            if self.position >= len(self.order):
                self.order, self.position = self.rng.permutation(len(self.dataset)), 0
            item = self.dataset[int(self.order[self.position])]
            self.position += 1
            if item is None or item['action_index'] < 0:
                continue  # a bad sample (counted by the dataset) or an action not in the library
            images.append(item['images'])
            instructions.append(item['instruction'])
            indices.append(item['action_index'])
        return np.stack(images), instructions, np.asarray(indices, np.int64)

    def state_dict(self) -> dict:
        return {'rng': self.rng.bit_generator.state, 'order': self.order.copy(),
                'position': self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state['rng']
        self.order, self.position = np.asarray(state['order']), int(state['position'])
