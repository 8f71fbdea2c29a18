"""Reference-path follower with the policy's discrete actions (simulator only: needs true pose).

It validates the control stack and is the upper bound in evaluation.
"""
from __future__ import annotations

import math
from typing import Sequence

from .actions import Action, MoveSpec
from .geometry import Pose2D, wrap_angle


class OraclePolicy:
    def __init__(self, reference_path: Sequence[tuple[float, float]], spec: MoveSpec,
                 *, advance_radius_m: float | None = None) -> None:
        if len(reference_path) < 2:
            raise ValueError('reference path needs at least 2 points')
        self.path = [tuple(map(float, p)) for p in reference_path]
        self.spec = spec
        self.advance_radius_m = advance_radius_m or max(0.3, 1.2 * spec.forward_m)
        self.stop_radius_m = 0.5 * spec.forward_m + 0.02
        self._idx = 1
        self._last = Action.STOP

    def reset(self) -> None:
        self._idx = 1
        self._last = Action.STOP

    def decide(self, pose: Pose2D) -> Action:
        if not pose.is_finite():
            return Action.STOP
        last = len(self.path) - 1
        while self._idx < last and math.dist((pose.x, pose.y), self.path[self._idx]) < \
                self.advance_radius_m:
            self._idx += 1
        tx, ty = self.path[self._idx]
        dist = math.hypot(tx - pose.x, ty - pose.y)
        if self._idx == last and dist <= self.stop_radius_m:
            return Action.STOP
        err = wrap_angle(math.atan2(ty - pose.y, tx - pose.x) - pose.yaw)
        threshold = 0.5 * self.spec.turn_rad + math.radians(1.0)
        # A base that over-turns (a walking Go2 turns 30 +- 4 deg) can jump across the forward
        # window; never undo the turn just made unless the error is larger than a whole turn's.
        left_th = self.spec.turn_rad if self._last is Action.TURN_RIGHT else threshold
        right_th = self.spec.turn_rad if self._last is Action.TURN_LEFT else threshold
        if err > left_th:
            self._last = Action.TURN_LEFT
        elif err < -right_th:
            self._last = Action.TURN_RIGHT
        else:
            self._last = Action.MOVE_FORWARD
        return self._last
