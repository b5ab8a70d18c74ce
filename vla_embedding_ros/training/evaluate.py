"""`vla-eval`: top-1, top-5 and MRR per split and per primitive, with the baselines beside them.

    vla-eval --model models/tabletop
    vla-eval --model models/tabletop --compare late=runs/late/checkpoints/last/pretrained_model
    vla-eval --model models/tabletop --train-variants config/train_tabletop.yaml \
        --set optim.steps=2000
    vla-eval --model models/tabletop --replay-streams 50 --splits val
    vla-eval --model path/to/clip-vit-base-patch32          # a raw CLIP/SigLIP folder, zero-shot
    vla-eval --model path/to/clip-vit-base-patch32 --dataset my_dataset   # on your own data
    vla-eval --model models/tabletop_continuous --task continuous --compare grid=models/tabletop

In one run it reports: chance, the instruction-only baseline (the same model with every image
blanked, which shows how much the answer depends on seeing the scene), each model given,
optionally the fusion variants trained with the same budget, and optionally a replay of the
demo's closed-loop episode streams (the success rate ``make demo DEMO_ARGS="--seed N"`` would
measure).
A raw CLIP or SigLIP checkpoint folder is evaluated zero-shot (actions scored by their
descriptions through the checkpoint's own text tower, nothing trained; the tables say so), and
one fine-tuned by ``vla-train`` with ``model.init: clip`` is evaluated the same way.
Writes a JSON report and a PNG of the training curves when run logs are available.
"""
from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..actions.library import ActionLibrary
from ..data.tabletop import SPLIT_NAMES
from ..files import atomic_write_text
from ..libero.episode import GRASP_ATTEMPTS
from ..model import VLAModel
from ..model.loading import is_local_folder_name, load_scorer, model_kind, model_library_path
from ..package_share import package_file
from . import metrics
from .evaluation import LibraryScorer, replay_demo_episodes, tabletop_ranks
from .libero_eval import (
    LIBERO_ITERATIONS,
    LIBERO_SAMPLES,
    POLICIES,
    PRIMITIVE_MODES,
)
from .run_evaluation import EVAL_SEED
from .variants import FUSIONS, train_variants  # noqa: F401 (vla-eval's own names)

SPLITS = ['val', 'unseen_combo', 'paraphrase', 'reworded', 'clutter']
# What a reworded sample holds out besides its frame and verb (the template id's suffix).
NOVELTY = {'': 'new frame + verb', '+colour': '+ new colour word',
           '+shape': '+ new shape word', '+colour+shape': '+ new colour and shape words'}
BLANKED = 'instruction only (image blanked)'   # the baseline's name in the report


def novelty(template: str) -> str:
    """The held-out-slot suffix of a template id: '', '+colour', '+shape' or both."""
    _, plus, slots = template.rpartition('/')[2].partition('+')
    return plus + slots


def tabletop_library() -> Path:
    """The benchmark's library: what a raw CLIP/SigLIP folder (which has none) is scored on."""
    return Path(package_file('config', 'tabletop_actions.yaml'))


def library_path_for(model_dir: Path, library: str | None) -> Path:
    """``--library``, else the model's own ``actions.yaml``, else (a raw CLIP/SigLIP folder)
    the tabletop library (``model/loading.model_library_path``)."""
    return model_library_path(model_dir, library, fallback=tabletop_library())


def evaluate_model(model_dir: Path, splits: list[str], num: int, seed: int, device: str,
                   library_path: str | None = None, blank: bool = False,
                   image_size: int = 96, action_prompt: str | None = None) -> dict:
    """Metrics per split (and per primitive) on `num` fresh samples rendered at image_size."""
    model = load_scorer(model_dir, device, action_prompt)
    scorer = LibraryScorer(model, ActionLibrary.from_yaml(library_path_for(model_dir,
                                                                           library_path)))
    report = {}
    for split in splits:
        ranks, templates = tabletop_ranks(scorer, split, num, seed, image_size, blank)
        report[split] = {**metrics.summarise(ranks), 'per_primitive': metrics.by_group(
            ranks, [t.split('/')[0] for t in templates])}
        if split == 'reworded':
            report[split]['per_novelty'] = metrics.by_group(
                ranks, [NOVELTY[novelty(t)] for t in templates])
    return report


