"""Message <-> core conversions that several nodes share (poses, stamps, odometry)."""
from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry

from ..core.geometry import Pose2D, quaternion_from_yaw, yaw_from_quaternion


def time_from_s(t: float) -> Time:
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def s_from_time(t) -> float:
    """Seconds from a stamp (builtin_interfaces/Time) or an rclpy ``Time`` (a clock reading).
    The one stamp conversion of the stack."""
    ns = getattr(t, 'nanoseconds', None)
    if ns is not None:
        return ns * 1e-9
    return float(t.sec) + float(t.nanosec) * 1e-9


def pose2d_from_odom(msg: Odometry) -> Pose2D:
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    return Pose2D(float(p.x), float(p.y), yaw_from_quaternion(q.x, q.y, q.z, q.w))


def pose2d_from_pose_stamped(msg: PoseStamped) -> Pose2D:
    p, q = msg.pose.position, msg.pose.orientation
    return Pose2D(float(p.x), float(p.y), yaw_from_quaternion(q.x, q.y, q.z, q.w))


def pose_stamped(pose: Pose2D, stamp: Time, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.pose.position.x, msg.pose.position.y = pose.x, pose.y
    qx, qy, qz, qw = quaternion_from_yaw(pose.yaw)
    msg.pose.orientation.x, msg.pose.orientation.y = qx, qy
    msg.pose.orientation.z, msg.pose.orientation.w = qz, qw
    return msg
