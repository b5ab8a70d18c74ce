"""A selector that receives no frame says so, naming where it listens (issue 30 item 9).

The README's ONNX command had no camera remap: the node listened on /image, the simulator
published on /camera/image_raw, every episode timed out and the node said nothing. Now an
active node with no frame for 5 s warns (every 10 s while it lasts) with the fully resolved
topic of each silent camera and its publisher count; and every README command that starts
the selector by hand remaps its camera to where tabletop_sim publishes.
"""
import re
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip('rclpy')

from sensor_msgs.msg import Image  # noqa: E402

from support.fault_client import selector_overrides  # noqa: E402
from support.ros import Harness, make_text_checkpoint  # noqa: E402
from vla_embedding_ros.ros.action_selector_node import SENSOR_QOS, ActionSelectorNode  # noqa: E402
from vla_embedding_ros.ros.selector_stats import FrameWatch, no_frame_message  # noqa: E402
from vla_embedding_ros.ros.tabletop_sim_node import CAMERA_TOPIC  # noqa: E402

README = Path(__file__).resolve().parents[1] / 'README.md'
NEEDLE = 'no frame received on'


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return make_text_checkpoint(tmp_path_factory.mktemp('no_frames'))


def test_an_active_node_without_frames_warns_naming_its_resolved_topics(ckpt, capfd):
    with Harness('no_frames_client') as h:
        # The second camera has a publisher that sends nothing; the first has none at all.
        side = h.node.create_publisher(Image, '/blind/side', SENSOR_QOS)
        node = h.start(ActionSelectorNode(
            context=h.context, namespace='/blind',
            cli_args=['--ros-args', '-r', 'image:=/wrong/camera'],
            parameter_overrides=selector_overrides(ckpt, image_topics=['image', 'side'],
                                                   missing_camera='abstain')))
        assert h.spin_until(lambda: node.state == 'active', 30.0)
        assert h.spin_until(lambda: node.count_subscribers('/blind/side') > 0, 10.0)
        activated = time.monotonic()
        err = ''

        def warned():
            nonlocal err
            err += capfd.readouterr().err
            return NEEDLE in err

        assert h.spin_until(warned, 10.0), err[-2000:]
        waited = time.monotonic() - activated
        assert 4.0 <= waited <= 8.0, f'warned {waited:.1f} s after activation'
        h.spin_for(4.0)   # well inside the 10 s period: no second line
        err += capfd.readouterr().err
        lines = [line for line in err.splitlines() if NEEDLE in line]
        assert len(lines) == 1, lines
        line = lines[0]
        assert '[WARN]' in line and '/wrong/camera for ' in line and '/blind/side for ' in line
        first, second = line.split('/wrong/camera for ', 1)[1].split('/blind/side for ', 1)
        assert 'since activation; no publisher there: remap' in first, first
        assert '1 publisher(s) there, yet nothing arrives' in second, second
        assert "No decision is made without the first camera's frames" in line
        h.node.destroy_publisher(side)


def test_frame_watch_reports_after_5_s_then_every_10_s_and_again_after_frames_resume():
    watch = FrameWatch(after_s=5.0, period_s=10.0)
    assert watch.due(100.0) == []                     # not active: nothing to watch
    watch.start(2, now=0.0)
    assert watch.due(4.9) == []
    assert watch.due(5.0) == [(0, 5.0, False), (1, 5.0, False)]
    assert watch.due(9.0) == [] and watch.due(14.9) == []   # rate-limited
    assert [c for c, _, _ in watch.due(15.0)] == [0, 1]
    watch.frame(0, 16.0)
    watch.frame(1, 16.0)
    assert watch.due(17.0) == []                      # frames again: the limit resets
    silent = watch.due(21.5)                          # 5.5 s after the last frame
    assert [(c, round(s, 1), seen) for c, s, seen in silent] == [(0, 5.5, True), (1, 5.5, True)]
    watch.frame(0, 22.0)
    assert watch.silent(26.0) == [(1, 10.0, True)]    # only the silent camera
    watch.stop()
    assert watch.due(100.0) == []                     # deactivated: quiet


def test_no_frame_message_names_each_topic_and_what_to_check():
    text = no_frame_message([(0, 5.2, False), (1, 12.0, True)], ['/image', '/cams/side'],
                            [0, 2])
    assert text.startswith('no frame received on /image for 5 s (since activation; no '
                           'publisher there: remap')
    assert '/cams/side for 12 s (since the last one; 2 publisher(s) there' in text
    assert 'image_transport' in text and 'vla-dds-profile' in text
    assert 'first camera' in text
    assert 'first camera' not in no_frame_message([(1, 6.0, True)], ['/a', '/b'], [0, 0])


def _readme_selector_commands() -> list[str]:
    """Every command in README.md's code blocks that starts the selector node by hand, with
    its continuation lines joined."""
    commands, current = [], None
    in_block = False
    for line in README.read_text(encoding='utf-8').splitlines():
        if line.startswith('```'):
            in_block = not in_block
            continue
        if not in_block:
            continue
        if current is not None:
            current += ' ' + line.strip()
        elif re.match(r'^\s*(vla-action-selector|python -m vla_embedding_ros\.ros\.'
                      r'action_selector_node|ros2 run vla_embedding_ros action_selector)\b',
                      line):
            current = line.strip()
        if current is not None and not current.endswith('\\'):
            commands.append(current)
            current = None
    return commands


def test_readme_selector_commands_listen_where_the_simulator_publishes():
    commands = _readme_selector_commands()
    assert len(commands) >= 4, commands
    for command in commands:
        assert f'image:=/{CAMERA_TOPIC}' in command, command
