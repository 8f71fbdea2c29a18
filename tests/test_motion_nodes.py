"""The waypoint -> controller hand-off through the real velocity controller node, in-process (no
simulator): refusals and rejections are reported by the controller (the one vln/move_done
publisher), a goal hand-off is republished once as a standard vln/goal and tracked with the action
it came with, and a bare vln/goal from outside is still tracked."""
from __future__ import annotations

import json
import time

import pytest

from vln_stack.core.actions import Action, MoveSpec
from vln_stack.core.geometry import Pose2D
from vln_stack.core.waypoint import REFUSED, REJECTED, Handoff, goal_for_action


def _odom(pose: Pose2D):
    from nav_msgs.msg import Odometry

    from vln_stack.core.geometry import quaternion_from_yaw
    m = Odometry()
    m.header.frame_id = 'odom'
    m.pose.pose.position.x, m.pose.pose.position.y = pose.x, pose.y
    (m.pose.pose.orientation.x, m.pose.pose.orientation.y, m.pose.pose.orientation.z,
     m.pose.pose.orientation.w) = quaternion_from_yaw(pose.yaw)
    return m


@pytest.fixture()
def controller(rclpy_node):
    from rclpy.executors import SingleThreadedExecutor

    from vln_stack.nodes.controller_node import ControllerNode
    node = ControllerNode()
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    ex.add_node(rclpy_node)
    yield node, ex
    ex.shutdown()
    node.destroy_node()


def _spin(ex, cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ex.spin_once(timeout_sec=0.02)
        if cond():
            return True
    return False


def test_controller_owns_move_reports_and_goals_carry_their_action(controller, rclpy_node):
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from std_msgs.msg import String

    from vln_stack.ros.convert import pose2d_from_pose_stamped, pose_stamped

    node, ex = controller
    done, goals = [], []
    rclpy_node.create_subscription(String, 'vln/move_done',
                                   lambda m: done.append(json.loads(m.data)), 10)
    rclpy_node.create_subscription(PoseStamped, 'vln/goal', goals.append, 10)
    move_pub = rclpy_node.create_publisher(String, 'vln/move', 10)
    goal_pub = rclpy_node.create_publisher(PoseStamped, 'vln/goal', 10)
    odom_pub = rclpy_node.create_publisher(Odometry, 'odom', 20)
    status_pub = rclpy_node.create_publisher(String, 'vln/status', 10)
    assert _spin(ex, lambda: move_pub.get_subscription_count() >= 1 and
                 odom_pub.get_subscription_count() >= 1 and len(goals) == 0 and
                 goal_pub.get_subscription_count() >= 2, 10.0)
    here = Pose2D(1.0, 2.0, 0.3)

    def feed() -> None:
        odom_pub.publish(_odom(here))
        status_pub.publish(String(data='{}'))

    rclpy_node.create_timer(0.02, feed)
    assert _spin(ex, lambda: node._pose is not None, 5.0)

    # A refusal: reported by the controller, nothing tracked, no goal.
    move_pub.publish(String(data=Handoff('MOVE_FORWARD', REFUSED, reason='wall').to_json()))
    assert _spin(ex, lambda: done, 5.0)
    assert done == [{'action': 'MOVE_FORWARD', 'result': 'refused', 'reason': 'wall'}]
    assert node._tracker is None and goals == []
    move_pub.publish(String(data=Handoff('JUMP', REJECTED, reason='not an action').to_json()))
    assert _spin(ex, lambda: len(done) == 2, 5.0)
    assert done[1]['result'] == 'rejected' and done[1]['action'] == 'JUMP'

    # A turn hand-off from a pose the base has since crept 3 cm away from: still a turn (the
    # former controller read a 3 cm forward move from the pose).
    goal = goal_for_action(Action.TURN_LEFT, Pose2D(here.x - 0.03, here.y, here.yaw), MoveSpec())
    stamp = rclpy_node.get_clock().now().to_msg()
    move_pub.publish(String(data=Handoff.for_goal(goal, (stamp.sec, stamp.nanosec)).to_json()))
    assert _spin(ex, lambda: node._tracker is not None and goals, 5.0)
    assert node._tracker.goal.action is Action.TURN_LEFT and node._tracker.is_turn
    _spin(ex, lambda: False, 0.5)
    assert len(goals) == 1, 'the goal is republished once'
    assert goals[0].header.stamp == stamp and goals[0].header.frame_id == 'odom'
    assert pose2d_from_pose_stamped(goals[0]).distance_to(goal.target) < 1e-9
    assert node._tracker is not None and node._tracker.goal.action is Action.TURN_LEFT, \
        'the republished vln/goal must not restart the move as a bare goal'

    # A bare goal from outside (no action): still tracked, the action read from the pose.
    ahead = Pose2D(here.x + 0.5, here.y, here.yaw)
    goal_pub.publish(pose_stamped(ahead, rclpy_node.get_clock().now().to_msg(), 'odom'))
    assert _spin(ex, lambda: node._tracker.goal.action is Action.MOVE_FORWARD, 5.0)
    assert [d['result'] for d in done] == ['refused', 'rejected']


def test_a_goal_before_the_first_heartbeat_waits_for_it(controller, rclpy_node):
    """Start-up race: odometry is there but the decision heartbeat has not reached this node yet.
    The goal is held (no motion, no abort) and starts when the first heartbeat arrives."""
    from nav_msgs.msg import Odometry
    from std_msgs.msg import String

    node, ex = controller
    done = []
    rclpy_node.create_subscription(String, 'vln/move_done',
                                   lambda m: done.append(json.loads(m.data)), 10)
    move_pub = rclpy_node.create_publisher(String, 'vln/move', 10)
    odom_pub = rclpy_node.create_publisher(Odometry, 'odom', 20)
    status_pub = rclpy_node.create_publisher(String, 'vln/status', 10)
    assert _spin(ex, lambda: move_pub.get_subscription_count() >= 1 and
                 odom_pub.get_subscription_count() >= 1 and
                 status_pub.get_subscription_count() >= 1, 10.0)
    here = Pose2D(0.0, 0.0, 0.0)
    rclpy_node.create_timer(0.02, lambda: odom_pub.publish(_odom(here)))
    assert _spin(ex, lambda: node._pose is not None, 5.0)
    goal = goal_for_action(Action.MOVE_FORWARD, here, MoveSpec())
    stamp = rclpy_node.get_clock().now().to_msg()
    move_pub.publish(String(data=Handoff.for_goal(goal, (stamp.sec, stamp.nanosec)).to_json()))
    assert _spin(ex, lambda: node._early_goal is not None, 5.0)
    _spin(ex, lambda: False, 0.5)
    assert node._tracker is None and done == [], 'held, not started and not aborted'
    rclpy_node.create_timer(0.05, lambda: status_pub.publish(String(data='{}')))
    assert _spin(ex, lambda: node._tracker is not None, 5.0)
    assert node._tracker.goal.action is Action.MOVE_FORWARD and done == []
