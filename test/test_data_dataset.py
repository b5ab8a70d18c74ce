"""JSONL dataset format: atomic writer, loader, bad-sample handling and the make_dataset CLI."""
import json

import numpy as np
import pytest
import torch

from vla_embedding_ros.data.dataset import BadSampleError, DatasetWriter, JSONLDataset
from vla_embedding_ros.data.make_dataset import main as make_dataset
from vla_embedding_ros.data.tabletop import (
    ACTION_INDEX,
    TabletopConfig,
    TabletopGenerator,
    action_params,
    build_action_library,
)


def _samples(n, seed=0):
    return list(TabletopGenerator(TabletopConfig(image_size=48), seed=seed).samples(n))


def _write(root, samples, **kw):
    with DatasetWriter(root, library=build_action_library(), **kw) as writer:
        for i, s in enumerate(samples):
            writer.add(s.image, s.instruction, action=s.action_name, episode=i // 2,
                       timestamp=0.1 * i, split='train' if i % 3 else 'val')
    return root


def test_round_trip(tmp_path):
    samples = _samples(6)
    root = _write(tmp_path / 'ds', samples)
    lines = (root / 'index.jsonl').read_text().splitlines()
    assert len(lines) == 6 and len(list((root / 'images').glob('*.png'))) == 6
    ds = JSONLDataset(root)
    assert len(ds) == 6
    for i, (item, s) in enumerate(zip(ds, samples, strict=True)):
        assert item['images'].dtype == np.uint8 and item['images'].shape == (1, 48, 48, 3)
        assert np.array_equal(item['images'][0], s.image)  # PNG is lossless, RGB kept
        assert item['instruction'] == s.instruction and item['action'] == s.action_name
        assert item['action_index'] == ACTION_INDEX[s.action_name]
        # No vector stored: it comes from the library.
        assert item['action_vector'].tolist() == action_params(s.primitive, *s.target.cell)
        assert item['episode'] == str(i // 2) and item['timestamp'] == pytest.approx(0.1 * i)
    assert len(JSONLDataset(root, split='val')) == 2
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch['images'].shape == (4, 1, 48, 48, 3) and batch['action_index'].dtype == torch.int64


def test_multi_camera_bgr_and_vector_only_records(tmp_path):
    red = np.zeros((8, 10, 3), np.uint8)
    red[..., 0] = 255
    with DatasetWriter(tmp_path / 'ds') as writer:  # no library
        writer.add([red, red[:, :, ::-1]], 'go', action_vector=[0.5, -1.0])
        writer.add(red[:, :, ::-1].copy(), 'stop', action='pick_r0_c0', color='bgr')
        with pytest.raises(ValueError, match='action'):
            writer.add(red, 'nothing to learn')
        with pytest.raises(ValueError, match='uint8'):
            writer.add(red.astype(float), 'float image', action='pick_r0_c0')
    ds = JSONLDataset(tmp_path / 'ds')
    first, second = ds[0], ds[1]
    assert first['images'].shape == (2, 8, 10, 3)
    assert first['images'][0, 0, 0].tolist() == [255, 0, 0]  # red stays red
    assert first['images'][1, 0, 0].tolist() == [0, 0, 255]
    assert first['action_index'] == -1 and first['action_vector'].tolist() == [0.5, -1.0]
    assert second['images'][0, 0, 0].tolist() == [255, 0, 0]  # bgr input stored right
    assert second['action_index'] == -1  # no library to index into
    with_library = JSONLDataset(tmp_path / 'ds', library=build_action_library())
    assert with_library[1]['action_index'] == 0


def test_writer_that_raises_leaves_nothing(tmp_path):
    root = tmp_path / 'ds'
    with pytest.raises(RuntimeError, match='boom'):
        with DatasetWriter(root, library=build_action_library()) as writer:
            for s in _samples(3):
                writer.add(s.image, s.instruction, action=s.action_name)
            raise RuntimeError('boom')
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []  # no temp directory left behind either


def test_existing_dataset_is_kept_unless_overwrite(tmp_path):
    root = _write(tmp_path / 'ds', _samples(2))
    with pytest.raises(FileExistsError):
        DatasetWriter(root)
    with pytest.raises(RuntimeError):
        with DatasetWriter(root, overwrite=True) as writer:
            writer.add(np.zeros((4, 4, 3), np.uint8), 'x', action='pick_r0_c0')
            raise RuntimeError
    assert len(JSONLDataset(root)) == 2  # a failed overwrite leaves the old dataset whole
    _write(root, _samples(3, seed=1), overwrite=True)
    assert len(JSONLDataset(root)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ds']


def test_corrupt_image_is_named_and_skip_bad_counts_it(tmp_path):
    samples = _samples(4)
    root = _write(tmp_path / 'ds', samples)
    bad = root / json.loads((root / 'index.jsonl').read_text().splitlines()[1])['images'][0]
    bad.write_bytes(b'not a png at all')
    ds = JSONLDataset(root)
    with pytest.raises(BadSampleError, match=bad.name):
        ds[1]
    assert ds[2]['instruction'] == samples[2].instruction
    lenient = JSONLDataset(root, skip_bad=True)
    items = [lenient[i] for i in range(len(lenient))]
    assert lenient.num_bad == lenient.skipped == 1 and str(bad) in next(iter(lenient.bad.values()))
    assert items[1]['instruction'] == samples[2].instruction  # replaced by the next good one


def test_missing_image_and_broken_lines(tmp_path):
    root = _write(tmp_path / 'ds', _samples(4))
    index = root / 'index.jsonl'
    lines = index.read_text().splitlines()
    missing = root / json.loads(lines[0])['images'][0]
    missing.unlink()
    index.write_text('\n'.join(lines + ['{"images": ', '{"instruction": "no images"}']) + '\n')
    with pytest.raises(FileNotFoundError, match=missing.name):
        JSONLDataset(root)
    ds = JSONLDataset(root, skip_bad=True)
    assert len(ds) == 3 and ds.num_bad == 3
    assert any('index.jsonl:5' in where for where in ds.bad)
    lines[0] = '{"images": ["images/000001_0.png"], "instruction": "x"}'
    index.write_text('\n'.join(lines) + '\n')
    with pytest.raises(BadSampleError, match='index.jsonl:1.*action'):
        JSONLDataset(root)


def test_make_dataset_cli(tmp_path, capsys):
    out = tmp_path / 'val'
    args = ['--out', str(out), '--split', 'val', '--num', '7', '--seed', '3', '--image-size', '64']
    assert make_dataset(args) == 0
    assert 'wrote 7 val samples' in capsys.readouterr().out
    records = [json.loads(x) for x in (out / 'index.jsonl').read_text().splitlines()]
    assert len(records) == 7 and len(list((out / 'images').glob('*.png'))) == 7
    assert (out / 'actions.yaml').is_file() and {r['split'] for r in records} == {'val'}
    expected = TabletopGenerator(TabletopConfig(image_size=64), 'val', 3).samples(7)
    ds = JSONLDataset(out)
    for item, s in zip(ds, expected, strict=True):
        assert item['images'].shape == (1, 64, 64, 3) and np.array_equal(item['images'][0], s.image)
        assert item['instruction'] == s.instruction and item['action_index'] == s.action_index
    with pytest.raises(SystemExit):  # refuses to clobber without --overwrite
        make_dataset(args + ['--quiet'])
    assert make_dataset(args[:4] + ['--num', '2', '--overwrite', '--quiet']) == 0
    assert len(JSONLDataset(out)) == 2
