"""A dataset whose action names the library does not have: training used to loop forever
looking for a usable sample. Now a dataset with its own actions.yaml trains against it with no
flag, names unknown to the chosen library are counted and left out, and when none is left the
run refuses to start, naming them."""
import logging
import subprocess
import sys

import numpy as np
import pytest
import yaml

from support.training import LIBRARY_PATH as LIBRARY
from support.training import config
from vla_embedding_ros.data.dataset import DatasetWriter
from vla_embedding_ros.data.tabletop import ACTION_NAMES
from vla_embedding_ros.training.train import Trainer

CLUSTERS = [f'cluster_{i:02d}' for i in range(4)]


def cluster_library() -> list[dict]:
    """What vla-bag-to-dataset --cluster writes: k-means names, 6-D twist parameters."""
    return [{'name': name, 'description': f'twist cluster {i}',
             'params': [0.1 * i, 0, 0, 0, 0, 0.05 * i]} for i, name in enumerate(CLUSTERS)]


def write_dataset(root, names, library=None):
    rng = np.random.default_rng(0)
    with DatasetWriter(root, library=library) as writer:
        for name in names:
            writer.add(rng.integers(0, 256, (48, 48, 3), np.uint8), 'go to the red cube',
                       action=name)
    return root


def jsonl_config(tmp_path, text_path, root, library=''):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2, source='jsonl', path=str(root))
    cfg.data.library = library
    return cfg


def test_a_dataset_with_its_own_library_trains_without_flags(tmp_path, text_path):  # noqa: F811
    parameter_names = ['vx', 'vy', 'vz', 'wx', 'wy', 'wz']
    library_file = tmp_path / 'clusters.yaml'
    library_file.write_text(yaml.safe_dump({'version': 1, 'parameter_names': parameter_names,
                                            'actions': cluster_library()}))
    root = write_dataset(tmp_path / 'data', CLUSTERS * 3, library=str(library_file))
    trainer = Trainer(jsonl_config(tmp_path, text_path, root))
    assert trainer.library.names == CLUSTERS
    trainer.run(progress=False)
    assert trainer.step == 2


def test_unknown_names_only_refuse_to_start_instead_of_hanging(tmp_path, text_path):  # noqa: F811
    """In a child process with a timeout: before the fix this run never ended."""
    root = write_dataset(tmp_path / 'data', CLUSTERS * 3)
    cfg = jsonl_config(tmp_path, text_path, root, library=LIBRARY)
    config_file = tmp_path / 'cfg.yaml'
    config_file.write_text(yaml.safe_dump(cfg.to_dict()))
    run = subprocess.run([sys.executable, '-m', 'vla_embedding_ros.training.train', '--config',
                          str(config_file), '--no-progress'], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "none of its 12 samples names an action of the library" in run.stderr
    assert "'cluster_00' (3)" in run.stderr


def test_some_unknown_names_are_counted_and_left_out(tmp_path, text_path, caplog):  # noqa: F811
    names = [ACTION_NAMES[0], 'cluster_00', ACTION_NAMES[5], 'cluster_01', ACTION_NAMES[9],
             ACTION_NAMES[0]]
    root = write_dataset(tmp_path / 'data', names)
    with caplog.at_level(logging.WARNING):
        trainer = Trainer(jsonl_config(tmp_path, text_path, root, library=LIBRARY))
    assert '2 of 6 samples name actions not in the library' in caplog.text
    assert "'cluster_00' (1)" in caplog.text
    _, _, targets = trainer.source.next_batch(12)   # two epochs of the 4 usable samples
    assert sorted(set(targets.tolist())) == [0, 5, 9]


def test_a_jsonl_dataset_without_a_library_needs_one_named(tmp_path, text_path):  # noqa: F811
    root = write_dataset(tmp_path / 'data', CLUSTERS)
    with pytest.raises(ValueError, match='data.library is not set and the dataset has no'):
        Trainer(jsonl_config(tmp_path, text_path, root))


def test_mostly_unknown_names_refuse_to_start_past_the_bound(tmp_path, text_path):  # noqa: F811
    names = [ACTION_NAMES[0], 'cluster_00', 'cluster_01', 'cluster_02']
    root = write_dataset(tmp_path / 'data', names)
    with pytest.raises(ValueError, match='3 of its 4 samples name actions not in the library.*'
                                         'more than data.max_unknown_actions 0.5'):
        Trainer(jsonl_config(tmp_path, text_path, root, library=LIBRARY))
    cfg = jsonl_config(tmp_path, text_path, root, library=LIBRARY)
    cfg.data.max_unknown_actions = 0.8
    assert Trainer(cfg).source.unknown_actions == 3
