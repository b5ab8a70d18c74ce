"""What LIBERO learning stands on, on real LIBERO scenes: freer arrangements than LIBERO's
reset, the scene labels of each demonstrated decision, and the point errors against the
expert that ``vla-eval --task libero`` reports for a model."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip('libero.libero', reason='LIBERO not installed (requirements-libero.txt)')

from support.models import make_tiny_bert, tiny_vla_config  # noqa: E402
from vla_embedding_ros.data.dataset import JSONLDataset  # noqa: E402
from vla_embedding_ros.libero import make_dataset  # noqa: E402
from vla_embedding_ros.libero.arrangement import (  # noqa: E402
    PICK_RADIUS,
    image_radius,
    scene_labels,
    swap_objects,
)
from vla_embedding_ros.libero.demonstrations import (  # noqa: E402
    GENERATOR,
    Job,
    run_jobs,
    scene_change,
)
from vla_embedding_ros.libero.env import LiberoEnv  # noqa: E402
from vla_embedding_ros.libero.expert import (  # noqa: E402
    ExpertPolicy,
    body_box,
    goal_pair,
    place_point,
)
from vla_embedding_ros.libero.suites import task  # noqa: E402
from vla_embedding_ros.model import VLAModel  # noqa: E402
from vla_embedding_ros.training.evaluate import main as eval_main  # noqa: E402

LIBRARY = Path(__file__).resolve().parents[1] / 'config' / 'libero_actions.yaml'


@pytest.fixture(scope='module')
def env():
    with LiberoEnv(task('libero_object', 0), image_size=128) as e:
        yield e


def _places(env) -> dict:
    renv = env.robosuite_env
    return {name: env.sim.data.body_xpos[renv.obj_body_id[name]][:2].copy()
            for name in renv.objects_dict}


def test_swapping_moves_every_object_to_another_ones_place_and_they_stay_on_the_table(env):
    env.reset_random(11)
    before = _places(env)
    order = swap_objects(env, np.random.default_rng(3))
    env.settle()
    after = _places(env)
    assert sorted(order) == sorted(before) and order != list(before)
    for name, source in zip(before, order, strict=True):
        # each object now stands where ``source`` stood (settling moves it by millimetres)
        assert np.linalg.norm(after[name] - before[source]) < 0.02, (name, source)
    floor = min(body_box(env, name)[0][2] for name in before)
    for name in before:   # nothing fell through, toppled into the air or was thrown
        low, high = body_box(env, name)
        assert low[2] < floor + 0.03 and high[2] < floor + 0.35, name


def test_scene_labels_name_the_other_objects_where_the_camera_sees_them(env):
    env.reset_random(12)
    env.settle()
    frame = env.render()
    obj, target = goal_pair(env)
    point = ExpertPolicy(env)(frame, env.instruction, 'pick')
    labels = scene_labels(env, frame, 'pick', point, exclude=(obj,))
    cal = frame.calibration
    expected = []
    for name in env.robosuite_env.obj_body_id:
        if name != obj:
            low, high = body_box(env, name)
            (x, y), _ = cal.world_to_pixel(np.array([*(low[:2] + high[:2]) / 2, high[2]]))
            expected.append(cal.pixel_to_normalised(x, y))
    assert len(labels['others']) == len(expected) == 6
    for got, want in zip(labels['others'], expected, strict=True):
        assert np.allclose(got, want, atol=1e-4)
    # the basket (the place target) is among a pick's wrong objects; the asked one is not
    own = np.array(point)
    assert min(np.linalg.norm(np.array(labels['others']) - own, axis=1)) > labels['radius']
    # 1.5 cm at ~1 m from the camera: a few pixels of 128, measured in the image
    assert labels['radius'] == pytest.approx(image_radius(frame, frame.lift(
        *cal.normalised_to_pixel(*point)), PICK_RADIUS), abs=1e-4)
    assert 1.0 / 128 < labels['radius'] < 8.0 / 128
    # an expert point off the image (an object out of view; the executor refuses it) is
    # labelled at the nearest pixel instead of failing the whole demonstration run
    assert scene_labels(env, frame, 'pick', (1.2, -0.1), exclude=(obj,))['radius'] > 0


def test_the_place_target_moves_to_a_free_spot_in_view_before_the_place_frame(env):
    env.reset_random(13)
    held, target = goal_pair(env)
    change = scene_change(env, Job('libero_object', 0, 1), 13)
    env.settle()
    before = _places(env)
    change('pick')                               # nothing changes before the pick
    assert change.moved_to is None
    assert all(np.allclose(before[n], p) for n, p in _places(env).items())
    change('place')
    after = _places(env)
    assert change.moved_to is not None
    assert np.linalg.norm(after[target] - change.moved_to) < 0.02     # settled where it went
    assert np.linalg.norm(after[target] - before[target]) > 0.02
    assert all(np.linalg.norm(after[n] - before[n]) < 0.005 for n in before if n != target)
    low, high = body_box(env, target)
    for name in env.robosuite_env.obj_body_id:   # clear of every other footprint
        if name != target:
            o_low, o_high = body_box(env, name)
            assert not (np.all(low[:2] < o_high[:2]) and np.all(o_low[:2] < high[:2])), name
    # in view: the pixel of the middle of its top sees the target (no arm in front of it)
    frame = env.render()
    (x, y), _ = frame.calibration.world_to_pixel(place_point(env, target))
    lifted = frame.lift(x, y)
    assert np.all(low - 0.01 < lifted) and np.all(lifted < high + 0.01)
    # the placement seed decides the spot
    env.reset_random(13)
    again = scene_change(env, Job('libero_object', 0, 1), 13)
    env.settle()
    again('place')
    assert again.moved_to == change.moved_to


def test_a_work_folder_of_another_generator_is_refused(tmp_path, capsys):
    old = tmp_path / 'demo.work' / 'libero_object' / '000'
    old.mkdir(parents=True)
    (old / '00000.failed.json').write_text(json.dumps({'k': 0, 'swapped': False}))
    with pytest.raises(SystemExit) as exited:
        make_dataset.main(['--out', str(tmp_path / 'demo'), '--suites', 'libero_object',
                           '--tasks', '0', '--episodes-per-task', '1', '--quiet'])
    assert exited.value.code == 2
    assert 'made by generator 1' in capsys.readouterr().err
    assert not (tmp_path / 'demo').exists()


def test_each_episode_runs_in_its_own_tasks_scene(tmp_path):
    # one episode per task: a worker's group of episodes must not reach into the next task
    out = tmp_path / 'demo'
    assert make_dataset.main(['--out', str(out), '--suites', 'libero_object', '--tasks', '0',
                              '1', '--episodes-per-task', '1', '--image-size', '128',
                              '--quiet']) == 0
    metas = {m.parent.name: json.loads(m.read_text()) for m in
             (tmp_path / 'demo.work' / 'libero_object').glob('*/00000*.json')}
    assert {k: m['instruction'] for k, m in metas.items()} == {
        '000': task('libero_object', 0).instruction, '001': task('libero_object', 1).instruction}
    with pytest.raises(ValueError, match='jobs of one task'):
        run_jobs([Job('libero_object', 0, 0), Job('libero_object', 1, 0)], str(tmp_path), 0)


def test_the_dataset_carries_labels_and_changed_scenes(tmp_path):
    out = tmp_path / 'demo'
    assert make_dataset.main(['--out', str(out), '--suites', 'libero_object', '--tasks', '0',
                              '--episodes-per-task', '3', '--image-size', '128',
                              '--quiet']) == 0
    data = JSONLDataset(out)
    # kept (k.json) or failed (k.failed.json): every episode's record says how it was set
    metas = sorted((json.loads(m.read_text()) for m in
                    (tmp_path / 'demo.work' / 'libero_object' / '000').glob('0000?*.json')),
                   key=lambda m: m['k'])
    assert [(m['k'], m['swapped'], m['target_moved_to'] is not None) for m in metas] == [
        (0, False, False), (1, False, True), (2, True, False)]
    assert all(m['generator'] == GENERATOR for m in metas)
    assert len(data) == 2 * sum(m['success'] for m in metas) > 0
    for record in data.records:
        labels = record['labels']
        assert labels['radius'] > 0 and labels['others']
        assert all(0 <= c < 1 for point in labels['others'] for c in point)
    # a pick's wrong objects include the basket; a place's leave out the held object too
    picks = [r for r in data.records if r['action_vector'][0] == 1.0]
    places = [r for r in data.records if r['action_vector'][1] == 1.0]
    assert len(picks) == len(places) == len(data) // 2
    assert all(len(p['labels']['others']) == len(q['labels']['others']) + 1
               for p, q in zip(picks, places, strict=True))


def test_point_errors_are_the_table_distance_to_the_experts_point(env):
    from vla_embedding_ros.libero.episode import run_episode
    from vla_embedding_ros.libero.evaluation import ReferencedPolicy
    env.reset_official(0)
    expert = ExpertPolicy(env)
    shift = 0.05                         # of the image: ~5-10 cm on the table

    def shifted(frame, instruction, primitive):
        u, v = expert(frame, instruction, primitive)
        seen.append((frame, (u, v)))
        return u + shift, v
    seen = []
    referenced = ReferencedPolicy(shifted, env)
    run_episode(env, referenced)
    frame, (u, v) = seen[0]
    cal = frame.calibration
    want = np.hypot(*(frame.lift(*cal.normalised_to_pixel(u + shift, v))
                      - frame.lift(*cal.normalised_to_pixel(u, v)))[:2])
    assert referenced.errors['pick'] == pytest.approx(100 * want, abs=0.01)
    assert 3 < referenced.errors['pick'] < 15


def test_the_blind_baseline_runs_the_model_without_its_words(tmp_path, capsys):
    model_dir = tmp_path / 'model'
    bert = make_tiny_bert(tmp_path / 'bert')
    VLAModel(tiny_vla_config(text_path=bert, param_dim=4)).save_pretrained(model_dir)
    shutil.copy(LIBRARY, model_dir / 'actions.yaml')
    report = tmp_path / 'blind.json'
    code = eval_main(['--task', 'libero', '--suites', 'libero_object', '--tasks', '0',
                      '--trials', '1', '--model', str(model_dir), '--policy', 'blind',
                      '--device', 'cpu', '--image-size', '128', '--json', str(report)])
    assert code == 0, capsys.readouterr().out
    result = json.loads(report.read_text())
    assert '(empty instruction)' in result['policy'] and result['primitive'] == 'given'
    [episode] = result['suites']['libero_object']['tasks'][0]['episodes_detail']
    # an untrained model's first decision, its primitive pinned: a point of the image
    assert 'pick' in episode['points'] and episode['failure'] != 'wrong_primitive'


def test_a_libero_pro_variant_gives_its_own_instruction_where_it_perturbs_it():
    from vla_embedding_ros.libero.suites import bddl_language
    base = task('libero_spatial', 0)
    assert base.instruction_source == 'registry'
    for suite in ('libero_spatial_lan', 'libero_spatial_task'):
        spec = task(suite, 0)
        # registered under the base task's name and language; the variant's own is its BDDL's
        assert spec.name == base.name and spec.instruction_source == 'bddl'
        assert spec.instruction == bddl_language(spec.bddl_path) != base.instruction
    # a variant that perturbs the scene only keeps the standard instruction
    assert task('libero_spatial_swap', 0).instruction == base.instruction
    assert task('libero_object_object', 0).instruction_source == 'registry'
