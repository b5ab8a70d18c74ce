"""The query<->action objective a run trains with (``optim.loss``), and the optional training-only
projection head (``optim.projection_dim``).

``infonce`` (default): the multi-positive library-contrastive loss; every query against the
whole action library, and every library action present in the batch against the batch's
queries. ``nt_xent``: SimCLR's loss with a query and its action's embedding as the two views
(views of the same action are left out of each other's negatives; ``optim.temperature``).
``triplet``: cosine triplet loss with the hardest other action of the batch as the negative
(``optim.triplet_margin``). All three read the global batch in a distributed run.

The projection head (Linear-GELU-Linear, one for queries and actions, as in SimCLR) sits
between the embeddings and the loss during training only; the model is saved and scores
without it, so what it buys is measured on the model a robot runs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.losses import (
    hardest_negatives,
    library_contrastive_loss,
    nt_xent,
    triplet_loss,
)

LOSSES = ('infonce', 'nt_xent', 'triplet')


def check(optim) -> None:
    """Raise ValueError naming the first bad objective setting."""
    if optim.loss not in LOSSES:
        raise ValueError(f'optim.loss must be one of {LOSSES}, got {optim.loss!r}')
    if not optim.temperature > 0:
        raise ValueError(f'optim.temperature must be > 0, got {optim.temperature}')
    if not optim.triplet_margin >= 0:
        raise ValueError(f'optim.triplet_margin must be >= 0, got {optim.triplet_margin}')
    if optim.projection_dim < 0:
        raise ValueError(f'optim.projection_dim must be >= 0 (0: no head), got '
                         f'{optim.projection_dim}')


class ProjectionHead(nn.Module):
    """``E -> hidden -> E`` MLP whose outputs the loss compares (unit length)."""

    def __init__(self, embed_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x.to(self.net[0].weight.dtype)), dim=-1)


def query_action_loss(query: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor,
                      logit_scale, optim) -> torch.Tensor:
    """The chosen objective on unit ``query`` [B, E] against library ``actions`` [N, E]."""
    if optim.loss == 'nt_xent':
        return nt_xent(query, actions[targets], optim.temperature, labels=targets)
    if optim.loss == 'triplet':
        return triplet_loss(query, actions[targets], hardest_negatives(query, actions, targets),
                            optim.triplet_margin)
    return library_contrastive_loss(query, actions, targets, logit_scale,
                                    multi_positive=optim.multi_positive)
