"""The node graph as process specs: which executables, parameter files, overrides and remaps.

One description for every way the graph starts: the demo runner and the tests start these specs as
processes (launch/launch_ros are not installable from PyPI), and `sim.launch.py` /
`gazebo.launch.py` turn the very same specs into launch_ros ``Node`` actions
(:func:`launch_node_kwargs`), so `ros2 launch` and CI run one graph.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.paths import config_dir
from ...core.profiles import load_profile
from .procs import NodeSpec

NODES = {
    'sim_bridge': 'vln_stack.nodes.sim_bridge_node',
    'camera_ingest': 'vln_stack.nodes.camera_node',
    'memory_encoder': 'vln_stack.nodes.encoder_node',
    'decision': 'vln_stack.nodes.decision_node',
    'waypoint': 'vln_stack.nodes.waypoint_node',
    'velocity_controller': 'vln_stack.nodes.controller_node',
    'safety': 'vln_stack.nodes.safety_node',
}


SIMULATORS = ('mujoco', 'gazebo')


def _safety_in_sim(names: list[str], policy: str, simulator: str) -> dict[str, Any]:
    """Safety-node settings for a (partial) simulated graph: obstacles from the simulator's depth
    image (the generated Gazebo worlds have none: watchdogs, e-stop and limits only); only the
    heartbeats of nodes that run are watched, the encoder's only when the policy reads its tokens
    (janus)."""
    out: dict[str, Any] = {'obstacle_source': 'depth' if simulator == 'mujoco' else 'none'}
    if 'decision' not in names:
        out['status_timeout_s'] = 0.0
    if 'memory_encoder' not in names or policy != 'janus':
        out['encoder_timeout_s'] = 0.0
    if 'camera_ingest' not in names:
        out['camera_topic'] = 'camera/image_raw'
    return out


def sim_graph(*, episode_file: Path, episode_id: str = '', robot: str = 'go2',
              policy: str = 'oracle', checkpoint_dir: str = '', params_file: Path | None = None,
              real_time_factor: float = 1.0, with_encoder: bool = True,
              include: tuple[str, ...] | None = None, namespace: str = '',
              image_size: tuple[int, int] = (320, 240), instruction: str = '',
              simulator: str = 'mujoco', config: Path | None = None,
              overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    """Specs of the simulated stack: sim bridge + camera ingest + encoder + decision + motion
    (waypoint, velocity controller, safety).

    The simulator renders ``image_size`` and the camera ingest passes it through unscaled (raw
    images, whatever the real robot's profile says about JPEG). ``simulator='gazebo'`` leaves the
    sim bridge out: gz sim and ros_gz_bridge publish the same topics. The safety node goes
    wherever the velocity controller goes (it owns ``cmd_vel``). ``instruction`` starts the
    decision node on it at once; ``config`` is the config folder (default: :func:`config_dir`).
    """
    if simulator not in SIMULATORS:
        raise ValueError(f'simulator {simulator!r}: expected one of {SIMULATORS}')
    names = list(NODES)
    if simulator != 'mujoco':
        names.remove('sim_bridge')
    if not with_encoder:
        names.remove('memory_encoder')
    if include is not None:
        wanted = set(include) | ({'safety'} if 'velocity_controller' in include else set())
        names = [n for n in names if n in wanted]
    cfg = config or config_dir()
    params = [params_file or cfg / 'params.yaml']
    prof = load_profile(robot, cfg).node_params()
    sim_time = {'use_sim_time': True}
    per_node: dict[str, dict[str, Any]] = {
        # the simulated base wants the same mode switch as the real driver (Stretch 3)
        'sim_bridge': {**prof['sim_bridge'], 'episode_file': str(episode_file),
                       'mode_service': prof['velocity_controller'].get('mode_service', ''),
                       'image_width': image_size[0], 'image_height': image_size[1],
                       'episode_id': episode_id, 'real_time_factor': real_time_factor},
        # The simulator already renders the model's input size: pass it through unscaled.
        'camera_ingest': {**sim_time, 'source': 'topic', 'input_compressed': False,
                          'width': image_size[0], 'height': image_size[1]},
        'memory_encoder': {**sim_time, 'checkpoint_dir': checkpoint_dir},
        'decision': {**sim_time, 'policy': policy, 'episode_file': str(episode_file),
                     'episode_id': episode_id, 'checkpoint_dir': checkpoint_dir,
                     'instruction': instruction},
        'waypoint': {**sim_time, **prof['waypoint']},
        'velocity_controller': {**sim_time, **prof['velocity_controller']},
        'safety': {**sim_time, **prof['safety'], **_safety_in_sim(names, policy, simulator)},
    }
    if not checkpoint_dir:
        per_node['memory_encoder'].pop('checkpoint_dir')
        per_node['decision'].pop('checkpoint_dir')
    if not instruction:
        per_node['decision'].pop('instruction')
    for name, extra in (overrides or {}).items():
        per_node.setdefault(name, {}).update(extra)
    if policy == 'janus' and per_node['decision'].get('janus_mode', 'released') == 'released':
        # the released protocol fuses history images with the current frame's spatial tokens
        per_node['memory_encoder'].setdefault('token_layout', 'split')
    return [NodeSpec(NODES[n], n, list(params), per_node.get(n, {}), {}, namespace)
            for n in names]


def launch_node_kwargs(spec: NodeSpec, package: str = 'vln_stack') -> dict[str, Any]:
    """Keyword arguments of ``launch_ros.actions.Node`` that start ``spec`` as ``ros2 launch``
    would: the console script named after the node, its parameter files then its overrides."""
    executable = next(k for k, v in NODES.items() if v == spec.module)
    return {'package': package, 'executable': executable, 'name': spec.name,
            'namespace': spec.namespace, 'output': 'screen',
            'parameters': [str(f) for f in spec.params_files] + [dict(spec.params)],
            'remappings': list(spec.remaps.items())}
