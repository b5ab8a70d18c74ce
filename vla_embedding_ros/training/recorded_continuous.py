"""Recorded demonstrations on a continuous action space (``data.source:
recorded_continuous``): a JSONL dataset whose samples carry an ``action_vector`` of the
library's continuous space and the scene ``labels`` counter-examples need (``data/FORMAT.md``:
the target's radius, the other objects' points), as ``vla-libero-dataset`` writes them.

The stream is shuffled epochs over the samples, sharded like the other recorded sources (every
rank holds the same order and takes its slice of each global batch); whole episodes can be held
out (``data.val_episodes``) and ``data.val_path`` names a separate dataset of the same kind.
Validation scores the sampled decision (the node's DFO) on them: the chosen point within the
sample's radius with the asked primitive, searched with that primitive pinned (as libero_sim
and vla-eval ask: the robot knows it picks, then places) and, for comparison, with the model
choosing the primitive too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..actions.library import ActionLibrary
from .counter_examples import ContinuousTargets, sample_counter_examples
from .sample_stream import SampleStream

SOURCE = 'recorded_continuous'


class RecordedContinuousSource(SampleStream):
    """Batches of (images, instructions, ``CounterExamples``) from a labelled JSONL dataset."""

    def __init__(self, path: str, library: ActionLibrary, seed: int,
                 counter_examples: int = 255, positive_jitter: float = 0.3,
                 strict: bool = False, other_primitive_elsewhere: float = 0.0):
        from ..data.dataset import JSONLDataset
        if library.space is None:
            raise ValueError(f"data.source {SOURCE} needs a library with a continuous 'space' "
                             '(e.g. config/libero_actions.yaml)')
        if counter_examples < 1:
            raise ValueError(f'optim.counter_examples must be >= 1, got {counter_examples}')
        if not 0 <= positive_jitter < 1:
            raise ValueError(f'optim.positive_jitter must be in [0, 1) radii, got '
                             f'{positive_jitter}')
        self.path, self.space = path, library.space
        self.counter_examples, self.positive_jitter = counter_examples, positive_jitter
        self.elsewhere = _share(other_primitive_elsewhere)
        self.dataset = JSONLDataset(path, library=library, skip_bad=not strict)
        if len(self.dataset) == 0:
            raise ValueError(f'{path}: the dataset has no samples')
        self._check_records()
        self.usable = np.arange(len(self.dataset))
        self._start_stream(seed)
        self.negatives = torch.Generator().manual_seed(int(seed) + 1)

    def _check_records(self) -> None:
        """Every sample needs a vector of the space's size and labels with a radius: refuse
        the dataset by its first sample without them (its line in the index)."""
        size = len(self.space.parameter_names)
        for n, record in enumerate(self.dataset.records):
            vector, labels = record.get('action_vector'), record.get('labels')
            if vector is None or len(vector) != size:
                raise ValueError(f'{self.path}: sample {n} has action_vector {vector!r}; data.'
                                 f'source {SOURCE} needs {size} numbers '
                                 f'{self.space.parameter_names} per sample')
            if not isinstance(labels, dict) or not _positive(labels.get('radius')):
                raise ValueError(f'{self.path}: sample {n} has no labels.radius (> 0); data.'
                                 f'source {SOURCE} needs scene labels per sample '
                                 '(data/FORMAT.md), as vla-libero-dataset writes them')

    # --- held-out episodes, sharding and position: SampleStream ------------------------------
    def held_out(self, seed: int = 0) -> list[dict]:
        """The held-out episodes' samples, in dataset order (``seed``: unused, as the other
        sources' ``held_out`` takes one; every evaluation scores the same samples)."""
        return [self.dataset[int(i)] for i in self._held_out]

    # --- batches ------------------------------------------------------------------------------
    def next_demonstrations(self, n: int):
        """(images [n, C, H, W, 3], instructions, ``ContinuousTargets``) of this rank."""
        items = [self.dataset[int(i)] for i in self._mine(n)]
        return (np.stack([item['images'] for item in items]),
                [item['instruction'] for item in items], targets_of(items))

    def next_continuous_batch(self, n: int):
        images, instructions, targets = self.next_demonstrations(n)
        examples = sample_counter_examples(self.space, targets, self.counter_examples,
                                           self.negatives, self.positive_jitter,
                                           self.elsewhere)
        return images, instructions, examples

    def state_dict(self) -> dict:
        return {**super().state_dict(), 'negatives': self.negatives.get_state()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.negatives.set_state(torch.as_tensor(state['negatives'], dtype=torch.uint8))


def _share(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f'optim.other_primitive_elsewhere must be in [0, 1], got {value!r}')
    return float(value)


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def targets_of(items: list[dict]) -> ContinuousTargets:
    """The ``ContinuousTargets`` of dataset items (vector, labels.radius, labels.others)."""
    others = [item['labels'].get('others') or [] for item in items]
    width = max(1, max(len(o) for o in others))
    padded = np.zeros((len(items), width, 2), np.float32)
    mask = np.zeros((len(items), width), bool)
    for i, row in enumerate(others):
        if row:
            padded[i, :len(row)] = np.asarray(row, np.float32)[:, :2]
            mask[i, :len(row)] = True
    return ContinuousTargets(
        torch.from_numpy(np.stack([np.asarray(item['action_vector'], np.float32)
                                   for item in items])),
        torch.tensor([float(item['labels']['radius']) for item in items]),
        torch.from_numpy(padded), torch.from_numpy(mask))


@dataclass
class PointResult:
    """Sampled decisions on labelled samples: within the radius with the asked primitive,
    and the mean distance to the demonstrated point (continuous units, and in radii); the
    model choosing the primitive (``success``, ``primitive_ok``) and the same search with the
    asked primitive pinned (``pinned_success``; equal to ``success`` without a choice)."""
    n: int
    success: float
    error: float
    error_radii: float
    primitive_ok: float
    pinned_success: float


def evaluate_points(model, space, items: list[dict], sampling=None) -> PointResult:
    """The node's sampled decision (DFO) for each labelled item, judged against its label."""
    from ..selection.preprocess import ImagePreprocessor
    from ..selection.sampling import SamplingConfig
    from .continuous_eval import decide_sampled
    was_training = model.training
    model.eval()
    try:
        preprocess = ImagePreprocessor(model.image_size, model.image_mean, model.image_std,
                                       model.device)
        queries = []
        with torch.inference_mode():
            for start in range(0, len(items), 64):
                part = items[start:start + 64]
                pixels = preprocess([item['images'][0] for item in part])
                queries.append(model.encode_query(pixels, [item['instruction'] for item in part]))
        queries = torch.cat(queries)
        sampling = sampling or SamplingConfig()
        targets = targets_of(items)
        asked_choice, asked = (t.numpy() for t in space.split(targets.vectors))
        vectors = decide_sampled(model, space, queries, sampling)
        pinned = (decide_sampled(model, space, queries, sampling,
                                 [space.options[c] for c in asked_choice])
                  if space.options else vectors)
    finally:
        model.train(was_training)
    radii = targets.radii.numpy()

    def judged(found):
        chosen_choice, chosen = (t.numpy() for t in space.split(torch.as_tensor(found)))
        return chosen_choice == asked_choice, np.linalg.norm(chosen - asked, axis=1)

    same, dist = judged(vectors)
    pinned_same, pinned_dist = judged(pinned)
    return PointResult(len(items), float(np.mean(same & (dist <= radii))), float(dist.mean()),
                       float((dist / radii).mean()), float(same.mean()),
                       float(np.mean(pinned_same & (pinned_dist <= radii))))
