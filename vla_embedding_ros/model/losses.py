"""Contrastive losses for the joint space.

With a small action library one batch holds the same action several times. Plain InfoNCE
then treats those true positives as negatives and pushes them apart; the multi-positive forms
here spread the target uniformly over every sample that shares the action (UniCL / CLIP-RT).

``logit_scale`` is the *log* of the inverse temperature (the model's learnable parameter, or a
float); it is clamped at ``max_logit_scale`` (log 100, as CLIP) before exponentiation.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LOGIT_SCALE_MAX = math.log(100.0)


def _scale(logit_scale, max_logit_scale: float, like: torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale), dtype=torch.float64)
    # .to() keeps the graph, so a learnable logit_scale gets its gradient.
    return logit_scale.to(like.device, like.dtype).clamp(max=max_logit_scale).exp()


def _soft_ce(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Per-row cross-entropy against targets uniform over each row's positives."""
    targets = positives.to(logits.dtype)
    targets = targets / targets.sum(dim=1, keepdim=True)
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1)


def _reduce(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == 'mean':
        return per_row.mean()
    if reduction == 'none':
        return per_row
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def symmetric_infonce(query: torch.Tensor, action: torch.Tensor,
                      labels: torch.Tensor | None = None, logit_scale=math.log(1 / 0.07),
                      max_logit_scale: float = LOGIT_SCALE_MAX,
                      reduction: str = 'mean') -> torch.Tensor:
    """Symmetric in-batch InfoNCE between paired rows of ``query`` and ``action``.

    Args:
        query: ``[B, E]`` unit query embeddings.
        action: ``[B, E]`` unit embeddings of each sample's target action.
        labels: ``[B]`` action ids; samples with equal ids are all positives for each other.
            None gives plain InfoNCE (only the diagonal is positive).
        logit_scale: log inverse temperature (tensor or float).
        max_logit_scale: clamp for ``logit_scale``.
        reduction: 'mean' (scalar) or 'none' (``[B]``: the average of row i's query->action
            term and column i's action->query term).
    """
    logits = _scale(logit_scale, max_logit_scale, query) * query @ action.t()
    if labels is None:
        positives = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    else:
        labels = labels.to(logits.device)
        positives = labels.unsqueeze(0) == labels.unsqueeze(1)
    per_row = 0.5 * (_soft_ce(logits, positives) + _soft_ce(logits.t(), positives.t()))
    return _reduce(per_row, reduction)


def library_contrastive_loss(query: torch.Tensor, library: torch.Tensor, targets: torch.Tensor,
                             logit_scale=math.log(1 / 0.07), multi_positive: bool = True,
                             max_logit_scale: float = LOGIT_SCALE_MAX) -> torch.Tensor:
    """Contrast queries against the *whole* action library, in both directions.

    query->library: cross-entropy over all ``N`` library actions (each query has one correct
    action). library->query: for each action present in the batch, a softmax over the batch's
    queries; with ``multi_positive`` every query of that action is a positive (uniform
    target), otherwise each query gets its own row and its duplicates count as negatives
    (the plain CLIP form, kept for comparison).

    Args:
        query: ``[B, E]`` unit queries.
        library: ``[N, E]`` unit action embeddings.
        targets: ``[B]`` long indices into the library.
        logit_scale: log inverse temperature (tensor or float).
        multi_positive: treat all same-action samples as positives in library->query.

    Returns:
        Scalar: the mean of the two directions.
    """
    targets = targets.to(query.device).long()
    logits = _scale(logit_scale, max_logit_scale, query) * query @ library.t()
    to_library = F.cross_entropy(logits, targets)
    if multi_positive:
        present = torch.unique(targets)
        positives = present.unsqueeze(1) == targets.unsqueeze(0)        # [K, B]
        to_query = _soft_ce(logits.t()[present], positives).mean()
    else:
        rows = logits.t()[targets]                                       # [B, B]
        to_query = F.cross_entropy(rows, torch.arange(len(targets), device=rows.device))
    return 0.5 * (to_library + to_query)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
            labels: torch.Tensor | None = None) -> torch.Tensor:
    """NT-Xent (SimCLR): each of the ``2B`` views must find its pair among the other ``2B-1``.

    Args:
        z1, z2: ``[B, E]`` two views (normalised here).
        temperature: softmax temperature.
        labels: optional ``[B]``: views of samples with the same label (other than the pair
            itself) are left out of each other's negatives. Training pairs a query with its
            action's embedding, and a batch holds an action several times: without the mask
            NT-Xent pushes identical action embeddings apart, which cannot be done.
    """
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=-1)
    n = z1.shape[0]
    sim = z @ z.t() / temperature
    hidden = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    if labels is not None:
        both = torch.cat([labels, labels]).to(z.device)
        pair = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        hidden = (both.unsqueeze(0) == both.unsqueeze(1))
        hidden[torch.arange(2 * n, device=z.device), pair] = False
    sim = sim.masked_fill(hidden, float('-inf'))
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, pair)


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                 margin: float = 0.2) -> torch.Tensor:
    """Mean ``max(0, d(a, p) - d(a, n) + margin)`` with cosine distance ``d = 1 - cos``."""
    d_pos = 1 - F.cosine_similarity(anchor, positive, dim=-1)
    d_neg = 1 - F.cosine_similarity(anchor, negative, dim=-1)
    return F.relu(d_pos - d_neg + margin).mean()


def hardest_negatives(anchor: torch.Tensor, library: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """Per anchor, the library row most similar to it among the actions *of the batch* other
    than its own (batch-hard mining); the whole library when the batch has no other action.

    Args:
        anchor: ``[B, E]`` queries; library: ``[N, E]`` action embeddings; targets: ``[B]``.

    Returns:
        ``[B, E]`` the chosen negatives (rows of ``library``, gradients flow to them).
    """
    targets = targets.to(anchor.device).long()
    sim = F.normalize(anchor, dim=-1) @ F.normalize(library, dim=-1).t()      # [B, N]
    in_batch = torch.zeros(library.shape[0], dtype=torch.bool, device=anchor.device)
    in_batch[targets] = True
    own = F.one_hot(targets, library.shape[0]).bool()
    allowed = in_batch.unsqueeze(0) & ~own
    lonely = ~allowed.any(dim=1)                        # a batch of one action: use the library
    allowed[lonely] = ~own[lonely]
    choice = sim.masked_fill(~allowed, float('-inf')).argmax(dim=1)
    return library[choice]
