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
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch

from ..actions.library import ActionLibrary
from ..data.tabletop import SPLIT_NAMES
from ..model import VLAModel
from ..model.pretrained_space import checkpoint_type, is_fine_tuned
from ..package_share import package_file
from . import metrics
from .evaluation import LibraryScorer, replay_demo_episodes, tabletop_ranks
from .train import EVAL_SEED

SPLITS = ['val', 'unseen_combo', 'paraphrase', 'reworded', 'clutter']
# What a reworded sample holds out besides its frame and verb (the template id's suffix).
NOVELTY = {'': 'new frame + verb', '+colour': '+ new colour word',
           '+shape': '+ new shape word', '+colour+shape': '+ new colour and shape words'}
FUSIONS = ['late', 'gated', 'transformer']


def novelty(template: str) -> str:
    """The held-out-slot suffix of a template id: '', '+colour', '+shape' or both."""
    _, plus, slots = template.rpartition('/')[2].partition('+')
    return plus + slots


def library_path_for(model_dir: Path, fallback: str | None) -> Path:
    """``--library``, else the model's own ``actions.yaml``; a raw CLIP/SigLIP folder has
    none, and is scored against the package's tabletop library (the benchmark's)."""
    if fallback:
        return Path(fallback)
    own = Path(model_dir) / 'actions.yaml'
    if not own.is_file() and checkpoint_type(model_dir) is not None:
        return Path(package_file('config', 'tabletop_actions.yaml'))
    return own


def _library_for(model_dir: Path, fallback: str | None) -> ActionLibrary:
    return ActionLibrary.from_yaml(library_path_for(model_dir, fallback))


def model_kind(model_dir: Path) -> str:
    """What a model folder is, as the report says it: 'zero-shot clip' (a raw CLIP/SigLIP
    checkpoint: nothing trained), 'fine-tuned siglip' (one trained by vla-train with
    model.init) or 'trained' (a VLAModel)."""
    kind = checkpoint_type(model_dir)
    if kind is None:
        return 'trained'
    return f'{"fine-tuned" if is_fine_tuned(model_dir) else "zero-shot"} {kind}'


def load_eval_model(model_dir: Path, device: str, action_prompt: str | None = None):
    """A VLAModel folder, or a CLIP/SigLIP folder (raw or fine-tuned) as the zero-shot
    scorer; ``action_prompt`` overrides a CLIP/SigLIP folder's action prompt."""
    if checkpoint_type(model_dir) is not None:
        from ..selection.zero_shot import ZeroShotCLIP
        return ZeroShotCLIP.from_pretrained(model_dir, device=device,
                                            action_prompt=action_prompt)
    return VLAModel.from_pretrained(model_dir, device=device)


def evaluate_model(model_dir: Path, splits: list[str], num: int, seed: int, device: str,
                   library_path: str | None = None, blank: bool = False,
                   image_size: int = 96, action_prompt: str | None = None) -> dict:
    """Metrics per split (and per primitive) on `num` fresh samples rendered at image_size."""
    model = load_eval_model(Path(model_dir), device, action_prompt)
    scorer = LibraryScorer(model, _library_for(Path(model_dir), library_path))
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

    model = load_eval_model(Path(model_dir), device, action_prompt)
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


