"""Waypoint node: a discrete move (vln/action) -> a metric goal in the odom frame, with its action.

Each action becomes one :class:`~vln_stack.core.waypoint.Handoff` on ``vln/move`` (JSON) for the
velocity controller: the goal together with the action it is for, or a refusal / rejection and
why. The controller tracks the goal, republishes it as ``vln/goal`` (PoseStamped) and publishes
every ``vln/move_done`` report, refusals included.

With a depth camera (``camera/depth/image_raw`` 32FC1 m or 16UC1 mm + ``camera/depth/camera_info``)
it also publishes the candidate waypoints of :mod:`vln_stack.core.candidates` (12 headings, 30 deg
apart) in the odom frame: ``vln/candidates`` (geometry_msgs/PoseArray, pose i = heading i * 30 deg
at its free distance; an unknown heading sits at the robot), ``vln/candidates/markers``
(visualization_msgs/MarkerArray) and ``vln/candidates/info`` (JSON per heading: heading_deg,
known, free_m). A MOVE_FORWARD that would end closer than ``obstacle_margin_m`` to an obstacle is
refused (decided by :func:`vln_stack.core.waypoint.forward_refusal`): no goal is sent and
``vln/move_done`` (from the controller) reports ``result: refused``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from ..core.actions import Action, MoveSpec
from ..core.candidates import (CameraModel, Candidate, CandidateConfig, Footprint,
                               candidates_from_depth)
from ..core.geometry import Pose2D
from ..core.waypoint import REFUSED, REJECTED, Handoff, forward_refusal, goal_for_action
from ..core.waypoint import move_spec_from as core_move_spec_from
from ..ros.candidates import candidate_msgs
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, s_from_time
from ..ros.images import depth_msg_to_metres


@dataclass
class WaypointConfig:
    forward_m: float = MoveSpec.forward_m   # JanusVLN: 0.25 m (the default of core MoveSpec)
    turn_deg: float = MoveSpec.turn_deg     # JanusVLN paper 30 deg; its released config 15 deg
    model_config: str = ''         # optional checkpoint config.json carrying forward_m / turn_deg
    odom_frame: str = 'odom'
    max_odom_age_s: float = 0.5
    odom_wait_s: float = 2.0          # how long an action may wait for fresh odometry
    obstacle_margin_m: float = 0.3    # refuse a forward move ending closer than this (0 = off)
    candidates_rate_hz: float = 5.0
    max_range_m: float = 3.0          # candidate free distances are capped here
    max_depth_age_s: float = 1.0      # older depth cannot clear a forward move
    lateral_margin_m: float = 0.05
    footprint_length_m: float = 0.6
    footprint_width_m: float = 0.3
    camera_height_m: float = 0.38
    camera_pitch_deg: float = 0.0
    camera_x_m: float = 0.24          # forward of the base centre
    floor_clearance_m: float = 0.08
    max_obstacle_height_m: float = 2.0
    depth_stride: int = 2


def move_spec_from(cfg: WaypointConfig) -> MoveSpec:
    """The move size: the model's config wins over the parameters when it names one."""
    return core_move_spec_from(cfg.forward_m, cfg.turn_deg, cfg.model_config)


