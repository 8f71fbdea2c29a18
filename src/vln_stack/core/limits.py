"""The robot's motion limits: one type, read by the velocity controller and the safety layer.

ROS-free. The controller ramps its profile within these limits; the safety layer clamps whatever
reaches the base to them and derives the braking distance from the acceleration limit. Both nodes
declare the same four parameters (their configs inherit :class:`RobotLimits`), filled from the
robot profile's ``limits`` block.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

LIMIT_FIELDS = ('max_linear_mps', 'max_angular_rps', 'max_linear_accel_mps2',
                'max_angular_accel_rps2')


@dataclass(frozen=True)
class RobotLimits:
    """Speed and acceleration limits (REP-103 units: m/s, rad/s, m/s^2, rad/s^2)."""

    max_linear_mps: float = 0.5
    max_angular_rps: float = 1.0
    max_linear_accel_mps2: float = 1.0
    max_angular_accel_rps2: float = 2.0

    def __post_init__(self) -> None:
        for name in LIMIT_FIELDS:
            val = getattr(self, name)
            if not (math.isfinite(val) and val > 0):
                raise ValueError(f'{name} must be a positive number, got {val}')

    @classmethod
    def of(cls, obj) -> 'RobotLimits':
        """The limits carried by any object with the four limit attributes (a node config)."""
        return cls(**{name: float(getattr(obj, name)) for name in LIMIT_FIELDS})

    def limit_kwargs(self) -> dict[str, float]:
        """The four limits as keyword arguments (to build a type that extends this one)."""
        return {name: getattr(self, name) for name in LIMIT_FIELDS}

    def braking_distance_m(self, v_mps: float) -> float:
        """Distance to stop from ``v_mps`` at the linear acceleration limit."""
        return v_mps * v_mps / (2.0 * self.max_linear_accel_mps2)

