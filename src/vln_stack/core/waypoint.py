"""Action -> metric goal in the odom frame (forward d metres, rotate +-theta, stop = hold here)."""
from __future__ import annotations

from dataclasses import dataclass

from .actions import Action, MoveSpec
from .geometry import Pose2D, wrap_angle


@dataclass(frozen=True)
class MoveGoal:
    """A goal pose in the odom frame and the action that produced it."""

    action: Action
    start: Pose2D
    target: Pose2D


def goal_for_action(action: Action, pose: Pose2D, spec: MoveSpec) -> MoveGoal:
    """The odom-frame goal for ``action`` taken at ``pose``.

    MOVE_FORWARD keeps the heading and moves ``spec.forward_m`` along it; TURN_LEFT (+yaw,
    counter-clockwise, REP-103) and TURN_RIGHT rotate in place by ``spec.turn_deg``; STOP holds the
    current pose.
    """
    if not pose.is_finite():
        raise ValueError(f'pose is not finite: {pose}')
    if action is Action.MOVE_FORWARD:
        x, y = pose.transform_point(spec.forward_m, 0.0)
        target = Pose2D(x, y, pose.yaw)
    elif action is Action.TURN_LEFT:
        target = Pose2D(pose.x, pose.y, wrap_angle(pose.yaw + spec.turn_rad))
    elif action is Action.TURN_RIGHT:
        target = Pose2D(pose.x, pose.y, wrap_angle(pose.yaw - spec.turn_rad))
    else:
        target = pose
    return MoveGoal(action=action, start=pose, target=target)
