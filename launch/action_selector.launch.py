"""Start the action_selector lifecycle node.

    ros2 launch vla_embedding_ros action_selector.launch.py \\
        model_path:=/path/to/checkpoint device:=cuda image_topic:=/camera/image_raw

Arguments: params_file (default: the package's config/action_selector.yaml), model_path,
device, precision and compile (override the params file when not empty), namespace,
image_topic (what the node's ``image`` subscription is remapped to), instruction_topic,
autostart, exit_on_configure_failure (default false: under launch a node whose configure
failed stays unconfigured and recovers through ``ros2 lifecycle``, as ROS users expect; the
program run alone, ``vla-action-selector``, exits with the reason instead).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode

PACKAGE = 'vla_embedding_ros'


def _selector(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {'autostart': arg('autostart').lower() in ('true', '1', 'yes'),
                 'exit_on_configure_failure':
                     arg('exit_on_configure_failure').lower() in ('true', '1', 'yes')}
    for name in ('model_path', 'device', 'precision', 'compile'):
        if arg(name):  # empty: keep the params file's value
            overrides[name] = arg(name)
    return [LifecycleNode(
        package=PACKAGE, executable='action_selector', name='action_selector',
        namespace=arg('namespace'), output='screen',
        parameters=[arg('params_file'), overrides],
        remappings=[('image', arg('image_topic')),
                    ('instruction', arg('instruction_topic'))])]


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument('params_file',
                              default_value=os.path.join(share, 'config',
                                                         'action_selector.yaml'),
                              description='YAML with action_selector ros__parameters'),
        DeclareLaunchArgument('model_path', default_value='',
                              description="checkpoint folder; '' = the params file's value"),
        DeclareLaunchArgument('device', default_value='',
                              description="auto | cpu | cuda[:N]; '' = the params file's value"),
        DeclareLaunchArgument('precision', default_value='',
                              description="fp32 | bf16 | fp16 (CUDA autocast); '' = the params "
                                          "file's value"),
        DeclareLaunchArgument('compile', default_value='',
                              description="none | torch_compile | cuda_graph for the image "
                                          "encoder; '' = the params file's value"),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its relative topics'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='camera topic the image subscription is remapped to'),
        DeclareLaunchArgument('instruction_topic', default_value='instruction',
                              description='topic the instruction subscription is remapped to'),
        DeclareLaunchArgument('autostart', default_value='true',
                              description='configure and activate without a lifecycle manager'),
        DeclareLaunchArgument('exit_on_configure_failure', default_value='false',
                              description='true: a failed autostart configure ends the node '
                                          'process (and the reason is logged); false: it stays '
                                          'unconfigured for ros2 lifecycle'),
        OpaqueFunction(function=_selector),
    ])
