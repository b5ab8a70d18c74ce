"""`vla-train`: learn the joint vision-language-action space offline.

    vla-train --config config/train_tabletop.yaml --set optim.steps=200 --set run_name=quick
    vla-train --config config/train_tabletop.yaml --resume          # continue runs/<name>
    vla-train ... --export models/tabletop                          # copy the final model

Every step scores each query against the whole action library with the multi-positive
contrastive loss (samples sharing an action are all positives), optionally plus an
image<->instruction alignment term.
"""
# This module wires a run and its loop (and is vla-train's entry point); the parts are modules
# of their own: objectives.py (each lane's checks, batches and loss), model_factory.py,
# source_factory.py, optimizer.py (optimiser, schedule, guarded update), run_logs.py,
# checkpoint.py and export.py.
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..actions.library import ActionLibrary
from ..data.dataset import BadSampleError
from ..model import resolve_device
from . import checkpoint as ckpt
from . import distributed, metrics, model_factory, objectives, run_folder
from . import optimizer as optim
from .config import TrainConfig, changed_settings, continued_config, load_config
from .export import FACTS_FILE, export_model, training_facts
from .optimizer import lr_lambda
from .run_evaluation import EVAL_SEED, RunEvaluation
from .run_logs import RunLogs, write_run_config
from .run_request import check_input_paths, resume_request
from .source_factory import library_for, make_source

