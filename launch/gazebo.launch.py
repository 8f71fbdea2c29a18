"""Gazebo (server only, headless) + ros_gz bridge + the whole stack on simulated time.

    ros2 launch vln_stack gazebo.launch.py episode_file:=config/episodes/greenhouse.yaml robot:=agri

The Gazebo counterpart of sim.launch.py (same arguments; the MuJoCo sim_bridge is replaced by
gz sim and ros_gz_bridge's parameter_bridge with config/ros_gz_bridge.yaml). Unless world_sdf is
given, the world of the episode is written to a temporary SDF with the robot profile's body at the
episode's start (vln_stack.sim.sdf.build_sdf; gazebo/*.sdf are the same worlds at default poses).
flavor: harmonic (gz sim), fortress (ign gazebo; bridge types renamed to ignition.msgs) or classic
(gzserver + gazebo_ros plugins, which publish the ROS topics themselves: no bridge).
"""
import tempfile
from pathlib import Path

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vln_stack.core.episodes import find_episode
from vln_stack.core.profiles import load_profile
from vln_stack.sim.sdf import build_sdf, server_command
from vln_stack.sim.worlds import RobotBody
from vln_stack.tools.runner.graph import launch_node_kwargs, sim_graph

ARGS = {
    'episode_file': ('', 'episode YAML (default: config/episodes/indoor.yaml)'),
    'episode_id': ('', 'episode id ("" = first in the file)'),
    'robot': ('go2', 'robot profile: go2 | stretch3 | agri'),
    'policy': ('oracle', 'oracle | janus'),
    'checkpoint_dir': ('models/tiny-janus', 'checkpoint folder for janus'),
    'params_file': ('', 'parameters YAML (default: config/params.yaml)'),
    'namespace': ('', 'namespace'),
    'start': ('true', 'send the episode instruction at start-up'),
    'flavor': ('harmonic', 'harmonic | fortress | classic'),
    'world_sdf': ('', 'world SDF to run ("" = generate the episode world at the episode start)'),
    'bridge_config': ('', 'ros_gz_bridge YAML (default: config/ros_gz_bridge.yaml)'),
}
BRIDGE_PACKAGE, BRIDGE_EXECUTABLE = 'ros_gz_bridge', 'parameter_bridge'
IMAGE_SIZE = (320, 240)


def _actions(context, *_, **__):
    arg = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    share = FindPackageShare('vln_stack').perform(context)
    episode_file = arg['episode_file'] or f'{share}/config/episodes/indoor.yaml'
    profile = load_profile(arg['robot'], config_dir=Path(share) / 'config')
    episode = find_episode(episode_file, arg['episode_id'])
    instruction = episode.instruction if arg['start'].lower() == 'true' else ''
    flavor, ns = arg['flavor'], arg['namespace']
    tmp = Path(tempfile.mkdtemp(prefix='vln_gazebo_'))

    world_sdf = arg['world_sdf']
    if not world_sdf:
        body = RobotBody.from_profile(profile, *IMAGE_SIZE)
        start = (episode.start.x, episode.start.y, episode.start.yaw)
        world_sdf = str(tmp / f'{episode.world}_{flavor}.sdf')
        Path(world_sdf).write_text(build_sdf(episode.world, body, start, flavor=flavor,
                                             namespace=ns, robot_name=profile.name))
    actions = [ExecuteProcess(cmd=server_command(flavor, world_sdf), output='screen')]

    if flavor != 'classic':
        bridge_config = arg['bridge_config'] or f'{share}/config/ros_gz_bridge.yaml'
        if flavor == 'fortress':
            entries = yaml.safe_load(Path(bridge_config).read_text())
            for e in entries:
                e['gz_type_name'] = e['gz_type_name'].replace('gz.msgs.', 'ignition.msgs.')
            bridge_config = str(tmp / 'ros_gz_bridge_fortress.yaml')
            Path(bridge_config).write_text(yaml.safe_dump(entries, sort_keys=False))
        actions.append(Node(package=BRIDGE_PACKAGE, executable=BRIDGE_EXECUTABLE,
                            name='ros_gz_bridge', namespace=ns, output='screen',
                            parameters=[{'config_file': bridge_config}]))

    # the stack itself: the same specs as sim.launch.py and CI, less the MuJoCo bridge; the
    # generated SDF has no depth camera, so the safety node keeps watchdogs, e-stop and limits only
    specs = sim_graph(
        episode_file=Path(episode_file), episode_id=episode.episode_id, robot=arg['robot'],
        policy=arg['policy'], checkpoint_dir=arg['checkpoint_dir'],
        params_file=Path(arg['params_file']) if arg['params_file'] else None,
        namespace=ns, image_size=IMAGE_SIZE, instruction=instruction, simulator='gazebo',
        config=Path(share) / 'config')
    return actions + [Node(**launch_node_kwargs(spec)) for spec in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_actions)])
