"""Which library a run trains against, and where its batches come from (``data.*``)."""
from __future__ import annotations

import logging
from pathlib import Path

from ..actions.library import ActionLibrary
from ..package_share import package_file
from . import distributed
from .sources import RECORDED, ContinuousTabletopSource, TabletopSource, recorded_source

log = logging.getLogger('vla_train')
SOURCES = ('tabletop', 'tabletop_continuous', 'recorded_continuous', *RECORDED)


def library_for(data) -> Path:
    """The action library to train against: ``data.library`` when set, else the dataset's own
    ``actions.yaml`` (jsonl; a dataset written by vla-bag-to-dataset carries one) or the
    package's tabletop library."""
    if data.library:
        return Path(data.library)
    if data.source in RECORDED:
        own = Path(data.path) / ('meta/actions.yaml' if data.source == 'lerobot'
                                 else 'actions.yaml')
        if not own.is_file():
            raise ValueError(f'data.library is not set and the dataset has no {own}: name the '
                             'library its action names come from (--set data.library=...)' + (
                                 '; a LeRobot dataset\'s action vectors are then named by the '
                                 'library action with the nearest parameters'
                                 if data.source == 'lerobot' else ''))
        log.info('action library: the dataset\'s own %s', own)
        return own
    return Path(package_file('config', 'tabletop_actions.yaml'))


def make_source(cfg, library: ActionLibrary, library_path: Path, ctx: distributed.Context):
    """The training stream of ``data.source`` on this rank."""
    d = cfg.data
    if d.source == 'recorded_continuous':
        from .recorded_continuous import RecordedContinuousSource
        source = RecordedContinuousSource(d.path, library, cfg.seed, cfg.optim.counter_examples,
                                          cfg.optim.positive_jitter, strict=d.strict,
                                          other_primitive_elsewhere=cfg.optim
                                          .other_primitive_elsewhere)
        # a JSONL dataset: data.val_episodes auto holds out a tenth as for data.source jsonl
        held = source.hold_out_episodes(d.val_episodes, cfg.seed, 'jsonl', d.val_path)
        if held is not None and ctx.is_main:
            log.info('%s', held.describe(d.path, cfg.seed))
        source.shard(ctx.rank, ctx.world_size)
        return source
    if d.source not in RECORDED:
        for name in ('val_episodes', 'max_action_distance'):
            if getattr(d, name) not in ('auto', 0):
                raise ValueError(f'data.{name} is a setting of recorded datasets (data.source '
                                 f'jsonl/lerobot); data.source {d.source} validates on its '
                                 'own splits (schedule.eval_splits): leave it auto')
    if d.source == 'tabletop':
        # Every rank draws its own scenes: a seed of its own.
        return TabletopSource('train', distributed.rank_seed(cfg.seed, ctx), d.image_size,
                              d.objects, d.phrasings, d.cameras)
    if list(d.cameras) != ['top']:
        raise ValueError(f'data.cameras {d.cameras} names tabletop views; a {d.source} '
                         "dataset's cameras are its own (leave data.cameras: [top])")
    if d.source == 'tabletop_continuous':
        if library.space is None:
            raise ValueError(f"data.library {library_path} has no continuous 'space': "
                             "data.source tabletop_continuous needs a library with a "
                             "continuous 'space' (use config/tabletop_continuous_actions.yaml)")
        return ContinuousTabletopSource(
            'train', distributed.rank_seed(cfg.seed, ctx), d.image_size, d.objects,
            d.phrasings, library.space, cfg.optim.counter_examples, cfg.optim.positive_jitter,
            cfg.optim.other_primitive_elsewhere)
    if d.source in RECORDED:
        # Every rank walks the same shuffled order and takes its own slice of each
        # global batch (disjoint shards, and results independent of the world size).
        source = recorded_source(d.source, d.path, library, cfg.seed, strict=d.strict,
                                 allow_external_images=d.allow_external_images,
                                 library_path=str(library_path),
                                 max_unknown=d.max_unknown_actions,
                                 max_action_distance=action_distance(d))
        held = source.hold_out_episodes(d.val_episodes, cfg.seed, d.source, d.val_path)
        if held is not None and ctx.is_main:
            log.info('%s', held.describe(d.path, cfg.seed))
        elif ctx.is_main and not d.val_path:
            log.warning('no held-out episodes (data.val_episodes %s, %d episode(s)): the run '
                        'is not validated on %s', d.val_episodes,
                        len({str(r.get('episode', '')) for r in source.dataset.records}),
                        d.path)
        source.shard(ctx.rank, ctx.world_size)
        return source
    raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {d.source!r}")


def action_distance(data) -> float | None:
    """``data.max_action_distance`` as the LeRobot reader takes it (None = its default)."""
    value = data.max_action_distance
    if value == 'auto':
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f'data.max_action_distance must be auto or a distance > 0 (.inf: '
                         f'always the nearest action), got {value!r}')
    return float(value)


def held_out_source(cfg, library: ActionLibrary, seed: int):
    """``data.val_path``'s samples, from the start (every evaluation scores the same ones)."""
    return recorded_source(cfg.data.source, cfg.data.val_path, library, seed, strict=True,
                           allow_external_images=cfg.data.allow_external_images)
