"""Tiny training runs for the training tests: a few CPU steps of a real VLAModel, and the
loss log they write."""
import csv
from pathlib import Path

from support.models import tiny_vla_config
from vla_embedding_ros.training.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
# Relative, as a user's config writes it: tiny_config runs start in the repository root
# (conftest's repo_cwd fixture).
LIBRARY = 'config/tabletop_actions.yaml'
# The same library for runs that start anywhere.
LIBRARY_PATH = str(REPO / LIBRARY)


def tiny_config(tmp_path, text_path, steps=6, **optim) -> TrainConfig:
    """A transformer-fusion run on the procedural tabletop: 8-sample batches, 48 px images,
    evaluation every 3 steps on two splits, a checkpoint every 3 steps."""
    model = tiny_vla_config(text_path=text_path, fusion='transformer', dropout=0.1).to_dict()
    return TrainConfig.from_dict({
        'run_name': 'tiny', 'output_dir': str(tmp_path / 'runs'), 'seed': 3, 'device': 'cpu',
        'model': model,
        'data': {'source': 'tabletop', 'library': LIBRARY, 'image_size': 48},
        'optim': {'steps': steps, 'batch_size': 8, 'lr': 3e-3, 'warmup_steps': 2, **optim},
        'schedule': {'log_every': 1, 'eval_every': 3, 'save_every': 3, 'eval_samples': 20,
                     'eval_splits': ['val', 'unseen_combo'], 'keep_last': 5},
    })


def config(tmp_path, text_path, steps=6, **data) -> TrainConfig:
    """tiny_config with 1 thread and no evaluation (only training is under test), from any
    working directory; ``data`` overrides the data section."""
    raw = tiny_config(tmp_path, text_path, steps=steps).to_dict()
    raw['threads'] = 1
    raw['data']['library'] = LIBRARY_PATH
    raw['data'].update(data)
    raw['schedule'].update(eval_splits=[], eval_every=1000)
    return TrainConfig.from_dict(raw)


def losses(run_dir) -> dict[int, float]:
    """{step: loss} from a run's train.csv."""
    with open(run_dir / 'train.csv', newline='') as handle:
        return {int(r['step']): float(r['loss']) for r in csv.DictReader(handle)}
