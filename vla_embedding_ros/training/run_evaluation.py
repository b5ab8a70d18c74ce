"""What a run scores itself on every ``schedule.eval_every`` steps: the held-out episodes of
the user's dataset (``data.val_episodes``), ``data.val_path``, and the procedural tabletop
splits (``schedule.eval_splits``) when the library is the tabletop's."""
from __future__ import annotations

import logging

from ..data.tabletop import ACTION_NAMES
from . import metrics
from .continuous_eval import evaluate_continuous
from .evaluation import LibraryScorer, dataset_ranks, tabletop_ranks
from .source_factory import held_out_source

log = logging.getLogger('vla_train')
EVAL_SEED = 10_007  # evaluation streams never share a seed with the training stream
HELD_OUT_SPLIT = 'held_out_episodes'   # eval.csv's name for data.val_episodes' episodes


class RunEvaluation:
    """Top-1/5 and MRR per split of one run's model (``held_out``: the training source's
    held-out episodes as a source, or None); continuous runs score the sampled decision."""

    def __init__(self, cfg, library, held_out=None, continuous: bool = False):
        self.cfg, self.library, self.held_out = cfg, library, held_out
        self.continuous = continuous
        self._warned = False
        self._val_items = None

    def __call__(self, model) -> dict[str, dict]:
        if self.continuous:
            return self._continuous(model)
        scorer = LibraryScorer(model, self.library)
        schedule, results = self.cfg.schedule, {}
        if self.held_out is not None:
            # The same samples every time: the held-out episodes from their first sample.
            self.held_out.rewind()
            results[HELD_OUT_SPLIT] = metrics.summarise(
                dataset_ranks(scorer, self.held_out, schedule.eval_samples))
        if self.cfg.data.val_path:
            # A fresh source each time: every evaluation scores the same held-out samples.
            held_out = held_out_source(self.cfg, self.library, EVAL_SEED)
            results['val_dataset'] = metrics.summarise(
                dataset_ranks(scorer, held_out, schedule.eval_samples))
        if self.library.names == list(ACTION_NAMES):
            for split in schedule.eval_splits:
                ranks, _ = tabletop_ranks(scorer, split, schedule.eval_samples, EVAL_SEED,
                                          self.cfg.data.image_size,
                                          cameras=self.cfg.data.cameras)
                results[split] = metrics.summarise(ranks)
        elif schedule.eval_splits and not self._warned:
            # Tabletop scenes are scored against the tabletop library; another library has
            # other actions, so those splits would be meaningless here.
            log.warning('library is not the tabletop library: tabletop eval splits skipped')
            self._warned = True
        return results

    def _continuous(self, model) -> dict[str, dict]:
        """Success of the sampled decision (DFO, the node's defaults) on fresh continuous
        scenes per eval split, or on a recorded dataset's held-out episodes and
        ``data.val_path``; ``top1`` is that success (top5 and mrr do not apply)."""
        if self.cfg.data.source == 'recorded_continuous':
            return self._recorded_points(model)
        results = {}
        for split in self.cfg.schedule.eval_splits:
            found = evaluate_continuous(model, self.library, split,
                                        self.cfg.schedule.eval_samples, EVAL_SEED,
                                        image_size=self.cfg.data.image_size)
            results[split] = {'n': found.n, 'top1': found.success, 'top5': float('nan'),
                              'mrr': float('nan'), 'error_radii': found.error}
        return results

    def _recorded_points(self, model) -> dict[str, dict]:
        from .recorded_continuous import RecordedContinuousSource, evaluate_points
        splits = {}
        if self.held_out is not None:
            splits[HELD_OUT_SPLIT] = self.held_out
        if self.cfg.data.val_path:
            if self._val_items is None:   # read once: every evaluation scores the same ones
                val = RecordedContinuousSource(self.cfg.data.val_path, self.library, EVAL_SEED,
                                               strict=True)
                self._val_items = [val.dataset[i] for i in range(len(val.dataset))]
            splits['val_dataset'] = self._val_items
        results = {}
        for split, items in splits.items():
            items = items[:self.cfg.schedule.eval_samples]
            found = evaluate_points(model, self.library.space, items)
            # top1: the decision as deployed (the asked primitive pinned); free_top1: the
            # model choosing the primitive too
            results[split] = {'n': found.n, 'top1': found.pinned_success,
                              'free_top1': found.success, 'top5': float('nan'),
                              'mrr': float('nan'), 'error_radii': found.error_radii,
                              'error': found.error, 'primitive': found.primitive_ok}
        return results