def dataset_path_parts(dataset: Path) -> tuple[str, Path]:
    """('lerobot' or 'jsonl', the dataset's own action library path) of a dataset folder."""
    if (dataset / 'meta' / 'info.json').is_file():
        return 'lerobot', dataset / 'meta' / 'actions.yaml'
    return 'jsonl', dataset / 'actions.yaml'


def evaluate_dataset(model_dir: Path, dataset: Path, library_path: Path, num: int, seed: int,
                     device: str, blank: bool = False, action_prompt: str | None = None,
                     batch_size: int = 100) -> dict:
    """Top-1/5 and MRR on up to ``num`` samples of a recorded dataset (JSONL or LeRobot v3),
    each scored against the whole library; ``blank`` greys every image."""
    from .sources import recorded_source

    model = load_scorer(model_dir, device, action_prompt)
    library = ActionLibrary.from_yaml(library_path)
    scorer = LibraryScorer(model, library, batch_size)
    kind, _ = dataset_path_parts(dataset)
    source = recorded_source(kind, str(dataset), library, seed, strict=True)
    n = min(num, len(source.dataset))
    images, instructions, targets = source.next_batch(n)
    if blank:
        images = np.full_like(images, 128)
    ranks = [metrics.target_ranks(scorer.logits(images[i:i + batch_size],
                                                instructions[i:i + batch_size]),
                                  torch.as_tensor(targets[i:i + batch_size],
                                                  device=model.device))
             for i in range(0, n, batch_size)]
    return metrics.summarise(np.concatenate(ranks))


def replay_streams(selector, streams: int, episodes: int = 20, split: str = 'val') -> dict:
    """Success of an ActionSelector over the demo's episode streams of ``split`` (what
    ``make demo DEMO_ARGS="--split S --seed N"`` runs), seeds 0..streams-1, ``episodes`` each."""
    wins = [sum(ok for _, _, ok in replay_demo_episodes(selector, seed, episodes, split))
            for seed in range(streams)]
    return {'split': split, 'streams': streams, 'episodes_per_stream': episodes,
            'wins_per_stream': wins, 'success_rate': sum(wins) / (streams * episodes)}


