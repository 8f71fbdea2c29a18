"""Gazebo worlds (SDF) generated from the same description as the MuJoCo worlds.

Checks: every generated SDF validates with ``ign sdf -k``; MuJoCo and SDF geometry, colours and
camera agree; the committed gazebo/ files are up to date; the ros_gz bridge config matches the
SDF topics; the greenhouse episodes are valid and drivable; the Gazebo launch file starts the
sim graph's nodes.
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from vln_stack.core.episodes import load_episodes
from vln_stack.core.geometry import Pose2D, wrap_angle
from vln_stack.core.profiles import load_profile
from vln_stack.sim import sdf as sdf_mod
from vln_stack.sim.worlds import WORLDS, RobotBody, build_mjcf
from vln_stack.tools import make_worlds

os.environ.setdefault('MUJOCO_GL', 'egl')
import mujoco  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / 'config'
GAZEBO = REPO / 'gazebo'
TOL = 1e-6


@pytest.fixture(scope='module')
def fresh() -> dict[str, str]:
    """{file name: SDF text} for the default robot (go2), all worlds and flavours."""
    return make_worlds.world_files(make_worlds.DEFAULT_ROBOT, config_dir=CFG)


@pytest.fixture(scope='module')
def go2() -> RobotBody:
    return RobotBody.from_profile(load_profile('go2', CFG))


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split()]


def _ign_check(path: Path) -> tuple[Path, int, str]:
    proc = subprocess.run(['ign', 'sdf', '-k', str(path)], capture_output=True, text=True,
                          timeout=120)
    return path, proc.returncode, proc.stdout + proc.stderr


def test_every_generated_sdf_validates_with_ign(fresh, tmp_path):
    if shutil.which('ign') is None or subprocess.run(
            ['ign', 'sdf', '--help'], capture_output=True, timeout=60).returncode != 0:
        pytest.fail('`ign sdf` is not available: install the Debian packages sdformat-sdf '
                    'ignition-tools libsdformat-dev (scripts/setup_env.sh does) to validate SDF')
    files = []
    for name, text in fresh.items():
        files.append(tmp_path / name)
        files[-1].write_text(text)
    # A pitched camera and another footprint (stretch3) in the smallest world, both SDF versions.
    stretch = RobotBody.from_profile(load_profile('stretch3', CFG))
    for flavor in ('harmonic', 'classic'):
        files.append(tmp_path / f'indoor_{flavor}_stretch3.sdf')
        files[-1].write_text(sdf_mod.build_sdf('indoor', stretch, (6.0, 1.5, 0.5), flavor=flavor,
                                               namespace='robot1', robot_name='stretch3'))
    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        results = list(pool.map(_ign_check, files))
    bad = [f'{p.name}: rc {rc}\n{out[-800:]}' for p, rc, out in results
           if rc != 0 or 'Valid' not in out]
    assert not bad, 'ign sdf -k rejected:\n' + '\n'.join(bad)


def test_committed_gazebo_files_are_up_to_date(fresh):
    committed = sorted(p.name for p in GAZEBO.glob('*.sdf'))
    assert committed == sorted(fresh), (
        'gazebo/ holds other files than a fresh generation: run python -m '
        'vln_stack.tools.make_worlds')
    stale = [n for n, text in fresh.items() if (GAZEBO / n).read_bytes() != text.encode()]
    assert not stale, f'stale {stale}: run python -m vln_stack.tools.make_worlds'
    assert make_worlds.main(['--check', '--out', str(GAZEBO), '--config-dir', str(CFG)]) == 0
    # Generation is deterministic and honours --robot/--flavor/--world.
    assert make_worlds.world_files('go2', config_dir=CFG) == fresh


def test_make_worlds_cli_writes_the_requested_files(tmp_path):
    rc = make_worlds.main(['--out', str(tmp_path), '--robot', 'agri', '--flavor', 'classic',
                           '--world', 'greenhouse', '--config-dir', str(CFG)])
    assert rc == 0 and sorted(p.name for p in tmp_path.iterdir()) == ['greenhouse_classic.sdf']
    text = (tmp_path / 'greenhouse_classic.sdf').read_text()
    assert '<size>0.9 0.6 0.16</size>' in text                # the agri footprint
    assert '(robot agri, flavor classic)' in text
    assert make_worlds.main(['--check', '--out', str(tmp_path), '--robot', 'agri',
                             '--flavor', 'harmonic', '--config-dir', str(CFG)]) == 1


def _sdf_models(text: str) -> dict[str, ET.Element]:
    world = ET.fromstring(text).find('world')
    assert world is not None
    return {m.get('name'): m for m in world.findall('model')}


def _sdf_shape(link: ET.Element, tag: str) -> tuple[str, list[float]] | None:
    """(kind, MuJoCo half-size) of the link's collision or visual, None if absent."""
    el = link.find(tag)
    if el is None:
        return None
    geo = el.find('geometry')
    if geo.find('box') is not None:
        return 'box', [v / 2 for v in _floats(geo.find('box/size').text)]
    if geo.find('cylinder') is not None:
        return 'cylinder', [float(geo.find('cylinder/radius').text),
                            float(geo.find('cylinder/length').text) / 2]
    return 'sphere', [float(geo.find('sphere/radius').text)]


