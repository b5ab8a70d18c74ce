"""Camera dropout: train the model to decide without some (or all) of its cameras.

A robot's camera can stop publishing; a model that always saw every camera in training has
never decided without one. ``optim.camera_dropout`` drops each camera of each training sample
with that probability, ``optim.image_dropout`` drops every camera of a sample (an
instruction-only sample, which teaches the prior "what does this instruction usually mean").
A dropped camera is a ``False`` in the ``[B, C]`` camera mask the fusion takes
(:class:`..model.fusion.TransformerFusion`: its patch tokens are masked out of attention, and
the present cameras' segment embeddings say which ones are left).

Without image dropout a sample never loses all of its cameras: when every camera of a sample
was drawn as dropped, one of them (uniformly) is put back, so the effective per-camera rate is
a little below ``camera_dropout`` (``p - p**C / C``: 0.375 instead of 0.5 with two cameras).
One camera alone is never dropped by ``camera_dropout`` (it would always be put back).

The draws come from torch's global generator on the CPU, whose state every checkpoint saves
per rank (``training/checkpoint.rng_state``): a resumed run draws the masks an uninterrupted
run would have. With both rates at 0 nothing is drawn, so runs without dropout are unchanged.
"""
from __future__ import annotations

import torch


def check_rates(optim) -> None:
    """ValueError naming the field when a dropout rate is outside [0, 1)."""
    for name in ('camera_dropout', 'image_dropout'):
        rate = getattr(optim, name)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f'optim.{name} must be in [0, 1), got {rate}')


def check(optim, fusion_type: str | None, num_cameras: int) -> None:
    """ValueError naming the field when the dropout settings cannot be honoured.

    ``fusion_type``: the model's fusion ('transformer', 'late', 'gated'), None for a model
    without a camera mask (``model.init: clip|siglip``). With one camera, ``image_dropout``
    is honoured (it leaves the camera out: an instruction-only sample) and ``camera_dropout``
    is refused (it would always put the camera back)."""
    check_rates(optim)
    if optim.camera_dropout <= 0 and optim.image_dropout <= 0:
        return
    which = 'optim.camera_dropout' if optim.camera_dropout > 0 else 'optim.image_dropout'
    if fusion_type is None:
        raise ValueError(f'{which} needs a VLAModel (model.fusion); a CLIP/SigLIP joint '
                         'space (model.init) takes no camera mask')
    if optim.camera_dropout > 0 and num_cameras < 2:
        raise ValueError(f'optim.camera_dropout {optim.camera_dropout} needs two or more '
                         f'cameras (data.cameras has {num_cameras}); with one camera use '
                         'optim.image_dropout for instruction-only samples')


class CameraDropout:
    """Draws the per-sample camera mask of a training batch.

    Args:
        camera_rate: probability of dropping each camera of a sample.
        image_rate: probability of dropping every camera of a sample (checked first).
    """

    def __init__(self, camera_rate: float = 0.0, image_rate: float = 0.0):
        self.camera_rate = float(camera_rate)
        self.image_rate = float(image_rate)

    @property
    def active(self) -> bool:
        return self.camera_rate > 0 or self.image_rate > 0

    def sample(self, batch: int, num_cameras: int) -> torch.Tensor | None:
        """A bool ``[batch, num_cameras]`` mask (True = keep), or None when nothing is
        dropped by configuration (no draw is made then)."""
        if not self.active:
            return None
        keep = torch.ones(batch, num_cameras, dtype=torch.bool)
        if self.camera_rate > 0 and num_cameras > 1:
            keep = torch.rand(batch, num_cameras) >= self.camera_rate
            none = ~keep.any(dim=1)
            if bool(none.any()):
                back = torch.randint(num_cameras, (batch,))
                keep[none, back[none]] = True
        if self.image_rate > 0:
            blind = torch.rand(batch) < self.image_rate
            keep[blind] = False
        return keep
