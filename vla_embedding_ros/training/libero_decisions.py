"""``vla-eval --task libero --dataset DIR``: a model's decisions on your own LIBERO placements
(a ``vla-libero-dataset`` folder such as the validation set), split by scene change.

Every sample is one decision: the frame before the pick or the place, and the expert's point.
The model decides as ``vla-eval --task libero`` and the node do (the selector's sampled search,
the sample's primitive pinned, LIBERO's 4,096 x 6 search by default); a decision is right when
its point lies within the sample's radius (``labels.radius``: 1.5 cm for a pick, 2 cm for a
place). No simulator runs, so a whole validation set takes a minute, not an hour, and the
decisions LIBERO's own arrangements never show are counted apart:

* the arrangement: LIBERO's own or rigidly moved (``demonstrations.layout_moved``: odd runs of
  ``LAYOUT_EPISODES`` placements);
* for a place, whether its target was moved before the frame (odd ``k``).

The cases follow generator 3's scene changes (``libero.demonstrations``, ``GENERATOR``): a
data set written by an older generator has other scenes under the same episode names.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from ..libero.demonstrations import Job, layout_moved, target_moved

CASES = ('LIBERO arrangement', 'LIBERO arrangement, target moved', 'moved arrangement',
         'moved arrangement, target moved')


def scene_case(episode: str, primitive: str) -> tuple[str, str]:
    """``(suite, case)`` of a decision of episode ``'suite/task/k'`` (as vla-libero-dataset
    names them).

    Raises:
        ValueError: an episode name of another form.
    """
    parts = str(episode).split('/')
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"episode {episode!r} is not 'suite/task/k' as vla-libero-dataset "
                         'writes it: this data set was not made by vla-libero-dataset')
    job = Job(parts[0], int(parts[1]), int(parts[2]))
    moved_target = primitive == 'place' and target_moved(job)
    return job.suite, CASES[2 * layout_moved(job) + moved_target]


def score_decisions(selector, items, sampling, seed: int = 0) -> dict:
    """Each item's sampled decision (seed ``seed + i``, so no lucky draw carries a whole set),
    judged against its label; returns per ``(suite, primitive, case)`` the number of decisions
    and how many were right, and the distances in radii."""
    from dataclasses import replace

    import torch
    space = selector.library.space
    if not space.options:
        raise ValueError('LIBERO decisions need a space with a primitive choice '
                         '(config/libero_actions.yaml: [pick, place, u, v])')

    def split(vector):
        index, values = space.split(torch.as_tensor(np.asarray(vector, np.float32)))
        return space.options[int(index)], values.numpy()

    cells = defaultdict(lambda: [0, 0])
    distances, suites = [], []
    for i, item in enumerate(items):
        choice, point = split(item['action_vector'])
        suite, case = scene_case(item['episode'], choice)
        suites.append(suite)
        chosen = selector.select_sampled(item['images'][0], item['instruction'],
                                         sampling=replace(sampling, seed=seed + i),
                                         choice=choice)
        _, found = split(chosen.vector)
        distance = float(np.linalg.norm(found - point)) / float(item['labels']['radius'])
        distances.append(distance)
        cell = cells[(suite, choice, case)]
        cell[0] += 1
        cell[1] += distance <= 1.0
    right = sum(c[1] for c in cells.values())
    return {'decisions': len(items), 'right': right, 'suites': list(dict.fromkeys(suites)),
            'success': right / len(items) if items else float('nan'),
            'median_error_radii': float(np.median(distances)) if distances else float('nan'),
            'cells': [{'suite': s, 'primitive': p, 'case': c, 'n': n, 'right': r}
                      for (s, p, c), (n, r) in sorted(cells.items())]}


def format_decisions(name: str, result: dict) -> str:
    """The split as a table: a row per case, a column per suite and primitive."""
    cells = {(c['suite'], c['primitive'], c['case']): c for c in result['cells']}
    # suites in the order the data set holds them, each pick before place
    suites = result['suites']
    columns = sorted({(s, p) for s, p, _ in cells},
                     key=lambda sp: (suites.index(sp[0]), sp[1] != 'pick'))
    head = ['decisions'] + [f'{s.removeprefix("libero_")} {p}' for s, p in columns]
    rows = [head, ['---'] * len(head)]
    for case in CASES:
        row = [case]
        for suite, primitive in columns:
            cell = cells.get((suite, primitive, case))
            row.append(f"{cell['right'] / cell['n']:.1%} ({cell['right']}/{cell['n']})"
                       if cell else '')
        if any(row[1:]):
            rows.append(row)
    lines = ['| ' + ' | '.join(r) + ' |' for r in rows]
    return (f"== {name}: {result['success']:.1%} of {result['decisions']} decisions within "
            f"the label's radius (median error {result['median_error_radii']:.2f} radii) ==\n"
            + '\n'.join(lines))


# flags of the episode evaluation that a data set's decisions cannot honour: (flag, attribute,
# value when not given)
_EPISODE_ONLY = (('--placement-seed', 'placement_seed', None), ('--sheet', 'sheet', None),
                 ('--trials', 'trials', 50), ('--primitive chosen', 'primitive', 'given'))


def decisions_main(args, usage_error) -> int:
    """``vla-eval --task libero --dataset DIR``: print (and with --json write) the split of
    --model's decisions and of every --compare model's, on the same samples and seeds.

    Raises:
        usage_error: no --model, a policy other than model, or a flag only episodes honour.
    """
    import json

    from ..data.dataset import JSONLDataset
    from ..files import atomic_write_text
    from ..libero.episode import GRASP_ATTEMPTS
    from ..selection import ActionSelector
    from ..selection.sampling import SamplingConfig
    from .evaluate import named_models
    from .libero_eval import LIBERO_ITERATIONS, LIBERO_SAMPLES
    if not args.model:
        raise usage_error('--task libero --dataset needs --model DIR')
    if args.policy != 'model':
        raise usage_error(f'--task libero --dataset scores --model\'s decisions; --policy '
                          f'{args.policy} is for episodes (leave --dataset out)')
    given = [flag for flag, name, unset in _EPISODE_ONLY if getattr(args, name) != unset]
    if args.grasp_attempts != GRASP_ATTEMPTS:
        given.append('--grasp-attempts')
    if given:
        raise usage_error(f'{given[0]} is for episodes in the simulator; --dataset scores '
                          'single decisions of recorded frames (leave one of them out)')
    models = named_models(args.model, args.compare)   # raises the UsageError main passes in
    sampling = SamplingConfig(samples=args.sample_count or LIBERO_SAMPLES,
                              iterations=args.sample_iterations or LIBERO_ITERATIONS)
    try:
        sampling.check()
        selectors = {name: ActionSelector.from_pretrained(path, args.library,
                                                          device=args.device)
                     for name, path in models.items()}
        library = next(iter(selectors.values())).library
        if library.space is None:
            raise ValueError(f'the library of {args.model} has no continuous space: LIBERO '
                             'needs config/libero_actions.yaml (--library)')
        dataset = JSONLDataset(args.dataset, library=library)
        items = [dataset[i] for i in range(len(dataset))]
        items = [item for item in items if _chosen(item['episode'], args.suites, args.tasks)]
        if not items:
            raise ValueError(f'{args.dataset}: no sample of the asked suites and tasks')
        missing = [item['episode'] for item in items
                   if not (item.get('labels') or {}).get('radius')]
        if missing:
            raise ValueError(f'{args.dataset}: episode {missing[0]} has no labels.radius; '
                             'score a data set written by vla-libero-dataset')
        report = {'dataset': str(args.dataset), 'seed': args.seed,
                  'sampling': {'samples': sampling.samples, 'iterations': sampling.iterations},
                  'models': {}}
        for name, selector in selectors.items():
            result = score_decisions(selector, items, sampling, args.seed)
            report['models'][name] = {'path': str(models[name]), **result}
            print(format_decisions(f'{name} ({models[name]})', result))
    except (FileNotFoundError, ValueError) as exc:
        raise usage_error(str(exc)) from exc
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
        print(f'report: {args.json}')
    return 0


def _chosen(episode: str, suites, tasks) -> bool:
    suite, task, _ = (str(episode).split('/') + ['', ''])[:3]
    return (not suites or suite in suites) and (not tasks or (task.isdigit()
                                                              and int(task) in tasks))
