"""Planar poses (REP-103: x forward, y left, yaw counter-clockwise, metres and radians)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from transforms3d.euler import quat2euler


def wrap_angle(a: float) -> float:
    """Wrap to [-pi, pi)."""
    return (a + math.pi) % (2.0 * math.pi) - math.pi


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Yaw (rotation about +z, the last of static x-y-z Euler angles) of a quaternion given in ROS
    order (x, y, z, w); NaN when any component is not finite (so non-finite odometry stays
    non-finite). The one conversion of the stack; transforms3d does the maths."""
    if not all(math.isfinite(v) for v in (x, y, z, w)):
        return math.nan
    return float(quat2euler((w, x, y, z), 'sxyz')[2])


def quaternion_from_yaw(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) for a rotation of ``yaw`` about +z."""
    return 0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0)


@dataclass(frozen=True)
class Pose2D:
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.x, self.y, self.yaw))

    def distance_to(self, other: 'Pose2D') -> float:
        return math.hypot(other.x - self.x, other.y - self.y)

    def transform_point(self, fx: float, fy: float) -> tuple[float, float]:
        """A point given in this pose's body frame -> the parent frame."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return self.x + c * fx - s * fy, self.y + s * fx + c * fy

    def to_body(self, px: float, py: float) -> tuple[float, float]:
        """A parent-frame point -> this pose's body frame."""
        dx, dy = px - self.x, py - self.y
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return c * dx + s * dy, -s * dx + c * dy
