"""Training configuration: one YAML file plus `--set key.path=value` overrides.

The `model` section is a VLAConfig dictionary and is passed through untouched, so anything
the model accepts can be trained; the other sections belong to the training loop.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..files import read_text_bounded
from ..model.config import dotted_leaves
from .augment import AugmentConfig


@dataclass
class DataConfig:
    # 'tabletop' (generated on the fly), 'tabletop_continuous' (the continuous task,
    # data/tabletop/continuous.py), 'recorded_continuous' (a JSONL dataset of action vectors
    # with scene labels, e.g. vla-libero-dataset's: training/recorded_continuous.py),
    # 'jsonl' (a dataset dir) or 'lerobot' (LeRobotDataset v3)
    source: str = 'tabletop'
    path: str = ''                    # jsonl/lerobot/recorded_continuous: the dataset directory
    val_path: str = ''                # ... and an optional held-out dataset directory
    # The action library trained against; '' = the dataset's own actions.yaml (jsonl),
    # meta/actions.yaml (lerobot) or the package's tabletop library (tabletop).
    library: str = ''
    image_size: int = 96              # tabletop render size
    # tabletop: objects per training scene [min, max]; val/unseen_combo/paraphrase use 2-6 and
    # clutter 7-10, so raising the minimum spends fewer samples on two-object scenes the model
    # already gets right without moving the held-out splits.
    objects: list = field(default_factory=lambda: [2, 6])
    # tabletop: draw training instructions from a fixed pool of this many phrasings per goal
    # (primitive, colour, shape), so the frozen text encoder runs once per sentence; 0 = the
    # whole grammar (millions of sentences, each one a text-encoder pass).
    phrasings: int = 0
    strict: bool = False              # jsonl: fail on a bad sample instead of skipping it
    # jsonl: accept image paths outside the dataset directory (absolute, or through '..');
    # refused by default, so a dataset from elsewhere cannot make training read any file.
    allow_external_images: bool = False
    # jsonl: the largest fraction of samples whose action the library lacks (left out, with a
    # warning) before the run refuses to start: past it the library is most likely the wrong one.
    max_unknown_actions: float = 0.5
    # jsonl/lerobot: whole episodes held out of training and scored as the eval split
    # held_out_episodes (training/held_out.py): auto (a tenth of them without data.val_path,
    # else none), a fraction below 1, a count of episodes, or 0. Seeded by `seed`.
    val_episodes: object = 'auto'
    # lerobot: how far (Euclidean, in library params units) a vector without a library_index
    # may be from the nearest library action and still take its name; auto = half the
    # smallest distance between two library actions (data/recordings/lerobot_read.py).
    max_action_distance: object = 'auto'
    num_workers: int = 0
    # tabletop: the camera views of each scene, in order (data/tabletop/cameras.py): 'top'
    # (the render) and/or 'oblique' (a perspective warp, as from the front at ~45 degrees).
    # The first camera listed is the one a node's first image topic should be.
    cameras: list = field(default_factory=lambda: ['top'])
    # Image augmentation (training/augment.py): enabled auto|true|false (auto = on for
    # jsonl/lerobot, off for tabletop) and per-transform ranges, each off at its neutral value.
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class OptimConfig:
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1.0e-3
    encoder_lr: float = 1.0e-5        # for pretrained encoders marked trainable
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05        # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0
    amp: str = 'auto'                 # auto | bf16 | fp16 | none (autocast runs on CUDA only)
    align_weight: float = 0.0         # auxiliary image<->instruction InfoNCE weight
    # Scene ground truth (tabletop only; see training/region.py): per-cell colour and shape
    # heads on the image patch tokens, and a target-cell head on the fused patch tokens.
    region_weight: float = 0.0
    target_cell_weight: float = 0.0
    multi_positive: bool = True
    # The query<->action objective (training/objectives.py): infonce | nt_xent | triplet.
    loss: str = 'infonce'
    temperature: float = 0.1          # nt_xent
    triplet_margin: float = 0.2       # triplet (cosine distance)
    projection_dim: int = 0           # > 0: a training-only MLP head of this width
    # The continuous lane (training/counter_examples.py): sampled negatives per
    # demonstration, and how far (in object radii) the positive is jittered around the centre.
    counter_examples: int = 255
    positive_jitter: float = 0.3
    # ... and the share of the other-primitive negatives put on the other objects (0: all at
    # the demonstration's own place): pick and place frames that differ only in what the hand
    # holds need "the other primitive where the other decision acts" taught as wrong.
    other_primitive_elsewhere: float = 0.0
    # Camera dropout (training/camera_dropout.py): the chance of leaving each camera out of a
    # sample's fusion (never all of them), and of leaving every camera out (an instruction-only
    # sample). Both in [0, 1); 0 draws nothing.
    camera_dropout: float = 0.0
    image_dropout: float = 0.0


@dataclass
class ScheduleConfig:
    log_every: int = 20
    eval_every: int = 500
    save_every: int = 500
    eval_samples: int = 400
    eval_splits: list = field(default_factory=lambda: ['val', 'unseen_combo', 'paraphrase'])
    keep_last: int = 3                # older numbered checkpoints are pruned


@dataclass
class TrainConfig:
    run_name: str = 'tabletop'
    output_dir: str = 'runs'
    seed: int = 0
    device: str = 'auto'
    threads: int = 0                  # torch CPU threads; 0 keeps torch's default
    init_from: str = ''               # fine-tune this model dir instead of a new model
    # Parts of the init_from model to build anew from `model:` instead of keeping them
    # (model_factory.REPLACEABLE: 'action'). Empty: every part is kept and `model:` unused.
    init_replace: list = field(default_factory=list)
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_name

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = '<dict>') -> 'TrainConfig':
        raw = copy.deepcopy(raw or {})
        sections = {'data': DataConfig, 'optim': OptimConfig, 'schedule': ScheduleConfig}
        kwargs = {}
        known = {f.name for f in fields(cls)}
        for key, value in raw.items():
            if key not in known:
                raise ValueError(f'{source}: unknown training option {key!r}')
            if key in sections:
                kwargs[key] = _section(sections[key], value, f'{source}: {key}')
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _section(section_cls, value: Any, where: str):
    if not isinstance(value, dict):
        raise ValueError(f'{where} must be a mapping, got {type(value).__name__}')
    known = {f.name for f in fields(section_cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f'{where}: unknown option(s) {unknown}; known: {sorted(known)}')
    types = {f.name: f.type for f in fields(section_cls)}
    return section_cls(**{k: _section(SUBSECTIONS[types[k]], v, f'{where}.{k}')
                          if types[k] in SUBSECTIONS else _coerce(v, types[k], f'{where}.{k}')
                          for k, v in value.items()})


SUBSECTIONS = {'AugmentConfig': AugmentConfig}   # sections inside sections (data.augment)


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """Numbers as the field expects them: YAML reads `3e-4` (no dot) as a string."""
    try:
        if type_name == 'float' and not isinstance(value, bool):
            return float(value)
        if type_name == 'int' and not isinstance(value, bool):
            if float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
    except (TypeError, ValueError):
        raise ValueError(f'{where} must be a number ({type_name}), got {value!r}') from None
    if type_name == 'bool' and not isinstance(value, bool):
        raise ValueError(f'{where} must be true or false, got {value!r}')
    return value


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override in place; the value is parsed as YAML (1e-3, true, [..])."""
    if '=' not in assignment:
        raise ValueError(f'override {assignment!r} is not of the form key.path=value')
    path, text = assignment.split('=', 1)
    _set_dotted(raw, path.strip(), yaml.safe_load(text), f'override {assignment!r}')


