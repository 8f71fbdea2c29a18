"""The camera and clock every headless MuJoCo simulator here shares: RGB and depth rendering
through one lazily made renderer each, pinhole intrinsics, simulated time."""
from __future__ import annotations

import math
import os

import numpy as np

from .worlds import RobotBody

os.environ.setdefault('MUJOCO_GL', 'egl')

import mujoco  # noqa: E402  (MUJOCO_GL must be set before the import)


class MjCameraSim:
    """Mixin: a subclass builds ``model``, ``data`` and ``robot`` then calls :meth:`_init_camera`."""

    model: mujoco.MjModel
    data: mujoco.MjData
    robot: RobotBody

    def _init_camera(self, camera: str, *, hidden_groups: tuple[int, ...] = ()) -> None:
        """``hidden_groups``: geom groups the camera does not draw (the robot's own meshes)."""
        self._cam = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self._cam < 0:
            raise ValueError(f'the simulator model has no camera named {camera!r}')
        self._scene_opt = mujoco.MjvOption()
        for g in hidden_groups:
            self._scene_opt.geomgroup[g] = 0
        self._renderers: list[mujoco.Renderer | None] = [None, None]   # RGB, depth (own GL buffers)

    @property
    def timestep_s(self) -> float:
        return float(self.model.opt.timestep)

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def _renderer_for(self, depth: bool) -> mujoco.Renderer:
        i = int(depth)
        if self._renderers[i] is None:
            if depth:   # a depth camera sees down to a few centimetres, not to MuJoCo's ~0.2 m
                extent = max(float(self.model.stat.extent), 1e-6)
                self.model.vis.map.znear = min(float(self.model.vis.map.znear), 0.02 / extent)
            r = mujoco.Renderer(self.model, self.robot.image_height, self.robot.image_width)
            if depth:
                r.enable_depth_rendering()
            self._renderers[i] = r
        return self._renderers[i]

    def render(self) -> np.ndarray:
        """Camera frame, HxWx3 uint8 RGB."""
        r = self._renderer_for(False)
        r.update_scene(self.data, camera=self._cam, scene_option=self._scene_opt)
        return r.render().copy()

    def render_depth(self) -> np.ndarray:
        """Depth along the optical axis (z-depth, REP-118), HxW float32 metres, of :meth:`render`'s
        camera; no return (sky, beyond the far plane) = +inf."""
        r = self._renderer_for(True)
        r.update_scene(self.data, camera=self._cam, scene_option=self._scene_opt)
        depth = r.render().astype(np.float32, copy=True)
        far = float(self.model.vis.map.zfar) * float(self.model.stat.extent)
        depth[depth >= 0.999 * far] = np.inf
        return depth

    def intrinsics(self) -> tuple[float, float, float, float]:
        """(fx, fy, cx, cy) in pixels of the pinhole camera."""
        w, h = self.robot.image_width, self.robot.image_height
        fovy = math.radians(float(self.model.cam_fovy[self._cam]))
        fy = 0.5 * h / math.tan(fovy / 2)
        return fy, fy, (w - 1) / 2.0, (h - 1) / 2.0

    def camera_height_m(self) -> float:
        """Height of the camera above the ground now (it bobs on a walking robot)."""
        return float(self.data.cam_xpos[self._cam][2])

    def close(self) -> None:
        for i, r in enumerate(self._renderers):
            if r is not None:
                r.close()
                self._renderers[i] = None
