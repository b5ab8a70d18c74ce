"""The offline loop on converted bags: record -> convert -> train a few steps -> load and score."""
import numpy as np
import pytest
import torch

from support.bags import ACTION, CAM_A, INSTR, twist_bag
from support.models import make_tiny_bert, tiny_vla_config
from vla_embedding_ros.actions.library import load_library
from vla_embedding_ros.data.dataset import JSONLDataset
from vla_embedding_ros.data.recordings.bag_import import ImportConfig, convert_bags
from vla_embedding_ros.data.recordings.bag_record import record_tabletop_episodes
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.evaluation import LibraryScorer
from vla_embedding_ros.training.train import Trainer

LIBRARY = 'config/tabletop_actions.yaml'


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch, request):
    monkeypatch.chdir(request.config.rootpath)


def test_train_on_converted_bag_and_score_its_samples(tmp_path):
    bag = tmp_path / 'bag'
    record_tabletop_episodes(bag, 12, seed=5, camera_size=48, frames_per_episode=2)
    summary = convert_bags([bag], tmp_path / 'ds', ImportConfig(library=LIBRARY),
                           progress=False)
    assert summary['written'] == 12 and summary['skipped_total'] == 0

    model = tiny_vla_config(text_path=make_tiny_bert(tmp_path / 'bert')).to_dict()
    cfg = TrainConfig.from_dict({
        'run_name': 'bag', 'output_dir': str(tmp_path / 'runs'), 'seed': 0, 'device': 'cpu',
        'model': model,
        'data': {'source': 'jsonl', 'path': str(tmp_path / 'ds'), 'library': LIBRARY,
                 'image_size': 48},
        'optim': {'steps': 5, 'batch_size': 4, 'lr': 3e-3, 'warmup_steps': 1},
        'schedule': {'log_every': 1, 'eval_every': 1000, 'save_every': 1000,
                     'eval_samples': 4, 'eval_splits': ['val']},
    })
    trainer = Trainer(cfg)
    trainer.run(progress=False)
    assert trainer.step == 5
    model_dir = ckpt.latest_checkpoint(cfg.run_dir) / ckpt.MODEL_DIR

    model = VLAModel.from_pretrained(model_dir, device='cpu')
    library = load_library(model_dir / 'actions.yaml')
    ds = JSONLDataset(tmp_path / 'ds', library=library)
    images = np.stack([ds[i]['images'] for i in range(len(ds))])
    logits = LibraryScorer(model, library).logits(images, [ds[i]['instruction']
                                                           for i in range(len(ds))])
    assert logits.shape == (12, len(library)) == (12, 80)
    assert torch.isfinite(logits).all()
    assert all(ds[i]['action_index'] >= 0 for i in range(len(ds)))


def test_train_on_clustered_twist_actions(tmp_path):
    """Twist actions named by k-means clusters train against their own (6-D) library."""
    twist_bag(tmp_path / 'bag')
    convert_bags([tmp_path / 'bag'], tmp_path / 'ds',
                 ImportConfig(image_topics=[CAM_A], instruction_topic=INSTR,
                              action_topic=ACTION, cluster=2, resize=(48, 48)), progress=False)
    library_path = str(tmp_path / 'ds' / 'actions.yaml')
    cfg = TrainConfig.from_dict({
        'run_name': 'twist', 'output_dir': str(tmp_path / 'runs'), 'device': 'cpu',
        'model': tiny_vla_config(text_path=make_tiny_bert(tmp_path / 'bert')).to_dict(),
        'data': {'source': 'jsonl', 'path': str(tmp_path / 'ds'), 'library': library_path,
                 'val_path': str(tmp_path / 'ds')},
        'optim': {'steps': 3, 'batch_size': 4, 'warmup_steps': 1},
        # Default eval_splits: tabletop scenes cannot be scored against a twist library, so
        # the trainer skips them and evaluates the held-out dataset instead.
        'schedule': {'log_every': 1, 'eval_every': 3, 'save_every': 1000, 'eval_samples': 4},
    })
    results = Trainer(cfg).run(progress=False)
    assert set(results) == {'val_dataset'} and results['val_dataset']['n'] == 4
    model_dir = ckpt.latest_checkpoint(cfg.run_dir) / ckpt.MODEL_DIR
    model = VLAModel.from_pretrained(model_dir, device='cpu')
    assert model.config.action.param_dim == 6
    library = load_library(library_path)
    ds = JSONLDataset(tmp_path / 'ds', library=library)
    logits = LibraryScorer(model, library).logits(
        np.stack([ds[i]['images'] for i in range(4)]), [ds[i]['instruction'] for i in range(4)])
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