def format_replay(replay: dict, target: float = 0.9) -> str:
    n, wins = replay['episodes_per_stream'], replay['wins_per_stream']
    need = math.ceil(round(target * n, 6))   # the fewest successes reaching it: 18 of 20
    reached = sum(w >= need for w in wins)
    return (f"\n== closed-loop replay, {replay.get('split', 'val')} (the demo's episode "
            f"streams, seeds 0-{len(wins) - 1}, {n} episodes each) ==\n"
            f"success {replay['success_rate']:.1%} ({sum(wins)} / {n * len(wins)}); streams "
            f"reaching {need}/{n}: {reached} / {len(wins)}; worst {min(wins)}/{n}, "
            f"best {max(wins)}/{n}\nper stream: {' '.join(map(str, wins))}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='vla-eval', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model',
                   help='model directory (config.json + safetensors), or a CLIP/SigLIP '
                        'checkpoint folder, evaluated zero-shot')
    p.add_argument('--action-prompt', metavar='TEMPLATE',
                   help="CLIP/SigLIP models: put each action's description into TEMPLATE "
                        "before the text tower, e.g. 'a robot arm that {description}' "
                        "(default: the folder's own from fine-tuning, else the description)")
    p.add_argument('--library', help='action library YAML (default: <model>/actions.yaml; '
                                     'for a raw CLIP/SigLIP folder the tabletop library)')
    p.add_argument('--compare', action='append', default=[], metavar='NAME=DIR',
                   help='another model to evaluate in the same run')
    p.add_argument('--train-variants', metavar='CONFIG',
                   help='train late/gated/transformer with this config and the same budget')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='KEY=VALUE',
                   help='override for --train-variants, e.g. optim.steps=2000')
    p.add_argument('--variants-dir', default='runs/variants')
    p.add_argument('--splits', nargs='+',
                   help=f'tabletop splits (default: {" ".join(SPLITS)}; none with --dataset)')
    p.add_argument('--dataset', metavar='DIR',
                   help='also score your own recorded dataset (JSONL, or a LeRobot v3 folder), '
                        "up to --num samples, against its own actions.yaml unless --library; "
                        'with --task libero: instead of episodes, the decisions of a '
                        'vla-libero-dataset folder (your own placements), split by scene '
                        'change')
    p.add_argument('--task', choices=['grid', 'continuous', 'libero'], default='grid',
                   help='continuous: the continuous tabletop task (objects anywhere, actions '
                        '(primitive, x, y)); success and position error of the sampled '
                        'search and its baselines (random sampling, 1 vs 3 iterations, the '
                        'grid library, --compare models on the grid library); libero: '
                        "LIBERO's official initial states (--suites, --trials, --policy), "
                        'success by its own check_success')
    libero = p.add_argument_group('--task libero')
    libero.add_argument('--suites', nargs='+', metavar='NAME',
                        help='LIBERO suites: any the installed benchmark registers '
                             '(libero_spatial, libero_object, ..., LIBERO-PRO variants)')
    libero.add_argument('--trials', type=int, default=50,
                        help='episodes per task: official initial states 0..N-1 (default: '
                             'all 50, as published LIBERO results)')
    libero.add_argument('--tasks', type=int, nargs='+', metavar='I',
                        help='task indices (default: every task of each suite)')
    libero.add_argument('--policy', choices=POLICIES,
                        default='model',
                        help="who decides: the --model's sampled decision, the same with an "
                             "empty instruction (blind), the scripted expert (the executor's "
                             'ceiling) or a random image point (the floor) (default: '
                             '%(default)s)')
    libero.add_argument('--primitive', choices=PRIMITIVE_MODES, default='given',
                        help="given: each decision's primitive is the one the episode asks for "
                             '(pick, then place) and the model chooses where; chosen: the '
                             'model chooses the primitive too, a wrong one fails the episode '
                             '(default: %(default)s)')
    libero.add_argument('--sample-count', type=int, metavar='N',
                        help="a model's sampled search (--policy model or blind): candidates "
                             f'per round (default: {LIBERO_SAMPLES})')
    libero.add_argument('--sample-iterations', type=int, metavar='N',
                        help="a model's sampled search: resampling rounds after the uniform "
                             f'samples (default: {LIBERO_ITERATIONS})')
    libero.add_argument('--grasp-attempts', type=int, default=GRASP_ATTEMPTS, metavar='N',
                        help='picks an episode may make: a pick the gripper reports empty, or '
                             'that dropped its object, is decided again from a new frame while '
                             'the step budget lasts (1 = never; default: %(default)s)')
    libero.add_argument('--placement-seed', type=int, metavar='N',
                        help="instead of the official initial states, the seeded random "
                             'placements vla-libero-dataset --seed N draws (validation on your '
                             'own scenes; the official states are the test set)')
    libero.add_argument('--sheet', metavar='PNG',
                        help="contact sheet of each task's first frame with the chosen pick "
                             '(red) and place (green) points')
    p.add_argument('--num', type=int, default=300,
                   help='samples (scenes) per split (default: 300, as in the README\'s '
                        'tables; a 300-sample top-1 has a standard error of up to 2.9 '
                        'points)')
    p.add_argument('--seed', type=int, default=EVAL_SEED)
    p.add_argument('--device', default='auto')
    p.add_argument('--image-size', type=int, default=None,
                   help='benchmark render size in px (default: 96 tabletop, 256 LIBERO)')
    p.add_argument('--replay-streams', type=int, default=0, metavar='N',
                   help="also replay the demo's closed-loop episode streams 0..N-1 of each of "
                        '--splits in-process')
    p.add_argument('--episodes', type=int, default=20, help='episodes per replayed stream')
    p.add_argument('--text-prior', action='store_true',
                   help="also measure the frozen text encoder's own prior for the training "
                        'and the held-out synonyms (nearest canonical name)')
    p.add_argument('--json', help='write the full report here')
    p.add_argument('--plot', help='PNG of training curves from --runs')
    p.add_argument('--runs', nargs='*', default=[], help='run directories for --plot')
    return p.parse_args(argv)


