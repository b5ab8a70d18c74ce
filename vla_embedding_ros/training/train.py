"""`vla-train`: learn the joint vision-language-action space offline.

    vla-train --config config/train_tabletop.yaml --set optim.steps=200 --set run_name=quick
    vla-train --config config/train_tabletop.yaml --resume          # continue runs/<name>
    vla-train ... --export models/tabletop                          # copy the final model

Every step scores each query against the whole action library with the multi-positive
contrastive loss (samples sharing an action are all positives), optionally plus an
image<->instruction alignment term.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..actions.library import ActionLibrary
from ..data.dataset import BadSampleError
from ..data.tabletop import ACTION_NAMES
from ..files import make_shareable
from ..model import VLAConfig, VLAModel, resolve_device
from ..model.losses import symmetric_infonce
from ..model.pretrained_space import load_joint_model, new_pretrained_space, uses_pretrained_space
from ..package_share import package_file
from ..selection.preprocess import ImagePreprocessor
from . import camera_dropout, distributed, metrics, objectives
from . import checkpoint as ckpt
from .augment import Augmenter
from .config import TrainConfig, continued_config, load_config
from .continuous_eval import evaluate_continuous
from .counter_examples import counter_example_loss
from .evaluation import LibraryScorer, dataset_ranks, tabletop_ranks
from .region import RegionSupervision
from .sources import RECORDED, ContinuousTabletopSource, TabletopSource, recorded_source
from .step_forward import StepForward
from .text_cache import TextFeatureCache

log = logging.getLogger('vla_train')
EVAL_SEED = 10_007  # evaluation streams never share a seed with the training stream
AUGMENT_SEED = 7_919  # the augmentation generator's offset from the run's seed


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_lambda(cfg: TrainConfig):
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak."""
    o = cfg.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / max(1, o.warmup_steps)
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_optimizer(model: VLAModel, cfg: TrainConfig,
                    extra: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW; pretrained encoders (when trainable) get encoder_lr; no decay on norms/biases.
    ``extra``: training-only modules (auxiliary heads) optimised with the model."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    pretrained = set()
    for part in (model.vision, model.text):
        if getattr(part, 'pretrained', False):
            pretrained.update(id(p) for p in part.parameters())
    named = list(model.named_parameters())
    if extra is not None:
        named += [(f'aux.{n}', p) for n, p in extra.named_parameters()]
    for name, param in named:
        if not param.requires_grad:
            continue
        lr = cfg.optim.encoder_lr if id(param) in pretrained else cfg.optim.lr
        decay = 0.0 if param.ndim < 2 or 'norm' in name or 'embed' in name \
            else cfg.optim.weight_decay
        groups.setdefault((lr, decay), []).append(param)
    return torch.optim.AdamW([{'params': ps, 'lr': lr, 'weight_decay': wd}
                              for (lr, wd), ps in groups.items()])


def autocast_for(device: torch.device, amp: str):
    """bf16/fp16 autocast on CUDA only; CPU autocast is slower than fp32 for these sizes."""
    if device.type != 'cuda' or amp == 'none':
        return nullcontext(), None
    dtype = torch.float16 if amp == 'fp16' else torch.bfloat16
    scaler = torch.amp.GradScaler('cuda') if dtype == torch.float16 else None
    return torch.autocast('cuda', dtype=dtype), scaler


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


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        start, state = None, None
        if resume:
            start = ckpt.latest_checkpoint(cfg.run_dir)
            if start is None:
                raise ValueError(f'--resume: nothing to resume, no checkpoint under '
                                 f'{ckpt.checkpoints_dir(cfg.run_dir)}; leave out --resume to '
                                 'start the run')
            # Read once: its config decides the run, the rest is restored at the end.
            state = ckpt.load_training_state(start)
            cfg = continued_config(state['config'], cfg)
        self.cfg = cfg
        if cfg.optim.warmup_steps >= cfg.optim.steps:
            log.warning('optim.warmup_steps %d >= optim.steps %d: the whole run is warm-up and '
                        'the learning rate never reaches optim.lr; lower warmup_steps (e.g. '
                        '--set optim.warmup_steps=%d)', cfg.optim.warmup_steps,
                        cfg.optim.steps, max(1, cfg.optim.steps // 10))
        objectives.check(cfg.optim)
        self.ctx, self.device = distributed.setup(resolve_device(cfg.device))
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
        self.continuous = cfg.data.source == 'tabletop_continuous'
        self.source = self._make_source()
        if start is not None:
            self.model = load_joint_model(start / ckpt.MODEL_DIR, device=self.device)
        else:
            self.model = self._new_model()
        self.model.train()
        fusion_cfg = getattr(getattr(self.model, 'config', None), 'fusion', None)
        camera_dropout.check(cfg.optim, getattr(fusion_cfg, 'type', None),
                             len(cfg.data.cameras))
        self.camera_dropout = camera_dropout.CameraDropout(cfg.optim.camera_dropout,
                                                           cfg.optim.image_dropout)
        self.library_params = torch.tensor(self.library.params(), device=self.device)
        self.descriptions = [a.description for a in self.library.actions]
        self.region = self._region_supervision()
        self.head = self._projection_head()
        aux = {name: m for name, m in (('region', self.region), ('head', self.head)) if m}
        self.optimizer = build_optimizer(self.model, cfg,
                                         torch.nn.ModuleDict(aux) if aux else None)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.autocast, self.scaler = autocast_for(self.device, cfg.optim.amp)
        self.preprocess = ImagePreprocessor(self.model.image_size, self.model.image_mean,
                                            self.model.image_std, self.device)
        self.augment = self._augmenter()
        frozen_text = not any(p.requires_grad for p in self.model.text.parameters())
        self.text_features = (TextFeatureCache(self.model.encode_text) if frozen_text
                              else self.model.encode_text)
        self.step = 0
        self.skipped_steps = 0
        self._warned_eval = False
        if state is not None:
            self._restore(start, state)
        elif self.ctx.rank > 0:
            # Ranks share the model's initial weights (DDP broadcasts rank 0's) but not their
            # dropout masks.
            torch.manual_seed(distributed.rank_seed(cfg.seed, self.ctx))
        o = cfg.optim
        idle_heads = o.align_weight <= 0 or (self.region is not None and min(
            o.region_weight, o.target_cell_weight) <= 0)
        self.forward = distributed.wrap(
            StepForward(self.model, self.text_features, self.region, self.head), self.ctx,
            self.device,
            find_unused=idle_heads)

    @property
    def effective_batch(self) -> int:
        """Samples per optimisation step over all ranks."""
        return self.cfg.optim.batch_size * self.ctx.world_size

    def _make_source(self):
        d = self.cfg.data
        if d.source == 'tabletop':
            # Every rank draws its own scenes: a seed of its own.
            return TabletopSource('train', distributed.rank_seed(self.cfg.seed, self.ctx),
                                  d.image_size, d.objects, d.phrasings, d.cameras)
        if list(d.cameras) != ['top']:
            raise ValueError(f'data.cameras {d.cameras} names tabletop views; a {d.source} '
                             "dataset's cameras are its own (leave data.cameras: [top])")
        if d.source == 'tabletop_continuous':
            if self.library.space is None:
                raise ValueError(f"data.source tabletop_continuous needs a library with a "
                                 f"continuous 'space'; {self.library_path} has none (use "
                                 'config/tabletop_continuous_actions.yaml)')
            return ContinuousTabletopSource(
                'train', distributed.rank_seed(self.cfg.seed, self.ctx), d.image_size,
                d.objects, d.phrasings, self.library.space, self.cfg.optim.counter_examples,
                self.cfg.optim.positive_jitter)
        if d.source in RECORDED:
            # Every rank walks the same shuffled order and takes its own slice of each
            # global batch (disjoint shards, and results independent of the world size).
            source = recorded_source(d.source, d.path, self.library, self.cfg.seed,
                                     strict=d.strict,
                                     allow_external_images=d.allow_external_images,
                                     library_path=str(self.library_path),
                                     max_unknown=d.max_unknown_actions)
            source.shard(self.ctx.rank, self.ctx.world_size)
            return source
        raise ValueError(f"data.source must be 'tabletop', 'tabletop_continuous', 'jsonl' or "
                         f"'lerobot', got "
                         f'{d.source!r}')

    def _new_model(self) -> VLAModel:
        if self.cfg.init_from:
            # Fine-tuning: the checkpoint's architecture and weights; `model:` is ignored.
            model = VLAModel.from_pretrained(self.cfg.init_from, device=self.device)
            if 'action' in self.cfg.model:
                self._replace_action_encoder(model)
            width = self.library.param_dim
            if model.param_dim != width:
                raise ValueError(f'init_from {self.cfg.init_from}: the model scores actions '
                                 f'of {model.param_dim} parameters, the library '
                                 f'{self.library_path} has {width}')
            log.info('initialised from %s', self.cfg.init_from)
            return model
        if uses_pretrained_space(self.cfg.model):
            # model.init: clip|siglip: the checkpoint's own joint space, fine-tuned end to
            # end (model/pretrained_space.py)
            return new_pretrained_space(self.cfg.model, self.cfg.optim, self.device)
        model_cfg = dict(self.cfg.model)
        model_cfg['action'] = self._action_settings(model_cfg.get('action', {}))
        model = VLAModel(VLAConfig.from_dict(model_cfg)).to(self.device)
        model.action.set_param_stats(*self._param_stats())
        return model

    def _action_settings(self, action: dict) -> dict:
        """``model.action`` completed from the library: its width and, with a continuous
        space, which parameters are continuous and the bounds training samples."""
        action = dict(action, param_dim=self.library.param_dim)
        space = self.library.space
        if space is not None:
            low, high = space.bounds()
            action['continuous_dims'] = list(range(len(space.options), space.param_dim))
            action['continuous_low'] = [0.0] * len(space.options) + low.tolist()
            action['continuous_high'] = [1.0] * len(space.options) + high.tolist()
        return action

    def _param_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std the action encoder standardises with: of the space's uniform
        distribution when there is one (what training samples), else of the library."""
        space = self.library.space
        if space is None:
            params = self.library.params()
            return params.mean(axis=0), params.std(axis=0)
        share = 1.0 / max(1, len(space.options))
        low, high = space.bounds()
        mean = np.concatenate([np.full(len(space.options), share), (low + high) / 2])
        std = np.concatenate([np.full(len(space.options), math.sqrt(share * (1 - share))),
                              (high - low) / math.sqrt(12)])
        return mean.astype(np.float32), std.astype(np.float32)

    def _replace_action_encoder(self, model: VLAModel) -> None:
        """Fine-tuning with ``model.action`` set: a new action encoder of those settings on the
        checkpoint's image, text and fusion weights (e.g. Fourier features for a continuous
        space on top of a grid-trained model)."""
        from ..model.config import ActionConfig, _build
        from ..model.encoders import ActionEncoder
        settings = self._action_settings(self.cfg.model['action'])
        config = _build(ActionConfig, settings, 'model.action.')
        model.config.action = config
        model.config.validate()
        model.action = ActionEncoder(config, model.config.embed_dim,
                                     model.text.hidden_size).to(self.device)
        model.action.set_param_stats(*self._param_stats())
        log.info('init_from %s with a new action encoder (model.action: %s)',
                 self.cfg.init_from, settings)

    def _augmenter(self) -> Augmenter | None:
        """data.augment's Augmenter, or None when it is off; says which, and why, in one
        line. Every rank holds the same generator and augments its own slice of the global
        batch (the same augmented batches at any world size, like the recorded sources)."""
        aug = self.cfg.data.augment
        on, why = aug.active(self.cfg.data.source)
        if self.ctx.is_main:
            log.info('image augmentation %s (%s)%s', 'on' if on else 'off', why,
                     f': {aug.describe()}' if on else '')
        if not on:
            return None
        return Augmenter(aug, self.model.image_mean, self.model.image_std, self.device,
                         self.cfg.seed + AUGMENT_SEED, self.ctx.rank, self.ctx.world_size)

    def _projection_head(self) -> objectives.ProjectionHead | None:
        width = self.cfg.optim.projection_dim
        if width <= 0:
            return None
        with torch.no_grad():  # the joint space's width, whichever model builds it
            dim = self.model.encode_actions(self.library_params[:1],
                                            self.descriptions[:1]).shape[-1]
        return objectives.ProjectionHead(dim, width).to(self.device)

    def _region_supervision(self) -> RegionSupervision | None:
        o = self.cfg.optim
        if o.region_weight <= 0 and o.target_cell_weight <= 0:
            return None
        if not hasattr(self.source, 'next_labelled_batch'):
            log.warning('region_weight/target_cell_weight: the %s source has no scene ground '
                        'truth; training without those terms', self.cfg.data.source)
            return None
        fusion = self.model.config.fusion
        tokens = fusion.type == 'transformer'   # only token fusion has fused patch tokens
        if o.target_cell_weight > 0 and not tokens:
            raise ValueError('optim.target_cell_weight needs model.fusion.type: transformer')
        region = RegionSupervision(self.model.vision.hidden_size,
                                   fusion.d_model if tokens else None, self.model.vision.grid)
        cameras = list(self.cfg.data.cameras)
        if 'top' not in cameras:   # the labels are per top-view cell (training/region.py)
            log.warning('region_weight/target_cell_weight: data.cameras %s has no top view, '
                        'whose cells the labels describe; training without those terms',
                        cameras)
            return None
        region.camera = cameras.index('top')
        return region.to(self.device).train()

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
        log.info('resumed from %s at step %d', checkpoint, self.step)

    # -- one optimisation step -------------------------------------------------------------
    def train_step(self) -> dict:
        loss = self._continuous_loss() if self.continuous else self._library_loss()
        return self._update(loss)

    def _continuous_loss(self) -> torch.Tensor:
        """Counter-example InfoNCE on a continuous space (training/counter_examples.py): each
        demonstration against optim.counter_examples sampled negatives of its own."""
        o = self.cfg.optim
        images, instructions, examples = self.source.next_continuous_batch(o.batch_size)
        examples = examples.to(self.device)
        b, c = images.shape[:2]
        pixels = self.preprocess(list(images.reshape(b * c, *images.shape[2:])))
        with self.autocast:
            out = self.forward(pixels, list(instructions), c, examples.flat(), None)
            return counter_example_loss(out['query'].float(), out['actions'].float(), examples,
                                        out['logit_scale'])

    def _library_loss(self) -> torch.Tensor:
        """The library objective (+ alignment and region terms) of the next batch."""
        o = self.cfg.optim
        labels = None
        if self.region is not None:
            images, instructions, targets, labels = \
                self.source.next_labelled_batch(o.batch_size)
            labels = {k: torch.as_tensor(v, device=self.device) for k, v in labels.items()}
        else:
            images, instructions, targets = self.source.next_batch(o.batch_size)
        b, c = images.shape[:2]
        camera_mask = self.camera_dropout.sample(b, c)   # None unless optim.*_dropout
        pixels = self.preprocess(list(images.reshape(b * c, *images.shape[2:])))
        if self.augment is not None:   # per frame, on the device (training/augment.py)
            pixels = self.augment(pixels)
        targets = torch.as_tensor(targets, device=self.device)
        ctx = self.ctx
        with self.autocast:
            out = self.forward(pixels, list(instructions), c, self.library_params,
                               self.descriptions, labels, o.region_weight,
                               o.target_cell_weight, o.align_weight > 0,
                               camera_mask=camera_mask)
            # The in-batch terms see the global batch: every rank computes the same loss.
            loss = objectives.query_action_loss(
                distributed.gather_batch(out['query'].float(), ctx), out['actions'].float(),
                distributed.gather_batch(targets, ctx), out['logit_scale'], o)
            if 'align' in out:
                image_emb, text_emb = (distributed.gather_batch(e.float(), ctx)
                                       for e in out['align'])
                loss = loss + o.align_weight * symmetric_infonce(image_emb, text_emb, None,
                                                                 out['logit_scale'])
            if 'attribute_loss' in out:
                loss = loss + o.region_weight * out['attribute_loss']
            if 'target_loss' in out:
                loss = loss + o.target_cell_weight * out['target_loss']
        return loss

    def _update(self, loss: torch.Tensor) -> dict:
        """Backward, clip and step, or skip (counted) when the loss or gradient is not finite."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self._all_finite(loss):
            # A bad batch must not poison the weights: skip the update, keep the count. Every
            # rank skips together (one rank's NaN in a per-rank term is everyone's skip).
            self.skipped_steps += 1
            log.warning('step %d: non-finite loss (%s), update skipped', self.step, loss.item())
            if self.ctx.distributed:  # DDP expects the backward of every forward
                (loss * 0).backward()
                self.optimizer.zero_grad(set_to_none=True)
            return {'loss': float('nan'), 'skipped': True}
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        if not torch.isfinite(grad_norm):  # gradients are averaged: the same on every rank
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            log.warning('step %d: non-finite gradient, update skipped', self.step)
            return {'loss': loss.item(), 'skipped': True}
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        return {'loss': loss.item(), 'grad_norm': grad_norm.item(), 'skipped': False}

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
        if self.ctx.distributed:
            torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
        return bool(finite.item())

    # -- evaluation, checkpoints, logs ---------------------------------------------------
    def evaluate(self) -> dict[str, dict]:
        """Top-1/5 and MRR on fresh tabletop splits and, when given, the held-out dataset."""
        if self.continuous:
            return self._evaluate_continuous()
        scorer = LibraryScorer(self.model, self.library)
        results = {}
        if self.library.names == list(ACTION_NAMES):
            for split in self.cfg.schedule.eval_splits:
                ranks, _ = tabletop_ranks(scorer, split, self.cfg.schedule.eval_samples,
                                          EVAL_SEED, self.cfg.data.image_size,
                                          cameras=self.cfg.data.cameras)
                results[split] = metrics.summarise(ranks)
        elif self.cfg.schedule.eval_splits and not self._warned_eval:
            # Tabletop scenes are scored against the tabletop library; another library has
            # other actions, so those splits would be meaningless here.
            log.warning('library is not the tabletop library: tabletop eval splits skipped')
            self._warned_eval = True
        if self.cfg.data.val_path:
            # A fresh source each time: every evaluation scores the same held-out samples.
            held_out = recorded_source(
                self.cfg.data.source, self.cfg.data.val_path, self.library, EVAL_SEED,
                strict=True, allow_external_images=self.cfg.data.allow_external_images)
            ranks = dataset_ranks(scorer, held_out, self.cfg.schedule.eval_samples)
            results['val_dataset'] = metrics.summarise(ranks)
        return results

    def _evaluate_continuous(self) -> dict[str, dict]:
        """Success of the sampled decision (DFO, the node's defaults) on fresh continuous
        scenes per eval split; ``top1`` is that success (top5 and mrr do not apply)."""
        results = {}
        for split in self.cfg.schedule.eval_splits:
            found = evaluate_continuous(self.model, self.library, split,
                                        self.cfg.schedule.eval_samples, EVAL_SEED,
                                        image_size=self.cfg.data.image_size)
            results[split] = {'n': found.n, 'top1': found.success, 'top5': float('nan'),
                              'mrr': float('nan'), 'error_radii': found.error}
        return results

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
            path = ckpt.save_checkpoint(self.run_dir, self.step, self.model, state,
                                        extra_files={'actions.yaml': self.library_path},
                                        keep_last=self.cfg.schedule.keep_last)
        distributed.barrier(self.ctx)
        return path

    def run(self, progress: bool = True, stop_at: int | None = None) -> dict:
        """Train to optim.steps (or stop early at `stop_at`, e.g. to test resuming)."""
        cfg, main = self.cfg, self.ctx.is_main
        end = min(cfg.optim.steps, stop_at or cfg.optim.steps)
        logs = None
        if main:  # one process writes the run's files; the others only train
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _write_yaml_atomic(self.run_dir / 'config.yaml', cfg.to_dict())
            logs = RunLogs(self.run_dir, self.step)
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

    def _report_skipped_samples(self) -> None:
        bad = getattr(getattr(self.source, 'dataset', None), 'bad', {})
        if bad:
            first = next(iter(bad.items()))
            log.warning('%d bad dataset sample(s) skipped (use --strict to fail instead); '
                        'first: %s: %s', len(bad), *first)


class RunLogs:
    """train.csv, eval.csv and TensorBoard events under the run directory.

    On resume, rows written after the resumed step (by the interrupted run) are dropped so the
    CSV reads as one uninterrupted run.
    """

    TRAIN_FIELDS = ['step', 'loss', 'lr', 'samples_per_s', 'logit_scale', 'skipped_steps']
    EVAL_FIELDS = ['step', 'split', 'n', 'top1', 'top5', 'mrr']

    def __init__(self, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter
        self.train_path = run_dir / 'train.csv'
        self.eval_path = run_dir / 'eval.csv'
        for path, fields in ((self.train_path, self.TRAIN_FIELDS),
                             (self.eval_path, self.EVAL_FIELDS)):
            _truncate_csv(path, fields, start_step)
        self.writer = SummaryWriter(str(run_dir / 'tensorboard'), purge_step=start_step or None)

    def train(self, row: dict) -> None:
        _append_csv(self.train_path, self.TRAIN_FIELDS, row)
        for key in ('loss', 'lr', 'samples_per_s', 'logit_scale'):
            self.writer.add_scalar(f'train/{key}', row[key], row['step'])

    def evaluation(self, step: int, results: dict) -> None:
        for split, m in results.items():
            _append_csv(self.eval_path, self.EVAL_FIELDS, {'step': step, 'split': split, **m})
            for key in ('top1', 'top5', 'mrr'):
                self.writer.add_scalar(f'eval/{split}/{key}', m[key], step)

    def close(self) -> None:
        self.writer.close()


def _truncate_csv(path: Path, fields: list[str], start_step: int) -> None:
    if not path.exists():
        with open(path, 'w', newline='') as handle:
            csv.DictWriter(handle, fields).writeheader()
        return
    with open(path, newline='') as handle:
        rows = [r for r in csv.DictReader(handle) if int(r['step']) <= start_step]
    tmp = path.with_suffix('.csv.tmp')
    with open(tmp, 'w', newline='') as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_csv(path: Path, fields: list[str], row: dict) -> None:
    with open(path, 'a', newline='') as handle:
        csv.DictWriter(handle, fields, extrasaction='ignore').writerow(row)


def _write_yaml_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def export_model(checkpoint: Path, target: Path) -> None:
    """Copy a checkpoint's pretrained_model to `target` atomically (replacing what was there)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f'.{target.name}-', dir=target.parent))
    try:
        shutil.copytree(checkpoint / ckpt.MODEL_DIR, staging, dirs_exist_ok=True)
        keep = [p for p in target.glob('*') if p.is_file() and
                not (staging / p.name).exists()] if target.exists() else []
        for extra in keep:  # e.g. a hand-written model card stays with the model
            shutil.copy2(extra, staging / extra.name)
        make_shareable(staging)
        backup = target.with_name(f'.{target.name}.old')
        if target.exists():
            os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='vla-train', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', help='training YAML (see config/train_tabletop.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE', help='override a config value, e.g. optim.lr=3e-4')
    parser.add_argument('--resume', action='store_true',
                        help='continue runs/<run_name> from its last checkpoint, with the saved '
                             'run\'s settings (only optim.steps, schedule.*, threads, device and '
                             'data.num_workers may be changed with --set); fails when there is '
                             'nothing to resume')
    parser.add_argument('--export', metavar='DIR',
                        help='after training, copy the final model to DIR (e.g. models/mine); '
                             'an existing DIR is refused before training unless --overwrite')
    parser.add_argument('--overwrite', action='store_true',
                        help='let --export replace a model already in DIR')
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
    except (OSError, ValueError) as err:
        print(f'vla-train: {err}', file=sys.stderr)
        return 2
    if args.export and Path(args.export).exists() and not args.overwrite:
        print(f'vla-train: --export {args.export} exists (a model may be there, the shipped one '
              'lives in models/tabletop); pass --overwrite to replace it, or export elsewhere',
              file=sys.stderr)
        return 2
    trainer = None
    try:
        trainer = Trainer(cfg, resume=args.resume)
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
    print(metrics.format_table(list(results.items()),
                               title=f'{cfg.run_name}: step {trainer.step}, {minutes:.1f} min'))
    if args.export:
        export_model(ckpt.latest_checkpoint(cfg.run_dir), Path(args.export))
        print(f'exported to {args.export}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
