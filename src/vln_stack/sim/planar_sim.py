"""Headless MuJoCo simulation of a velocity-controlled planar base with a forward camera.

ROS-free: the bridge node calls :meth:`PlanarSim.step`, :meth:`PlanarSim.pose` and
:meth:`PlanarSim.render`. Body-frame velocity commands (REP-103) are turned into world-frame
joint velocity targets every physics step.
"""
from __future__ import annotations

import math

from ..core.geometry import Pose2D, wrap_angle
from .mj_camera import MjCameraSim, mujoco
from .worlds import RobotBody, build_mjcf


class PlanarSim(MjCameraSim):
    def __init__(self, world: str, robot: RobotBody, start: Pose2D) -> None:
        self.world = world
        self.robot = robot
        self.start = start
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(world, robot,
                                                               (start.x, start.y, start.yaw)))
        self.data = mujoco.MjData(self.model)
        self._init_camera('head')
        self._base_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, 'base_body')
        self._cmd = (0.0, 0.0, 0.0)
        self.reset()

    def reset(self, start: Pose2D | None = None) -> None:
        if start is not None:
            self.start = start
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:3] = (self.start.x, self.start.y, self.start.yaw)
        self._cmd = (0.0, 0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, vx: float, vy: float, wz: float) -> None:
        """Body-frame velocity command (m/s, m/s, rad/s); non-finite values become zero."""
        vals = (vx, vy, wz)
        if not all(math.isfinite(v) for v in vals):
            vals = (0.0, 0.0, 0.0)
        self._cmd = vals

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            yaw = float(self.data.qpos[2])
            c, s = math.cos(yaw), math.sin(yaw)
            vx, vy, wz = self._cmd
            self.data.ctrl[0] = c * vx - s * vy
            self.data.ctrl[1] = s * vx + c * vy
            self.data.ctrl[2] = wz
            mujoco.mj_step(self.model, self.data)

    def pose(self) -> Pose2D:
        q = self.data.qpos
        return Pose2D(float(q[0]), float(q[1]), wrap_angle(float(q[2])))

    def body_velocity(self) -> tuple[float, float, float]:
        """(vx, vy, wz) in the body frame."""
        yaw = float(self.data.qpos[2])
        c, s = math.cos(yaw), math.sin(yaw)
        wx, wy, wz = (float(v) for v in self.data.qvel[:3])
        return c * wx + s * wy, -s * wx + c * wy, wz

    def in_collision(self) -> bool:
        for i in range(self.data.ncon):
            con = self.data.contact[i]
            if self._base_geom in (con.geom1, con.geom2):
                return True
        return False
