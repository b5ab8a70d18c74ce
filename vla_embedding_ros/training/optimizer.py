"""The optimiser, its learning-rate schedule, mixed precision, and one guarded update.

AdamW with two learning rates (``optim.lr``; ``optim.encoder_lr`` for pretrained encoders
marked trainable) and no weight decay on norms, biases and embeddings; a linear warm-up, then
cosine decay to ``optim.min_lr_ratio`` of the peak (as OpenCLIP's ``scheduler.py``).
"""
from __future__ import annotations

import logging
import math
from contextlib import nullcontext

import torch

log = logging.getLogger('vla_train')
AMP_MODES = ('auto', 'bf16', 'fp16', 'none')


def check(optim) -> None:
    """ValueError naming the first optimiser setting that cannot be honoured."""
    if optim.amp not in AMP_MODES:
        raise ValueError(f'optim.amp must be one of {AMP_MODES}, got {optim.amp!r}')
    if optim.warmup_steps >= optim.steps:
        log.warning('optim.warmup_steps %d >= optim.steps %d: the whole run is warm-up and '
                    'the learning rate never reaches optim.lr; lower warmup_steps (e.g. '
                    '--set optim.warmup_steps=%d)', optim.warmup_steps, optim.steps,
                    max(1, optim.steps // 10))


def lr_lambda(cfg):
    """Linear warm-up, then cosine decay to min_lr_ratio of the peak."""
    o = cfg.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / max(1, o.warmup_steps)
        progress = min(1.0, (step - o.warmup_steps) / max(1, o.steps - o.warmup_steps))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def build_optimizer(model, cfg, extra: torch.nn.Module | None = None) -> torch.optim.Optimizer:
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


class Updater:
    """Backward, clip and step, or skip (counted) when the loss or gradient is not finite.

    A bad batch must not poison the weights: its update is skipped and counted
    (``skipped_steps``, saved with the run). In a distributed run every rank skips together.
    """

    def __init__(self, optimizer, scheduler, scaler, grad_clip: float, ctx):
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.grad_clip, self.ctx = grad_clip, ctx
        self.skipped_steps = 0

    def __call__(self, loss: torch.Tensor, step: int) -> dict:
        """Apply ``loss``'s update (``step``: the step being taken, for the warnings)."""
        self.optimizer.zero_grad(set_to_none=True)
        if not self._all_finite(loss):
            # One rank's NaN in a per-rank term is everyone's skip.
            self.skipped_steps += 1
            log.warning('step %d: non-finite loss (%s), update skipped', step, loss.item())
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
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if not torch.isfinite(grad_norm):  # gradients are averaged: the same on every rank
            self.skipped_steps += 1
            self.optimizer.zero_grad(set_to_none=True)
            log.warning('step %d: non-finite gradient, update skipped', step)
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
