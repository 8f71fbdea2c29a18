"""Replay a rosbag2 recording through the stack (camera ingest -> encoder -> decision).

    ros2 launch vln_stack replay.launch.py bag:=../shared/data/internnav_go2_office_vln/rosbag2_mcap \
        image_topic:=/camera/color/image_raw/compressed compressed:=true

The player (vln_stack.tools.bags.play, rosbags-based, no rosbag2_py needed) publishes /clock from
the bag and every node runs on that time. Without odometry in the bag the motion nodes only log.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGS = {
    'bag': ('', 'rosbag2 folder (MCAP or sqlite3)'),
    'rate': ('1.0', 'playback rate'),
    'image_topic': ('/camera/color/image_raw/compressed', 'image topic in the bag'),
    'info_topic': ('/camera/color/camera_info', 'camera_info topic in the bag'),
    'compressed': ('true', 'the image topic is sensor_msgs/CompressedImage'),
    'instruction_topic': ('/instruction', 'std_msgs/String instruction in the bag ("" = none)'),
    'policy': ('janus', 'decision backend'),
    'checkpoint_dir': ('models/tiny-janus', 'checkpoint folder'),
    'params_file': ('', 'parameters YAML (default: config/params.yaml)'),
}


def _nodes(context, *_, **__):
    arg = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    share = FindPackageShare('vln_stack').perform(context)
    params_file = arg['params_file'] or f'{share}/config/params.yaml'
    compressed = arg['compressed'].lower() == 'true'
    cam_in = 'camera/image_raw/compressed' if compressed else 'camera/image_raw'
    play = ['vln_bag_play', arg['bag'], '--rate', arg['rate'], '--clock',
            '--remap', f'{arg["image_topic"]}:={cam_in}',
            '--remap', f'{arg["info_topic"]}:=camera/camera_info']
    if arg['instruction_topic']:
        play += ['--remap', f'{arg["instruction_topic"]}:=vln/instruction']
    common = {'use_sim_time': True}
    return [
        ExecuteProcess(cmd=play, output='screen'),
        Node(package='vln_stack', executable='camera_ingest', name='camera_ingest',
             parameters=[params_file, common, {'source': 'topic', 'input_compressed': compressed}]),
        Node(package='vln_stack', executable='memory_encoder', name='memory_encoder',
             parameters=[params_file, common, {'checkpoint_dir': arg['checkpoint_dir']}]),
        Node(package='vln_stack', executable='decision', name='decision',
             parameters=[params_file, common, {'policy': arg['policy'],
                                               'checkpoint_dir': arg['checkpoint_dir']}]),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
