"""What a run trains for, one object per training lane (as OpenCLIP's loss modules and
LeRobot's ``policy.forward(batch) -> loss``): each lane checks the settings it is given, draws
its batches and computes its loss, gathering the global batch where a term compares samples.

:class:`LibraryObjective` (``data.source`` tabletop, jsonl, lerobot): every query against a
fixed action library with ``optim.loss``: ``infonce`` (default), the multi-positive
library-contrastive loss (every query against the whole library, and every library action
present in the batch against the batch's queries); ``nt_xent``, SimCLR's loss with a query
and its action's embedding as the two views (views of the same action are left out of each
other's negatives; ``optim.temperature``); ``triplet``, the cosine triplet loss with the
hardest other action of the batch as the negative (``optim.triplet_margin``); plus the
optional image<->instruction alignment and scene-region terms.

:class:`CounterExampleObjective` (``data.source: tabletop_continuous``): each demonstration
against sampled counter-examples of a continuous space (``training/counter_examples.py``).
Each sample is scored against its own candidates only, so the loss needs no gather: DDP's
gradient average is the global batch's. Augmentation, camera dropout, the alignment term and
the projection head act on images, queries and embeddings and apply as in the library lane;
what only a library lane can honour is refused at start, by name.

Both lanes share the batch preparation (camera mask, preprocessing, augmentation, in that
order) and the optional training-only projection head (``optim.projection_dim``): a
Linear-GELU-Linear between the embeddings and the loss during training only, as in SimCLR; the
model is saved and scores without it, so what it buys is measured on the model a robot runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..model.losses import (
    hardest_negatives,
    library_contrastive_loss,
    nt_xent,
    symmetric_infonce,
    triplet_loss,
)
from ..selection.preprocess import ImagePreprocessor
from . import camera_dropout, distributed
from .augment import Augmenter
from .config import DataConfig, OptimConfig
from .counter_examples import counter_example_loss
from .region import RegionSupervision
from .step_forward import StepForward
from .text_cache import TextFeatureCache

log = logging.getLogger('vla_train')
LOSSES = ('infonce', 'nt_xent', 'triplet')
AUGMENT_SEED = 7_919  # the augmentation generator's offset from the run's seed


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


@dataclass
class Batch:
    """One step's inputs: ``pixels`` [B * C, 3, H, W] (preprocessed, augmented), the
    instructions, ``camera_mask`` [B, C] (None: every camera present) and the lane's
    ``targets`` (library indices, or ``CounterExamples``); ``labels``: scene ground truth."""

    pixels: torch.Tensor
    instructions: list[str]
    num_cameras: int
    camera_mask: torch.Tensor | None
    targets: Any
    labels: dict | None = None


def _default(section_cls, name: str):
    return getattr(section_cls(), name)


class Objective:
    """What both lanes share: the camera mask, preprocessing and augmentation of a batch, the
    projection head, the alignment term and the (DDP-wrapped) forward.

    Build order (the trainer's): construct (draws the training-only heads' initial weights),
    optimise :meth:`training_modules` with the model, restore a checkpoint, then :meth:`wrap`.
    """

    lane = ''

    @classmethod
    def check(cls, cfg) -> None:
        """ValueError naming the first setting this lane cannot honour (before any model
        is built)."""
        check(cfg.optim)
        camera_dropout.check_rates(cfg.optim)

    def __init__(self, cfg, model, source, library, device, ctx):
        self.cfg, self.optim = cfg, cfg.optim
        self.model, self.source, self.device, self.ctx = model, source, device, ctx
        fusion = getattr(getattr(model, 'config', None), 'fusion', None)
        camera_dropout.check(cfg.optim, getattr(fusion, 'type', None), len(cfg.data.cameras))
        self.camera_dropout = camera_dropout.CameraDropout(cfg.optim.camera_dropout,
                                                           cfg.optim.image_dropout)
        self.library_params = torch.tensor(library.params(), device=device)
        self.texts = library.texts()   # what evaluation and the selector embed too
        self.region = self._region_supervision()
        self.head = self._projection_head()
        self.preprocess = ImagePreprocessor(model.image_size, model.image_mean,
                                            model.image_std, device)
        self.augment = self._augmenter()
        frozen_text = not any(p.requires_grad for p in model.text.parameters())
        self.text_features = (TextFeatureCache(model.encode_text) if frozen_text
                              else model.encode_text)
        self.forward = None

    def training_modules(self) -> nn.Module | None:
        """Trainable modules that are not the model's (optimised with it, never exported)."""
        aux = {name: m for name, m in (('region', self.region), ('head', self.head)) if m}
        return nn.ModuleDict(aux) if aux else None

    def wrap(self) -> nn.Module:
        """The step's forward (in DDP when distributed); call after restoring a checkpoint."""
        o = self.optim
        idle_heads = o.align_weight <= 0 or (self.region is not None and min(
            o.region_weight, o.target_cell_weight) <= 0)
        self.forward = distributed.wrap(
            StepForward(self.model, self.text_features, self.region, self.head), self.ctx,
            self.device, find_unused=idle_heads)
        return self.forward

    def step_loss(self) -> torch.Tensor:
        """The loss of the next batch."""
        return self.loss(self.next_batch())

    def next_batch(self) -> Batch:
        raise NotImplementedError

    def loss(self, batch: Batch) -> torch.Tensor:
        raise NotImplementedError

    def _prepare(self, images, instructions, targets, labels=None) -> Batch:
        """uint8 images [B, C, H, W, 3] -> the batch the forward takes."""
        b, c = images.shape[:2]
        camera_mask = self.camera_dropout.sample(b, c)   # None unless optim.*_dropout
        pixels = self.preprocess(list(images.reshape(b * c, *images.shape[2:])))
        if self.augment is not None:   # per frame, on the device (training/augment.py)
            pixels = self.augment(pixels)
        return Batch(pixels, list(instructions), c, camera_mask, targets, labels)

    def _alignment(self, out: dict) -> torch.Tensor:
        """``optim.align_weight`` x image<->instruction InfoNCE over the global batch."""
        image_emb, text_emb = (distributed.gather_batch(e.float(), self.ctx)
                               for e in out['align'])
        return self.optim.align_weight * symmetric_infonce(image_emb, text_emb, None,
                                                           out['logit_scale'])

    def _region_supervision(self) -> RegionSupervision | None:
        return None

    def _projection_head(self) -> ProjectionHead | None:
        width = self.optim.projection_dim
        if width <= 0:
            return None
        with torch.no_grad():  # the joint space's width, whichever model builds it
            dim = self.model.encode_actions(self.library_params[:1], self.texts[:1]).shape[-1]
        return ProjectionHead(dim, width).to(self.device)

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


