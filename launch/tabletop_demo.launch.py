"""The tabletop simulator and the action selector, wired together.

    ros2 launch vla_embedding_ros tabletop_demo.launch.py episodes:=20 device:=cpu

The simulator's camera and instruction feed the selector, and the selector's
``~/selected_action`` goes back to the simulator (its default input), which judges each
episode and publishes ``/tabletop_sim/episode_result`` and ``/tabletop_sim/success_rate``.
After the last episode the simulator prints the success rate and exits, and the launch shuts
down with it (``episodes:=0`` runs until Ctrl-C). The selector runs in ``on_instruction`` mode:
one decision per episode, on the first frame after the instruction. A selector that cannot
configure (e.g. ``model_path:=/nonexistent``) exits with the reason
(``exit_on_configure_failure: true``), and the launch shuts down naming it: the simulator
alone would wait for a selector forever.
Arguments: model_path, device, episodes, seed, split, rate_hz, use_sim_time (the simulator
then publishes /clock and both nodes use it), params_file (the selector's), task (grid |
continuous: the simulator judges action vectors on the selector's ``~/action_vector``, the
selector runs ``candidate_mode: sampled``, model_path '' = models/tabletop_continuous),
library_path (the selector's; '' = the model's actions.yaml). ``task:=libero`` runs
``libero_sim`` instead (LIBERO's scenes and check_success over the official initial states of
``suite``, episodes spread over its tasks): ``policy:=expert`` the simulator's scripted expert
through its own topics and no selector, ``policy:=selector`` the selector in
``candidate_mode: sampled`` on ``model_path`` (a LIBERO model).

Both nodes get FASTDDS_DEFAULT_PROFILES_FILE=<share>/config/fastdds_large_frames.xml unless
Fast DDS transports are already chosen (that variable or FASTDDS_BUILTIN_TRANSPORTS): with
Fast DDS's default transports most 640x480 rgb8 frames (921 KB) are lost between processes.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from vla_embedding_ros.package_share import package_file
from vla_embedding_ros.ros.dds_transport import (
    PROFILES_VAR,
    large_frames_profile,
    transports_chosen,
)

PACKAGE = 'vla_embedding_ros'


def _nodes(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    sim_time = arg('use_sim_time').lower() in ('true', '1', 'yes')
    # A demo without its selector cannot run: a failed configure ends the selector process
    # (and with it the launch, below) instead of leaving it unconfigured.
    selector = {'mode': 'on_instruction', 'max_rate_hz': 0.0, 'use_sim_time': sim_time,
                'exit_on_configure_failure': True}
    for name in ('model_path', 'device', 'library_path'):
        if arg(name):
            selector[name] = arg(name)
    if arg('task') == 'continuous':
        selector['candidate_mode'] = 'sampled'
        if not arg('model_path'):
            selector['model_path'] = os.path.dirname(
                package_file('models', 'tabletop_continuous', 'config.json'))
    episodes = int(arg('episodes'))
    if arg('task') == 'libero':
        return _libero(arg, selector, sim_time, episodes)
    sim = {'episodes': episodes, 'seed': int(arg('seed')), 'split': arg('split'),
           'rate_hz': float(arg('rate_hz')), 'publish_clock': sim_time, 'task': arg('task')}
    simulator = Node(package=PACKAGE, executable='tabletop_sim', name='tabletop_sim',
                     output='screen', parameters=[sim])
    selector_node = LifecycleNode(
        package=PACKAGE, executable='action_selector', name='action_selector', namespace='',
        output='screen', parameters=[arg('params_file'), selector],
        remappings=[('image', '/camera/image_raw'), ('instruction', '/instruction')])
    return [simulator, selector_node, *_end_rules(simulator, selector_node, episodes)]


def _libero(arg, selector: dict, sim_time: bool, episodes: int) -> list:
    """libero_sim and (policy:=selector) the selector deciding on every frame: an episode asks
    twice under one instruction, pick then place."""
    sim = {'suite': arg('suite'), 'episodes': episodes, 'publish_clock': sim_time,
           'trials_per_task': max(1, min(50, -(-episodes // 10)))}
    if arg('policy') == 'expert':
        sim.update(publish_expert=True, action_topic='libero_sim/expert_action')
    simulator = Node(package=PACKAGE, executable='libero_sim', name='libero_sim',
                     output='screen', parameters=[sim])
    if arg('policy') == 'expert':
        return [simulator, *_end_rules(simulator, None, episodes, 'libero_sim')]
    selector.update(mode='continuous', candidate_mode='sampled')
    selector_node = LifecycleNode(
        package=PACKAGE, executable='action_selector', name='action_selector', namespace='',
        output='screen', parameters=[arg('params_file'), selector],
        remappings=[('image', '/camera/image_raw'), ('instruction', '/instruction')])
    return [simulator, selector_node,
            *_end_rules(simulator, selector_node, episodes, 'libero_sim')]


def _end_rules(simulator, selector, episodes: int, sim_name: str = 'tabletop_sim') -> list:
    """When the run ends. The simulator logs 'done: N episodes' and exits after its last one
    (episodes:=0 runs until Ctrl-C): only then does the launch say it finished its episodes.
    A selector that exits non-zero (its configure failed) ends the run with its reason. An
    exit during Ctrl-C says nothing (the nodes get the terminal's SIGINT themselves, maybe
    before the launch shuts down, so the log line, not the exit code, tells a finished run)."""
    seen = {'reason': '', 'done': False}

    def selector_output(event):   # its 'configure failed: ...' log line is the reason
        text = event.text.decode('utf-8', 'replace')
        if 'configure failed:' in text and not seen['reason']:
            seen['reason'] = text[text.index('configure failed:'):].strip()

    def simulator_output(event):
        text = event.text.decode('utf-8', 'replace')
        seen['done'] = seen['done'] or ('done: ' in text and 'episodes, success rate' in text)

    def shut_down(why: str) -> list:
        return [LogInfo(msg=f'{why}: shutting down'), EmitEvent(event=Shutdown(reason=why))]

    def selector_exited(event, context):
        if event.returncode == 0 or context.is_shutdown:
            return []
        return shut_down(f'action_selector exited with code {event.returncode}: '
                         f'{seen["reason"] or "see its log above"}')

    def simulator_exited(event, context):
        if seen['done']:
            return shut_down(f'{sim_name} finished its episodes')
        if context.is_shutdown or event.returncode == 0 and not episodes:
            return []
        return shut_down(f'{sim_name} exited with code {event.returncode} before finishing '
                         'its episodes')

    rules = [RegisterEventHandler(OnProcessIO(target_action=simulator,
                                              on_stdout=simulator_output,
                                              on_stderr=simulator_output)),
             RegisterEventHandler(OnProcessExit(target_action=simulator,
                                                on_exit=simulator_exited))]
    if selector is not None:   # libero with policy:=expert runs no selector
        rules += [RegisterEventHandler(OnProcessIO(target_action=selector,
                                                   on_stdout=selector_output,
                                                   on_stderr=selector_output)),
                  RegisterEventHandler(OnProcessExit(target_action=selector,
                                                     on_exit=selector_exited))]
    return rules


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    transports = [] if transports_chosen(os.environ) else [
        SetEnvironmentVariable(PROFILES_VAR, large_frames_profile())]
    return LaunchDescription([
        *transports,
        DeclareLaunchArgument('model_path', default_value='',
                              description="selector checkpoint; '' = the shipped model"),
        DeclareLaunchArgument('device', default_value='', description='auto | cpu | cuda[:N]'),
        DeclareLaunchArgument('episodes', default_value='20', description='0 = forever'),
        DeclareLaunchArgument('seed', default_value='0', description='episode stream seed'),
        DeclareLaunchArgument('split', default_value='val', description='tabletop split'),
        DeclareLaunchArgument('rate_hz', default_value='10.0', description='camera rate'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='simulator publishes /clock; both nodes use it'),
        DeclareLaunchArgument('task', default_value='grid',
                              choices=['grid', 'continuous', 'libero'],
                              description='grid: action names; continuous: action vectors, '
                                          'the selector in candidate_mode sampled; libero: '
                                          'libero_sim (LIBERO scenes, check_success)'),
        DeclareLaunchArgument('suite', default_value='libero_spatial',
                              description='task libero: the LIBERO suite'),
        DeclareLaunchArgument('policy', default_value='selector',
                              choices=['selector', 'expert'],
                              description="task libero: the selector, or the simulator's "
                                          'scripted expert over the same topics'),
        DeclareLaunchArgument('library_path', default_value='',
                              description="selector action library; '' = the model's"),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config',
                                                         'action_selector.yaml'),
                              description="the selector's parameters"),
        OpaqueFunction(function=_nodes),
    ])
