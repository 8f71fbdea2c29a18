"""The parameter file, robot profiles, entry points and launch files agree with the code."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest
import yaml

from vln_stack.core.profiles import PROFILE_NAMES, load_profile

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    'camera_ingest': ('vln_stack.nodes.camera_node', 'CameraIngestConfig'),
    'memory_encoder': ('vln_stack.nodes.encoder_node', 'EncoderConfig'),
    'decision': ('vln_stack.nodes.decision_node', 'DecisionConfig'),
    'waypoint': ('vln_stack.nodes.waypoint_node', 'WaypointConfig'),
    'velocity_controller': ('vln_stack.nodes.controller_node', 'ControllerConfig'),
    'safety': ('vln_stack.nodes.safety_node', 'SafetyNodeConfig'),
    'sim_bridge': ('vln_stack.nodes.sim_bridge_node', 'SimBridgeConfig'),
}


def _fields(node: str) -> dict[str, object]:
    mod, cls = CONFIGS[node]
    return {f.name: f.default for f in dataclasses.fields(getattr(importlib.import_module(mod), cls))}


def test_params_file_keys_are_declared_parameters_of_the_right_type():
    params = yaml.safe_load((REPO / 'config' / 'params.yaml').read_text())
    assert set(params) == set(CONFIGS)
    for node, block in params.items():
        fields = _fields(node)
        for key, value in block['ros__parameters'].items():
            assert key in fields, f'{node}.{key} is not a parameter of the node'
            assert type(value) is type(fields[key]), f'{node}.{key}: {value!r} vs default'


@pytest.mark.parametrize('name', PROFILE_NAMES)
def test_profile_overrides_are_declared_parameters(name):
    for node, overrides in load_profile(name, REPO / 'config').node_params().items():
        fields = _fields(node)
        for key, value in overrides.items():
            assert key in fields, f'profile {name}: {node}.{key} is not a parameter'
            assert type(value) is type(fields[key]), f'profile {name}: {node}.{key}'


def test_entry_points_and_launch_files_name_real_executables():
    setup = (REPO / 'setup.py').read_text()
    entries = dict(re.findall(r"f'(\w+) = \{PACKAGE\}\.([\w.]+):main'", setup))
    assert set(CONFIGS) <= set(entries)
    for module in entries.values():
        assert callable(importlib.import_module(f'vln_stack.{module}').main)
    for launch in (REPO / 'launch').glob('*.launch.py'):
        tree = ast.parse(launch.read_text())
        names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str)}
        assert 'generate_launch_description' in {f.name for f in tree.body
                                                  if isinstance(f, ast.FunctionDef)}
        for call in ast.walk(tree):
            if isinstance(call, ast.keyword) and call.arg == 'executable' and \
                    isinstance(call.value, ast.Constant):
                assert call.value.value in entries, f'{launch.name}: {call.value.value}'
        assert names  # parsed something real


@pytest.mark.parametrize('robot', PROFILE_NAMES)
def test_sim_launch_starts_the_graph_the_demo_and_ci_start(robot, monkeypatch):
    """sim.launch.py, run through recording stand-ins of launch/launch_ros, starts exactly the
    specs of tools.graph.sim_graph, which the demo runner and the integration tests start."""
    from launch_standins import Node, run_launch_file

    from vln_stack.core.episodes import load_episodes
    from vln_stack.tools.graph import launch_node_kwargs, sim_graph
    ep = REPO / 'config' / 'episodes' / 'farm.yaml'
    actions = run_launch_file(REPO / 'launch' / 'sim.launch.py', REPO, monkeypatch,
                              episode_file=str(ep), robot=robot, policy='janus',
                              namespace='robot1')
    episode = load_episodes(ep)[0]
    specs = sim_graph(episode_file=ep, episode_id=episode.episode_id, robot=robot,
                      policy='janus', checkpoint_dir='models/tiny-janus', namespace='robot1',
                      instruction=episode.instruction, config=REPO / 'config')
    nodes = [a.kwargs for a in actions if isinstance(a, Node)]
    assert nodes == [launch_node_kwargs(s) for s in specs]
    setup = (REPO / 'setup.py').read_text()
    params = {}
    for n in nodes:
        assert f"'{n['executable']} = {{PACKAGE}}." in setup, n['executable']
        assert n['namespace'] == 'robot1'
        params[n['name']] = n['parameters'][-1]
    assert params['decision']['instruction'] == episode.instruction
    assert params['camera_ingest']['input_compressed'] is False   # the simulator sends raw images
    assert params['sim_bridge']['sim_model'] == load_profile(robot, REPO / 'config').node_params()[
        'sim_bridge']['sim_model']
    assert params['memory_encoder']['token_layout'] == 'split'    # janus released
