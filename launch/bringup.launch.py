"""Robot bringup: camera ingest, memory encoder, decision, waypoint, velocity controller, safety.

    ros2 launch vln_stack bringup.launch.py robot:=go2 instruction:="go to the green plant"

Arguments: robot (go2 | stretch3 | agri | path to a profile YAML), instruction ('' = wait for
vln/instruction), params_file, use_sim_time, namespace, policy (janus | oracle), checkpoint_dir,
camera_source (topic | realsense | opencv), device and dtype of the
model nodes. Remaps come from the robot profile. The same graph is
started without `launch` by vln_stack.tools.runner.graph (demo runner and CI).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from vln_stack.core.profiles import load_profile

ARGS = {
    'robot': ('go2', 'robot profile: go2 | stretch3 | agri | path/to/profile.yaml'),
    'instruction': ('', 'instruction to start with ("" = wait for vln/instruction)'),
    'params_file': ('', 'parameters YAML keyed by node name (default: config/params.yaml)'),
    'use_sim_time': ('false', 'use /clock (simulation, bag replay)'),
    'namespace': ('', 'namespace for every node and relative topic'),
    'policy': ('janus', 'decision backend: janus | oracle (simulator only)'),
    'checkpoint_dir': ('models/tiny-janus', 'local JanusVLN checkpoint folder'),
    'camera_source': ('topic', 'camera ingest source: topic | realsense | opencv'),
    'device': ('cpu', 'where the models run: cpu | cuda | cuda:N (memory encoder and decision)'),
    'dtype': ('auto', 'model dtype: auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 '
                      '| float16'),
}


def _nodes(context, *_, **__):
    arg = {k: LaunchConfiguration(k).perform(context) for k in ARGS}
    share = FindPackageShare('vln_stack').perform(context)
    params_file = arg['params_file'] or f'{share}/config/params.yaml'
    profile = load_profile(arg['robot'], config_dir=__import__('pathlib').Path(share) / 'config')
    per_node = profile.node_params()
    remaps = list(profile.robot_remaps().items())
    sim_time = arg['use_sim_time'].lower() in ('1', 'true', 'yes')
    common = {'use_sim_time': sim_time}

    def node(executable, name, extra=None):
        return Node(package='vln_stack', executable=executable, name=name,
                    namespace=arg['namespace'], output='screen', remappings=remaps,
                    parameters=[params_file, common, per_node.get(name, {}), extra or {}])

    return [
        node('camera_ingest', 'camera_ingest', {'source': arg['camera_source']}),
        node('memory_encoder', 'memory_encoder', {'checkpoint_dir': arg['checkpoint_dir'],
                                                  'device': arg['device'], 'dtype': arg['dtype']}),
        node('decision', 'decision', {'policy': arg['policy'],
                                      'checkpoint_dir': arg['checkpoint_dir'],
                                      'device': arg['device'], 'dtype': arg['dtype'],
                                      'instruction': arg['instruction']}),
        node('waypoint', 'waypoint'),
        node('velocity_controller', 'velocity_controller'),
        # the only publisher of cmd_vel: bounds vln/cmd_vel_request, watchdogs, e-stop
        node('safety', 'safety',
             {} if arg['policy'] == 'janus' else {'encoder_timeout_s': 0.0}),
    ]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d) for k, (v, d) in ARGS.items()]
        + [OpaqueFunction(function=_nodes)])
