"""Distributed training under torchrun with gloo on this CPU: 2 processes x batch B take the
steps 1 process takes with 2B, a SIGKILLed distributed run resumes exactly, and a rank that
dies makes the run fail instead of hang.

Every run here is a real ``torchrun`` (``python -m torch.distributed.run``) of ``vla-train``'s
module, the launch command the README documents.
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from support.models import make_tiny_bert, tiny_vla_config
from vla_embedding_ros.data.make_dataset import main as make_dataset
from vla_embedding_ros.training import checkpoint as ckpt
from vla_embedding_ros.training.config import TrainConfig
from vla_embedding_ros.training.train import Trainer

REPO = Path(__file__).resolve().parents[1]
LIBRARY = str(REPO / 'config' / 'tabletop_actions.yaml')


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('dist')
    assert make_dataset(['--out', str(root / 'ds'), '--split', 'train', '--num', '40',
                         '--image-size', '48', '--seed', '1', '--quiet']) == 0
    model = tiny_vla_config(text_path=make_tiny_bert(root / 'bert'), fusion='transformer',
                            dropout=0.0).to_dict()
    return root, model


def write_config(root: Path, model: dict, name: str, batch: int, steps: int, **schedule):
    config = {
        'run_name': name, 'output_dir': str(root / 'runs'), 'seed': 5, 'device': 'cpu',
        'threads': 1, 'model': model,
        # Augmentation off: its world-size independence is checked bit for bit on the pixels
        # in test_training_augment. With it on the losses here still match, but AdamW lifts
        # summation-order noise in 2 of 4,608 stem weights to 3e-5, past the tolerance below.
        'data': {'source': 'jsonl', 'path': str(root / 'ds'), 'library': LIBRARY,
                 'augment': {'enabled': False}},
        'optim': {'steps': steps, 'batch_size': batch, 'lr': 3e-3, 'warmup_steps': 1,
                  'align_weight': 0.2},
        'schedule': {'log_every': 1, 'eval_every': 1000, 'save_every': 1000,
                     'eval_samples': 4, 'eval_splits': [], 'keep_last': 20, **schedule},
    }
    path = root / f'{name}.yaml'
    path.write_text(yaml.safe_dump(config))
    return path


def torchrun(config: Path, *extra: str, nproc: int = 2, background: bool = False):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               f'--nproc_per_node={nproc}', '-m', 'vla_embedding_ros.training.train',
               '--config', str(config), '--no-progress', *extra]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(REPO))
    if background:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def final_weights(run_dir: Path) -> dict:
    return load_file(ckpt.latest_checkpoint(run_dir) / ckpt.MODEL_DIR / 'model.safetensors')


def assert_same_weights(got: dict, expected: dict, steps: int, lr: float = 3e-3) -> None:
    """Equal within float summation-order noise.

    Attention key biases are the exception: they get no gradient (softmax ignores a shift
    shared by all keys), and AdamW divides that float noise by its own RMS, so they move by up
    to ``lr`` per step in any two runs whose sums are ordered differently. Their query and
    value parts are compared like every other weight."""
    assert got.keys() == expected.keys()
    for name, want in expected.items():
        have = got[name]
        if name.endswith('self_attn.in_proj_bias'):
            d = want.shape[0] // 3
            assert (have[d:2 * d] - want[d:2 * d]).abs().max() <= steps * lr, name
            keep = torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])
            have, want = have[keep], want[keep]
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5, msg=name)


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / 'train.csv').read_text().splitlines()[1:]
    return [float(line.split(',')[1]) for line in lines]


STEPS = 8


@pytest.fixture(scope='module')
def two_processes(setup):
    """A 2-process run of batch 4, checkpointed every 2 steps, and what it printed."""
    root, model = setup
    out = torchrun(write_config(root, model, 'two', batch=4, steps=STEPS, save_every=2))
    return root / 'runs' / 'two', out


def test_two_processes_match_one_with_the_global_batch(setup, two_processes):
    root, model = setup
    two_dir, out = two_processes
    assert 'world size 2, effective batch 8 (4 per rank), backend gloo' in out
    one = TrainConfig.from_dict(yaml.safe_load(
        write_config(root, model, 'one', batch=8, steps=STEPS).read_text()))
    Trainer(one).run(progress=False)

    one_dir = root / 'runs' / 'one'
    np.testing.assert_allclose(losses(two_dir), losses(one_dir), rtol=1e-5)
    two, single = final_weights(two_dir), final_weights(one_dir)
    initial = Trainer(TrainConfig.from_dict(yaml.safe_load(
        write_config(root, model, 'init', batch=8, steps=STEPS).read_text()))).model.state_dict()
    assert_same_weights(two, single, steps=STEPS)
    changed = sum(not torch.equal(value, initial[name]) for name, value in single.items())
    assert changed > 10  # the comparison is between trained weights, not two copies of init


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f'/proc/{pid}/task').iterdir():
        text = (task / 'children').read_text().split()
        found += [int(c) for c in text]
    return found


def kill_all(proc) -> None:
    """SIGKILL torchrun and its workers at once (workers outlive a launcher killed alone)."""
    for pid in [*children(proc.pid), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)


def worker_of_rank(launcher: int, rank: int) -> int | None:
    for child in children(launcher):
        try:
            environ = Path(f'/proc/{child}/environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if f'RANK={rank}'.encode() in environ:
            return child
    return None


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f'timed out waiting for {what}')


def test_sigkilled_distributed_run_resumes_exactly(setup, two_processes):
    root, model = setup
    straight = two_processes[0]
    config = write_config(root, model, 'killed', batch=4, steps=STEPS, save_every=2)
    proc = torchrun(config, background=True)
    run_dir = root / 'runs' / 'killed'
    try:
        wait_for(lambda: ckpt.latest_checkpoint(run_dir), 240, 'the first checkpoint')
    finally:
        kill_all(proc)
    stopped_at = int(ckpt.latest_checkpoint(run_dir).name)
    assert stopped_at < STEPS, 'killed after the end: nothing left to resume'
    out = torchrun(config, '--resume')
    assert f'from step {stopped_at} of {STEPS}' in out
    # Exact up to float noise: the frozen text encoder's cache is refilled after the resume,
    # batching sentences differently (the single-process resume test allows the same).
    assert_same_weights(final_weights(run_dir), final_weights(straight), steps=STEPS)
    straight_losses, resumed_losses = losses(straight), losses(run_dir)
    assert len(resumed_losses) == STEPS
    np.testing.assert_allclose(resumed_losses, straight_losses, rtol=1e-4)


def test_a_rank_that_dies_fails_the_run(setup):
    root, model = setup
    proc = torchrun(write_config(root, model, 'dies', batch=4, steps=100000), background=True)
    try:
        victim = wait_for(lambda: worker_of_rank(proc.pid, 1), 120, 'rank 1 to start')
        wait_for(lambda: (root / 'runs' / 'dies' / 'train.csv').is_file(), 240,
                 'training to start')
        os.kill(victim, signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)  # no hang: torchrun stops the other rank
    finally:
        if proc.poll() is None:
            kill_all(proc)
    assert proc.returncode != 0
    assert re.search(r'rank\s*: 1 \(local_rank: 1\)', out), out[-2000:]
    assert 'Signal 9 (SIGKILL)' in out, out[-2000:]
