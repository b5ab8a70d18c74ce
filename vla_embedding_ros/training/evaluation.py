"""Score a model on tabletop splits: ranks of the true action among the whole library."""
from __future__ import annotations

import numpy as np
import torch

from ..data.tabletop import TabletopConfig, TabletopGenerator, camera_frame
from ..data.tabletop.cameras import render_views
from ..selection.preprocess import ImagePreprocessor
from . import metrics


class LibraryScorer:
    """Batched query -> library logits for a VLAModel, reused across splits."""

    def __init__(self, model, library, batch_size: int = 100):
        self.model = model
        self.batch_size = batch_size
        self.preprocess = ImagePreprocessor(model.image_size, model.image_mean, model.image_std,
                                            model.device)
        params = torch.tensor(library.params(), device=model.device)
        with torch.inference_mode():   # the texts training and the selector embed too
            self.actions = model.encode_actions(params, library.texts())

    @torch.inference_mode()
    def logits(self, images: np.ndarray, instructions: list[str],
               present: tuple | None = None) -> torch.Tensor:
        """images uint8 [B, C, H, W, 3] RGB -> logits [B, N]. ``present``: a bool per camera
        (False = that camera is missing for every sample; None = all present)."""
        b, c = images.shape[:2]
        pixels = self.preprocess(list(images.reshape(b * c, *images.shape[2:])))
        text = self.model.encode_text(instructions)
        if present is None or all(present):
            query = self.model.encode_query(pixels, text, num_cameras=c)
        else:
            mask = torch.tensor([list(present)] * b, dtype=torch.bool)
            query = self.model.encode_query(pixels, text, num_cameras=c, camera_mask=mask)
        return self.model.score(query, self.actions).float()


def tabletop_ranks(scorer: LibraryScorer, split: str, num: int, seed: int,
                   image_size: int = 96, blank_images: bool = False, cameras=('top',),
                   present: tuple | None = None):
    """Ranks of the true action for `num` fresh samples of `split`, and each one's template id
    (``primitive/set/number[+colour][+shape]``, see ``data.tabletop.language``).

    blank_images replaces every image with flat grey: the instruction-only baseline.
    cameras: the views of each scene (``data/tabletop/cameras.py``); present: a bool per
    camera, False = scored with that camera missing (the same scenes either way).
    """
    generator = TabletopGenerator(TabletopConfig(image_size=image_size), split, seed)
    was_training = scorer.model.training
    scorer.model.eval()
    ranks, templates = [], []
    try:
        remaining = num
        while remaining > 0:
            n = min(scorer.batch_size, remaining)
            samples = list(generator.samples(n))
            if tuple(cameras) == ('top',):
                images = np.stack([s.image for s in samples])[:, None]
            else:
                images = np.stack([render_views(s.image, cameras) for s in samples])
            if blank_images:
                images = np.full_like(images, 128)
            targets = torch.tensor([s.action_index for s in samples], device=scorer.model.device)
            logits = scorer.logits(images, [s.instruction for s in samples], present)
            ranks.append(metrics.target_ranks(logits, targets))
            templates += [s.template for s in samples]
            remaining -= n
    finally:
        scorer.model.train(was_training)
    return np.concatenate(ranks), templates


def dataset_ranks(scorer: LibraryScorer, source, num: int) -> np.ndarray:
    """Ranks of the true action for up to `num` samples of a held-out dataset source."""
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        n = min(num, len(source))
        images, instructions, targets = source.next_batch(n)
        ranks = []
        for start in range(0, n, scorer.batch_size):
            stop = start + scorer.batch_size
            logits = scorer.logits(images[start:stop], instructions[start:stop])
            batch_targets = torch.as_tensor(targets[start:stop], device=scorer.model.device)
            ranks.append(metrics.target_ranks(logits, batch_targets))
    finally:
        scorer.model.train(was_training)
    return np.concatenate(ranks)


def replay_demo_episodes(selector, seed: int, episodes: int = 20, split: str = 'val',
                         camera_size: tuple[int, int] = (640, 480),
                         image_size: int = 96) -> list[tuple[str | None, str, bool]]:
    """The tabletop_sim node's episode stream for ``seed``, decided in-process by ``selector``.

    Same scenes, same camera frames (``camera_frame``), one decision per episode, judged like
    the simulator judges it: ``make demo DEMO_ARGS="--seed N"`` over DDS makes the same choices
    (the closed-loop test compares them). Returns (chosen, expected, success) per episode.
    """
    generator = TabletopGenerator(TabletopConfig(image_size=image_size), split, seed)
    results = []
    for sample in generator.samples(episodes):
        frame = camera_frame(sample.scene, generator.config, camera_size)
        selection = selector.select(frame, sample.instruction)
        chosen = None if selection.abstained else selection.name  # abstaining publishes nothing
        success = chosen is not None and sample.judge(chosen)
        results.append((chosen, sample.action_name, bool(success)))
    return results
