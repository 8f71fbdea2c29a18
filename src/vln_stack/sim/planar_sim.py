"""Headless MuJoCo simulation of a velocity-controlled planar base with a forward camera.

ROS-free: the bridge node calls :meth:`PlanarSim.step`, :meth:`PlanarSim.pose` and
:meth:`PlanarSim.render`. Body-frame velocity commands (REP-103) are turned into world-frame
joint velocity targets every physics step.
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..core.geometry import Pose2D, wrap_angle
from .worlds import RobotBody, build_mjcf

os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)


class PlanarSim:
    def __init__(self, world: str, robot: RobotBody, start: Pose2D) -> None:
        self.world = world
        self.robot = robot
        self.start = start
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(world, robot,
                                                               (start.x, start.y, start.yaw)))
        self.data = mujoco.MjData(self.model)
        self._cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, 'head')
        self._base_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, 'base_body')
        self._renderer: mujoco.Renderer | None = None
        self._depth_renderer: mujoco.Renderer | None = None   # its own GL buffers, depth mode
        self._cmd = (0.0, 0.0, 0.0)
        self.reset()

    @property
    def timestep_s(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time_s(self) -> float:
        return float(self.data.time)

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

    def render(self) -> np.ndarray:
        """Camera frame, HxWx3 uint8 RGB."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.robot.image_height,
                                             self.robot.image_width)
        self._renderer.update_scene(self.data, camera=self._cam)
        return self._renderer.render().copy()

    def render_depth(self) -> np.ndarray:
        """Depth along the optical axis (z-depth, REP-118), HxW float32 metres; the camera of
        :meth:`render`; no return (sky, beyond the far plane) = +inf."""
        if self._depth_renderer is None:
            # a depth sensor sees down to a few centimetres, not MuJoCo's default ~0.2 m
            self.model.vis.map.znear = min(float(self.model.vis.map.znear),
                                           0.02 / max(float(self.model.stat.extent), 1e-6))
            self._depth_renderer = mujoco.Renderer(self.model, self.robot.image_height,
                                                   self.robot.image_width)
            self._depth_renderer.enable_depth_rendering()
        self._depth_renderer.update_scene(self.data, camera=self._cam)
        depth = self._depth_renderer.render().astype(np.float32, copy=True)
        far = float(self.model.vis.map.zfar) * float(self.model.stat.extent)
        depth[depth >= 0.999 * far] = np.inf
        return depth

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels of the pinhole camera."""
        w, h = self.robot.image_width, self.robot.image_height
        fovy = math.radians(float(self.model.cam_fovy[self._cam]))
        fy = 0.5 * h / math.tan(fovy / 2)
        return fy, fy, (w - 1) / 2.0, (h - 1) / 2.0

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._depth_renderer is not None:
            self._depth_renderer.close()
            self._depth_renderer = None
