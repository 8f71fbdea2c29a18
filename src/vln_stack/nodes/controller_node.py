"""Velocity controller: tracks the waypoint node's moves on odometry, owns vln/move_done.

Moves come from the waypoint node on ``vln/move`` (JSON :class:`~vln_stack.core.waypoint.Handoff`:
the goal together with the action it is for, or a refusal / rejection); each accepted goal is
republished as a standard ``vln/goal`` (geometry_msgs/PoseStamped, odom frame) for everyone else.
A bare ``vln/goal`` from anyone else (an operator, a tool) is tracked too: it comes without an
action, so a straight move or a rotation is read from the pose (core ``goal_for_target``).
Every move report on ``vln/move_done`` comes from here: finished, aborted, canceled, and the
waypoint node's refusals and rejections.

Its twist goes to ``vln/cmd_vel_request``; the safety node bounds it and owns ``cmd_vel``.
Zero twist when a move ends, when odometry is stale or non-finite, when the decision node's
heartbeat (vln/status) is lost, or when a move times out; a move is aborted at once when the
safety node (vln/safety) reports the e-stop, or forward motion blocked for ``blocked_abort_s``.
"""
from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass

from builtin_interfaces.msg import Time as TimeMsg
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.time import Time
from std_msgs.msg import String
from std_srvs.srv import Trigger

from ..core.actions import Action
from ..core.controller import ControlLimits, MoveTracker
from ..core.geometry import Pose2D, wrap_angle
from ..core.limits import RobotLimits
from ..core.waypoint import GOAL, Handoff, MoveGoal, goal_for_target
from ..core.watchdog import Watchdog
from ..ros.common import declare_config, publish_final, run_node
from ..ros.convert import (pose2d_from_odom, pose2d_from_pose_stamped, pose_stamped,
                           s_from_time)


@dataclass(frozen=True)
class ControllerConfig(RobotLimits):
    """Parameters: the robot's limits (:class:`RobotLimits`, shared with the safety node) and
    these."""

    position_tolerance_m: float = 0.01
    yaw_tolerance_rad: float = 0.0175
    control_rate_hz: float = 50.0
    odom_timeout_s: float = 0.5
    odom_wait_s: float = 2.0          # a goal before the first odometry or heartbeat waits this long
    decision_timeout_s: float = 1.5   # stop when vln/status is silent this long (0 disables)
    move_timeout_s: float = 0.0       # per-move time limit; 0 = 3 x nominal duration + 3 s
    blocked_abort_s: float = 1.0      # abort a forward move the safety node blocks this long
    mode_service: str = ''            # std_srvs/Trigger to call once (Stretch navigation mode)
    mode_wait_s: float = 15.0         # how long to wait for that service to appear


def _goal_key(msg: PoseStamped) -> tuple:
    """Identity of a vln/goal message (to recognise the controller's own republished goals)."""
    p, q, st = msg.pose.position, msg.pose.orientation, msg.header.stamp
    return (st.sec, st.nanosec, msg.header.frame_id, p.x, p.y, q.z, q.w)


