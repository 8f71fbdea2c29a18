"""The Hello Robot Stretch 3 URDF of PyPI ``hello-robot-stretch-urdf`` (visual and collision
meshes, head camera) on a velocity-controlled planar base, as stretch_driver's navigation mode
drives it: :class:`Stretch3Sim`.

Only the package's data files are used (the URDF, meshes); none of its code is imported.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..core.geometry import Pose2D, wrap_angle
from .mj_camera import mujoco
from .mj_robot import MjRobotSim, package_dir, world_spec
from .worlds import RobotBody

STRETCH_URDF = 'SE3/stretch_description_SE3_eoa_wrist_dw3_tool_sg3.urdf'
STRETCH_CAMERA_BODY = 'camera_color_optical_frame'   # the D435i colour stream, REP-103 optical
# MuJoCo's URDF import puts collision geoms in group 0 (as the world's) and visual ones in 1;
# the collision geoms are moved out of sight.
STRETCH_VISUAL_GROUP, STRETCH_COLLISION_GROUP = 1, 3


def _stretch_spec(urdf: Path, body: RobotBody) -> mujoco.MjSpec:
    """The URDF as one rigid body: every joint at 0 but the head, panned to 0 and tilted down by
    the profile's pitch; then no joints are left (the base moves on the planar joints)."""
    tree = ET.parse(urdf)
    root = tree.getroot()
    for joint in root.iter('joint'):        # the arm, lift, wheels and gripper stay at 0
        if joint.get('name') not in ('joint_head_pan', 'joint_head_tilt'):
            joint.set('type', 'fixed')
    for link in root.iter('link'):          # MuJoCo reads STL/OBJ meshes, not the D435's .dae
        for vis in link.findall('visual'):
            mesh = vis.find('geometry/mesh')
            if mesh is not None and not mesh.get('filename', '').lower().endswith('.stl'):
                link.remove(vis)
    ext = ET.SubElement(root, 'mujoco')
    ET.SubElement(ext, 'compiler', discardvisual='false', fusestatic='false', strippath='false',
                  meshdir=str(urdf.parent))
    spec = mujoco.MjSpec.from_string(ET.tostring(root, encoding='unicode'))
    pose = {'joint_head_pan': 0.0, 'joint_head_tilt': -math.radians(body.camera_pitch_deg)}
    for joint in list(spec.joints):
        angle = pose.get(joint.name, 0.0)
        if angle and joint.type == mujoco.mjtJoint.mjJNT_HINGE:
            child = joint.parent
            turn = np.empty(4)
            mujoco.mju_axisAngle2Quat(turn, np.asarray(joint.axis, float), angle)
            quat = np.empty(4)
            mujoco.mju_mulQuat(quat, np.asarray(child.quat, float), turn)
            child.quat = quat
        spec.delete(joint)
    for geom in spec.geoms:
        if geom.contype:
            geom.group = STRETCH_COLLISION_GROUP
    # The D435i sits in Stretch's head turned 90 deg (portrait): its optical frame has x down,
    # y left, z forward. Deployments rotate the head image upright; so does this camera (MuJoCo
    # cameras look along -z): image right = -optical y, image up = -optical x.
    spec.body(STRETCH_CAMERA_BODY).add_camera(name='head', xyaxes=[0, -1, 0, -1, 0, 0],
                                              fovy=body.vertical_fov_deg)
    return spec


class Stretch3Sim(MjRobotSim):
    """Hello Robot Stretch 3 from its URDF (meshes, collision, head camera) on a planar base.

    The base follows body twists exactly like :class:`PlanarSim`'s (velocity actuators on slide
    x, slide y and hinge yaw; stretch_driver's navigation mode accepts x and yaw only, the
    controller sends no y). The base_link origin (on the floor, between the drive wheels) is the
    odometry frame; the camera is the D435i colour optical frame of the URDF.
    """

    PREFIX = 'stretch/'

    def __init__(self, world: str, robot: RobotBody, start: Pose2D) -> None:
        root = package_dir('stretch_urdf', 'hello-robot-stretch-urdf', 'stretch3')
        self.world, self.robot, self.start = world, robot, start
        spec = world_spec(world, robot, planar_base=True)
        spec.attach(_stretch_spec(root / STRETCH_URDF, robot), prefix=self.PREFIX,
                    frame=spec.body('base').add_frame())
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._q = [int(m.jnt_qposadr[m.joint(n).id]) for n in ('base_x', 'base_y', 'base_yaw')]
        self._v = [int(m.jnt_dofadr[m.joint(n).id]) for n in ('base_x', 'base_y', 'base_yaw')]
        self._u = [m.actuator(n).id for n in ('vx', 'vy', 'wz')]
        # The robot's own visual meshes (~230k triangles) are out of the head camera's view
        # unless it looks steeply down: not drawing them then halves the rendering time.
        hidden = (STRETCH_VISUAL_GROUP,) if robot.camera_pitch_deg <= 30.0 else ()
        self._init_robot_camera(self.PREFIX + 'head', hidden_groups=hidden)
        self._cmd = (0.0, 0.0, 0.0)
        self.reset()

    def reset(self, start: Pose2D | None = None) -> None:
        if start is not None:
            self.start = start
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[self._q] = (self.start.x, self.start.y, self.start.yaw)
        self._cmd = (0.0, 0.0, 0.0)
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, vx: float, vy: float, wz: float) -> None:
        """Body-frame velocity command (m/s, m/s, rad/s); non-finite values become zero."""
        vals = (vx, vy, wz)
        self._cmd = vals if all(math.isfinite(v) for v in vals) else (0.0, 0.0, 0.0)

    def step(self, n: int = 1) -> None:
        d = self.data
        ux, uy, uw = self._u
        for _ in range(n):
            yaw = float(d.qpos[self._q[2]])
            c, s = math.cos(yaw), math.sin(yaw)
            vx, vy, wz = self._cmd
            d.ctrl[ux], d.ctrl[uy], d.ctrl[uw] = c * vx - s * vy, s * vx + c * vy, wz
            mujoco.mj_step(self.model, d)

    def pose(self) -> Pose2D:
        x, y, yaw = (float(self.data.qpos[i]) for i in self._q)
        return Pose2D(x, y, wrap_angle(yaw))

    def body_velocity(self) -> tuple[float, float, float]:
        """(vx, vy, wz) in the body frame."""
        yaw = float(self.data.qpos[self._q[2]])
        c, s = math.cos(yaw), math.sin(yaw)
        wx, wy, wz = (float(self.data.qvel[i]) for i in self._v)
        return c * wx + s * wy, -s * wx + c * wy, wz