def _set_dotted(raw: dict, dotted: str, value: Any, where: str) -> None:
    """``raw['a']['b']['c'] = value`` for ``a.b.c``, creating missing sections."""
    *sections, key = dotted.split('.')
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ValueError(f'{where}: {section!r} is not a section')
    node[key] = value


# Inputs a config file names are looked up next to that file (then in the installed share/),
# never in whatever folder the shell is in. Outputs (output_dir) go where vla-train runs, a
# place the user can write to; --set values are the shell's, relative to its folder.
INPUT_PATHS = ('data.path', 'data.val_path', 'data.library', 'init_from',
               'model.vision.name_or_path', 'model.text.name_or_path', 'model.name_or_path')


def _resolve_inputs(raw: dict, base: Path) -> None:
    from ..package_share import package_file

    for dotted in INPUT_PATHS:
        *sections, key = dotted.split('.')
        node = raw
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        value = node.get(key) if isinstance(node, dict) else None
        if not isinstance(value, str) or not value or Path(value).expanduser().is_absolute():
            continue
        beside, shared = base / value, Path(package_file(value))
        if beside.exists():
            node[key] = str(beside)
        elif shared.exists():
            node[key] = str(shared)
        elif not dotted.endswith('name_or_path'):   # those may be hub names
            node[key] = str(beside)   # so the error names where it was looked for