class LibraryObjective(Objective):
    """Every query against the whole action library (``optim.loss``), plus the alignment
    and scene-region terms when their weights are set."""

    lane = 'library'

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        for name in CONTINUOUS_ONLY:
            if getattr(cfg.optim, name) != _default(OptimConfig, name):
                raise ValueError(f'optim.{name} is a setting of the continuous lane (data.source '
                                 'tabletop_continuous or recorded_continuous); data.source '
                                 f'{cfg.data.source} trains against a fixed library: leave '
                                 f'optim.{name} unset')

    def next_batch(self) -> Batch:
        n = self.optim.batch_size
        if self.region is not None:
            images, instructions, targets, labels = self.source.next_labelled_batch(n)
            labels = {k: torch.as_tensor(v, device=self.device) for k, v in labels.items()}
        else:
            images, instructions, targets = self.source.next_batch(n)
            labels = None
        return self._prepare(images, instructions, torch.as_tensor(targets, device=self.device),
                             labels)

    def loss(self, batch: Batch) -> torch.Tensor:
        o, ctx = self.optim, self.ctx
        out = self.forward(batch.pixels, batch.instructions, batch.num_cameras,
                           self.library_params, self.texts, batch.labels, o.region_weight,
                           o.target_cell_weight, o.align_weight > 0,
                           camera_mask=batch.camera_mask)
        # The in-batch terms see the global batch: every rank computes the same loss.
        loss = query_action_loss(
            distributed.gather_batch(out['query'].float(), ctx), out['actions'].float(),
            distributed.gather_batch(batch.targets, ctx), out['logit_scale'], o)
        if 'align' in out:
            loss = loss + self._alignment(out)
        if 'attribute_loss' in out:
            loss = loss + o.region_weight * out['attribute_loss']
        if 'target_loss' in out:
            loss = loss + o.target_cell_weight * out['target_loss']
        return loss

    def _region_supervision(self) -> RegionSupervision | None:
        o = self.optim
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


