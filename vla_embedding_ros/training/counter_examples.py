"""Counter-examples for training on a continuous action space (implicit BC's InfoNCE).

Each demonstrated action is scored against K sampled negatives from the space: uniform ones
(most of the space is wrong, and the model must say so everywhere it will later sample), near
misses (the asked primitive just off the object, so the score peaks on the object and not
near it), the other objects (the asked primitive on the wrong object: the grounding), and the
right place with another primitive. A negative that would itself succeed (the asked primitive
inside the target's radius) is masked out of the softmax, not taught as wrong. The positive is
the object's centre jittered within ``positive_jitter`` radii, so the whole object scores high.

The uniform half of the K negatives is drawn once per batch and shared by every sample (each
masks the ones that would succeed for it): the action encoder then embeds ``B * (1 + K/2) +
K/2`` candidates a step instead of ``B * (1 + K)``, which halved the step time on two CPU
cores, and the uniform coverage every sample sees is the same.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..actions.space import ActionSpace
from ..model.losses import LOGIT_SCALE_MAX, _scale

# Shares of the K negatives (the rest are uniform).
NEAR_MISS, OTHER_OBJECT, OTHER_PRIMITIVE = 0.2, 0.15, 0.15


@dataclass
class ContinuousTargets:
    """A batch's demonstrated actions and what counter-examples need to know about it.

    ``vectors`` [B, D] actions; ``radii`` [B] the target's radius in the continuous units;
    ``others`` [B, M, d] other objects' positions (padded), ``others_mask`` [B, M] which are
    real.
    """

    vectors: torch.Tensor
    radii: torch.Tensor
    others: torch.Tensor
    others_mask: torch.Tensor


@dataclass
class CounterExamples:
    """One batch's candidates: per sample ``own`` [B, 1 + k, D] (index 0 the positive) with
    ``own_valid`` [B, 1 + k], and ``shared`` [U, D] uniform negatives with ``shared_valid``
    [B, U]. A candidate is invalid for a sample when it would succeed there."""

    own: torch.Tensor
    own_valid: torch.Tensor
    shared: torch.Tensor
    shared_valid: torch.Tensor

    def flat(self) -> torch.Tensor:
        """Every candidate to embed, own ones first: ``[B * (1 + k) + U, D]``."""
        return torch.cat([self.own.reshape(-1, self.own.shape[-1]), self.shared])

    def to(self, device) -> 'CounterExamples':
        return CounterExamples(*(t.to(device) for t in (self.own, self.own_valid, self.shared,
                                                        self.shared_valid)))


def sample_counter_examples(space: ActionSpace, targets: ContinuousTargets, k: int,
                            generator: torch.Generator, positive_jitter: float = 0.3,
                            other_primitive_elsewhere: float = 0.0) -> CounterExamples:
    """The positive and ``k`` negatives for every demonstration of the batch.

    ``other_primitive_elsewhere``: the share of the other-primitive negatives put on the
    other objects instead of the demonstration's own place (where a frame's other decision
    would act: a pick frame's place target), for tasks whose pick and place frames differ
    only in what the hand holds."""
    vectors = targets.vectors
    b, device = vectors.shape[0], vectors.device
    choice, position = space.split(vectors)
    radius = targets.radii[:, None]

    def disc(n: int, inner: float, outer: float) -> torch.Tensor:
        """Offsets [B, n, 2] at distances uniform in [inner, outer] radii, random angles."""
        angle = torch.rand(b, n, generator=generator, device=device) * 2 * math.pi
        dist = inner + (outer - inner) * torch.rand(b, n, generator=generator, device=device)
        dist = dist * radius
        return torch.stack([dist * torch.cos(angle), dist * torch.sin(angle)], dim=-1)

    n_near, n_other = int(k * NEAR_MISS), int(k * OTHER_OBJECT)
    n_prim = int(k * OTHER_PRIMITIVE) if len(space.options) > 1 else 0
    n_uniform = k - n_near - n_other - n_prim
    parts_choice, parts_pos = [choice[:, None]], [position[:, None] + disc(1, 0, positive_jitter)]
    parts_choice.append(choice[:, None].expand(b, n_near))
    parts_pos.append(position[:, None] + disc(n_near, 1.2, 4.0))
    if n_other:
        m = targets.others.shape[1]
        weights = targets.others_mask.float() + 1e-9
        pick = torch.multinomial(weights, n_other, replacement=True, generator=generator) \
            if m else torch.zeros(b, n_other, dtype=torch.long, device=device)
        other = (torch.gather(targets.others, 1, pick[..., None].expand(b, n_other, 2)) if m
                 else position[:, None].expand(b, n_other, 2))
        has = targets.others_mask.any(dim=1) if m else torch.zeros(b, dtype=torch.bool,
                                                                   device=device)
        # Samples with a single object get near misses instead.
        fallback = position[:, None] + disc(n_other, 1.2, 4.0)
        other = torch.where(has[:, None, None], other + disc(n_other, 0, positive_jitter),
                            fallback)
        parts_choice.append(choice[:, None].expand(b, n_other))
        parts_pos.append(other)
    if n_prim:
        shift = torch.randint(1, len(space.options), (b, n_prim), generator=generator,
                              device=device)
        parts_choice.append((choice[:, None] + shift) % len(space.options))
        at = position[:, None] + disc(n_prim, 0, positive_jitter)
        n_away = int(round(n_prim * other_primitive_elsewhere))
        if n_away and targets.others.shape[1]:
            pick = torch.multinomial(targets.others_mask.float() + 1e-9, n_away,
                                     replacement=True, generator=generator)
            away = (torch.gather(targets.others, 1, pick[..., None].expand(b, n_away, 2))
                    + disc(n_away, 0, positive_jitter))
            has = targets.others_mask.any(dim=1)[:, None, None]
            at = torch.cat([at[:, :n_prim - n_away],
                            torch.where(has, away, at[:, n_prim - n_away:])], dim=1)
        parts_pos.append(at)
    own_choice = torch.cat(parts_choice, dim=1)
    own_pos = space.clip(torch.cat(parts_pos, dim=1))
    own = space.vectors(own_choice.reshape(-1), own_pos.reshape(-1, own_pos.shape[-1]))
    own_valid = ~_succeeds(own_choice, own_pos, choice, position, radius)
    own_valid[:, 0] = True
    shared = space.sample_uniform(n_uniform, generator, device)
    shared_choice, shared_pos = space.split(shared)
    shared_valid = ~_succeeds(shared_choice[None].expand(b, -1),
                              shared_pos[None].expand(b, -1, -1), choice, position, radius)
    return CounterExamples(own.reshape(b, own_pos.shape[1], -1), own_valid, shared,
                           shared_valid)


def _succeeds(cand_choice, cand_pos, choice, position, radius) -> torch.Tensor:
    """[B, N]: the candidate would itself succeed (asked primitive, inside the radius)."""
    return (cand_choice == choice[:, None]) & (
        (cand_pos - position[:, None]).norm(dim=-1) <= radius)


def counter_example_loss(query: torch.Tensor, embedded: torch.Tensor,
                         examples: CounterExamples, logit_scale) -> torch.Tensor:
    """InfoNCE of unit ``query`` [B, E] against the unit embeddings of ``examples.flat()``
    ([B * (1 + k) + U, E]); the positive is each sample's own index 0, invalid candidates
    leave the softmax."""
    b, own = examples.own.shape[:2]
    scale = _scale(logit_scale, LOGIT_SCALE_MAX, query)
    own_logits = torch.einsum('be,bke->bk', query, embedded[:b * own].reshape(b, own, -1))
    shared_logits = query @ embedded[b * own:].t()
    logits = scale * torch.cat([own_logits, shared_logits], dim=1)
    valid = torch.cat([examples.own_valid, examples.shared_valid], dim=1)
    logits = logits.masked_fill(~valid, float('-inf'))
    return F.cross_entropy(logits, torch.zeros(b, dtype=torch.long, device=query.device))