class ControllerNode(Node):
    def __init__(self) -> None:
        super().__init__('velocity_controller')
        self.cfg = declare_config(self, ControllerConfig)
        c = self.cfg
        self.limits = ControlLimits(**RobotLimits.of(c).limit_kwargs(),
                                    position_tolerance_m=c.position_tolerance_m,
                                    yaw_tolerance_rad=c.yaw_tolerance_rad)
        self.watchdog = Watchdog({'odom': c.odom_timeout_s, 'status': c.decision_timeout_s})
        self._pose: Pose2D | None = None
        self._tracker: MoveTracker | None = None
        self._zero_pending = 0
        self._blocked_since: Time | None = None
        # a goal that came before any odometry: (goal, or None for a bare pose to read, the
        # target, when it came)
        self._early_goal: tuple[MoveGoal | None, Pose2D, Time] | None = None
        self._own_goals: deque[tuple] = deque(maxlen=8)   # vln/goal messages published here
        self.cmd_pub = self.create_publisher(Twist, 'vln/cmd_vel_request', 10)
        self.done_pub = self.create_publisher(String, 'vln/move_done', 10)
        self.goal_pub = self.create_publisher(PoseStamped, 'vln/goal', 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.create_subscription(String, 'vln/move', self._on_move, 10)
        self.create_subscription(PoseStamped, 'vln/goal', self._on_goal, 10)
        self.create_subscription(String, 'vln/status', self._on_status, 10)
        self.create_subscription(String, 'vln/action', self._on_action, 10)
        self.create_subscription(String, 'vln/safety', self._on_safety, 10)
        self.create_timer(1.0 / c.control_rate_hz, self._tick)
        self._mode_ready = not c.mode_service   # False until the mode service has answered
        if c.mode_service:
            self._switch_mode(c.mode_service)

    def _switch_mode(self, name: str) -> None:
        """Call the driver's mode service once it appears (polled, never blocking the executor);
        until it has answered, goals are refused with the reason."""
        client = self.create_client(Trigger, name)
        t0 = self.get_clock().now()

        def poll() -> None:
            if client.service_is_ready():
                timer.cancel()
                client.call_async(Trigger.Request()).add_done_callback(answered)
            elif self._age(t0, self.get_clock().now()) > self.cfg.mode_wait_s:
                timer.cancel()
                self.get_logger().error(
                    f'mode service {name} not available after {self.cfg.mode_wait_s} s: the '
                    'driver ignores cmd_vel until it is in navigation mode; moves are refused. '
                    'Start the driver, or set mode_service to "" if the base needs no switch')

        def answered(future) -> None:
            res = future.result()
            if res is not None and res.success:
                self._mode_ready = True
                self.get_logger().info(f'{name}: {res.message}')
            else:
                self.get_logger().error(f'{name} failed: '
                                        f'{res.message if res else future.exception()}')

        timer = self.create_timer(0.2, poll)

    def _on_odom(self, msg: Odometry) -> None:
        self._pose = pose2d_from_odom(msg)   # non-finite: the tracker stops the move, says why
        self.watchdog.heard('odom', s_from_time(self.get_clock().now()))
        self._start_early_goal()

    def _start_early_goal(self) -> None:
        """Start a goal that arrived before the first odometry or decision heartbeat, once both
        have been heard."""
        if self._early_goal is not None and self._pose is not None and self._pose.is_finite() \
                and self._heard_status():
            (goal, target, _), self._early_goal = self._early_goal, None
            self._start(goal, target)

    def _heard_status(self) -> bool:
        """The decision heartbeat has arrived at least once (or is not watched)."""
        return self.cfg.decision_timeout_s <= 0 or not math.isinf(
            self.watchdog.age('status', s_from_time(self.get_clock().now())))

    def _on_action(self, msg: String) -> None:
        if msg.data.strip() == Action.STOP.value:
            if self._tracker is not None:
                self._finish('canceled', 'STOP received')
            else:
                self._zero_pending = 3
                self.cmd_pub.publish(Twist())

    def _on_safety(self, msg: String) -> None:
        try:
            st = json.loads(msg.data)
        except ValueError:
            return
        tr, now = self._tracker, self.get_clock().now()
        if st.get('estop') and tr is not None:
            self._finish('aborted', 'e-stop engaged (vln/safety): reset it with the vln/estop '
                         'service before the next move')
            return
        blocked = bool(st.get('forward_blocked')) and tr is not None and \
            tr.goal.action is Action.MOVE_FORWARD
        if not blocked:
            self._blocked_since = None
        elif self._blocked_since is None:
            self._blocked_since = now
        elif self._age(self._blocked_since, now) >= self.cfg.blocked_abort_s:
            self._finish('aborted', 'the safety node blocks forward motion (obstacle ahead or '
                         'no obstacle data): turn away or clear the path')

    def _on_status(self, _msg: String) -> None:
        self.watchdog.heard('status', s_from_time(self.get_clock().now()))
        self._start_early_goal()

    def _on_move(self, msg: String) -> None:
        """The waypoint node's decision for one action: a goal with its action, or a report."""
        try:
            move = Handoff.from_json(msg.data)
        except ValueError as exc:
            self.get_logger().error(f'vln/move ignored: {exc}')
            return
        if move.result != GOAL:   # refused / rejected: nothing moves; report it
            self._report(move.report())
            return
        out = pose_stamped(move.goal.target, TimeMsg(sec=move.stamp[0], nanosec=move.stamp[1]),
                           move.frame_id)
        self._own_goals.append(_goal_key(out))
        self.goal_pub.publish(out)
        self._start(move.goal, move.goal.target)

    def _on_goal(self, msg: PoseStamped) -> None:
        """A bare goal pose from outside the stack (its action is read from the pose)."""
        if _goal_key(msg) in self._own_goals:
            return   # this node's own republished vln/move goal, already tracked
        self._start(None, pose2d_from_pose_stamped(msg))

    def _start(self, goal: MoveGoal | None, target: Pose2D) -> None:
        """Track ``goal`` (None: a bare ``target``, action read from the pose) from the latest
        odometry."""
        now = self.get_clock().now()
        if not target.is_finite():
            self._finish('aborted', 'goal not finite')
            return
        if not self._mode_ready:
            self._finish('aborted', f'the base is not in navigation mode yet: '
                         f'{self.cfg.mode_service} has not answered')
            return
        if self._pose is None or not self._heard_status():
            # start-up race: the goal came before this node's first odometry or heartbeat
            self._early_goal = (goal, target, now)
            return
        goal = goal.rebased(self._pose) if goal is not None else \
            goal_for_target(self._pose, target, self.limits.position_tolerance_m)
        self._blocked_since = None
        self._tracker = MoveTracker(goal, self.limits, s_from_time(now),
                                    timeout_s=self.cfg.move_timeout_s or None)
        self._tick()

    def _age(self, t: Time | None, now: Time) -> float:
        return math.inf if t is None else s_from_time(now) - s_from_time(t)

    def _report(self, report: dict) -> None:
        """Publish one move report on vln/move_done (this node is its only publisher)."""
        if report.get('result') in ('refused', 'rejected'):   # the waypoint node logged why
            self.get_logger().info(f'{report.get("action")} {report["result"]} by the waypoint '
                                   f'node: {report.get("reason")}')
        self.done_pub.publish(String(data=json.dumps(report)))

    def _finish(self, result: str, reason: str = '') -> None:
        tr = self._tracker
        report = {'result': result, 'reason': reason}
        if tr is not None:
            report['action'] = tr.goal.action.value
            if self._pose is not None:
                report['position_error_m'] = round(self._pose.distance_to(tr.goal.target), 4)
                report['yaw_error_deg'] = round(math.degrees(
                    wrap_angle(tr.goal.target.yaw - self._pose.yaw)), 3)
        self._tracker = None
        self._zero_pending = 3
        self.cmd_pub.publish(Twist())
        if result not in ('succeeded', 'canceled'):
            self.get_logger().warning(f'move {result}: {reason}')
        self._report(report)

    def _tick(self) -> None:
        now = self.get_clock().now()
        tr = self._tracker
        if self._early_goal is not None and \
                self._age(self._early_goal[2], now) > self.cfg.odom_wait_s:
            self._early_goal = None
            if self._pose is None:
                self._finish('aborted', f'no odometry within {self.cfg.odom_wait_s} s of the '
                             'goal: is odom remapped to the robot driver\'s odometry topic?')
            else:
                self._finish('aborted', f'no decision heartbeat (vln/status) within '
                             f'{self.cfg.odom_wait_s} s of the goal: is the decision node up?')
            return
        if tr is None:
            if self._zero_pending > 0:  # a few zero twists after a stop, then stay quiet
                self._zero_pending -= 1
                self.cmd_pub.publish(Twist())
            return
        late = self.watchdog.expired(s_from_time(now))
        if 'odom' in late:
            self._finish('aborted', 'odometry stale: stopping')
            return
        if 'status' in late:
            self._finish('aborted', 'decision node heartbeat lost: stopping')
            return
        out = tr.step(self._pose, s_from_time(now))
        if out.done:
            self._finish(out.result, out.reason)
            return
        cmd = Twist()
        cmd.linear.x, cmd.angular.z = out.linear_x, out.angular_z
        self.cmd_pub.publish(cmd)

    def on_shutdown(self) -> None:
        publish_final(self.cmd_pub, Twist())


def main(args: list[str] | None = None) -> int:
    return run_node(ControllerNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