# optim.* settings only the continuous lane reads.
CONTINUOUS_ONLY = ('counter_examples', 'positive_jitter', 'other_primitive_elsewhere')
CONTINUOUS_SOURCES = ('tabletop_continuous', 'recorded_continuous')
# What the continuous lane cannot honour, and why; each refused when changed from its default.
_DATASET_ONLY = ('it applies to recorded datasets (data.source jsonl or lerobot), and '
                 'tabletop_continuous draws its scenes in the training process')
_NO_LABELS = ('it needs per-cell scene labels, which the continuous sources do not have')
CONTINUOUS_REFUSES = {
    'optim.loss': 'the lane trains with the counter-example InfoNCE (nt_xent and triplet '
                  'compare library actions across the batch)',
    'optim.temperature': "it is nt_xent's, and the lane trains with the counter-example "
                         'InfoNCE',
    'optim.triplet_margin': "it is triplet's, and the lane trains with the counter-example "
                            'InfoNCE',
    'optim.multi_positive': 'each demonstration is scored against counter-examples of its '
                            'own, so no other sample shares its positive',
    'optim.region_weight': _NO_LABELS,
    'optim.target_cell_weight': _NO_LABELS,
}
# Per continuous source, what it cannot honour besides.
_UNNAMED = ("its samples are action vectors of the library's space, not named actions")
SOURCE_REFUSES = {
    'tabletop_continuous': {f'data.{name}': _DATASET_ONLY for name in (
        'path', 'val_path', 'strict', 'allow_external_images', 'max_unknown_actions',
        'num_workers', 'val_episodes', 'max_action_distance')},
    'recorded_continuous': {
        'data.max_unknown_actions': _UNNAMED,
        'data.max_action_distance': _UNNAMED,
        'data.allow_external_images': 'its reader takes images inside the dataset only',
        'data.num_workers': 'it reads its samples in the training process',
        'data.objects': 'it is a setting of the procedural tabletop',
        'data.image_size': "it is the tabletop's render size; recorded frames are resized to "
                           "the model's own input size",
        'data.phrasings': 'it is a setting of the procedural tabletop',
    },
}
# A crop or shift moves what the image shows but not the demonstrated point.
_GEOMETRIC = {'crop_scale': [1.0, 1.0], 'crop_ratio': [1.0, 1.0], 'max_shift': 0.0}


class CounterExampleObjective(Objective):
    """Counter-example InfoNCE on a continuous space (training/counter_examples.py): each
    demonstration against optim.counter_examples sampled negatives of its own."""

    lane = 'continuous'

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        source = cfg.data.source
        for dotted, why in {**CONTINUOUS_REFUSES, **SOURCE_REFUSES[source]}.items():
            section, name = dotted.split('.')
            default = _default(OptimConfig if section == 'optim' else DataConfig, name)
            value = getattr(getattr(cfg, section), name)
            if value != default:
                raise ValueError(f'{dotted}={value!r} cannot be honoured with data.source '
                                 f'{source}: {why}; leave it at {default!r}')
        if source == 'recorded_continuous':
            if not cfg.data.path:
                raise ValueError('data.source recorded_continuous needs data.path (a JSONL '
                                 'dataset with action vectors and labels)')
            aug = cfg.data.augment
            if aug.active(source)[0]:
                for name, neutral in _GEOMETRIC.items():
                    if getattr(aug, name) != neutral:
                        raise ValueError(
                            f'data.augment.{name}={getattr(aug, name)!r} cannot be honoured '
                            f'with data.source {source}: the demonstrated action is a point '
                            'of the image, which a crop or shift would move without moving '
                            f'the label; set it to {neutral!r} (photometric augmentation '
                            'stays on)')

    def next_batch(self) -> Batch:
        images, instructions, examples = self.source.next_continuous_batch(
            self.optim.batch_size)
        return self._prepare(images, instructions, examples.to(self.device))

    def loss(self, batch: Batch) -> torch.Tensor:
        examples = batch.targets
        out = self.forward(batch.pixels, batch.instructions, batch.num_cameras,
                           examples.flat(), None, align=self.optim.align_weight > 0,
                           camera_mask=batch.camera_mask)
        loss = counter_example_loss(out['query'].float(), out['actions'].float(), examples,
                                    out['logit_scale'])
        if 'align' in out:
            loss = loss + self._alignment(out)
        return loss


def lane_for(cfg) -> type[Objective]:
    """The objective class of ``data.source``."""
    if cfg.data.source in CONTINUOUS_SOURCES:
        return CounterExampleObjective
    return LibraryObjective
