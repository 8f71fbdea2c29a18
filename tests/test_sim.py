"""The headless MuJoCo simulator core (no ROS): motion, rendering, safety of bad commands."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vln_stack.core.geometry import Pose2D
from vln_stack.sim.planar_sim import PlanarSim
from vln_stack.sim.worlds import RobotBody, build_mjcf


def test_body_frame_commands_move_the_base():
    sim = PlanarSim('indoor', RobotBody(), Pose2D(5.6, 2.6, math.radians(90)))
    sim.set_command(0.5, 0.0, 0.0)
    sim.step(500)                              # 1 s
    p = sim.pose()
    assert p.x == pytest.approx(5.6, abs=0.01)  # facing +y: body x is world y
    assert p.y == pytest.approx(3.1, abs=0.02)
    sim.set_command(0.0, 0.0, 1.0)
    sim.step(500)
    assert math.degrees(sim.pose().yaw) == pytest.approx(90 + math.degrees(1.0), abs=1.0)
    vx, vy, wz = sim.body_velocity()
    assert wz == pytest.approx(1.0, abs=0.02) and abs(vx) < 0.01
    sim.set_command(float('nan'), 0.0, 0.0)    # garbage command -> stop
    sim.step(100)
    assert all(abs(v) < 1e-3 for v in sim.body_velocity())
    sim.close()


def test_walls_stop_the_base():
    sim = PlanarSim('indoor', RobotBody(), Pose2D(1.5, 1.0, math.pi))   # facing the west wall
    sim.set_command(0.5, 0.0, 0.0)
    sim.step(2500)                             # would be 2.5 m without the wall
    assert sim.pose().x > 0.2
    assert sim.in_collision()
    sim.close()


def test_camera_sees_the_landmark_it_faces():
    body = RobotBody(camera_height_m=0.38, hfov_deg=79.0, image_width=160, image_height=120)
    facing = PlanarSim('indoor', body, Pose2D(5.6, 1.0, 0.0))          # green plant ahead
    img = facing.render()
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8
    green = (img[:, :, 1] > 150) & (img[:, :, 0] < 80) & (img[:, :, 2] < 80)
    away = PlanarSim('indoor', body, Pose2D(5.6, 1.0, math.pi))
    green_away = (lambda a: (a[:, :, 1] > 150) & (a[:, :, 0] < 80) & (a[:, :, 2] < 80))(
        away.render())
    assert green.mean() > 0.02 > green_away.mean()
    fx, fy, cx, cy = facing.intrinsics()
    assert fx == pytest.approx(80 / math.tan(math.radians(79) / 2), rel=1e-3)
    facing.close()
    away.close()


def test_unknown_world_is_a_clear_error():
    with pytest.raises(ValueError, match='unknown world'):
        build_mjcf('moon', RobotBody(), (0, 0, 0))
