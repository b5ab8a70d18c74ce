"""Files from elsewhere cannot run code or exhaust the machine: a crafted training state is
refused, dataset image paths stay inside the dataset, image and text sizes are bounded before
anything is decoded or parsed, and a checkpoint whose config disagrees with its weights fails
by field name before a model is built."""
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from support import models as fx
from support.images import png_declaring
from support.training import LIBRARY_PATH as LIBRARY
from support.training import config
from vla_embedding_ros.actions.library import ActionLibrary
from vla_embedding_ros.data.dataset import BadSampleError, DatasetWriter, JSONLDataset
from vla_embedding_ros.data.recordings.bag_images import ImageDecodeError, decode_compressed
from vla_embedding_ros.data.tabletop import ACTION_NAMES
from vla_embedding_ros.encoded_image import EncodedImageError, declared_size, decode_bounded
from vla_embedding_ros.files import MAX_TEXT_FILE_BYTES
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

# -- encoded images: the header decides before the decoder runs ------------------------------

def test_declared_size_reads_png_and_jpeg_headers():
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), np.uint8)
    for ext, fmt in (('.png', 'PNG'), ('.jpg', 'JPEG')):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert declared_size(data) == (40, 30, fmt)
        assert decode_bounded(data, max_pixels=1200).shape == (30, 40, 3)
    assert declared_size(png_declaring(12000, 12000)) == (12000, 12000, 'PNG')


def test_an_image_declaring_too_many_pixels_is_refused_without_decoding():
    data = png_declaring(12000, 12000)   # 1 KB declaring 432 MB of pixels
    with pytest.raises(EncodedImageError, match='12000x12000') as err:
        decode_bounded(data, max_pixels=40_000_000)
    # Nothing was decoded: OpenCV would have reported the truncated body as image_decode.
    assert err.value.kind == 'image_oversized'
    with pytest.raises(ImageDecodeError, match='not decoded'):
        decode_compressed(data)   # the bag importer's bound (100 M pixels)
    # Past Pillow's own decompression-bomb bound the header is not even described.
    with pytest.raises(EncodedImageError, match='not decoded') as err:
        declared_size(png_declaring(50000, 50000))
    assert err.value.kind == 'image_oversized'


def test_non_images_are_refused_as_undecodable():
    for data in (b'', b'not an image at all', b'\xff\xd8\xff' + bytes(64)):
        with pytest.raises(EncodedImageError) as err:
            decode_bounded(data)
        assert err.value.kind == 'image_decode'


# -- training state: weights_only ------------------------------------------------------------

class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_a_crafted_training_state_is_refused_and_runs_nothing(tmp_path, text_path, capsys):  # noqa: F811
    cfg = config(tmp_path, text_path, steps=2)
    Trainer(cfg).run(progress=False)
    last = ckpt.latest_checkpoint(cfg.run_dir)
    marker = tmp_path / 'code_ran'
    state = ckpt.load_training_state(last)     # the genuine one loads with weights_only
    state['rng'] = _RunsCode(marker)
    torch.save(state, last / ckpt.STATE_FILE)

    with pytest.raises(ckpt.UnsafeStateError, match=r'training_state\.pt.*system'):
        ckpt.load_training_state(last)
    assert not marker.exists()
    config_file = tmp_path / 'cfg.yaml'
    config_file.write_text(json.dumps(cfg.to_dict()))   # JSON is YAML
    assert train_main(['--config', str(config_file), '--resume', '--no-progress']) == 2
    assert 'refusing to load it' in capsys.readouterr().err
    assert not marker.exists()