_MJ_KIND = {int(mujoco.mjtGeom.mjGEOM_BOX): 'box', int(mujoco.mjtGeom.mjGEOM_CYLINDER): 'cylinder',
            int(mujoco.mjtGeom.mjGEOM_SPHERE): 'sphere'}


@pytest.mark.parametrize('world', sorted(WORLDS))
def test_mjcf_and_sdf_describe_the_same_world_and_camera(world, fresh, go2):
    model = mujoco.MjModel.from_xml_string(build_mjcf(world, go2, WORLDS[world].spawn))
    mj = {}
    for i in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, i)
        if model.geom_bodyid[i] == 0 and name != 'ground':
            kind = _MJ_KIND[int(model.geom_type[i])]
            n = {'box': 3, 'cylinder': 2, 'sphere': 1}[kind]
            mj[name] = (kind, model.geom_pos[i], model.geom_size[i][:n], model.geom_rgba[i],
                        bool(model.geom_contype[i] or model.geom_conaffinity[i]))
    assert len(mj) == len(WORLDS[world].primitives) > 10
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, 'head')
    base = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, 'base_body')

    for flavor in sdf_mod.FLAVORS:
        models = _sdf_models(fresh[f'{world}_{flavor}.sdf'])
        statics = {k: v for k, v in models.items()
                   if k not in ('ground_plane', sdf_mod.ROBOT_MODEL)}
        assert set(statics) == set(mj), f'{flavor}: {set(statics) ^ set(mj)}'
        for name, (kind, pos, size, rgba, collide) in mj.items():
            m = statics[name]
            assert m.find('static').text == 'true'
            pose = _floats(m.find('pose').text)
            np.testing.assert_allclose(pose, [*pos, 0, 0, 0], atol=TOL, err_msg=name)
            link = m.find('link')
            vis_kind, vis_size = _sdf_shape(link, 'visual')
            assert vis_kind == kind, name
            np.testing.assert_allclose(vis_size, size, atol=TOL, err_msg=name)
            col = _sdf_shape(link, 'collision')
            assert (col is not None) == collide, name
            if col is not None:
                assert col[0] == kind
                np.testing.assert_allclose(col[1], size, atol=TOL, err_msg=name)
            mat = link.find('visual/material')
            for tag in ('ambient', 'diffuse'):
                np.testing.assert_allclose(_floats(mat.find(tag).text), rgba, atol=TOL,
                                           err_msg=f'{name} {tag}')
            transparency = link.find('visual/transparency')
            alpha = 1.0 - (float(transparency.text) if transparency is not None else 0.0)
            assert alpha == pytest.approx(float(rgba[3]), abs=TOL), name

        robot = models[sdf_mod.ROBOT_MODEL]
        x, y, yaw = WORLDS[world].spawn
        np.testing.assert_allclose(_floats(robot.find('pose').text), [x, y, 0, 0, 0, yaw],
                                   atol=TOL)
        link = robot.find('link')
        assert link.get('name') == 'base_link'
        kind, half = _sdf_shape(link, 'collision')
        np.testing.assert_allclose(half, model.geom_size[base], atol=TOL)
        assert _floats(link.find('collision/pose').text)[2] == pytest.approx(
            model.geom_pos[base][2], abs=TOL)
        sensor = link.find('sensor')
        assert sensor.get('type') == 'camera'
        sx, sy, sz, roll, pitch, syaw = _floats(sensor.find('pose').text)
        np.testing.assert_allclose([sx, sy, sz], model.cam_pos[cam], atol=TOL)
        assert sz == pytest.approx(go2.camera_height_m, abs=TOL)
        # MuJoCo camera: looks along -z_cam; its forward direction in the body frame gives pitch.
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.cam_quat[cam])
        forward = -rot.reshape(3, 3)[:, 2]
        assert math.atan2(-forward[2], forward[0]) == pytest.approx(pitch, abs=TOL)
        assert roll == syaw == 0.0
        camera = sensor.find('camera')
        width, height = int(camera.find('image/width').text), int(camera.find('image/height').text)
        assert (width, height) == (go2.image_width, go2.image_height) == (320, 240)
        hfov_sdf = float(camera.find('horizontal_fov').text)
        fovy = math.radians(float(model.cam_fovy[cam]))
        hfov_mj = 2 * math.atan(math.tan(fovy / 2) * width / height)
        assert hfov_sdf == pytest.approx(math.radians(go2.hfov_deg), abs=TOL)
        assert hfov_mj == pytest.approx(hfov_sdf, abs=1e-5)   # MJCF stores fovy to 1e-4 deg


