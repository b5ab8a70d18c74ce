"""The README's quick paths, run as a new user runs them: the documented commands, from a folder
holding what a clone holds (config/, models/tabletop/), with tiny budgets appended. Each
command is first checked to be in the README as written, so the two cannot drift apart.

train -> the same run again (a folder of its own) -> resume (the saved run's steps, then more)
-> export -> record -> convert (JSONL and LeRobot) -> train from the LeRobot folder -> fine-tune
on the JSONL dataset (it starts from the shipped model) -> evaluate,
then the hand-started nodes over DDS (simulator + selector + recorder) with the documented
commands and no remaps between them.
"""
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / 'README.md').read_text()
BIN = Path(sys.executable).parent
# Budgets for a test (appended, never replacing what the README says).
TINY = ['--set', 'optim.steps=2', '--set', 'optim.warmup_steps=1', '--set',
        'optim.batch_size=4', '--set', 'threads=1', '--set', 'schedule.eval_samples=4',
        '--set', 'schedule.eval_splits=[val]', '--set', 'schedule.log_every=1', '--no-progress']


def documented(command: str) -> list[str]:
    """``command`` split into arguments, after checking the README shows it as written."""
    assert command in README, f'not in the README as written: {command}'
    return command.split()


def run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    exe = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
    result = subprocess.run([exe, *args[1:]], cwd=cwd, capture_output=True, text=True,
                            timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, f'{" ".join(args)}\n{result.stdout[-3000:]}' \
                                   f'{result.stderr[-3000:]}'
    return result.stdout + result.stderr


@pytest.fixture(scope='module')
def clone(tmp_path_factory):
    """What a fresh clone's root holds for these commands (not the test's own checkout, so
    nothing is written into it)."""
    root = tmp_path_factory.mktemp('clone')
    shutil.copytree(REPO / 'config', root / 'config')
    shutil.copytree(REPO / 'models' / 'tabletop', root / 'models' / 'tabletop')
    return root


def snapshot(run_dir: Path) -> dict:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob('*'))
            if p.is_file()}


def last_eval(run_dir: Path, split: str) -> dict:
    with open(run_dir / 'eval.csv', newline='') as handle:
        return [r for r in csv.DictReader(handle) if r['split'] == split][-1]


def test_train_resume_export_record_convert_finetune_evaluate(clone):
    quick = documented('vla-train --config config/train_tabletop.yaml --set optim.steps=500')
    out = run([*quick, '--set', 'run_name=quick', *TINY], clone)
    assert 'quick: step 2' in out
    assert 'run: runs/quick; checkpoints: runs/quick/checkpoints' in out
    # The same command again: a run of its own, the first one untouched.
    first = snapshot(clone / 'runs' / 'quick')
    out = run([*quick, '--set', 'run_name=quick', *TINY], clone)
    assert snapshot(clone / 'runs' / 'quick') == first
    second = [p.name for p in (clone / 'runs').iterdir() if p.name.startswith('quick-')]
    assert len(second) == 1 and f'writes to runs/{second[0]} instead' in out
    # --resume as written: the saved run's 2 steps, not the YAML's 7,000.
    resume = documented('vla-train --config config/train_tabletop.yaml --resume')
    out = run([*resume, '--set', 'run_name=quick', '--no-progress'], clone)
    assert 'resuming runs/quick from step 2 of 2' in out and 'settings changed: none' in out
    assert "optim.steps 7000 (the run has 2)" in out
    longer = documented('vla-train --config config/train_tabletop.yaml --resume '
                        '--set optim.steps=9000')
    out = run([*longer[:-1], 'optim.steps=3', '--set', 'run_name=quick', '--no-progress'],
              clone)
    assert 'from step 2 of 3' in out and 'settings changed: optim.steps 2 -> 3' in out
    assert 'quick: step 3' in out
    export = documented('vla-train --config config/train_tabletop.yaml --export models/mine')
    run([*export, '--set', 'run_name=mine', *TINY], clone)
    assert (clone / 'models' / 'mine' / 'model.safetensors').is_file()

    record = documented('vla-record-tabletop-bag --out recordings/sim_train --episodes 2000')
    run([*record[:-1], '6', '--seed', '0'], clone)
    convert = documented('vla-bag-to-dataset recordings/sim_train --out data/sim_train '
                         '--library config/tabletop_actions.yaml')
    run(convert, clone)
    assert (clone / 'data' / 'sim_train' / 'actions.yaml').is_file()
    to_lerobot = documented('vla-bag-to-dataset recordings/sim_train --out data/sim_lerobot '
                            '--format lerobot --library config/tabletop_actions.yaml')
    out = run(to_lerobot, clone)
    assert '6 samples written' in out and (clone / 'data/sim_lerobot/meta/info.json').is_file()
    from_lerobot = documented('vla-train --config config/train_tabletop.yaml --set '
                              'data.source=lerobot --set data.path=data/sim_lerobot')
    out = run([*from_lerobot, '--set', 'run_name=from_lerobot', *TINY], clone)
    assert 'from_lerobot: step 2' in out and 'meta/actions.yaml' in out
    finetune = documented('vla-train --config config/train_tabletop.yaml --set '
                          'init_from=models/tabletop')
    out = run([*finetune, '--set', 'data.source=jsonl', '--set', 'data.path=data/sim_train',
               '--set', 'optim.lr=3e-4', '--set', 'run_name=finetuned', *TINY,
               '--set', 'schedule.eval_samples=20'], clone)
    # It starts from the shipped model (100% val), not from a new action encoder (~1%), and
    # validates on an episode of the user's recording held out of training.
    assert float(last_eval(clone / 'runs' / 'finetuned', 'val')['top1']) >= 0.8, out[-3000:]
    assert 'validating on 1 of 6 episodes of data/sim_train' in out
    assert last_eval(clone / 'runs' / 'finetuned', 'held_out_episodes')['n'] == '1'
    evaluate = documented('vla-eval --model models/tabletop --splits val')
    out = run([*evaluate[:2], 'models/mine', *evaluate[3:], '--num', '10', '--device', 'cpu'],
              clone)
    assert '== val (10 samples' in out


