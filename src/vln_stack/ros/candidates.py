"""Candidate waypoints (core.candidates) -> PoseArray, MarkerArray and a JSON String, odom frame.

Message-aware helpers without an executor (tested directly, nav2 costmap_2d style).
"""
from __future__ import annotations

import json
import math

from geometry_msgs.msg import Pose, PoseArray
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from ..core.candidates import Candidate
from ..core.geometry import Pose2D, quaternion_from_yaw


def candidate_msgs(cands: list[Candidate], robot: Pose2D, stamp, frame_id: str, *,
                   red_below_m: float = 0.0,
                   max_range_m: float = 0.0) -> tuple[PoseArray, MarkerArray, String]:
    """Pose *i* = heading *i* at its free distance from ``robot`` (an unknown heading stays at
    the robot); markers: an arrow per heading (green free, red shorter than ``red_below_m``,
    grey unknown) and a label; the JSON lists heading_deg / known / free_m."""
    arr = PoseArray()
    arr.header.stamp, arr.header.frame_id = stamp, frame_id
    markers = MarkerArray()
    for i, cand in enumerate(cands):
        yaw = robot.yaw + cand.heading_rad
        dist = cand.free_m if cand.known else 0.0
        p = Pose()
        p.position.x = robot.x + dist * math.cos(yaw)
        p.position.y = robot.y + dist * math.sin(yaw)
        _, _, p.orientation.z, p.orientation.w = quaternion_from_yaw(yaw)
        arr.poses.append(p)
        markers.markers += _markers(i, cand, robot, yaw, stamp, frame_id, red_below_m)
    info = String(data=json.dumps({
        'frame_id': frame_id, 'robot': [round(robot.x, 3), round(robot.y, 3), round(robot.yaw, 4)],
        'max_range_m': max_range_m, 'candidates': [c.as_dict() for c in cands]}))
    return arr, markers, info


def _markers(i: int, cand: Candidate, robot: Pose2D, yaw: float, stamp, frame_id: str,
             red_below_m: float) -> list[Marker]:
    length = cand.free_m if cand.known else 0.3
    colour = (0.5, 0.5, 0.5) if not cand.known else (
        (0.9, 0.1, 0.1) if cand.free_m < red_below_m else (0.1, 0.8, 0.2))
    out = []
    for kind, mid in ((Marker.ARROW, i), (Marker.TEXT_VIEW_FACING, 100 + i)):
        m = Marker()
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.ns, m.id, m.type, m.action = 'vln_candidates', mid, kind, Marker.ADD
        m.color.r, m.color.g, m.color.b, m.color.a = (*colour, 1.0)
        m.lifetime.sec = 2
        if kind == Marker.ARROW:
            m.pose.position.x, m.pose.position.y, m.pose.position.z = robot.x, robot.y, 0.05
            _, _, m.pose.orientation.z, m.pose.orientation.w = quaternion_from_yaw(yaw)
            m.scale.x, m.scale.y, m.scale.z = max(length, 0.02), 0.03, 0.03
        else:
            r = length + 0.15
            m.pose.position.x = robot.x + r * math.cos(yaw)
            m.pose.position.y = robot.y + r * math.sin(yaw)
            m.pose.position.z = 0.3
            m.pose.orientation.w = 1.0
            m.scale.z = 0.12
            m.text = (f'{cand.heading_deg:.0f}: {cand.free_m:.2f} m' if cand.known
                      else f'{cand.heading_deg:.0f}: unknown')
        out.append(m)
    return out
