"""The parameter file, robot profiles, entry points and launch files agree with the code."""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from vln_stack.core.profiles import PROFILE_NAMES, load_profile

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    'camera_ingest': ('vln_stack.nodes.camera_node', 'CameraIngestConfig'),
    'memory_encoder': ('vln_stack.nodes.encoder_node', 'EncoderConfig'),
    'decision': ('vln_stack.core.decision_params', 'DecisionConfig'),
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


SIM_NODES = ['sim_bridge', 'camera_ingest', 'memory_encoder', 'decision', 'waypoint',
             'velocity_controller', 'safety']
# what each robot profile (config/robots/*.yaml and its defaults) gives, written out here
ROBOT_FACTS = {
    'go2': {'sim_model': 'go2', 'max_linear_mps': 0.35, 'mode_service': ''},
    'stretch3': {'sim_model': 'stretch3', 'max_linear_mps': 0.3,
                 'mode_service': '/switch_to_navigation_mode'},
    'agri': {'sim_model': 'planar', 'max_linear_mps': 1.0, 'mode_service': ''}}


def _sim_launch_nodes(monkeypatch, **args: str) -> list[dict]:
    from launch_standins import Node, run_launch_file

    actions = run_launch_file(REPO / 'launch' / 'sim.launch.py', REPO, monkeypatch, **args)
    assert all(isinstance(a, Node) for a in actions)
    nodes = [a.kwargs for a in actions]
    setup = (REPO / 'setup.py').read_text()
    for n in nodes:
        assert n['package'] == 'vln_stack' and n['executable'] == n['name'], n
        assert f"'{n['executable']} = {{PACKAGE}}." in setup, n['executable']
        assert n['output'] == 'screen' and n['remappings'] == []
        assert len(n['parameters']) == 2 and isinstance(n['parameters'][1], dict)
    return nodes


@pytest.mark.parametrize('robot', PROFILE_NAMES)
def test_sim_launch_starts_the_stack_with_its_arguments(robot, monkeypatch):
    """sim.launch.py run through recording stand-ins of launch/launch_ros: the seven stack
    nodes with the argument values where they belong (concrete values, not a recomputation)."""
    from vln_stack.core.episodes import load_episodes

    ep = REPO / 'config' / 'episodes' / 'farm.yaml'
    nodes = _sim_launch_nodes(monkeypatch, episode_file=str(ep), robot=robot, policy='janus',
                              namespace='robot1', real_time_factor='2.5')
    assert [n['name'] for n in nodes] == SIM_NODES
    assert all(n['namespace'] == 'robot1' for n in nodes)
    assert all(n['parameters'][0] == str(REPO / 'config' / 'params.yaml') for n in nodes)
    params = {n['name']: n['parameters'][1] for n in nodes}
    episode = load_episodes(ep)[0]
    assert episode.episode_id == 'farm_row_barrel' and episode.instruction
    assert params['decision'] == {
        'use_sim_time': True, 'policy': 'janus', 'episode_file': str(ep),
        'episode_id': 'farm_row_barrel', 'checkpoint_dir': 'models/tiny-janus',
        'instruction': episode.instruction}
    assert params['memory_encoder'] == {'use_sim_time': True,      # janus released: split
                                        'checkpoint_dir': 'models/tiny-janus',
                                        'token_layout': 'split'}
    assert params['camera_ingest'] == {'use_sim_time': True, 'source': 'topic',
                                       'input_compressed': False,  # the simulator sends raw
                                       'width': 320, 'height': 240}
    sim = params['sim_bridge']
    assert 'use_sim_time' not in sim          # the bridge is the clock
    assert {k: sim[k] for k in ('sim_model', 'episode_file', 'episode_id', 'image_width',
                                'image_height', 'real_time_factor', 'mode_service')} == {
        'sim_model': ROBOT_FACTS[robot]['sim_model'], 'episode_file': str(ep),
        'episode_id': 'farm_row_barrel',
        'image_width': 320, 'image_height': 240, 'real_time_factor': 2.5,
        'mode_service': ROBOT_FACTS[robot]['mode_service']}
    assert all(params[n]['use_sim_time'] is True for n in SIM_NODES[1:])
    for name in ('velocity_controller', 'safety'):
        assert params[name]['max_linear_mps'] == ROBOT_FACTS[robot]['max_linear_mps']
    assert params['velocity_controller']['mode_service'] == ROBOT_FACTS[robot]['mode_service']
    assert params['safety']['obstacle_source'] == 'depth'


def test_sim_launch_defaults_and_start_false(monkeypatch, tmp_path):
    params_file = tmp_path / 'my_params.yaml'
    nodes = _sim_launch_nodes(monkeypatch, start='false', episode_id='indoor_blue_sofa',
                              params_file=str(params_file))
    assert [n['name'] for n in nodes] == SIM_NODES
    assert all(n['namespace'] == '' and n['parameters'][0] == str(params_file) for n in nodes)
    params = {n['name']: n['parameters'][1] for n in nodes}
    indoor = str(REPO / 'config' / 'episodes' / 'indoor.yaml')   # the share's default episodes
    assert params['decision'] == {'use_sim_time': True, 'policy': 'oracle', 'episode_file': indoor,
                                  'episode_id': 'indoor_blue_sofa',
                                  'checkpoint_dir': 'models/tiny-janus'}   # no instruction
    assert params['memory_encoder'] == {'use_sim_time': True,
                                        'checkpoint_dir': 'models/tiny-janus'}
    assert params['sim_bridge']['sim_model'] == 'go2'
    assert params['sim_bridge']['real_time_factor'] == 1.0


