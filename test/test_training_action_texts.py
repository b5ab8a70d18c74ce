"""Training, evaluation and serving embed an action through the same text
(``ActionLibrary.texts()``: the description, or the name read as words when it is empty), so a
model with ``use_description`` is scored at run time on the texts it was trained on (issue 27:
training and evaluation used to embed the empty string, the selector the name)."""
import pytest
import torch

from support.models import tiny_vla_config
from support.training import LIBRARY
from vla_embedding_ros.actions import ActionLibrary
from vla_embedding_ros.selection import ActionSelector
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.continuous_eval import decide_grid
from vla_embedding_ros.training.evaluation import LibraryScorer
from vla_embedding_ros.training.train import Trainer

# text_path and repo_cwd: conftest.py
pytestmark = pytest.mark.usefixtures('repo_cwd')


def library_with_blank_descriptions(path) -> ActionLibrary:
    """The tabletop library with every other description emptied (as a clustered bag's
    library has none at all)."""
    raw = ActionLibrary.from_yaml(LIBRARY).to_dict()
    for entry in raw['actions'][::2]:
        entry['description'] = ''
    library = ActionLibrary.from_dict(raw)
    library.to_yaml(path)
    return library


def test_training_evaluation_and_the_selector_embed_the_same_texts(tmp_path, text_path):
    library = library_with_blank_descriptions(tmp_path / 'actions.yaml')
    texts = library.texts()
    assert texts[0] == library.names[0].replace('_', ' ') and texts[1] == library[1].description
    model = tiny_vla_config(text_path=text_path, use_description=True).to_dict()
    trainer = Trainer(TrainConfig.from_dict({
        'output_dir': str(tmp_path / 'runs'), 'device': 'cpu', 'model': model,
        'data': {'source': 'tabletop', 'library': str(tmp_path / 'actions.yaml'),
                 'image_size': 48},
        'optim': {'steps': 1, 'batch_size': 4, 'warmup_steps': 0},
        'schedule': {'eval_splits': []}}))
    vla = trainer.model
    embedded = {}
    encode = vla.encode_actions

    def spy(params, descriptions):
        embedded.setdefault(path, list(descriptions))
        return encode(params, descriptions)

    vla.encode_actions = spy
    path = 'training'
    assert not trainer.train_step()['skipped']
    path = 'evaluation'
    LibraryScorer(vla, library)
    path = 'continuous evaluation (grid baseline)'
    decide_grid(vla, library, torch.nn.functional.normalize(torch.randn(1, 32), dim=-1))
    path = 'selector'
    ActionSelector(vla, library)
    assert embedded == dict.fromkeys(embedded, texts) and len(embedded) == 4