def test_pitched_camera_agrees_too():
    body = RobotBody.from_profile(load_profile('stretch3', CFG))
    model = mujoco.MjModel.from_xml_string(build_mjcf('greenhouse', body, (1, 5, 0)))
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, 'head')
    sensor = ET.fromstring(sdf_mod.build_sdf('greenhouse', body, (1, 5, 0))).find(
        f"world/model[@name='{sdf_mod.ROBOT_MODEL}']/link/sensor")
    x, y, z, _, pitch, _ = _floats(sensor.find('pose').text)
    np.testing.assert_allclose([x, y, z], model.cam_pos[cam], atol=TOL)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, model.cam_quat[cam])
    forward = -rot.reshape(3, 3)[:, 2]
    assert pitch == pytest.approx(math.radians(20.0), abs=TOL)
    assert math.atan2(-forward[2], forward[0]) == pytest.approx(pitch, abs=TOL)


def _plugins(el: ET.Element) -> dict[str, ET.Element]:
    return {p.get('name'): p for p in el.findall('plugin')}


def test_bridge_config_matches_the_sdf_topics_and_plugins(fresh):
    entries = yaml.safe_load((CFG / 'ros_gz_bridge.yaml').read_text())
    keys = {'ros_topic_name', 'gz_topic_name', 'ros_type_name', 'gz_type_name', 'direction'}
    assert all(set(e) == keys for e in entries)
    bridge = {e['ros_topic_name']: e for e in entries}
    assert set(bridge) == {'/clock', 'camera/image_raw', 'camera/camera_info', 'odom', 'cmd_vel'}
    assert set(bridge) == set(sdf_mod.ROS_TOPICS.values())
    types = {'/clock': ('rosgraph_msgs/msg/Clock', 'gz.msgs.Clock', 'GZ_TO_ROS'),
             'camera/image_raw': ('sensor_msgs/msg/Image', 'gz.msgs.Image', 'GZ_TO_ROS'),
             'camera/camera_info': ('sensor_msgs/msg/CameraInfo', 'gz.msgs.CameraInfo',
                                    'GZ_TO_ROS'),
             'odom': ('nav_msgs/msg/Odometry', 'gz.msgs.Odometry', 'GZ_TO_ROS'),
             'cmd_vel': ('geometry_msgs/msg/Twist', 'gz.msgs.Twist', 'ROS_TO_GZ')}
    for ros, (rtype, gtype, direction) in types.items():
        e = bridge[ros]
        assert (e['ros_type_name'], e['gz_type_name'], e['direction']) == (rtype, gtype, direction)

    for world in WORLDS:
        for flavor in ('harmonic', 'fortress'):
            root = ET.fromstring(fresh[f'{world}_{flavor}.sdf'])
            assert root.get('version') == '1.9'
            world_el = root.find('world')
            systems = _plugins(world_el)
            for system in ('Physics', 'UserCommands', 'SceneBroadcaster', 'Sensors'):
                fname, cname = sdf_mod.gz_plugin({'Physics': 'physics',
                                                  'UserCommands': 'user-commands',
                                                  'SceneBroadcaster': 'scene-broadcaster',
                                                  'Sensors': 'sensors'}[system], flavor)
                assert systems[cname].get('filename') == fname
                prefix = 'gz::sim::systems::' if flavor == 'harmonic' else \
                    'ignition::gazebo::systems::'
                assert cname == prefix + system
            assert systems[sdf_mod.gz_plugin('sensors', flavor)[1]].find(
                'render_engine').text == 'ogre2'
            robot = world_el.find(f"model[@name='{sdf_mod.ROBOT_MODEL}']")
            plugins = _plugins(robot)
            vel = plugins[sdf_mod.gz_plugin('velocity-control', flavor)[1]]
            odom = plugins[sdf_mod.gz_plugin('odometry-publisher', flavor)[1]]
            image_topic = robot.find('link/sensor/topic').text
            # gz-sensors publishes camera info beside the image: last segment -> camera_info.
            info_topic = image_topic.rsplit('/', 1)[0] + '/camera_info'
            assert bridge['camera/image_raw']['gz_topic_name'] == image_topic
            assert bridge['camera/camera_info']['gz_topic_name'] == info_topic
            assert bridge['odom']['gz_topic_name'] == odom.find('odom_topic').text
            assert bridge['cmd_vel']['gz_topic_name'] == vel.find('topic').text
            assert bridge['/clock']['gz_topic_name'] == '/clock'
            assert odom.find('odom_frame').text == 'odom'
            assert odom.find('robot_base_frame').text == 'base_link'

        classic = ET.fromstring(fresh[f'{world}_classic.sdf'])
        assert classic.get('version') == '1.6'
        robot = classic.find(f"world/model[@name='{sdf_mod.ROBOT_MODEL}']")
        move = _plugins(robot)['planar_move']
        assert move.get('filename') == 'libgazebo_ros_planar_move.so'
        assert move.find('odometry_frame').text == 'odom'
        assert move.find('robot_base_frame').text == 'base_link'
        cam = robot.find('link/sensor/plugin')
        assert cam.get('filename') == 'libgazebo_ros_camera.so'
        # gazebo_ros_camera publishes <camera_name>/image_raw and <camera_name>/camera_info.
        assert cam.find('camera_name').text + '/image_raw' == sdf_mod.ROS_TOPICS['image']
        assert cam.find('camera_name').text + '/camera_info' == sdf_mod.ROS_TOPICS['camera_info']
        assert 'plugin' not in {c.tag for c in classic.find('world')}   # no gz systems


