"""Choose a continuous action by derivative-free optimisation in the joint space (IBC style).

The observation (frames + instruction) is encoded once into a query; candidates are vectors of
an :class:`~..actions.space.ActionSpace`, embedded by the action encoder and scored against the
query. Following implicit behavioural cloning (Florence et al. 2021, Appendix B.1): draw
``samples`` uniform candidates, then for ``iterations`` rounds resample them in proportion to
``softmax(logits)``, add Gaussian noise of ``noise`` x the range (halved every round, by
``shrink``) and clip to the bounds; return the best candidate scored. The primitive (the
discrete choice) travels with its sample: resampling concentrates on the likely ones.

Optionally ``gradient_steps`` of gradient ascent on the continuous values of the best few
candidates follow (Langevin refinement without noise): ``bench/continuous_select.py`` measures
whether it pays. Each decision seeds its own generator from ``seed``, so the same frames and
instruction give the same action whatever came before.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ..actions.space import ActionSpace

# 256k candidates x (param_dim + hidden + embed_dim) floats stays well under 1 GB.
MAX_SAMPLES = 1 << 18


@dataclass
class SamplingConfig:
    """Derivative-free optimisation settings (IBC's defaults)."""

    samples: int = 1024
    iterations: int = 3
    noise: float = 0.33          # initial noise std, as a fraction of each dimension's range
    shrink: float = 0.5          # noise std factor per iteration
    seed: int = 0
    gradient_steps: int = 0      # gradient ascent on the best ``gradient_top`` candidates
    gradient_top: int = 16
    gradient_lr: float = 0.01    # as a fraction of each dimension's range

    def check(self) -> None:
        """ValueError naming the first bad setting."""
        if isinstance(self.samples, bool) or int(self.samples) != self.samples or \
                not 1 <= self.samples <= MAX_SAMPLES:
            raise ValueError(f'sample count must be an integer in [1, {MAX_SAMPLES}] (the '
                             f'memory bound), got {self.samples!r}')
        if not 0 <= int(self.iterations) <= 100:
            raise ValueError(f'iterations must be in [0, 100], got {self.iterations}')
        if not 0 <= self.noise <= 1:
            raise ValueError(f'noise must be in [0, 1] (fraction of the range), got {self.noise}')
        if not 0 < self.shrink <= 1:
            raise ValueError(f'shrink must be in (0, 1], got {self.shrink}')
        if self.seed < 0:
            raise ValueError(f'seed must be non-negative, got {self.seed}')
        if self.gradient_steps < 0 or self.gradient_top < 1 or not self.gradient_lr > 0:
            raise ValueError('gradient_steps must be >= 0, gradient_top >= 1 and gradient_lr > 0')


@dataclass
class Refinement:
    """What one optimisation saw: the first and last candidate sets with their logits."""

    best: np.ndarray
    best_logit: float
    initial: np.ndarray
    initial_logits: np.ndarray
    final: np.ndarray
    final_logits: np.ndarray
    evaluations: int = 0
    history: list[float] = field(default_factory=list)   # best logit after each round


def refine(score: Callable[[torch.Tensor], torch.Tensor], space: ActionSpace,
           config: SamplingConfig, device: torch.device | str = 'cpu') -> Refinement:
    """Maximise ``score`` (candidates ``[N, D]`` -> logits ``[N]``) over ``space``.

    Raises:
        ValueError: a bad setting, or non-finite logits from the model.
    """
    config.check()
    with torch.no_grad():   # only the optional gradient steps differentiate
        return _refine(score, space, config, torch.device(device))


def _refine(score, space: ActionSpace, config: SamplingConfig,
            device: torch.device) -> Refinement:
    generator = torch.Generator(device=device).manual_seed(int(config.seed))
    n = int(config.samples)
    low, high = (torch.as_tensor(b, device=device) for b in space.bounds())
    std = config.noise * (high - low)
    samples = space.sample_uniform(n, generator, device)
    logits = _checked(score(samples))
    initial, initial_logits = samples, logits
    best_logit, best_index = logits.max(dim=0)
    best, history = samples[best_index], [float(best_logit)]
    evaluations = 1
    for _ in range(int(config.iterations)):
        probs = torch.softmax(logits.float(), dim=0)
        picked = torch.multinomial(probs, n, replacement=True, generator=generator)
        choice, values = space.split(samples[picked])
        noise = torch.randn(values.shape, generator=generator, device=device) * std
        samples = space.vectors(choice, space.clip(values + noise))
        logits = _checked(score(samples))
        evaluations += 1
        round_best, index = logits.max(dim=0)
        if round_best > best_logit:
            best_logit, best = round_best, samples[index]
        history.append(float(best_logit))
        std = std * config.shrink
    if config.gradient_steps:
        best, best_logit = _gradient_ascent(score, space, samples, logits, best, best_logit,
                                            config, high - low)
        evaluations += config.gradient_steps + 1
        history.append(float(best_logit))
    return Refinement(best.detach().cpu().numpy().astype(np.float32), float(best_logit),
                      initial.cpu().numpy(), initial_logits.float().cpu().numpy(),
                      samples.cpu().numpy(), logits.float().cpu().numpy(), evaluations, history)


def _checked(logits: torch.Tensor) -> torch.Tensor:
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(f'the model scored {bad} of {logits.numel()} candidates as non-finite '
                         '(NaN or inf): check the checkpoint')
    return logits


def _gradient_ascent(score, space: ActionSpace, samples, logits, best, best_logit,
                     config: SamplingConfig, span: torch.Tensor):
    """A few steps up the logit's gradient in the continuous values of the top candidates."""
    top = torch.topk(logits, min(config.gradient_top, logits.shape[0])).indices
    choice, values = space.split(samples[top])
    values = values.detach().clone()
    step = config.gradient_lr * span
    with torch.inference_mode(False), torch.enable_grad():
        values = values.clone().requires_grad_(True)
        for _ in range(config.gradient_steps):
            total = score(space.vectors(choice, values)).sum()
            (grad,) = torch.autograd.grad(total, values)
            with torch.no_grad():
                values = space.clip(values + step * torch.sign(grad))
            values.requires_grad_(True)
        with torch.no_grad():
            final = space.vectors(choice, values.detach())
            final_logits = _checked(score(final))
    value, index = final_logits.max(dim=0)
    if value > best_logit:
        return final[index], value
    return best, best_logit