def load_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """A training config from a YAML file plus ``key=value`` overrides (see INPUT_PATHS for
    how relative paths resolve)."""
    raw: dict = {}
    if path:
        raw = yaml.safe_load(read_text_bounded(path)) or {}
        if not isinstance(raw, dict):
            raise ValueError(f'{path}: expected a mapping of settings')
        _resolve_inputs(raw, Path(path).resolve().parent)
    for assignment in overrides or []:
        apply_override(raw, assignment)
    return TrainConfig.from_dict(raw, source=path or '<overrides>')


# What a resumed run may change: how long it runs, how it reports and where it computes, never
# what or how it learns (its weights, optimiser state and data stream belong to the rest).
RESUMABLE = ('optim.steps', 'schedule.', 'threads', 'device', 'data.num_workers')


def continued_config(saved: dict, requested: TrainConfig) -> TrainConfig:
    """The config of a resumed run: the saved run's, with the changes ``requested`` makes to
    :data:`RESUMABLE` settings (a longer ``optim.steps``, another ``device``, ...).

    Raises:
        ValueError: ``requested`` changes anything else (each setting named with both values).
    """
    old = dotted_leaves(TrainConfig.from_dict(saved, source='the saved run').to_dict())
    new = dotted_leaves(requested.to_dict())
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    refused = [k for k in changed if not k.startswith(RESUMABLE)]
    if refused:
        listed = '; '.join(f'{k} is {old.get(k)!r} there, {new.get(k)!r} now'
                           for k in refused[:6])
        raise ValueError(
            f'--resume continues the saved run {requested.run_name!r} with the settings its '
            f'weights were trained with, but {listed}'
            f'{f" (and {len(refused) - 6} more)" if len(refused) > 6 else ""}. On resume only '
            'optim.steps, schedule.*, threads, device and data.num_workers may change; for the '
            'rest start a new run_name from these weights (init_from: <checkpoint>/'
            'pretrained_model)')
    merged = copy.deepcopy(saved)
    for key in changed:
        _set_dotted(merged, key, copy.deepcopy(new[key]), 'the resumed run')
    return TrainConfig.from_dict(merged, source='the resumed run')


def changed_settings(saved: dict, cfg: TrainConfig) -> dict[str, tuple]:
    """``{setting: (saved value, value in cfg)}`` for every setting ``cfg`` changes."""
    old = dotted_leaves(TrainConfig.from_dict(saved, source='the saved run').to_dict())
    new = dotted_leaves(cfg.to_dict())
    return {k: (old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k)}


def resumed_config(saved: dict, overrides: list[str]) -> TrainConfig:
    """What ``vla-train --resume`` asks for: the saved run's own settings with only the
    command line's ``--set`` overrides applied. The YAML file names the run (``output_dir``,
    ``run_name``) and nothing else: its ``optim.steps: 7000`` must not turn a resumed 20-step
    run into a 7,000-step one. Whether the overrides are allowed is
    :func:`continued_config`'s to say."""
    raw = copy.deepcopy(saved)
    for assignment in overrides:
        apply_override(raw, assignment)
    return TrainConfig.from_dict(raw, source='--resume --set')