# Names other modules import from here: the trainer's parts now live in their own modules.
__all__ = ['EVAL_SEED', 'Trainer', 'export_model', 'library_for', 'lr_lambda', 'main']
log = logging.getLogger('vla_train')


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One run: its model, objective (``training/objectives.py``), optimiser, checkpoints and
    logs, built from a config (or, with ``resume``, from the run's last checkpoint)."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite_run: bool = False):
        """``resume``: continue ``cfg.run_dir`` from its last checkpoint with the saved run's
        settings, changed only where ``cfg`` changes a resumable one. Otherwise a new run,
        which never writes into a folder holding another run (``run_folder.py``): it gets a
        fresh ``run_name`` unless ``overwrite_run`` (the old run is then removed)."""
        start, state = None, None
        if resume:
            start = ckpt.latest_checkpoint(cfg.run_dir)
            if start is None:
                raise ValueError(f'--resume: nothing to resume, no checkpoint under '
                                 f'{ckpt.checkpoints_dir(cfg.run_dir)}; leave out --resume to '
                                 'start the run')
            # Read once: its config decides the run, the rest is restored at the end.
            state = ckpt.load_training_state(start)
            saved = state['config']
            cfg = continued_config(saved, cfg)
            self._resume_changes = changed_settings(saved, cfg)
        self.cfg = cfg
        lane = objectives.lane_for(cfg)
        # Every setting the run cannot honour is refused here, by name, before anything is built.
        optim.check(cfg.optim)
        lane.check(cfg)
        model_factory.check(cfg)
        self.ctx, self.device = distributed.setup(resolve_device(cfg.device))
        if not resume:
            # Rank 0 picks the folder; every rank writes (rank 0) and reads it alike.
            name = (run_folder.claim_run_name(cfg.output_dir, cfg.run_name, overwrite_run)
                    if self.ctx.is_main else None)
            name = distributed.gather_objects(name, self.ctx)[0]
            cfg = self.cfg = dataclasses.replace(cfg, run_name=name)
        if self.ctx.is_main:
            log.info('world size %d, effective batch %d (%d per rank), %s',
                     self.ctx.world_size, self.effective_batch, cfg.optim.batch_size,
                     f'backend {self.ctx.backend}' if self.ctx.distributed
                     else 'one process (torchrun --nproc_per_node N for more)')
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.run_dir = cfg.run_dir
        self.library_path = library_for(cfg.data)
        self.library = ActionLibrary.from_yaml(self.library_path)
        seed_everything(cfg.seed)
        self.continuous = lane is objectives.CounterExampleObjective
        self.source = make_source(cfg, self.library, self.library_path, self.ctx)
        # data.val_episodes: episodes of the user's dataset held out of self.source
        held = getattr(self.source, 'held_out_info', None)
        self.evaluation = RunEvaluation(
            cfg, self.library, self.source.held_out(EVAL_SEED) if held is not None else None,
            self.continuous)
        self.model = model_factory.make_model(
            cfg, self.library, self.library_path, self.device,
            resume_from=start / ckpt.MODEL_DIR if start is not None else None)
        self.model.train()
        self.objective = lane(cfg, self.model, self.source, self.library, self.device,
                              self.ctx)
        o = self.objective   # its parts, under the names tests and benches read
        self.region, self.head, self.preprocess, self.augment = \
            o.region, o.head, o.preprocess, o.augment
        self.optimizer = optim.build_optimizer(self.model, cfg, o.training_modules())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.autocast, self.scaler = optim.autocast_for(self.device, cfg.optim.amp)
        self.update = optim.Updater(self.optimizer, self.scheduler, self.scaler,
                                    cfg.optim.grad_clip, self.ctx)
        self.step = 0
        self.last_eval: dict | None = None   # {'step', 'results'}: saved with checkpoints
        self._warned_eval = False
        if state is not None:
            self._restore(start, state)
        elif self.ctx.rank > 0:
            # Ranks share the model's initial weights (DDP broadcasts rank 0's) but not their
            # dropout masks.
            torch.manual_seed(distributed.rank_seed(cfg.seed, self.ctx))
        self.forward = o.wrap()

    @property
    def effective_batch(self) -> int:
        """Samples per optimisation step over all ranks."""
        return self.cfg.optim.batch_size * self.ctx.world_size

    @property
    def skipped_steps(self) -> int:
        """Updates skipped for a non-finite loss or gradient (saved with the run)."""
        return self.update.skipped_steps

    @skipped_steps.setter
    def skipped_steps(self, count: int) -> None:
        self.update.skipped_steps = count

    def _restore(self, checkpoint: Path, state: dict) -> None:
        if self.region is not None and state.get('region'):
            self.region.load_state_dict(state['region'])
        if self.head is not None and state.get('projection_head'):
            self.head.load_state_dict(state['projection_head'])
        self.optimizer.load_state_dict(state['optimizer'])
        self.scheduler.load_state_dict(state['scheduler'])
        if self.scaler is not None and state.get('scaler'):
            self.scaler.load_state_dict(state['scaler'])
        saved_world = int(state.get('world_size', 1))
        if saved_world != self.ctx.world_size:
            raise ValueError(f'--resume: {checkpoint} was written by a run of world size '
                             f'{saved_world}; resume it with the same number of processes '
                             f'(this one has {self.ctx.world_size})')
        per_rank = state.get('per_rank')
        own = per_rank[self.ctx.rank] if per_rank else state
        self.source.load_state_dict(own['source'])
        ckpt.set_rng_state(own['rng'])
        if self.augment is not None:
            if own.get('augment'):
                self.augment.load_state_dict(own['augment'])
            else:
                log.warning('%s has no augmentation state (written without augmentation): '
                            'augmenting from a fresh generator', checkpoint)
        self.step = int(state['step'])
        self.skipped_steps = int(state.get('skipped_steps', 0))
        changes = ', '.join(f'{k} {old!r} -> {new!r}' for k, (old, new)
                            in self._resume_changes.items()) or 'none'
        log.info('resuming %s from step %d of %d (checkpoint %s); settings changed: %s',
                 self.run_dir, self.step, self.cfg.optim.steps, checkpoint, changes)

    def train_step(self) -> dict:
        """Draw the objective's next batch, compute its loss, update (or skip, counted)."""
        batch = self.objective.next_batch()
        with self.autocast:
            loss = self.objective.loss(batch)
        return self.update(loss, self.step)

    # -- evaluation, checkpoints, logs ---------------------------------------------------
    def evaluate(self) -> dict[str, dict]:
        """Top-1/5 and MRR per split (``run_evaluation.py``)."""
        return self.evaluation(self.model)

    def save(self) -> Path | None:
        """Rank 0 writes the checkpoint, with every rank's data position and RNG state so a
        resumed distributed run draws what an uninterrupted one would; returns its directory
        (None on the other ranks, which wait until it is written)."""
        per_rank = distributed.gather_objects(
            {'source': self.source.state_dict(), 'rng': ckpt.rng_state(),
             'augment': self.augment.state_dict() if self.augment is not None else None},
            self.ctx)
        path = None
        if self.ctx.is_main:
            state = {'optimizer': self.optimizer.state_dict(),
                     'scheduler': self.scheduler.state_dict(),
                     'scaler': self.scaler.state_dict() if self.scaler is not None else None,
                     **per_rank[0], 'world_size': self.ctx.world_size,
                     'per_rank': per_rank if self.ctx.distributed else None,
                     'skipped_steps': self.skipped_steps, 'config': self.cfg.to_dict(),
                     'region': self.region.state_dict() if self.region is not None else None,
                     'projection_head': (self.head.state_dict() if self.head is not None
                                         else None)}
            facts = training_facts(self.cfg, self.library_path, self.step,
                                   getattr(self.source, 'held_out_info', None), EVAL_SEED,
                                   self.last_eval)
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.model, state,
                                        extra_files={'actions.yaml': self.library_path},
                                        keep_last=self.cfg.schedule.keep_last,
                                        extra_text={FACTS_FILE: facts})
        distributed.barrier(self.ctx)
        return path

    def run(self, progress: bool = True, stop_at: int | None = None) -> dict:
        """Train to optim.steps (or stop early at `stop_at`, e.g. to test resuming)."""
        cfg, main = self.cfg, self.ctx.is_main
        end = min(cfg.optim.steps, stop_at or cfg.optim.steps)
        logs = None
        if main:  # one process writes the run's files; the others only train
            self.run_dir.mkdir(parents=True, exist_ok=True)
            held = getattr(self.source, 'held_out_info', None)
            write_run_config(self.run_dir, cfg.to_dict(),
                             held.describe(cfg.data.path, cfg.seed) if held else '')
            logs = RunLogs(self.run_dir, self.step)
            log.info('run folder %s (config.yaml, train.csv, eval.csv); checkpoints in %s',
                     self.run_dir, ckpt.checkpoints_dir(self.run_dir))
            self._announce_text_encoding()
        bar = tqdm(total=cfg.optim.steps, initial=self.step, disable=not (progress and main),
                   dynamic_ncols=True, desc=cfg.run_name)
        window_start, window_samples = time.perf_counter(), 0
        last_eval: dict = {}
        try:
            while self.step < end:
                out = self.train_step()
                self.step += 1
                window_samples += self.effective_batch
                bar.update(1)
                if main and (self.step % cfg.schedule.log_every == 0
                             or self.step == cfg.optim.steps):
                    rate = window_samples / max(1e-9, time.perf_counter() - window_start)
                    window_start, window_samples = time.perf_counter(), 0
                    row = {'step': self.step, 'loss': out['loss'],
                           'lr': self.scheduler.get_last_lr()[0], 'samples_per_s': rate,
                           'logit_scale': self.model.scale().item(),
                           'skipped_steps': self.skipped_steps}
                    logs.train(row)
                    bar.set_postfix(loss=f'{out["loss"]:.3f}', rate=f'{rate:.0f}/s')
                if self.step % cfg.schedule.eval_every == 0 or self.step == cfg.optim.steps:
                    if main:
                        last_eval = self.evaluate()
                        self.last_eval = {'step': self.step, 'results': last_eval}
                        logs.evaluation(self.step, last_eval)
                        bar.write(f'step {self.step}: ' + ', '.join(
                            f'{s} top1 {100 * m["top1"]:.1f}%' for s, m in last_eval.items()))
                    distributed.barrier(self.ctx)
                if self.step % cfg.schedule.save_every == 0 or self.step == cfg.optim.steps:
                    self.save()
        finally:
            bar.close()
            if logs is not None:
                logs.close()
            self._report_skipped_samples()
        return last_eval

    def _announce_text_encoding(self) -> None:
        """Say why the first steps are slow: a frozen text encoder meets each training
        sentence once, inside the progress bar, before its cache answers."""
        if self.objective.text_features is None or self.step > 0:
            return
        pool = self.cfg.data.phrasings if self.cfg.data.source.startswith('tabletop') else 0
        what = (f'each of the training sentences ({pool} phrasings per goal)' if pool
                else 'each new instruction')
        log.info('the first steps run slower: the frozen text encoder encodes %s once as it '
                 'first appears, then reads it from a cache (about a minute for 200 phrasings '
                 'per goal on 2 CPU cores)', what)

    def _report_skipped_samples(self) -> None:
        bad = getattr(getattr(self.source, 'dataset', None), 'bad', {})
        if bad:
            first = next(iter(bad.items()))
            log.warning('%d bad dataset sample(s) skipped (use --strict to fail instead); '
                        'first: %s: %s', len(bad), *first)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='vla-train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='training YAML (see config/train_tabletop.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE', help='override a config value, e.g. optim.lr=3e-4')
    parser.add_argument('--resume', action='store_true',
                        help='continue runs/<run_name> from its last checkpoint with the saved '
                             'run\'s own settings: the config file only names the run, and '
                             'only --set may change optim.steps, schedule.*, threads, device or '
                             'data.num_workers (e.g. --set optim.steps=3500); fails when there '
                             'is nothing to resume')
    parser.add_argument('--export', metavar='DIR',
                        help='after training, copy the final model to DIR (e.g. models/mine); '
                             'an existing DIR is refused before training unless --overwrite')
    parser.add_argument('--overwrite', action='store_true',
                        help='let --export replace a model already in DIR (the run folder is '
                             'never replaced by it: see --overwrite-run)')
    parser.add_argument('--overwrite-run', action='store_true',
                        help='start the run in runs/<run_name> even when a run is there, '
                             'removing that run (its checkpoints and logs). Without it a new '
                             'run whose folder is taken writes to runs/<run_name>-<timestamp>')
    parser.add_argument('--strict', action='store_true',
                        help='fail on the first bad dataset sample (missing or corrupt image, '
                             'bad index line), naming it, instead of skipping and counting it '
                             '(sets data.strict=true)')
    parser.add_argument('--no-progress', action='store_true', help='no tqdm bar')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    try:
        return _main(argv)
    finally:
        distributed.shutdown()


def _main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get('RANK', '0'))
    # Under torchrun only rank 0 says what the run does; the others speak up for problems.
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=('' if rank == 0 else f'[rank {rank}] ')
                        + '%(levelname)s %(name)s: %(message)s')
    overrides = args.overrides + (['data.strict=true'] if args.strict else [])
    try:
        cfg = load_config(args.config, overrides)
        check_input_paths(cfg)
        if args.resume:
            cfg = resume_request(cfg, overrides)
    except (OSError, ValueError) as err:
        print(f'vla-train: {err}', file=sys.stderr)
        return 2
    if args.resume and args.overwrite_run:
        print('vla-train: --resume continues the run, --overwrite-run replaces it: pick one',
              file=sys.stderr)
        return 2
    if args.export and Path(args.export).exists() and not args.overwrite:
        print(f'vla-train: --export {args.export} exists (a model may be there, the shipped one '
              'lives in models/tabletop); pass --overwrite to replace it, or export elsewhere',
              file=sys.stderr)
        return 2
    trainer = None
    try:
        trainer = Trainer(cfg, resume=args.resume, overwrite_run=args.overwrite_run)
        started = time.perf_counter()
        results = trainer.run(progress=not args.no_progress)
    except (BadSampleError, FileNotFoundError) as err:  # the message names the file
        print(f'vla-train: {err}', file=sys.stderr)
        return 1
    except ValueError as err:
        if trainer is not None:
            raise   # an error while training is a bug to see whole, not a setting
        print(f'vla-train: {err}', file=sys.stderr)   # a setting the trainer cannot honour
        return 2
    if not trainer.ctx.is_main:
        return 0
    minutes = (time.perf_counter() - started) / 60
    title = f'{trainer.cfg.run_name}: step {trainer.step}, {minutes:.1f} min'
    print(metrics.format_table(list(results.items()), title=title))
    last = ckpt.latest_checkpoint(trainer.run_dir)
    print(f'run: {trainer.run_dir}; checkpoints: {ckpt.checkpoints_dir(trainer.run_dir)} '
          f'(last: {last})')
    if args.export:
        export_model(last, Path(args.export))
        print(f'exported the model of {last} to {args.export}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
