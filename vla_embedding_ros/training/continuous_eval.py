"""Score a model on the continuous tabletop task: success and position error per split.

A decision is what the node makes in ``candidate_mode: sampled``: the query from the frame
and instruction, then derivative-free optimisation over the space (selection/sampling.py).
``grid`` instead scores the 80 fixed actions (cell centres) and acts with the best one: the
discretised model on the same continuous scenes. Each row of a comparison sees the same
scenes (one seeded stream per split).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..data.tabletop import TabletopConfig
from ..data.tabletop.continuous import ContinuousTabletopGenerator, position_error
from ..selection.preprocess import ImagePreprocessor
from ..selection.sampling import SamplingConfig, refine


@dataclass
class ContinuousResult:
    n: int
    success: float
    pick_error: float        # mean distance to the target centre, in object radii (picks)
    error: float             # the same over every decision
    primitive_ok: float      # the asked primitive was chosen

    def as_dict(self) -> dict:
        return {'n': self.n, 'success': self.success, 'pick_error_radii': self.pick_error,
                'error_radii': self.error, 'primitive': self.primitive_ok}


def continuous_scenes(split: str, num: int, seed: int, image_size: int = 96):
    generator = ContinuousTabletopGenerator(TabletopConfig(image_size=image_size), split, seed)
    return list(generator.samples(num))


@torch.inference_mode()
def _queries(model, samples, batch_size: int = 100) -> torch.Tensor:
    preprocess = ImagePreprocessor(model.image_size, model.image_mean, model.image_std,
                                   model.device)
    out = []
    for start in range(0, len(samples), batch_size):
        part = samples[start:start + batch_size]
        pixels = preprocess([s.image for s in part])
        out.append(model.encode_query(pixels, [s.instruction for s in part]))
    return torch.cat(out)


def decide_sampled(model, space, queries: torch.Tensor, sampling: SamplingConfig,
                   choices=None):
    """The DFO choice for each query row (the seed advances per row, as a node's would not:
    each scene gets draws of its own so a lucky seed cannot carry a whole split). ``choices``:
    per row the option the space's choice is pinned to (None: the model chooses)."""
    chosen = []
    for i in range(queries.shape[0]):
        row_space = space.pinned_to(choices[i]) if choices is not None else space
        with torch.inference_mode(sampling.gradient_steps == 0):
            query = queries[i:i + 1].clone()   # a normal tensor when gradients flow

            def score(candidates, query=query):
                return model.score(query, model.encode_actions(candidates, None))[0]

            found = refine(score, row_space, replace(sampling, seed=sampling.seed + i),
                           model.device)
        chosen.append(found.best)
    return np.stack(chosen)


@torch.inference_mode()
def decide_grid(model, library, queries: torch.Tensor) -> np.ndarray:
    """The best fixed library action for each query row, as a vector of the space."""
    params = torch.tensor(library.params(), device=model.device)
    actions = model.encode_actions(params, library.texts())
    best = model.score(queries, actions).argmax(dim=1).cpu().numpy()
    return library.params()[best]


def judge(samples, vectors: np.ndarray, image_size: int) -> ContinuousResult:
    success = [s.judge(v) for s, v in zip(samples, vectors, strict=True)]
    errors = np.array([position_error(s.target, v, image_size)
                       for s, v in zip(samples, vectors, strict=True)])
    picks = np.array([s.primitive == 'pick' for s in samples])
    chosen = [int(np.argmax(v[:5])) for v in vectors]
    asked = [int(np.argmax(s.vector[:5])) for s in samples]
    return ContinuousResult(len(samples), float(np.mean(success)),
                            float(errors[picks].mean()) if picks.any() else float('nan'),
                            float(errors.mean()),
                            float(np.mean(np.equal(chosen, asked))))


def evaluate_continuous(model, library, split: str, num: int, seed: int,
                        sampling: SamplingConfig | None = None, image_size: int = 96,
                        mode: str = 'sampled') -> ContinuousResult:
    """Success of ``mode`` (``sampled`` or ``grid``) on ``num`` scenes of ``split``."""
    was_training = model.training
    model.eval()
    try:
        samples = continuous_scenes(split, num, seed, image_size)
        queries = _queries(model, samples)
        if mode == 'grid':
            vectors = decide_grid(model, library, queries)
        else:
            vectors = decide_sampled(model, library.space, queries,
                                     sampling or SamplingConfig())
        return judge(samples, vectors, image_size)
    finally:
        model.train(was_training)


# The rows of ``vla-eval --task continuous`` for the model under test: the node's default
# search, the same search cut short, sampling without refinement (at the default's sample
# count, and at its whole evaluation budget), gradient steps after the search, and the grid
# library scored by the same model (discretisation error).
VARIANTS = {
    'DFO 1024 x 3 (default)': SamplingConfig(),
    'DFO 1024 x 1': SamplingConfig(iterations=1),
    'random 1024, no refinement': SamplingConfig(iterations=0),
    'random 4096, no refinement': SamplingConfig(samples=4096, iterations=0),
    'DFO 1024 x 3 + 10 gradient steps': SamplingConfig(gradient_steps=10),
}


def continuous_report(models: dict, library, splits: list[str], num: int, seed: int,
                      image_size: int = 96, variants: dict | None = None) -> dict:
    """``{split: {row: result dict}}``: every variant of the first model, the grid library
    scored by each model, on the same scenes per split. ``models``: name -> loaded model;
    a model without Fourier features (a grid-trained one) gets the grid row only unless it is
    the first."""
    variants = VARIANTS if variants is None else variants
    report: dict = {}
    names = list(models)
    for split in splits:
        samples = continuous_scenes(split, num, seed, image_size)
        rows = {}
        oracle = [library.params()[library.index(_grid_name(s))] for s in samples]
        rows['grid oracle (right cell centre)'] = judge(samples, np.stack(oracle),
                                                        image_size).as_dict()
        for name in names:
            model = models[name].eval()
            queries = _queries(model, samples)
            if name == names[0]:
                for label, sampling in variants.items():
                    vectors = decide_sampled(model, library.space, queries, sampling)
                    rows[f'{name}: {label}'] = judge(samples, vectors, image_size).as_dict()
            rows[f'{name}: grid library (80 cell centres)'] = judge(
                samples, decide_grid(model, library, queries), image_size).as_dict()
        report[split] = rows
    return report


def _grid_name(sample) -> str:
    from ..data.tabletop import action_name
    return action_name(sample.primitive, *sample.target.cell)


def format_continuous(report: dict, num: int, seed: int) -> str:
    lines = []
    for split, rows in report.items():
        lines.append(f'\n== continuous {split} ({num} scenes, seed {seed}) ==')
        lines.append(f'{"":52s} {"success":>8s} {"pick err/r":>10s} {"all err/r":>10s} '
                     f'{"primitive":>9s}')
        for name, r in rows.items():
            lines.append(f'{name:52s} {100 * r["success"]:7.1f}% {r["pick_error_radii"]:10.2f} '
                         f'{r["error_radii"]:10.2f} {100 * r["primitive"]:8.1f}%')
    lines.append('(pick err/r: mean distance from the chosen point to the target centre over '
                 'pick decisions, all err/r: the same over every decision, both in object radii '
                 '(/r); success needs < 1 radius and the asked primitive)')
    return '\n'.join(lines)