class UsageError(Exception):
    """A command-line mistake: vla-eval prints it and exits with 2."""


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.task == 'libero':
            from .libero_eval import libero_main
            return libero_main(args, UsageError)
        if args.image_size is None:
            args.image_size = 96
        if not args.model:
            raise UsageError('--model is required (except --task libero --policy expert)')
        if args.task == 'continuous':
            return continuous_main(args)
        check_grid_args(args)
        models = named_models(args.model, args.compare)
        runs = list(args.runs)
        if args.train_variants:
            for fusion, path in train_variants(args.train_variants, args.overrides,
                                               Path(args.variants_dir)).items():
                models[f'{fusion} (same budget)'] = path
                runs.append(str(Path(path).parents[2]))
        kinds = {name: model_kind(path) for name, path in models.items()}
        check_action_prompt(args.action_prompt, kinds)
    except UsageError as err:
        print(f'vla-eval: {err}', file=sys.stderr)
        return 2
    library_path = library_path_for(models['model'], args.library)
    announce_zero_shot(models, kinds, args.library)
    report = score_tabletop(models, kinds, library_path, args)
    if args.dataset:
        score_dataset(report, models, library_path, args)
    print_report(report, kinds, args)
    if args.text_prior:
        report['text_prior'] = measure_text_prior(models['model'], kinds['model'], args)
    if args.replay_streams > 0:
        report['closed_loop_replay'] = replay_report(models['model'], kinds['model'],
                                                     library_path, args)
    write_outputs(report, runs, args)
    return 0


def check_grid_args(args) -> None:
    """Fill in the default splits; UsageError for flags that contradict each other."""
    if args.splits is None:
        args.splits = [] if args.dataset else list(SPLITS)
    if args.replay_streams < 0 or args.episodes < 1:
        raise UsageError('--replay-streams must be >= 0 and --episodes >= 1')
    unknown = [s for s in args.splits if s not in SPLIT_NAMES]
    if unknown:
        raise UsageError(f'unknown split(s) {unknown}; choose from {", ".join(SPLIT_NAMES)}')
    if args.plot and not (args.runs or args.train_variants):
        raise UsageError('--plot draws the training curves of --runs DIR [DIR ...] (or of '
                         '--train-variants); none given')


def named_models(model: str, compare: list[str]) -> dict[str, Path]:
    """``{'model': --model, NAME: DIR for each --compare NAME=DIR}``; UsageError naming a
    folder that does not exist."""
    models = {'model': Path(model)}
    for item in compare:
        name, _, path = item.partition('=')
        if not path:
            raise UsageError(f'--compare wants NAME=DIR, got {item!r}')
        models[name] = Path(path)
    for name, path in models.items():
        if missing_folder(path):
            flag = '--model' if name == 'model' else f'--compare {name}='
            raise UsageError(f'{flag}{"" if flag.endswith("=") else " "}{path}: no such model '
                             f'folder{did_you_mean(path)}')
    return models