def _path_clearance(path, world) -> tuple[float, str]:
    best = (math.inf, '')
    for a, b in zip(path[:-1], path[1:]):
        n = max(2, int(math.dist(a, b) / 0.02))
        for i in range(n + 1):
            x, y = a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n
            for p in world.primitives:
                if not p.collide:
                    continue
                kind, f = p.footprint()
                if kind == 'circle':
                    d = math.hypot(x - f[0], y - f[1]) - f[2]
                else:
                    d = math.hypot(max(f[0] - x, 0.0, x - f[2]), max(f[1] - y, 0.0, y - f[3]))
                best = min(best, (d, p.name))
    return best


def test_greenhouse_episodes_are_valid_and_drivable():
    from vln_stack.sim.planar_sim import PlanarSim
    eps = load_episodes(CFG / 'episodes' / 'greenhouse.yaml')
    assert len(eps) == 2 and {e.world for e in eps} == {'greenhouse'}
    world = WORLDS['greenhouse']
    body = RobotBody.from_profile(load_profile('agri', CFG))
    for ep in eps:
        assert ep.instruction and ep.landmarks and ep.reference_length_m > 5
        for lm in ep.landmarks:
            world.primitive(lm)
        clearance, nearest = _path_clearance(ep.reference_path, world)
        assert clearance >= 0.4, f'{ep.episode_id}: {clearance:.2f} m from {nearest}'
        assert all(0 < x < 16 and 0 < y < 10 for x, y in ep.reference_path)
        # The agricultural base follows the reference path (turn, then drive) without contact.
        sim = PlanarSim('greenhouse', body, ep.start)
        contacts = 0
        for tx, ty in ep.reference_path[1:]:
            for _ in range(20000):
                p = sim.pose()
                dist = math.hypot(tx - p.x, ty - p.y)
                err = wrap_angle(math.atan2(ty - p.y, tx - p.x) - p.yaw)
                if dist < 0.03:
                    break
                if abs(err) > 0.02:
                    sim.set_command(0.0, 0.0, max(-0.8, min(0.8, 3 * err)))
                else:
                    sim.set_command(min(1.0, 2 * dist), 0.0, 3 * err)
                sim.step(10)
                contacts += sim.in_collision()
        end = sim.pose()
        sim.close()
        assert contacts == 0, ep.episode_id
        assert math.dist((end.x, end.y), ep.goal) < 0.05
        assert isinstance(ep.start, Pose2D)


