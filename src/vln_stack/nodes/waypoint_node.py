"""Waypoint node: a discrete move (vln/action) -> a metric goal pose in the odom frame (vln/goal).

With a depth camera (``camera/depth/image_raw`` 32FC1 m or 16UC1 mm + ``camera/depth/camera_info``)
it also publishes the candidate waypoints of :mod:`vln_stack.core.candidates` (12 headings, 30 deg
apart) in the odom frame: ``vln/candidates`` (geometry_msgs/PoseArray, pose i = heading i * 30 deg
at its free distance; an unknown heading sits at the robot), ``vln/candidates/markers``
(visualization_msgs/MarkerArray) and ``vln/candidates/info`` (JSON per heading: heading_deg,
known, free_m). A MOVE_FORWARD that would end closer than ``obstacle_margin_m`` to an obstacle is
refused: no goal is sent and ``vln/move_done`` reports ``result: refused``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from geometry_msgs.msg import PoseArray, PoseStamped
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
from ..core.waypoint import goal_for_action
from ..ros.candidates import candidate_msgs
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, pose_stamped
from ..ros.images import depth_msg_to_metres


@dataclass
class WaypointConfig:
    forward_m: float = 0.25        # JanusVLN: 0.25 m
    turn_deg: float = 30.0         # JanusVLN paper 30 deg; its released config 15 deg
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
        if action is Action.MOVE_FORWARD:
            refusal = self._forward_refusal(now)
            if refusal:
                self.get_logger().warning(f'MOVE_FORWARD refused: {refusal}; the robot holds. '
                                          'To do: turn toward a free candidate heading')
                self.done_pub.publish(String(data=json.dumps(
                    {'result': 'refused', 'reason': refusal, 'action': action.value})))
                return
        goal = goal_for_action(action, self._pose, self.spec)
        out = pose_stamped(goal.target, now.to_msg(), self.cfg.odom_frame)
        self.goal_pub.publish(out)


    # --- candidate waypoints ------------------------------------------------------------------
    def _on_depth(self, msg: Image) -> None:
        info, now = self._depth_info, self.get_clock().now()
        if info is None or self._pose is None:
            return
        if self._cands is not None and \
                (now - self._cands[0]).nanoseconds * 1e-9 < 1.0 / self.cfg.candidates_rate_hz:
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
        margin = self.cfg.obstacle_margin_m
        if margin <= 0 or self._cands is None:
            return ''   # no depth camera on this robot: nothing to check against
        age = (now - self._cands[0]).nanoseconds * 1e-9
        if age > self.cfg.max_depth_age_s:
            return f'depth is {age:.1f} s old: the way ahead cannot be checked'
        ahead = self._cands[1][0].free_m
        if ahead is None or ahead - self.spec.forward_m >= margin:
            return ''
        return (f'obstacle {ahead:.2f} m ahead (margin {margin:.2f} m): a '
                f'{self.spec.forward_m:.2f} m move would end {ahead - self.spec.forward_m:.2f} m '
                f'from it')

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
