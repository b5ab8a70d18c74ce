"""Training loses nothing: bad dataset samples are skipped and counted (or, with --strict, fail
naming the file); a SIGKILL in the middle of a checkpoint save leaves the previous checkpoint
loadable; a killed and resumed run reproduces the uninterrupted run's losses; a non-finite
loss never reaches the weights. Tiny real models, a few CPU steps each."""
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from support.training import LIBRARY_PATH, config, losses
from vla_embedding_ros.data.dataset import BadSampleError, DatasetWriter
from vla_embedding_ros.data.tabletop import ACTION_NAMES
from vla_embedding_ros.model import VLAModel
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.train import Trainer
from vla_embedding_ros.training.train import main as train_main

REPO = Path(__file__).resolve().parents[1]


# text_path: conftest.py

@pytest.fixture()
def damaged_dataset(tmp_path):
    """12 samples; sample 3's image is missing, sample 5's is not a PNG any more."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'data'
    with DatasetWriter(root, library=LIBRARY_PATH) as writer:
        for i in range(12):
            writer.add(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
                       'push the red ball left', action=ACTION_NAMES[i % len(ACTION_NAMES)])
    missing, corrupt = root / 'images/000003_0.png', root / 'images/000005_0.png'
    missing.unlink()
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(40))
    return root, missing, corrupt


def test_missing_and_corrupt_images_are_skipped_and_counted(tmp_path, text_path,
                                                            damaged_dataset, caplog):
    root, missing, corrupt = damaged_dataset
    cfg = config(tmp_path, text_path, steps=2, source='jsonl', path=str(root))
    trainer = Trainer(cfg)
    with caplog.at_level(logging.WARNING, logger='vla_train'):
        trainer.run(progress=False)  # 2 steps x 8 draws: every sample is visited
    assert trainer.step == 2
    assert trainer.source.skipped == 2
    bad = trainer.source.dataset.bad
    assert str(missing) in bad and any('000005_0.png' in why for why in bad.values())
    assert '2 bad dataset sample(s) skipped' in caplog.text


def test_strict_fails_naming_the_missing_then_the_corrupt_file(tmp_path, text_path,
                                                               damaged_dataset, capsys):
    root, missing, corrupt = damaged_dataset
    cfg = config(tmp_path, text_path, steps=2, source='jsonl', path=str(root))
    config_path = tmp_path / 'train.yaml'
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert train_main(['--config', str(config_path), '--no-progress', '--strict']) == 1
    assert str(missing) in capsys.readouterr().err
    # With the missing file back, the corrupt one is found when its batch is drawn.
    missing.write_bytes(corrupt.read_bytes())
    with pytest.raises(BadSampleError, match='000003_0.png|000005_0.png'):
        Trainer(config(tmp_path, text_path, steps=2, source='jsonl', path=str(root),
                       strict=True)).run(progress=False)


# vla-train in a process of its own whose save of checkpoint SLOW_STEP sleeps between the
# model files and the training state (the only torch.save of a save), so the test can SIGKILL
# it mid-save; nothing else differs from `python -m vla_embedding_ros.training.train`.
SLOW_SAVE = """
import sys, time
import torch
from vla_embedding_ros.training.train import main

SLOW_STEP, SECONDS = {step}, {seconds}
save = torch.save

def slow_save(obj, f, *args, **kwargs):
    if isinstance(obj, dict) and obj.get('step') == SLOW_STEP:
        time.sleep(SECONDS)
    return save(obj, f, *args, **kwargs)

torch.save = slow_save
sys.exit(main(sys.argv[1:]))
"""


def _train_process(cfg: TrainConfig, tmp_path, slow_step: int, seconds: float, resume=False):
    config_path = tmp_path / f'{cfg.run_name}.yaml'
    config_path.write_text(yaml.safe_dump(cfg.to_dict()))
    script = tmp_path / 'slow_save_train.py'
    script.write_text(SLOW_SAVE.format(step=slow_step, seconds=seconds))
    cmd = [sys.executable, str(script), '--config', str(config_path), '--no-progress'] + (
        ['--resume'] if resume else [])
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                        os.environ.get('PYTHONPATH')])))
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_sigkill_during_save_keeps_the_last_good_checkpoint_and_resume_is_exact(tmp_path,
                                                                               text_path):
    cfg = config(tmp_path / 'killed', text_path, steps=6)
    # The save of checkpoint 6 sleeps between the weights and the state.
    proc = _train_process(cfg, tmp_path, slow_step=6, seconds=60)
    root = ckpt.checkpoints_dir(cfg.run_dir)
    deadline = time.monotonic() + 120
    try:
        while not list(root.glob('.00000006-*/pretrained_model/model.safetensors')):
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, 'the run never reached the step-6 save'
            time.sleep(0.05)
        time.sleep(0.2)  # well inside the hook's sleep: weights written, state not yet
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    # The half-written step 6 exists on disk but is never picked; step 3 loads.
    assert list(root.glob('.00000006-*'))
    last = ckpt.latest_checkpoint(cfg.run_dir)
    assert last is not None and last.name == '00000003'
    assert os.readlink(root / 'last') == '00000003'
    model = VLAModel.from_pretrained(last / ckpt.MODEL_DIR, device='cpu')
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert ckpt.load_training_state(last)['step'] == 3

    # Resume (in this process, one thread) and compare with an uninterrupted run.
    torch.set_num_threads(1)
    resumed = Trainer(config(tmp_path / 'killed', text_path, steps=6), resume=True)
    assert resumed.step == 3
    resumed.run(progress=False)
    straight = config(tmp_path / 'straight', text_path, steps=6)
    Trainer(straight).run(progress=False)
    expected, got = losses(straight.run_dir), losses(cfg.run_dir)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # the killed run's rows 4-5 were replaced
    for step in range(1, 7):
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step
    assert ckpt.latest_checkpoint(cfg.run_dir).name == '00000006'
    assert not list(root.glob('.0*'))  # the killed save's leftovers were pruned


def test_non_finite_loss_is_logged_skipped_and_never_saved(tmp_path, text_path, caplog):
    trainer = Trainer(config(tmp_path, text_path, steps=3))
    good_scale = trainer.model.logit_scale.detach().clone()
    with torch.no_grad():
        trainer.model.logit_scale.fill_(float('nan'))  # inf is clamped; NaN is not
    with caplog.at_level(logging.WARNING, logger='vla_train'):
        out = trainer.train_step()
    assert out['skipped'] and 'non-finite loss' in caplog.text
    with torch.no_grad():  # the bad batch is gone; training goes on from clean weights
        trainer.model.logit_scale.copy_(good_scale)
    trainer.step = 1
    trainer.run(progress=False)
    assert trainer.skipped_steps == 1
    saved = VLAModel.from_pretrained(ckpt.latest_checkpoint(trainer.run_dir) / ckpt.MODEL_DIR,
                                     device='cpu')
    assert all(torch.isfinite(p).all() for p in saved.parameters())
    assert all(np.isfinite(v) for step, v in losses(trainer.run_dir).items() if step > 1)
