"""Waypoint node: a discrete move (vln/action) -> a metric goal pose in the odom frame (vln/goal)."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import String

from ..core.actions import Action, MoveSpec
from ..core.geometry import Pose2D
from ..core.waypoint import goal_for_action
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, pose_stamped


@dataclass
class WaypointConfig:
    forward_m: float = 0.25        # JanusVLN: 0.25 m
    turn_deg: float = 30.0         # JanusVLN paper 30 deg; its released config 15 deg
    model_config: str = ''         # optional checkpoint config.json carrying forward_m / turn_deg
    odom_frame: str = 'odom'
    max_odom_age_s: float = 0.5
    odom_wait_s: float = 2.0          # how long an action may wait for fresh odometry


def move_spec_from(cfg: WaypointConfig) -> MoveSpec:
    """The move size: the model's config wins over the parameters when it names one."""
    forward, turn = cfg.forward_m, cfg.turn_deg
    if cfg.model_config:
        path = Path(cfg.model_config)
        if path.is_dir():
            path = path / 'config.json'
        if not path.is_file():
            raise FileNotFoundError(f'model_config not found: {path}')
        block = json.loads(path.read_text()).get('vln_stack', {})
        forward = float(block.get('forward_m', forward))
        turn = float(block.get('turn_deg', turn))
    return MoveSpec(forward_m=forward, turn_deg=turn)


class WaypointNode(Node):
    def __init__(self) -> None:
        super().__init__('waypoint')
        self.cfg = declare_config(self, WaypointConfig)
        self.spec = move_spec_from(self.cfg)
        self._pose: Pose2D | None = None
        self._pose_time: Time | None = None
        self.goal_pub = self.create_publisher(PoseStamped, 'vln/goal', 10)
        self.done_pub = self.create_publisher(String, 'vln/move_done', 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.create_subscription(String, 'vln/action', self._on_action, 10)
        self._waiting: tuple[Action, Time] | None = None   # an action waiting for odometry
        self.create_timer(0.1, self._check_waiting)
        self.get_logger().info(f'move size: forward {self.spec.forward_m} m, '
                               f'turn {self.spec.turn_deg} deg')

    def _on_odom(self, msg: Odometry) -> None:
        pose = pose2d_from_odom(msg)
        if not pose.is_finite():
            self.get_logger().warning('odometry with NaN/inf ignored', throttle_duration_sec=2.0)
            return
        self._pose = pose
        self._pose_time = self.get_clock().now()
        if self._waiting is not None:
            action, self._waiting = self._waiting[0], None
            self._on_action(String(data=action.value))

    def _check_waiting(self) -> None:
        if self._waiting is None:
            return
        waited = (self.get_clock().now() - self._waiting[1]).nanoseconds * 1e-9
        if waited > self.cfg.odom_wait_s:
            action, self._waiting = self._waiting[0], None
            self._reject(action.value, f'no odometry within {self.cfg.odom_wait_s} s: is odom '
                         'remapped to the robot driver\'s odometry topic?')

    def _reject(self, action: str, reason: str) -> None:
        self.get_logger().error(f'{action}: {reason}')
        self.done_pub.publish(String(data=json.dumps(
            {'action': action, 'result': 'rejected', 'reason': reason})))

    def _on_action(self, msg: String) -> None:
        try:
            action = Action.parse(msg.data)
        except ValueError as exc:
            self._reject(msg.data, str(exc))
            return
        if action is Action.STOP:
            return  # the controller stops on vln/action STOP directly; no goal needed
        now = self.get_clock().now()
        age = math.inf if self._pose_time is None else (now - self._pose_time).nanoseconds * 1e-9
        if self._pose is None or age > self.cfg.max_odom_age_s:
            self._waiting = (action, now)   # decide when fresh odometry arrives (or reject)
            return
        goal = goal_for_action(action, self._pose, self.spec)
        out = pose_stamped(goal.target, now.to_msg(), self.cfg.odom_frame)
        self.goal_pub.publish(out)


def main(args: list[str] | None = None) -> int:
    return run_node(WaypointNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
