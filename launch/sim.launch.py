"""Headless MuJoCo simulator + the whole stack on simulated time.

    ros2 launch vln_stack sim.launch.py episode_file:=config/episodes/indoor.yaml policy:=oracle

The demo runner (`python -m vln_stack.tools.run_episode`) starts the same graph without `launch`
and also scores the episode.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vln_stack.core.episodes import find_episode
from vln_stack.core.profiles import load_profile

ARGS = {
    'episode_file': ('', 'episode YAML (default: config/episodes/indoor.yaml)'),
    'episode_id': ('', 'episode id ("" = first in the file)'),
    'robot': ('go2', 'robot profile: go2 | stretch3 | agri'),
    'policy': ('oracle', 'oracle | janus'),
    'checkpoint_dir': ('models/tiny-janus', 'checkpoint folder for janus'),
    'params_file': ('', 'parameters YAML (default: config/params.yaml)'),
    'namespace': ('', 'namespace'),
    'real_time_factor': ('1.0', 'simulator speed (0 = as fast as possible)'),
    'start': ('true', 'send the episode instruction at start-up'),
}


def _nodes(context, *_, **__):
    arg = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    share = FindPackageShare('vln_stack').perform(context)
    episode_file = arg['episode_file'] or f'{share}/config/episodes/indoor.yaml'
    params_file = arg['params_file'] or f'{share}/config/params.yaml'
    profile = load_profile(arg['robot'], config_dir=__import__('pathlib').Path(share) / 'config')
    per_node = profile.node_params()
    episode = find_episode(episode_file, arg['episode_id'])
    instruction = episode.instruction if arg['start'].lower() == 'true' else ''
    common = {'use_sim_time': True}

    def node(name, extra):
        return Node(package='vln_stack', executable=name, name=name,
                    namespace=arg['namespace'], output='screen',
                    parameters=[params_file, per_node.get(name, {}), extra])

    ep = {'episode_file': episode_file, 'episode_id': episode.episode_id}
    return [
        node('sim_bridge', {**ep, 'real_time_factor': float(arg['real_time_factor']),
                            'image_width': 320, 'image_height': 240}),
        node('camera_ingest', {**common, 'source': 'topic', 'width': 320, 'height': 240}),
        node('memory_encoder', {**common, 'checkpoint_dir': arg['checkpoint_dir']}),
        node('decision', {**common, **ep, 'policy': arg['policy'],
                          'checkpoint_dir': arg['checkpoint_dir'], 'instruction': instruction}),
        node('waypoint', common),
        node('velocity_controller', common),
        # between the controller (vln/cmd_vel_request) and the base (cmd_vel)
        node('safety', {**common, 'obstacle_source': 'depth',
                        # the encoder is on the model path only when the policy reads its tokens
                        **({} if arg['policy'] == 'janus' else {'encoder_timeout_s': 0.0})}),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