@pytest.mark.parametrize('flavor', ['harmonic', 'fortress', 'classic'])
def test_gazebo_launch_starts_the_sim_graph_less_the_mujoco_bridge(flavor, monkeypatch, tmp_path):
    """gazebo.launch.py, run through recording stand-ins of launch/launch_ros: gz sim (or
    gzserver) on a world SDF written for the episode, the bridge with the right message types,
    and the stack's nodes less the MuJoCo sim bridge, with the episode's parameters."""
    from launch_standins import ExecuteProcess, Node, run_launch_file

    ep = REPO / 'config' / 'episodes' / 'greenhouse.yaml'
    monkeypatch.setattr('tempfile.mkdtemp', lambda prefix='': str(tmp_path))
    actions = run_launch_file(REPO / 'launch' / 'gazebo.launch.py', REPO, monkeypatch,
                              episode_file=str(ep), robot='agri', flavor=flavor)
    server = [a for a in actions if isinstance(a, ExecuteProcess)]
    assert len(server) == 1
    cmd = server[0].kwargs['cmd']
    world = Path(cmd[-1])
    assert cmd == sdf_mod.server_command(flavor, str(world)) and world.is_file()
    assert '<sdf' in world.read_text()
    nodes = [a.kwargs for a in actions if isinstance(a, Node)]
    bridges = [n for n in nodes if n['package'] == 'ros_gz_bridge']
    if flavor == 'classic':
        assert not bridges     # gazebo_ros plugins publish the ROS topics themselves
    else:
        config = yaml.safe_load(Path(bridges[0]['parameters'][0]['config_file']).read_text())
        prefix = 'ignition.msgs.' if flavor == 'fortress' else 'gz.msgs.'
        assert all(e['gz_type_name'].startswith(prefix) for e in config)
    episode = load_episodes(ep)[0]
    stack = [n for n in nodes if n['package'] == 'vln_stack']
    assert [n['name'] for n in stack] == ['camera_ingest', 'memory_encoder', 'decision',
                                          'waypoint', 'velocity_controller', 'safety']
    for n in stack:
        assert n['executable'] == n['name'] and n['namespace'] == '' and n['remappings'] == []
        assert n['parameters'][:-1] == [str(REPO / 'config' / 'params.yaml')]
    by_name = {n['name']: n['parameters'][-1] for n in stack}
    assert episode.episode_id == 'greenhouse_watering_cart'
    assert by_name['decision'] == {'use_sim_time': True, 'policy': 'oracle', 'episode_file': str(ep),
                                   'episode_id': 'greenhouse_watering_cart',
                                   'checkpoint_dir': 'models/tiny-janus',
                                   'instruction': episode.instruction}
    assert by_name['velocity_controller']['max_linear_mps'] == 1.0       # the agri profile
    assert 'sim_bridge' not in by_name and by_name['safety']['obstacle_source'] == 'none'
    assert by_name['camera_ingest']['input_compressed'] is False   # raw gz images, even on agri
    assert all(p['use_sim_time'] is True for p in by_name.values())


def test_gazebo_server_commands_and_bad_arguments():
    assert sdf_mod.server_command('harmonic', 'w.sdf') == [
        'gz', 'sim', '-s', '-r', '--headless-rendering', 'w.sdf']
    assert sdf_mod.server_command('fortress', 'w.sdf')[:2] == ['ign', 'gazebo']
    with pytest.raises(ValueError, match='unknown flavor'):
        sdf_mod.build_sdf('indoor', RobotBody(), flavor='garden')
    with pytest.raises(ValueError, match='unknown world'):
        sdf_mod.build_sdf('moon', RobotBody())