class WaypointNode(Node):
    def __init__(self) -> None:
        super().__init__('waypoint')
        self.cfg = declare_config(self, WaypointConfig)
        self.spec = move_spec_from(self.cfg)
        self._pose: Pose2D | None = None
        self._pose_time: Time | None = None
        self.move_pub = self.create_publisher(String, 'vln/move', 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.create_subscription(String, 'vln/action', self._on_action, 10)
        self._waiting: tuple[Action, Time] | None = None   # an action waiting for odometry
        self.create_timer(0.1, self._check_waiting)
        c = self.cfg
        self.footprint = Footprint(c.footprint_length_m, c.footprint_width_m)
        self.cand_cfg = CandidateConfig(max_range_m=c.max_range_m,
                                        lateral_margin_m=c.lateral_margin_m,
                                        floor_clearance_m=c.floor_clearance_m,
                                        max_obstacle_height_m=c.max_obstacle_height_m,
                                        stride=c.depth_stride)
        self._depth_info: CameraInfo | None = None
        self._cands: tuple[Time, list[Candidate]] | None = None
        self.cand_pub = self.create_publisher(PoseArray, 'vln/candidates', 5)
        self.marker_pub = self.create_publisher(MarkerArray, 'vln/candidates/markers', 5)
        self.cand_info_pub = self.create_publisher(String, 'vln/candidates/info', 5)
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.create_subscription(CameraInfo, 'camera/depth/camera_info',
                                 lambda m: setattr(self, '_depth_info', m), qos)
        self.create_subscription(Image, 'camera/depth/image_raw', self._on_depth, qos)
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
        waited = s_from_time(self.get_clock().now()) - s_from_time(self._waiting[1])
        if waited > self.cfg.odom_wait_s:
            action, self._waiting = self._waiting[0], None
            self._reject(action.value, f'no odometry within {self.cfg.odom_wait_s} s: is odom '
                         'remapped to the robot driver\'s odometry topic?')

    def _reject(self, action: str, reason: str) -> None:
        self.get_logger().error(f'{action}: {reason}')
        self.move_pub.publish(String(data=Handoff(action, REJECTED, reason=reason).to_json()))

    def _on_action(self, msg: String) -> None:
        try:
            action = Action.parse(msg.data)
        except ValueError as exc:
            self._reject(msg.data, str(exc))
            return
        if action is Action.STOP:
            return  # the controller stops on vln/action STOP directly; no goal needed
        now = self.get_clock().now()
        age = math.inf if self._pose_time is None else \
            s_from_time(now) - s_from_time(self._pose_time)
        if self._pose is None or age > self.cfg.max_odom_age_s:
            self._waiting = (action, now)   # decide when fresh odometry arrives (or reject)
            return
        if action is Action.MOVE_FORWARD:
            refusal = self._forward_refusal(now)
            if refusal:
                self.get_logger().warning(f'MOVE_FORWARD refused: {refusal}; the robot holds. '
                                          'To do: turn toward a free candidate heading')
                self.move_pub.publish(String(data=Handoff(
                    action.value, REFUSED, reason=refusal).to_json()))
                return
        goal = goal_for_action(action, self._pose, self.spec)
        stamp = now.to_msg()
        self.move_pub.publish(String(data=Handoff.for_goal(
            goal, (stamp.sec, stamp.nanosec), self.cfg.odom_frame).to_json()))


    # --- candidate waypoints ------------------------------------------------------------------
    def _on_depth(self, msg: Image) -> None:
        info, now = self._depth_info, self.get_clock().now()
        if info is None or self._pose is None:
            return
        if self._cands is not None and \
                s_from_time(now) - s_from_time(self._cands[0]) < 1.0 / self.cfg.candidates_rate_hz:
            return
        c = self.cfg
        try:
            cam = CameraModel(info.k[0], info.k[4], info.k[2], info.k[5], msg.width, msg.height,
                              c.camera_height_m, c.camera_pitch_deg, c.camera_x_m)
            cands = candidates_from_depth(depth_msg_to_metres(msg), cam, self.footprint,
                                          self.cand_cfg)
        except ValueError as exc:
            self.get_logger().warning(f'depth frame dropped: {exc}', throttle_duration_sec=2.0)
            return
        if self._cands is None:
            self.get_logger().info('depth received: candidate waypoints on vln/candidates; '
                                   f'forward moves keep {c.obstacle_margin_m} m of margin')
        self._cands = (now, cands)
        self._publish_candidates(cands, self._pose, msg.header.stamp)

    def _forward_refusal(self, now: Time) -> str:
        """Why a forward move must not start ('' = it may), from the latest depth."""
        if self._cands is None:   # no depth camera on this robot: nothing to check against
            return forward_refusal(self.spec, self.cfg.obstacle_margin_m, None, None,
                                   self.cfg.max_depth_age_s)
        t, cands = self._cands
        return forward_refusal(self.spec, self.cfg.obstacle_margin_m, cands[0].free_m,
                               s_from_time(now) - s_from_time(t), self.cfg.max_depth_age_s)

    def _publish_candidates(self, cands: list[Candidate], pose: Pose2D, stamp) -> None:
        poses, markers, info = candidate_msgs(
            cands, pose, stamp, self.cfg.odom_frame, max_range_m=self.cfg.max_range_m,
            red_below_m=self.cfg.obstacle_margin_m + self.spec.forward_m)
        self.cand_pub.publish(poses)
        self.marker_pub.publish(markers)
        self.cand_info_pub.publish(info)

def main(args: list[str] | None = None) -> int:
    return run_node(WaypointNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
