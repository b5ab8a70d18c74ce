"""The tabletop simulator and the action selector, wired together.

    ros2 launch vla_embedding_ros tabletop_demo.launch.py episodes:=20 device:=cpu

The simulator's camera and instruction feed the selector, and the selector's
``~/selected_action`` goes back to the simulator (its default input), which judges each
episode and publishes ``/tabletop_sim/episode_result`` and ``/tabletop_sim/success_rate``.
After the last episode the simulator prints the success rate and exits, and the launch shuts
down with it (``episodes:=0`` runs until Ctrl-C). The selector runs in ``on_instruction`` mode:
one decision per episode, on the first frame after the instruction.
Arguments: model_path, device, episodes, seed, split, rate_hz, use_sim_time (the simulator
then publishes /clock and both nodes use it), params_file (the selector's), task (grid |
continuous: the simulator judges action vectors on the selector's ``~/action_vector``, the
selector runs ``candidate_mode: sampled``, model_path '' = models/tabletop_continuous),
library_path (the selector's; '' = the model's actions.yaml).

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
from launch.event_handlers import OnProcessExit
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
    selector = {'mode': 'on_instruction', 'max_rate_hz': 0.0, 'use_sim_time': sim_time}
    for name in ('model_path', 'device', 'library_path'):
        if arg(name):
            selector[name] = arg(name)
    if arg('task') == 'continuous':
        selector['candidate_mode'] = 'sampled'
        if not arg('model_path'):
            selector['model_path'] = os.path.dirname(
                package_file('models', 'tabletop_continuous', 'config.json'))
    episodes = int(arg('episodes'))
    sim = {'episodes': episodes, 'seed': int(arg('seed')), 'split': arg('split'),
           'rate_hz': float(arg('rate_hz')), 'publish_clock': sim_time, 'task': arg('task')}
    simulator = Node(package=PACKAGE, executable='tabletop_sim', name='tabletop_sim',
                     output='screen', parameters=[sim])
    # The simulator exits after its last episode (its final log line is the success rate);
    # the run is over then, so the selector is stopped too. episodes:=0 runs until Ctrl-C.
    end_with_simulator = [] if episodes == 0 else [RegisterEventHandler(OnProcessExit(
        target_action=simulator,
        on_exit=[LogInfo(msg='tabletop_sim finished its episodes: shutting down'),
                 EmitEvent(event=Shutdown(reason='tabletop_sim finished'))]))]
    return [
        simulator,
        *end_with_simulator,
        LifecycleNode(package=PACKAGE, executable='action_selector', name='action_selector',
                      namespace='', output='screen',
                      parameters=[arg('params_file'), selector],
                      remappings=[('image', '/camera/image_raw'),
                                  ('instruction', '/instruction')]),
    ]


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
        DeclareLaunchArgument('task', default_value='grid', choices=['grid', 'continuous'],
                              description='grid: action names; continuous: action vectors, '
                                          'the selector in candidate_mode sampled'),
        DeclareLaunchArgument('library_path', default_value='',
                              description="selector action library; '' = the model's"),
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config',
                                                         'action_selector.yaml'),
                              description="the selector's parameters"),
        OpaqueFunction(function=_nodes),
    ])