def test_hand_started_nodes_meet_over_dds_with_the_documented_commands(clone, tmp_path):
    pytest.importorskip('rclpy')
    selector = documented('vla-action-selector --ros-args')
    simulator = documented('vla-tabletop-sim --ros-args -p episodes:=20')
    recorder = documented('vla-episode-recorder --ros-args -p output:=recordings/teleop1')
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    profile = subprocess.run([str(BIN / 'vla-dds-profile')], capture_output=True, text=True,
                             check=True).stdout.strip()
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = profile   # as the README says for raw frames
    logs = {name: open(tmp_path / f'{name}.log', 'w') for name in ('sel', 'sim', 'rec')}
    procs = {
        'sel': [str(BIN / selector[0]), *selector[1:], '--params-file',
                'config/action_selector.yaml', '-r', 'image:=/camera/image_raw',
                '-p', 'mode:=on_instruction', '-p', 'device:=cpu', '-p', 'torch_threads:=1'],
        'rec': [str(BIN / recorder[0]), *recorder[1:], '-p', "topics:=['/camera/image_raw', "
                "'/instruction', '/action_selector/selected_action']"],
        'sim': [str(BIN / simulator[0]), *simulator[1:3], 'episodes:=3',
                '-p', 'camera_width:=160', '-p', 'camera_height:=120'],
    }
    def start(name):
        return subprocess.Popen(procs[name], cwd=clone, env=env, stdout=logs[name],
                                stderr=subprocess.STDOUT)

    # As a user would: the recorder is recording the selector's output before the simulator
    # starts its episodes (it subscribes to a topic once it sees a publisher there).
    started = {name: start(name) for name in ('sel', 'rec')}
    try:
        deadline = time.monotonic() + 120
        while 'recording /action_selector/selected_action' not in \
                (tmp_path / 'rec.log').read_text():
            assert time.monotonic() < deadline, (tmp_path / 'rec.log').read_text()[-3000:]
            assert started['sel'].poll() is None, (tmp_path / 'sel.log').read_text()[-3000:]
            time.sleep(0.2)
        started['sim'] = start('sim')
        assert started['sim'].wait(timeout=240) == 0, (tmp_path / 'sim.log').read_text()[-3000:]
    finally:
        for proc in started.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in started.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for handle in logs.values():
            handle.close()
    sim_log = (tmp_path / 'sim.log').read_text()
    assert 'done: 3 episodes' in sim_log and 'chose None' not in sim_log, sim_log[-3000:]
    assert (clone / 'recordings' / 'teleop1').is_dir(), (tmp_path / 'rec.log').read_text()
    from rosbags.highlevel import AnyReader
    with AnyReader([clone / 'recordings' / 'teleop1']) as bag:
        counts = {c.topic: c.msgcount for c in bag.connections}
    # Every decision is in the bag. The simulator's own topics are recorded only once the
    # recorder has seen their publishers (it looks every 0.5 s), and three episodes can be over
    # before that: test_bag_recorder_node covers recording those.
    assert counts.get('/action_selector/selected_action', 0) == 3, counts