def test_a_jsonl_run_state_with_numpy_arrays_loads_with_weights_only(tmp_path, text_path):  # noqa: F811
    root = tmp_path / 'data'
    with DatasetWriter(root, library=LIBRARY) as writer:
        for i in range(6):
            writer.add(np.full((48, 48, 3), 40 * i, np.uint8), 'pick up the red cube',
                       action=ACTION_NAMES[i])
    cfg = config(tmp_path, text_path, steps=2, source='jsonl', path=str(root))
    trainer = Trainer(cfg)
    trainer.run(progress=False)
    state = ckpt.load_training_state(ckpt.latest_checkpoint(cfg.run_dir))
    assert isinstance(state['source']['order'], np.ndarray)
    assert np.array_equal(state['source']['order'], trainer.source.order)


# -- datasets: paths stay inside, sizes are bounded ------------------------------------------

def _dataset_with_paths(root, paths):
    with DatasetWriter(root) as writer:
        writer.add(np.zeros((8, 8, 3), np.uint8), 'pick up the red cube', action='a')
    cv2.imwrite(str(root.parent / 'outside.png'), np.zeros((8, 8, 3), np.uint8))
    lines = [json.dumps({'images': [p], 'instruction': 'x', 'action': 'a'}) for p in paths]
    with open(root / 'index.jsonl', 'a', encoding='utf-8') as index:
        index.write('\n'.join(lines) + '\n')


@pytest.mark.parametrize('path', ['ABSOLUTE', '../outside.png', 'images/../../outside.png'])
def test_image_paths_leaving_the_dataset_are_refused_unless_allowed(tmp_path, path):
    root = tmp_path / 'data'
    outside = tmp_path / 'outside.png'
    _dataset_with_paths(root, [str(outside) if path == 'ABSOLUTE' else path])
    with pytest.raises(BadSampleError, match='leaves the dataset directory'):
            JSONLDataset(root)
    lenient = JSONLDataset(root, skip_bad=True)
    assert len(lenient) == 1 and lenient.num_bad == 1
    allowed = JSONLDataset(root, allow_external_images=True)
    assert len(allowed) == 2 and allowed[1]['images'].shape == (1, 8, 8, 3)


def test_an_image_file_declaring_a_huge_size_is_a_bad_sample(tmp_path):
    root = tmp_path / 'data'
    with DatasetWriter(root) as writer:
        writer.add(np.zeros((8, 8, 3), np.uint8), 'pick up the red cube', action='a')
    (root / 'images' / '000000_0.png').write_bytes(png_declaring(12000, 12000))
    with pytest.raises(BadSampleError, match='12000x12000 = 144000000 pixels > 100000000; '
                                             'not decoded'):
        JSONLDataset(root)[0]


def test_oversized_text_files_are_refused_before_parsing(tmp_path):
    library = tmp_path / 'actions.yaml'
    with open(library, 'wb') as handle:
        handle.truncate(MAX_TEXT_FILE_BYTES + 1)
    with pytest.raises(ValueError, match='refusing to read it'):
        ActionLibrary.from_yaml(library)


# -- checkpoints: config.json against the safetensors header ---------------------------------

@pytest.fixture(scope='module')
def saved_model(tmp_path_factory):
    bert = fx.make_tiny_bert(tmp_path_factory.mktemp('bert') / 'bert')
    path = tmp_path_factory.mktemp('model') / 'model'
    VLAModel(fx.tiny_vla_config(text_path=bert)).save_pretrained(path)
    return path


@pytest.mark.parametrize('embed_dim', [60_000, 2_000_000])
def test_a_config_that_disagrees_with_its_weights_names_the_field(saved_model, tmp_path,
                                                                  embed_dim):
    """2,000,000 would ask the allocator for hundreds of GB if the model were built first."""
    target = tmp_path / 'model'
    shutil.copytree(saved_model, target)
    document = json.loads((target / 'config.json').read_text())
    real = document['embed_dim']
    document['embed_dim'] = embed_dim
    (target / 'config.json').write_text(json.dumps(document))
    with pytest.raises(ValueError, match=rf'config\.json says embed_dim = {embed_dim} where '
                                         rf'the weights have {real}'):
        VLAModel.from_pretrained(target, device='cpu')
