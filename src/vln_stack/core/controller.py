"""Goal tracking for one discrete move: rotate in place or drive straight, within robot limits.

Pure functions of (goal, pose, time): the rclpy node feeds odometry and publishes the result.
Velocities follow a trapezoidal profile: acceleration-limited ramp up, ``v = sqrt(2 a d)`` ramp down
so the base stops on the goal instead of overshooting it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import Pose2D, wrap_angle
from .limits import RobotLimits
from .waypoint import MoveGoal


@dataclass(frozen=True)
class ControlLimits(RobotLimits):
    """The robot's :class:`RobotLimits` plus how closely a move is tracked (REP-103 units)."""

    position_tolerance_m: float = 0.01
    yaw_tolerance_rad: float = math.radians(1.0)
    heading_gain: float = 2.0
    min_linear_mps: float = 0.02
    min_angular_rps: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ('position_tolerance_m', 'yaw_tolerance_rad'):
            val = getattr(self, name)
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f'{name} must be a positive number, got {val}')


@dataclass(frozen=True)
class ControlOutput:
    linear_x: float
    angular_z: float
    done: bool
    result: str  # 'active' | 'succeeded' | 'aborted'
    reason: str = ''


ZERO_ACTIVE = ControlOutput(0.0, 0.0, False, 'active')


def _ramp(desired: float, previous: float, accel: float, dt: float) -> float:
    step = accel * max(dt, 0.0)
    return min(max(desired, previous - step), previous + step)


class MoveTracker:
    """Tracks one :class:`MoveGoal`; call :meth:`step` at the control rate with fresh odometry."""

    def __init__(self, goal: MoveGoal, limits: ControlLimits, start_time_s: float,
                 *, timeout_s: float | None = None) -> None:
        self.goal = goal
        self.limits = limits
        self.start_time_s = start_time_s
        dist = goal.start.distance_to(goal.target)
        turn = abs(wrap_angle(goal.target.yaw - goal.start.yaw))
        self.is_turn = dist < 1e-6 and turn > 1e-6
        self.is_hold = dist < 1e-6 and turn <= 1e-6
        nominal = dist / limits.max_linear_mps + turn / limits.max_angular_rps
        self.timeout_s = timeout_s if timeout_s is not None else 3.0 * nominal + 3.0
        self._v = 0.0
        self._w = 0.0
        self._last_t: float | None = None

    def errors(self, pose: Pose2D) -> tuple[float, float]:
        """(remaining distance along the move in m, remaining yaw in rad)."""
        hx, hy = math.cos(self.goal.start.yaw), math.sin(self.goal.start.yaw)
        along = (pose.x - self.goal.start.x) * hx + (pose.y - self.goal.start.y) * hy
        remaining = self.goal.start.distance_to(self.goal.target) - along
        return remaining, wrap_angle(self.goal.target.yaw - pose.yaw)

    def within_tolerance(self, pose: Pose2D) -> bool:
        rem, yaw_err = self.errors(pose)
        if self.is_turn:
            return abs(yaw_err) <= self.limits.yaw_tolerance_rad
        return abs(rem) <= self.limits.position_tolerance_m

    def step(self, pose: Pose2D, now_s: float) -> ControlOutput:
        """The next velocity command. The tracker aims at a quarter of the tolerance so that
        moves are not systematically short; the move succeeds inside that band."""
        lim = self.limits
        if not pose.is_finite():
            return ControlOutput(0.0, 0.0, True, 'aborted', 'odometry is not finite')
        if self.is_hold:
            return ControlOutput(0.0, 0.0, True, 'succeeded', 'hold')
        if now_s - self.start_time_s > self.timeout_s:
            if self.within_tolerance(pose):
                return ControlOutput(0.0, 0.0, True, 'succeeded', 'within tolerance at timeout')
            return ControlOutput(0.0, 0.0, True, 'aborted',
                                 f'move not finished after {self.timeout_s:.1f} s')
        dt = 0.0 if self._last_t is None else max(0.0, now_s - self._last_t)
        self._last_t = now_s
        if self.is_turn:
            err = wrap_angle(self.goal.target.yaw - pose.yaw)
            if abs(err) <= 0.25 * lim.yaw_tolerance_rad:
                self._v = self._w = 0.0
                return ControlOutput(0.0, 0.0, True, 'succeeded')
            mag = min(lim.max_angular_rps, math.sqrt(2.0 * lim.max_angular_accel_rps2 * abs(err)))
            mag = max(mag, lim.min_angular_rps)
            self._w = _ramp(math.copysign(mag, err), self._w, lim.max_angular_accel_rps2,
                            dt if dt > 0 else 0.02)
            self._v = 0.0
            return ControlOutput(0.0, self._w, False, 'active')
        # Straight move: progress along the start heading, hold the heading.
        hx, hy = math.cos(self.goal.start.yaw), math.sin(self.goal.start.yaw)
        total = self.goal.start.distance_to(self.goal.target)
        along = (pose.x - self.goal.start.x) * hx + (pose.y - self.goal.start.y) * hy
        remaining = total - along
        if abs(remaining) <= 0.25 * lim.position_tolerance_m:
            self._v = self._w = 0.0
            return ControlOutput(0.0, 0.0, True, 'succeeded')
        mag = min(lim.max_linear_mps, math.sqrt(2.0 * lim.max_linear_accel_mps2 * abs(remaining)))
        mag = max(mag, lim.min_linear_mps)
        self._v = _ramp(math.copysign(mag, remaining), self._v, lim.max_linear_accel_mps2,
                        dt if dt > 0 else 0.02)
        # Heading hold with cross-track correction toward the straight segment.
        cross = -(pose.x - self.goal.start.x) * hy + (pose.y - self.goal.start.y) * hx
        yaw_err = wrap_angle(self.goal.target.yaw - pose.yaw) - 2.0 * cross
        w = max(-lim.max_angular_rps, min(lim.max_angular_rps, lim.heading_gain * yaw_err))
        self._w = w
        return ControlOutput(self._v, w, False, 'active')
