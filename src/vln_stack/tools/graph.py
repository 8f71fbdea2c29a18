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
}


def sim_graph(*, episode_file: Path, episode_id: str = '', robot: str = 'go2',
              policy: str = 'oracle', checkpoint_dir: str = '', params_file: Path | None = None,
              real_time_factor: float = 1.0, with_encoder: bool = True,
              include: tuple[str, ...] | None = None, namespace: str = '',
              image_size: tuple[int, int] = (320, 240),
              overrides: dict[str, dict[str, Any]] | None = None) -> list[NodeSpec]:
    """Specs of the simulated stack: sim bridge + camera ingest + encoder + decision + motion.

    The simulator renders ``image_size`` and the camera ingest passes it through unscaled.
    """
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
        'waypoint': {**sim_time},
        'velocity_controller': {**sim_time, **prof['velocity_controller']},
    }
    if not checkpoint_dir:
        per_node['memory_encoder'].pop('checkpoint_dir')
        per_node['decision'].pop('checkpoint_dir')
    for name, extra in (overrides or {}).items():
        per_node.setdefault(name, {}).update(extra)
    names = list(NODES)
    if not with_encoder:
        names.remove('memory_encoder')
    if include is not None:
        names = [n for n in names if n in include]
    return [NodeSpec(NODES[n], n, list(params), per_node.get(n, {}), {}, namespace)
            for n in names]
