"""Headless MuJoCo simulator + the whole stack on simulated time.

    ros2 launch vln_stack sim.launch.py episode_file:=config/episodes/indoor.yaml policy:=oracle

The demo runner (`python -m vln_stack.tools.runner.run_episode`) starts the same graph without `launch`
and also scores the episode.
"""
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vln_stack.core.episodes import find_episode
from vln_stack.tools.runner.graph import launch_node_kwargs, sim_graph

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
    share = Path(FindPackageShare('vln_stack').perform(context))
    episode_file = arg['episode_file'] or str(share / 'config' / 'episodes' / 'indoor.yaml')
    episode = find_episode(episode_file, arg['episode_id'])
    # the same specs the demo runner and CI start (vln_stack.tools.runner.graph)
    specs = sim_graph(
        episode_file=Path(episode_file), episode_id=episode.episode_id, robot=arg['robot'],
        policy=arg['policy'], checkpoint_dir=arg['checkpoint_dir'],
        params_file=Path(arg['params_file']) if arg['params_file'] else None,
        real_time_factor=float(arg['real_time_factor']), namespace=arg['namespace'],
        instruction=episode.instruction if arg['start'].lower() == 'true' else '',
        config=share / 'config')
    return [Node(**launch_node_kwargs(spec)) for spec in specs]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