def train_variants(config: str, overrides: list[str], out_dir: Path) -> dict[str, Path]:
    """Train each fusion variant with the same config and budget; returns their model dirs."""
    from . import checkpoint as ckpt
    from .config import load_config
    from .train import Trainer
    dirs = {}
    for fusion in FUSIONS:
        cfg = load_config(config, [*overrides, f'model.fusion.type={fusion}',
                                   f'run_name=variant-{fusion}', f'output_dir={out_dir}'])
        # An earlier variant run continues only with the same settings: a changed config is
        # refused by name (delete the folder or pick another --variants-dir), never reused.
        trainer = Trainer(cfg, resume=ckpt.latest_checkpoint(cfg.run_dir) is not None)
        trainer.run()
        dirs[fusion] = ckpt.latest_checkpoint(cfg.run_dir) / ckpt.MODEL_DIR
    return dirs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='vla-eval', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', required=True,
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
                        "up to --num samples, against its own actions.yaml unless --library")
    p.add_argument('--task', choices=['grid', 'continuous'], default='grid',
                   help='continuous: the continuous tabletop task (objects anywhere, actions '
                        '(primitive, x, y)); success and position error of the sampled '
                        'search and its baselines (random sampling, 1 vs 3 iterations, the '
                        'grid library, --compare models on the grid library)')
    p.add_argument('--num', type=int, default=500, help='samples per split')
    p.add_argument('--seed', type=int, default=EVAL_SEED)
    p.add_argument('--device', default='auto')
    p.add_argument('--image-size', type=int, default=96, help='benchmark render size (px)')
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


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.task == 'continuous':
        return continuous_main(args)
    if args.splits is None:
        args.splits = [] if args.dataset else list(SPLITS)
    if args.replay_streams < 0 or args.episodes < 1:
        print('vla-eval: --replay-streams must be >= 0 and --episodes >= 1', file=sys.stderr)
        return 2
    unknown = [s for s in args.splits if s not in SPLIT_NAMES]
    if unknown:
        print(f'vla-eval: unknown split(s) {unknown}; choose from {", ".join(SPLIT_NAMES)}',
              file=sys.stderr)
        return 2
    if args.plot and not (args.runs or args.train_variants):
        print('vla-eval: --plot draws the training curves of --runs DIR [DIR ...] (or of '
              '--train-variants); none given', file=sys.stderr)
        return 2
    models = {'model': Path(args.model)}
    for item in args.compare:
        name, _, path = item.partition('=')
        if not path:
            print(f'vla-eval: --compare wants NAME=DIR, got {item!r}', file=sys.stderr)
            return 2
        models[name] = Path(path)
    runs = list(args.runs)
    if args.train_variants:
        for fusion, path in train_variants(args.train_variants, args.overrides,
                                           Path(args.variants_dir)).items():
            models[f'{fusion} (same budget)'] = path
            runs.append(str(Path(path).parents[2]))

    kinds = {name: model_kind(path) for name, path in models.items()}
    if args.action_prompt is not None:
        if all(kind == 'trained' for kind in kinds.values()):
            print('vla-eval: --action-prompt applies to CLIP/SigLIP folders; none is given',
                  file=sys.stderr)
            return 2
        if '{description}' not in args.action_prompt:
            print(f'vla-eval: --action-prompt must contain {{description}}, got '
                  f'{args.action_prompt!r}', file=sys.stderr)
            return 2
    library_path = library_path_for(models['model'], args.library)
    library = ActionLibrary.from_yaml(library_path)
    report: dict = {'chance': metrics.chance(len(library)), 'seed': args.seed, 'num': args.num,
                    'models': {}, 'model_kinds': kinds}
    for name, kind in kinds.items():
        if kind.startswith('zero-shot'):
            print(f'{name}: {models[name]} is a raw {kind.split()[1]} checkpoint, evaluated '
                  "ZERO-SHOT (no training): each action is scored by its description through "
                  "the checkpoint's own text tower, against the library "
                  f'{library_path_for(models[name], args.library)}')
    kw = dict(splits=args.splits, num=args.num, seed=args.seed, device=args.device,
              library_path=args.library, image_size=args.image_size,
              action_prompt=args.action_prompt)
    for name, path in models.items():
        report['models'][name] = evaluate_model(path, **kw)
    report['models']['instruction only (image blanked)'] = evaluate_model(
        models['model'], blank=True, **kw)
    if args.dataset:
        dataset = Path(args.dataset)
        _, own = dataset_path_parts(dataset)
        data_library = Path(args.library) if args.library else own if own.is_file() \
            else library_path
        report['dataset'] = {'path': str(dataset), 'library': str(data_library),
                             'chance': metrics.chance(len(ActionLibrary.from_yaml(
                                 data_library)))}
        for name, path in [*models.items(), ('instruction only (image blanked)',
                                             models['model'])]:
            report['models'][name]['dataset'] = evaluate_dataset(
                path, dataset, data_library, args.num, args.seed, args.device,
                blank=name.startswith('instruction only'), action_prompt=args.action_prompt)

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
    if args.text_prior:
        from .text_prior import format_prior, text_prior
        model = load_eval_model(models['model'], args.device, args.action_prompt)
        encode = model.encode_text
        if kinds['model'] != 'trained':   # unit embeddings; text_prior reads .pooled
            from types import SimpleNamespace

            def encode(texts, _encode=model.encode_text):
                return SimpleNamespace(pooled=_encode(texts))
        report['text_prior'] = text_prior(encode)
        print(format_prior(report['text_prior']))
    if args.replay_streams > 0:
        from ..selection.selector import ActionSelector
        if args.action_prompt is not None and kinds['model'] != 'trained':
            selector = ActionSelector(
                load_eval_model(models['model'], args.device, args.action_prompt),
                ActionLibrary.from_yaml(library_path))
        else:
            selector = ActionSelector.from_pretrained(models['model'], str(library_path),
                                                      device=args.device)
        report['closed_loop_replay'] = {}
        for split in args.splits:
            replay = replay_streams(selector, args.replay_streams, args.episodes, split)
            report['closed_loop_replay'][split] = replay
            print(format_replay(replay))
    if args.json:
        tmp = Path(args.json).with_suffix('.json.tmp')
        tmp.write_text(json.dumps(report, indent=2))
        os.replace(tmp, args.json)
    if args.plot and runs:
        from .plot import plot_runs
        print(f'curves: {plot_runs([Path(r) for r in runs], Path(args.plot))}')
    return 0


def continuous_main(args) -> int:
    """``--task continuous``: the table of ``continuous_eval.continuous_report``."""
    from .continuous_eval import continuous_report, format_continuous
    splits = args.splits or ['val', 'unseen_combo']
    unknown = [s for s in splits if s not in SPLIT_NAMES]
    if unknown:
        print(f'vla-eval: unknown split(s) {unknown}', file=sys.stderr)
        return 2
    library = _library_for(Path(args.model), args.library)
    if library.space is None:
        print(f'vla-eval: --task continuous needs a library with a continuous space; '
              f'{library_path_for(Path(args.model), args.library)} has none (pass --library '
              'config/tabletop_continuous_actions.yaml)', file=sys.stderr)
        return 2
    models = {'model': VLAModel.from_pretrained(args.model, device=args.device)}
    for item in args.compare:
        name, _, path = item.partition('=')
        if not path:
            print(f'vla-eval: --compare wants NAME=DIR, got {item!r}', file=sys.stderr)
            return 2
        models[name] = VLAModel.from_pretrained(path, device=args.device)
    report = continuous_report(models, library, splits, args.num, args.seed, args.image_size)
    print(format_continuous(report, args.num, args.seed))
    if args.json:
        tmp = Path(args.json).with_suffix('.json.tmp')
        tmp.write_text(json.dumps({'task': 'continuous', 'num': args.num, 'seed': args.seed,
                                   'splits': report}, indent=2))
        os.replace(tmp, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
