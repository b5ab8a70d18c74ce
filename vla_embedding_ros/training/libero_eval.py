"""``vla-eval --task libero``: LIBERO's official initial states, judged by ``check_success``.

Each episode is two decisions (pick from the first agentview frame, place from the frame after
the grasp), made by one of these policies and executed by the ROS-free executor:

* ``model``: the selector's sampled decision over the model's library space ``[pick, place,
  u, v]`` (the same ``ActionSelector.select_sampled`` the node runs), seeded;
* ``expert``: the scripted expert (simulator state): the executor's ceiling;
* ``blind``: the same model with every instruction replaced by an empty one (how much the
  words matter);
* ``random``: a uniformly random point of the image for each primitive: the floor.

Every policy but the expert is also scored against the expert's point at the same frames
(pick and place point errors in cm on the table).

``--primitive given`` (the default) pins each decision's primitive to the one the episode asks
for (the robot knows it picks, then places; the model chooses *where*); ``chosen`` lets the
model choose the primitive too, and a wrong one fails the episode (``wrong_primitive``).

The official initial states are the benchmark's test set: evaluate on them, never choose
settings on them.
"""
from __future__ import annotations

import json
import random

from ..files import atomic_write_text

POLICIES = ('model', 'blind', 'expert', 'random')
PRIMITIVE_MODES = ('given', 'chosen')
DEFAULT_IMAGE_SIZE = 256     # the agentview render the executor lifts points from
# The sampled search for LIBERO decisions, chosen on the validation placements' 136 decisions
# (models/libero/README.md): 4,096 candidates and 6 rounds put 72-74% of picks within 3 px of
# the expert's (1,024 and 3: 65-68%, two sampling seeds); 72 ms a decision on the 2-core CPU,
# against ~4 s of physics an episode.
LIBERO_SAMPLES, LIBERO_ITERATIONS = 4096, 6


class SelectorPolicy:
    """A model's sampled decision as an episode policy (see :mod:`..libero.episode`)."""

    def __init__(self, model_dir: str, library: str | None, device: str, seed: int,
                 blind: bool = False, primitive: str = 'given', samples: int | None = None,
                 iterations: int | None = None):
        from ..selection import ActionSelector
        from ..selection.sampling import SamplingConfig
        self.selector = ActionSelector.from_pretrained(model_dir, library, device=device)
        if self.selector.library.space is None:
            raise ValueError(f'the library of {model_dir} has no continuous space: LIBERO '
                             'needs the [pick, place, u, v] space of '
                             'config/libero_actions.yaml (--library)')
        if primitive not in PRIMITIVE_MODES:
            raise ValueError(f'primitive must be one of {PRIMITIVE_MODES}, got {primitive!r}')
        self.sampling = SamplingConfig(
            seed=seed, samples=LIBERO_SAMPLES if samples is None else samples,
            iterations=LIBERO_ITERATIONS if iterations is None else iterations)
        self.sampling.check()
        self.blind, self.primitive = blind, primitive
        self.__name__ = (f'model {model_dir}' + (' (empty instruction)' if blind else '')
                         + f', primitive {primitive}')

    def __call__(self, frame, instruction: str, primitive: str) -> tuple[float, float]:
        from ..libero.episode import check_action
        pin = primitive if self.primitive == 'given' else None
        if self.blind:
            return check_action(self._blind(frame.rgb, pin), primitive)
        chosen = self.selector.select_sampled(frame.rgb, instruction, sampling=self.sampling,
                                              choice=pin)
        return check_action(chosen.vector, primitive)

    def _blind(self, rgb, pin: str | None):
        """The sampled decision with the empty instruction's text features (the selector
        itself abstains on an empty instruction, as the node must)."""
        import torch

        from ..selection.sampling import refine
        selector = self.selector
        with torch.inference_mode():
            query = selector.backend.query(selector.preprocess(rgb, 'rgb'),
                                           selector.text_features(''))

            def score(candidates):
                return selector.model.score(query, selector.model.encode_actions(candidates,
                                                                                 None))[0]
            return refine(score, selector.library.space.pinned_to(pin), self.sampling,
                          selector.model.device).best


class RandomPolicy:
    """A uniformly random image point for each decision (seeded): the floor."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.__name__ = f'random (seed {seed})'

    def __call__(self, frame, instruction: str, primitive: str) -> tuple[float, float]:
        return self.rng.random(), self.rng.random()


def make_policy(args):
    """The policy ``--policy`` names ('expert' is the evaluation's own)."""
    if args.policy == 'expert':
        return 'expert'
    if args.policy == 'random':
        return RandomPolicy(args.seed)
    return SelectorPolicy(args.model, args.library, args.device, args.seed,
                          blind=args.policy == 'blind', primitive=args.primitive,
                          samples=args.sample_count, iterations=args.sample_iterations)


def libero_main(args, usage_error) -> int:
    """Run the evaluation ``args`` describe and print its per-task table.

    Raises:
        usage_error: a command-line mistake (unknown suite, no --model for --policy model).
    """
    if args.dataset:
        from .libero_decisions import decisions_main
        return decisions_main(args, usage_error)
    from ..libero import LiberoNotInstalled
    from ..libero.evaluation import evaluate, format_table
    if not args.suites:
        raise usage_error('--task libero needs --suites NAME [NAME ...] (e.g. libero_spatial)')
    if args.policy in ('model', 'blind') and not args.model:
        raise usage_error(f'--task libero --policy {args.policy} needs --model DIR (or use '
                          '--policy expert / random)')
    if args.primitive == 'chosen' and args.policy not in ('model', 'blind'):
        raise usage_error(f'--primitive chosen is for a model (--policy model or blind); '
                          f'--policy {args.policy} always gives the primitive it is asked for')
    searched = [flag for flag, value in (('--sample-count', args.sample_count),
                                         ('--sample-iterations', args.sample_iterations))
                if value is not None]
    if searched and args.policy not in ('model', 'blind'):
        raise usage_error(f'{searched[0]} is for a model (--policy model or blind); --policy '
                          f'{args.policy} does not search')
    if args.grasp_attempts < 1:
        raise usage_error(f'--grasp-attempts must be at least 1 (1 = no retry), got '
                          f'{args.grasp_attempts}')
    try:
        policy = make_policy(args)
        image_size = args.image_size or DEFAULT_IMAGE_SIZE
        result = evaluate(args.suites, args.trials, policy, args.tasks, image_size,
                          args.sheet, print, placement_seed=args.placement_seed,
                          grasp_attempts=args.grasp_attempts)
    except (LiberoNotInstalled, FileNotFoundError, ValueError) as exc:
        raise usage_error(str(exc)) from exc
    result['seed'] = args.seed
    if args.policy in ('model', 'blind'):
        result['primitive'] = args.primitive
        search = policy.sampling
        result['sampling'] = {'samples': search.samples, 'iterations': search.iterations}
    print(format_table(result))
    if args.sheet:
        print(f'contact sheet: {args.sheet}')
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
        print(f'report: {args.json}')
    return 0