# --- declared dependencies ---------------------------------------------------------------------
IMPORT_TO_DIST = {'cv2': 'opencv-python-headless', 'PIL': 'pillow', 'yaml': 'pyyaml'}


def _setup_requirements() -> tuple[list[str], dict[str, list[str]]]:
    tree = ast.parse((REPO / 'setup.py').read_text())
    found = {t.id: ast.literal_eval(node.value) for node in tree.body
             if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)
             and t.id in ('RUNTIME', 'EXTRAS_REQUIRE')}
    return found['RUNTIME'], found['EXTRAS_REQUIRE']


def _third_party_imports() -> dict[str, str]:
    """top-level name -> first 'module:line' that imports it, over src/ and launch/."""
    from import_rules import discover_modules, imports_of

    seen: dict[str, str] = {}
    for module in discover_modules('vln_stack'):
        for line, name in imports_of(module):
            top = name.split('.')[0]
            if top and top != 'vln_stack' and top not in sys.stdlib_module_names:
                seen.setdefault(top, f'{module}:{line}')
    for launch in (REPO / 'launch').glob('*.launch.py'):
        for node in ast.walk(ast.parse(launch.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top = node.module.split('.')[0]
                if top != 'vln_stack' and top not in sys.stdlib_module_names:
                    seen.setdefault(top, launch.name)
    return seen


def test_package_xml_declares_every_ros_package_imported():
    from import_rules import is_ros_module

    root = ET.parse(REPO / 'package.xml').getroot()
    exec_deps = {e.text for e in root.iter('exec_depend')}
    ros = {top: where for top, where in _third_party_imports().items() if is_ros_module(top)}
    assert {'rclpy', 'lifecycle_msgs', 'visualization_msgs', 'rosgraph_msgs', 'launch'} <= set(ros)
    missing = {top: where for top, where in ros.items() if top not in exec_deps}
    assert not missing, f'package.xml lacks exec_depend for {missing}'
    assert {'python3-numpy', 'python3-torch', 'python3-opencv'} <= exec_deps


def test_setup_declares_every_third_party_import_and_the_lock_fits_the_ranges():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from import_rules import is_ros_module

    install, extras = _setup_requirements()
    declared = {canonicalize_name(Requirement(r).name) for r in install}
    optional = {canonicalize_name(Requirement(r).name) for rs in extras.values() for r in rs}
    undeclared = {}
    for top, where in _third_party_imports().items():
        if is_ros_module(top):
            continue
        dist = canonicalize_name(IMPORT_TO_DIST.get(top, top))
        if dist not in declared and dist not in optional:
            undeclared[top] = where
    assert not undeclared, f'imported but not in setup.py RUNTIME / extras: {undeclared}'
    assert 'pyrealsense2' in optional and 'torch' in declared and 'pyrealsense2' not in declared
    # every requirement is pinned in the lock, inside its range
    lock = {}
    for line in (REPO / 'requirements.txt').read_text().splitlines():
        spec = line.split('#')[0].strip()
        if spec:
            name, _, version = spec.partition('==')
            assert version, f'requirements.txt is a lock: exact pins only, got {line!r}'
            lock[canonicalize_name(name)] = version
    for text in install + [r for rs in extras.values() for r in rs]:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f'{req.name} is not pinned in requirements.txt'
        assert req.specifier.contains(lock[name], prereleases=True), (text, lock[name])


def test_no_package_data_that_does_not_exist():
    tree = ast.parse((REPO / 'setup.py').read_text())
    for call in ast.walk(tree):
        if isinstance(call, ast.keyword) and call.arg == 'package_data':
            for pkg, files in ast.literal_eval(call.value).items():
                for name in files:
                    assert (REPO / 'src' / pkg / name).is_file(), name



def test_bringup_launch_passes_device_and_dtype_to_both_model_nodes(monkeypatch):
    """bringup.launch.py (the robot path) through the launch stand-ins, as `ros2 launch vln_stack
    bringup.launch.py robot:=go2 device:=cuda dtype:=bfloat16` would run it."""
    from launch_standins import Node, run_launch_file

    actions = run_launch_file(REPO / 'launch' / 'bringup.launch.py', REPO, monkeypatch,
                              robot='go2', device='cuda', dtype='bfloat16',
                              checkpoint_dir='/data/JanusVLN_Base')
    assert all(isinstance(a, Node) for a in actions)
    nodes = {a.kwargs['name']: a.kwargs for a in actions}
    assert list(nodes) == ['camera_ingest', 'memory_encoder', 'decision', 'waypoint',
                           'velocity_controller', 'safety']
    for name in ('memory_encoder', 'decision'):
        extra = nodes[name]['parameters'][-1]
        assert (extra['device'], extra['dtype'], extra['checkpoint_dir']) == (
            'cuda', 'bfloat16', '/data/JanusVLN_Base'), name
    assert nodes['decision']['parameters'][-1]['policy'] == 'janus'
    assert nodes['safety']['parameters'][-1] == {}          # janus: the encoder heartbeat watched
    defaults = run_launch_file(REPO / 'launch' / 'bringup.launch.py', REPO, monkeypatch)
    enc = next(a.kwargs for a in defaults if a.kwargs['name'] == 'memory_encoder')
    assert (enc['parameters'][-1]['device'], enc['parameters'][-1]['dtype']) == ('cpu', 'auto')
