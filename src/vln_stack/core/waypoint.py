"""Action -> metric goal in the odom frame (forward d metres, rotate +-theta, stop = hold here),
the forward-move refusal, and the hand-off of a move from the waypoint node to the controller.

ROS-free. The waypoint node turns each ``vln/action`` into one :class:`Handoff` (a goal that
carries its action, or a refusal / rejection with the reason) and publishes it as JSON on
``vln/move``; the velocity controller tracks the goal (it never re-infers the action from the
pose) and owns every ``vln/move_done`` report, refusals included.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .actions import Action, MoveSpec
from .geometry import Pose2D, wrap_angle

GOAL, REFUSED, REJECTED = 'goal', 'refused', 'rejected'


@dataclass(frozen=True)
class MoveGoal:
    """A goal pose in the odom frame and the action that produced it."""

    action: Action
    start: Pose2D
    target: Pose2D

    def rebased(self, pose: Pose2D) -> 'MoveGoal':
        """The same move started from ``pose`` (the tracker's latest odometry), target unchanged.

        A rotation keeps the position the robot has now (a walking base may have crept a few mm
        since the action was taken, which must not turn it into a tiny forward move); a forward
        move keeps the current position and heads straight for the target; STOP holds."""
        if self.action is Action.MOVE_FORWARD:
            heading = math.atan2(self.target.y - pose.y, self.target.x - pose.x)
            return MoveGoal(self.action, Pose2D(pose.x, pose.y, heading), self.target)
        return MoveGoal(self.action, pose, Pose2D(pose.x, pose.y, self.target.yaw))

    def as_dict(self) -> dict:
        return {'action': self.action.value,
                'start': [self.start.x, self.start.y, self.start.yaw],
                'target': [self.target.x, self.target.y, self.target.yaw]}

    @classmethod
    def from_dict(cls, d: dict) -> 'MoveGoal':
        return cls(Action.parse(str(d['action'])), Pose2D(*map(float, d['start'])),
                   Pose2D(*map(float, d['target'])))


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


def goal_for_target(pose: Pose2D, target: Pose2D, position_tolerance_m: float) -> MoveGoal:
    """A bare goal pose that came without its action (an operator or a tool publishing
    ``vln/goal`` directly, not the waypoint node): a target within ``max(2 x tolerance, 2 cm)``
    of ``pose`` is a rotation in place (or a hold), anything else a straight move toward it."""
    dist = pose.distance_to(target)
    turn = wrap_angle(target.yaw - pose.yaw)
    if dist < max(2.0 * position_tolerance_m, 0.02):
        action = Action.STOP if abs(turn) < 1e-3 else (
            Action.TURN_LEFT if turn > 0 else Action.TURN_RIGHT)
    else:
        action = Action.MOVE_FORWARD
    return MoveGoal(action, pose, target).rebased(pose)


def forward_refusal(spec: MoveSpec, margin_m: float, ahead_m: float | None,
                    depth_age_s: float | None, max_depth_age_s: float) -> str:
    """Why a MOVE_FORWARD must not start ('' = it may).

    ``ahead_m``: the clear distance straight ahead (the heading-0 candidate's free distance,
    :func:`vln_stack.core.candidates.corridor_clearance`), None when that heading is unknown;
    ``depth_age_s``: age of the depth it came from, None when no depth has arrived (a robot
    without a depth camera: nothing to check against). A margin of 0 turns the check off."""
    if margin_m <= 0 or depth_age_s is None:
        return ''
    if depth_age_s > max_depth_age_s:
        return f'depth is {depth_age_s:.1f} s old: the way ahead cannot be checked'
    if ahead_m is None or ahead_m - spec.forward_m >= margin_m:
        return ''
    return (f'obstacle {ahead_m:.2f} m ahead (margin {margin_m:.2f} m): a '
            f'{spec.forward_m:.2f} m move would end {ahead_m - spec.forward_m:.2f} m from it')


def move_spec_from(forward_m: float, turn_deg: float, model_config: str = '') -> MoveSpec:
    """The move size: the model's config (``config.json``'s ``vln_stack`` block, or a folder
    holding it) wins over the given values when it names one."""
    forward, turn = forward_m, turn_deg
    if model_config:
        path = Path(model_config)
        if path.is_dir():
            path = path / 'config.json'
        if not path.is_file():
            raise FileNotFoundError(f'model_config not found: {path}')
        block = json.loads(path.read_text()).get('vln_stack', {})
        forward = float(block.get('forward_m', forward))
        turn = float(block.get('turn_deg', turn))
    return MoveSpec(forward_m=forward, turn_deg=turn)


@dataclass(frozen=True)
class Handoff:
    """What the waypoint node decided for one action, for the controller (``vln/move``).

    ``result`` GOAL: track ``goal`` (its action included); REFUSED (an obstacle inside the
    margin) or REJECTED (not an action, no odometry): nothing moves and the controller reports
    ``{'result', 'reason', 'action'}`` on ``vln/move_done``. ``stamp`` (sec, nanosec) and
    ``frame_id`` are the goal's header, which the controller republishes as ``vln/goal``."""

    action: str
    result: str = GOAL
    goal: MoveGoal | None = None
    reason: str = ''
    stamp: tuple[int, int] = (0, 0)
    frame_id: str = 'odom'

    def __post_init__(self) -> None:
        if self.result not in (GOAL, REFUSED, REJECTED):
            raise ValueError(f'unknown hand-off result {self.result!r}')
        if (self.result == GOAL) != (self.goal is not None):
            raise ValueError('a goal hand-off carries a goal, a refusal or rejection none')

    @classmethod
    def for_goal(cls, goal: MoveGoal, stamp: tuple[int, int] = (0, 0),
                 frame_id: str = 'odom') -> 'Handoff':
        return cls(goal.action.value, GOAL, goal, stamp=stamp, frame_id=frame_id)

    def report(self) -> dict:
        """The ``vln/move_done`` report of a refusal or rejection."""
        return {'action': self.action, 'result': self.result, 'reason': self.reason}

    def to_json(self) -> str:
        d = {'action': self.action, 'result': self.result, 'reason': self.reason,
             'stamp': list(self.stamp), 'frame_id': self.frame_id}
        if self.goal is not None:
            d['goal'] = self.goal.as_dict()
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> 'Handoff':
        """Raises ValueError on anything that is not a hand-off."""
        try:
            d = json.loads(text)
            goal = MoveGoal.from_dict(d['goal']) if d.get('goal') is not None else None
            sec, nanosec = (int(v) for v in d.get('stamp', (0, 0)))
            return cls(str(d['action']), str(d['result']), goal, str(d.get('reason', '')),
                       (sec, nanosec), str(d.get('frame_id', 'odom')))
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f'not a move hand-off: {text[:80]!r} ({exc})') from None
