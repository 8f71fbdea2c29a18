"""The node graph as process specs: which executables, parameter files, overrides and remaps.

The launch files describe the same graph for `ros2 launch`; the demo runner and the tests start it
through here (launch/launch_ros are not installable from PyPI).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.profiles import load_profile
from .procs import NodeSpec, config_dir

NODES = {
    'sim_bridge': 'vln_stack.nodes.sim_bridge_node',
    'camera_ingest': 'vln_stack.nodes.camera_node',
    'memory_encoder': 'vln_stack.nodes.encoder_node',
    'decision': 'vln_stack.nodes.decision_node',
    'waypoint': 'vln_stack.nodes.waypoint_node',
    'velocity_controller': 'vln_stack.nodes.controller_node',
    'safety': 'vln_stack.nodes.safety_node',
}


def _safety_in_sim(names: list[str], policy: str) -> dict[str, Any]:
    """Safety-node settings for a (partial) simulated graph: obstacles from the simulator's depth
    image; only the heartbeats of nodes that run are watched, the encoder's only when the policy
    reads its tokens (janus)."""
    out: dict[str, Any] = {'obstacle_source': 'depth'}
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
              image_size: tuple[int, int] = (320, 240),
              overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    """Specs of the simulated stack: sim bridge + camera ingest + encoder + decision + motion
    (waypoint, velocity controller, safety).

    The simulator renders ``image_size`` and the camera ingest passes it through unscaled.
    The safety node goes wherever the velocity controller goes (it owns ``cmd_vel``).
    """
    names = list(NODES)
    if not with_encoder:
        names.remove('memory_encoder')
    if include is not None:
        wanted = set(include) | ({'safety'} if 'velocity_controller' in include else set())
        names = [n for n in names if n in wanted]
    cfg = config_dir()
    params = [params_file or cfg / 'params.yaml']
    prof = load_profile(robot, cfg).node_params()
    sim_time = {'use_sim_time': True}
    per_node: dict[str, dict[str, Any]] = {
        'sim_bridge': {**prof['sim_bridge'], 'episode_file': str(episode_file),
                       'image_width': image_size[0], 'image_height': image_size[1],
                       'episode_id': episode_id, 'real_time_factor': real_time_factor},
        # The simulator already renders the model's input size: pass it through unscaled.
        'camera_ingest': {**sim_time, 'source': 'topic', 'input_compressed': False,
                          'width': image_size[0], 'height': image_size[1]},
        'memory_encoder': {**sim_time, 'checkpoint_dir': checkpoint_dir},
        'decision': {**sim_time, 'policy': policy, 'episode_file': str(episode_file),
                     'episode_id': episode_id, 'checkpoint_dir': checkpoint_dir},
        'waypoint': {**sim_time, **prof['waypoint']},
        'velocity_controller': {**sim_time, **prof['velocity_controller']},
        'safety': {**sim_time, **prof['safety'], **_safety_in_sim(names, policy)},
    }
    if not checkpoint_dir:
        per_node['memory_encoder'].pop('checkpoint_dir')
        per_node['decision'].pop('checkpoint_dir')
    for name, extra in (overrides or {}).items():
        per_node.setdefault(name, {}).update(extra)
    if policy == 'janus' and per_node['decision'].get('janus_mode', 'released') == 'released':
        # the released protocol fuses history images with the current frame's spatial tokens
        per_node['memory_encoder'].setdefault('token_layout', 'split')
    return [NodeSpec(NODES[n], n, list(params), per_node.get(n, {}), {}, namespace)
            for n in names]
