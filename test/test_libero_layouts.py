"""Whole-scene layouts for demonstrations (libero/layouts.py): the table's regions of a task's
BDDL moved by one rigid motion, so every relation between objects holds in a new arrangement."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

pytest.importorskip('libero.libero', reason='LIBERO not installed (requirements-libero.txt)')

from vla_embedding_ros.libero.demonstrations import (  # noqa: E402
    LAYOUT_EPISODES,
    Job,
    demonstration_spec,
    layout_of,
    run_jobs,
)
from vla_embedding_ros.libero.env import LiberoEnv  # noqa: E402
from vla_embedding_ros.libero.expert import body_box  # noqa: E402
from vla_embedding_ros.libero.layouts import Layout, layout_bddl, layout_spec  # noqa: E402
from vla_embedding_ros.libero.suites import task  # noqa: E402

NUMBER = r'-?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?'


def _regions(text: str) -> dict:
    """{region: (target, [box centres], [yaw ranges])} of a BDDL text."""
    out = {}
    body = text[text.index('(:regions'):text.index('(:fixtures')]
    for name, block in re.findall(r'\((\w+)\s*\n\s*(\(:target.*?)\n\s{6}\)', body, re.S):
        target = re.search(r'\(:target\s+(\S+?)\)', block).group(1)
        boxes = [tuple(float(v) for v in m) for m in re.findall(
            rf'\(({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\)', block)]
        yaws = [tuple(float(v) for v in m) for m in re.findall(
            rf'\(:yaw_rotation\s*\(\s*\(({NUMBER})\s+({NUMBER})\)', block)]
        out[name] = (target, [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1])
                              for b in boxes], yaws)
    return out


def test_every_table_region_moves_rigidly_and_fixture_regions_stay():
    spec = task('libero_spatial', 4)      # a cabinet (turned) with a bowl in its drawer
    text = open(spec.bddl_path, encoding='utf-8').read()
    layout = Layout(mirror=True, turn=0.2, shift=(0.01, -0.02))
    before, after = _regions(text), _regions(layout_bddl(text, layout))
    assert before.keys() == after.keys() and len(before) > 8
    assert {r[0] for r in before.values()} == {'main_table', 'wooden_cabinet_1', 'flat_stove_1'}
    moved = 0
    for name, (target, boxes, yaws) in before.items():
        new_target, new_boxes, new_yaws = after[name]
        assert new_target == target
        if target != 'main_table':           # on a fixture: moves with it, text untouched
            assert new_boxes == boxes and new_yaws == yaws
            continue
        for (cx, cy, w, h), (nx, ny, nw, nh) in zip(boxes, new_boxes, strict=True):
            assert (nx, ny) == pytest.approx(layout.point(cx, cy))
            assert (nw, nh) == pytest.approx((w, h))
            moved += 1
        for (a, b), (na, nb) in zip(yaws, new_yaws, strict=True):
            assert sorted([na, nb]) == pytest.approx(sorted([math.pi - a + 0.2, math.pi - b + 0.2]))
    assert moved >= 8
    # distances between regions are kept: the relations an instruction names hold
    centres = {n: np.array(b[1][0][:2]) for n, b in before.items() if b[1]}
    new = {n: np.array(after[n][1][0][:2]) for n in centres}
    for a in centres:
        for b in centres:
            assert np.linalg.norm(new[a] - new[b]) == pytest.approx(
                np.linalg.norm(centres[a] - centres[b]), abs=1e-9)
    assert layout_spec(spec, Layout()) is spec        # the identity keeps LIBERO's own file


def test_a_layouts_file_is_named_by_its_text_in_the_folder_given(tmp_path):
    spec = task('libero_spatial', 1)
    layout = Layout(turn=0.1)
    first, again = layout_spec(spec, layout, tmp_path), layout_spec(spec, layout, tmp_path)
    assert first.bddl_path == again.bddl_path and first.bddl_path.startswith(str(tmp_path))
    assert layout_spec(spec, Layout(turn=-0.1), tmp_path).bddl_path != first.bddl_path
    assert len(list(tmp_path.glob('*.bddl'))) == 2
    assert first.instruction == spec.instruction and first.max_steps == spec.max_steps


def test_a_layouts_scene_puts_the_objects_where_its_regions_say():
    spec = task('libero_spatial', 0)
    layout = Layout(mirror=True, turn=-0.1, shift=(0.02, 0.0))
    positions = {}
    for name, chosen in (('own', spec), ('moved', layout_spec(spec, layout))):
        with LiberoEnv(chosen, image_size=64) as env:
            env.reset_random(3)
            env.settle()
            positions[name] = {n: (body_box(env, n)[0][:2] + body_box(env, n)[1][:2]) / 2
                               for n in ('plate_1', 'glazed_rim_porcelain_ramekin_1',
                                         'akita_black_bowl_1', 'cookies_1')}
    own, moved = positions['own'], positions['moved']
    # the bowl between the plate and the ramekin stays between them, every distance kept
    # (each object jitters ~1 cm in its region)
    for a in own:
        for b in own:
            assert np.linalg.norm(moved[a] - moved[b]) == pytest.approx(
                np.linalg.norm(own[a] - own[b]), abs=0.03), (a, b)
    # ... and the arrangement is another one: mirrored, the plate crosses to the other side
    assert np.sign(moved['plate_1'][1] - moved['cookies_1'][1]) != np.sign(
        own['plate_1'][1] - own['cookies_1'][1])


def test_runs_of_placements_alternate_between_libero_and_a_drawn_layout():
    assert all(layout_of(Job('libero_spatial', 2, k), 0).identity
               for k in range(LAYOUT_EPISODES))
    drawn = {layout_of(Job('libero_spatial', 2, k), 0)
             for k in range(LAYOUT_EPISODES, 2 * LAYOUT_EPISODES)}
    assert len(drawn) == 1 and not next(iter(drawn)).identity
    assert layout_of(Job('libero_spatial', 2, 15), 0) not in drawn       # each run its own
    assert layout_of(Job('libero_spatial', 2, 5), 1) not in drawn        # ... and seed's
    spec = demonstration_spec(Job('libero_spatial', 2, 7), 0)
    assert spec.bddl_path != task('libero_spatial', 2).bddl_path
    assert spec.instruction == task('libero_spatial', 2).instruction
    with pytest.raises(ValueError, match='one task and layout'):
        run_jobs([Job('libero_spatial', 2, 4), Job('libero_spatial', 2, 5)], '/nonexistent', 0)