def missing_folder(path: Path) -> bool:
    """True when ``path`` is meant as a folder here and is none: a path-like name, one whose
    parent folder exists, or any name while the hub is off (HF_HUB_OFFLINE). Other names may
    be hub names (``org/model``), which the loader may fetch where a hub is reachable."""
    if path.is_dir():
        return False
    name = str(path)
    return (is_local_folder_name(name) or name.count('/') != 1 or path.parent.is_dir()
            or os.environ.get('HF_HUB_OFFLINE') == '1')


def did_you_mean(path: Path) -> str:
    """'; did you mean X?' for a folder beside ``path`` with a close name, else ''."""
    parent = path.parent if path.parent.is_dir() else None
    if parent is None:
        return ''
    names = [p.name for p in parent.iterdir() if p.is_dir()]
    close = difflib.get_close_matches(path.name, names, n=1)
    return f'; did you mean {parent / close[0]}?' if close else ''


def check_action_prompt(action_prompt: str | None, kinds: dict[str, str]) -> None:
    """--action-prompt needs a CLIP/SigLIP model to apply to, and a {description} slot."""
    if action_prompt is None:
        return
    if all(kind == 'trained' for kind in kinds.values()):
        raise UsageError('--action-prompt applies to CLIP/SigLIP folders; none is given')
    if '{description}' not in action_prompt:
        raise UsageError(f'--action-prompt must contain {{description}}, got '
                         f'{action_prompt!r}')


def announce_zero_shot(models: dict[str, Path], kinds: dict[str, str],
                       library: str | None) -> None:
    """Say which models are raw checkpoints scored with nothing trained, and on what."""
    for name, kind in kinds.items():
        if kind.startswith('zero-shot'):
            print(f'{name}: {models[name]} is a raw {kind.split()[1]} checkpoint, evaluated '
                  "ZERO-SHOT (no training): each action is scored by its description through "
                  "the checkpoint's own text tower, against the library "
                  f'{library_path_for(models[name], library)}')


def score_tabletop(models: dict[str, Path], kinds: dict[str, str], library_path: Path,
                   args) -> dict:
    """The report's skeleton and every model's tabletop metrics, plus the instruction-only
    baseline (the main model with every image blanked)."""
    library = ActionLibrary.from_yaml(library_path)
    report: dict = {'chance': metrics.chance(len(library)), 'seed': args.seed, 'num': args.num,
                    'models': {}, 'model_kinds': kinds}
    kw = dict(splits=args.splits, num=args.num, seed=args.seed, device=args.device,
              library_path=args.library, image_size=args.image_size,
              action_prompt=args.action_prompt)
    for name, path in models.items():
        report['models'][name] = evaluate_model(path, **kw)
    report['models'][BLANKED] = evaluate_model(models['model'], blank=True, **kw)
    return report


def score_dataset(report: dict, models: dict[str, Path], library_path: Path, args) -> None:
    """Every model (and the blanked baseline) on --dataset, against --library, else the
    dataset's own actions.yaml, else the models' library."""
    dataset = Path(args.dataset)
    _, own = dataset_path_parts(dataset)
    data_library = Path(args.library) if args.library else own if own.is_file() \
        else library_path
    report['dataset'] = {'path': str(dataset), 'library': str(data_library),
                         'chance': metrics.chance(len(ActionLibrary.from_yaml(data_library)))}
    for name, path in [*models.items(), (BLANKED, models['model'])]:
        report['models'][name]['dataset'] = evaluate_dataset(
            path, dataset, data_library, args.num, args.seed, args.device,
            blank=name == BLANKED, action_prompt=args.action_prompt)


def print_report(report: dict, kinds: dict[str, str], args) -> None:
    """A table per split (and for --dataset) with every model, then the main model per
    primitive and, for reworded, by what is new."""

    def label(name: str) -> str:
        kind = kinds.get(name, 'trained')
        return name if kind == 'trained' else f'{name} [{kind}]'

    for split in args.splits:
        rows = [('chance', report['chance'])]
        rows += [(label(name), r[split]) for name, r in report['models'].items()]
        print(metrics.format_table(rows, title=f'\n== {split} ({args.num} samples, '
                                              f'seed {args.seed}) =='))
    if args.dataset:
        rows = [('chance', report['dataset']['chance'])]
        rows += [(label(name), r['dataset']) for name, r in report['models'].items()]
        print(metrics.format_table(rows, title=f'\n== dataset {args.dataset} (up to '
                                              f'{args.num} samples, library '
                                              f'{report["dataset"]["library"]}) =='))
    main_report = report['models']['model']
    for split in args.splits:
        print(metrics.format_table(list(main_report[split]['per_primitive'].items()),
                                   title=f'\n-- {label("model")}, {split}, per primitive --'))
        if 'per_novelty' in main_report[split]:
            print(metrics.format_table(list(main_report[split]['per_novelty'].items()),
                                       title=f'\n-- {label("model")}, {split}, by what is '
                                             'new --'))


def measure_text_prior(model_dir: Path, kind: str, args) -> dict:
    """--text-prior: the frozen text encoder's own prior, printed and returned."""
    from .text_prior import format_prior, text_prior
    model = load_scorer(model_dir, args.device, args.action_prompt)
    encode = model.encode_text
    if kind != 'trained':   # unit embeddings; text_prior reads .pooled
        from types import SimpleNamespace

        def encode(texts, _encode=model.encode_text):
            return SimpleNamespace(pooled=_encode(texts))
    prior = text_prior(encode)
    print(format_prior(prior))
    return prior


def replay_report(model_dir: Path, kind: str, library_path: Path, args) -> dict:
    """--replay-streams: the demo's closed-loop episode streams of each split, replayed
    in-process by an ActionSelector of the main model; printed and returned per split."""
    from ..selection.selector import ActionSelector
    if args.action_prompt is not None and kind != 'trained':
        selector = ActionSelector(load_scorer(model_dir, args.device, args.action_prompt),
                                  ActionLibrary.from_yaml(library_path))
    else:
        selector = ActionSelector.from_pretrained(model_dir, str(library_path),
                                                  device=args.device)
    replays = {}
    for split in args.splits:
        replays[split] = replay_streams(selector, args.replay_streams, args.episodes, split)
        print(format_replay(replays[split]))
    return replays


def write_outputs(report: dict, runs: list[str], args) -> None:
    """--json (the whole report) and --plot (the training curves of the runs)."""
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2))
        print(f'report: {args.json}')
    if args.plot and runs:
        from .plot import plot_runs
        print(f'curves: {plot_runs([Path(r) for r in runs], Path(args.plot))}')


def continuous_main(args) -> int:
    """``--task continuous``: the table of ``continuous_eval.continuous_report``."""
    from .continuous_eval import continuous_report, format_continuous
    splits = args.splits or ['val', 'unseen_combo']
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:
        raise UsageError(f'unknown split(s) {unknown}')
    named_models(args.model, args.compare)   # UsageError for a folder that is not there
    library_path = library_path_for(Path(args.model), args.library)
    library = ActionLibrary.from_yaml(library_path)
    if library.space is None:
        raise UsageError(f'--task continuous needs a library with a continuous space; '
                         f'{library_path} has none (pass --library '
                         'config/tabletop_continuous_actions.yaml)')
    models = {name: VLAModel.from_pretrained(path, device=args.device)
              for name, path in named_models(args.model, args.compare).items()}
    report = continuous_report(models, library, splits, args.num, args.seed, args.image_size)
    print(format_continuous(report, args.num, args.seed))
    if args.json:
        atomic_write_text(args.json, json.dumps({'task': 'continuous', 'num': args.num,
                                                 'seed': args.seed, 'splits': report},
                                                indent=2))
        print(f'report: {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
