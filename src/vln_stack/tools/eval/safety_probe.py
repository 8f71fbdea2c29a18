"""The measuring side of the safety faults: an rclpy node on its own context that records what the
stack does (:class:`Probe`) and publishes what the safety node watches (:class:`Feeder`)."""
from __future__ import annotations

import json
import math
import time
from typing import Callable

REQUEST = (0.3, 0.0, 0.2)          # the velocity request fed at 50 Hz (m/s, m/s, rad/s)


class Probe:
    """This tool's rclpy node on its own context: records cmd_vel / odom / reports, publishes."""

    def __init__(self, domain: int, *, use_sim_time: bool = False) -> None:
        import rclpy
        from geometry_msgs.msg import PoseArray, Twist
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from std_msgs.msg import String

        self.rclpy = rclpy
        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=domain)
        self.node = Node('vln_safety_probe', context=self.ctx)
        self.exe = SingleThreadedExecutor(context=self.ctx)
        self.exe.add_node(self.node)
        self.cmd: list[tuple[float, float, float, float]] = []     # (t, vx, vy, wz)
        self.odom: list[tuple[float, float, float, float, float]] = []  # (t, x, y, yaw, |v|)
        self.done: list[dict] = []
        self.safety: dict = {}
        self.candidates: list = []
        n = self.node
        n.create_subscription(Twist, 'cmd_vel', self._on_cmd, 100)
        n.create_subscription(Odometry, 'odom', self._on_odom, 50)
        n.create_subscription(String, 'vln/move_done',
                              lambda m: self.done.append(json.loads(m.data)), 10)
        n.create_subscription(String, 'vln/safety',
                              lambda m: self.safety.update(json.loads(m.data)), 10)
        n.create_subscription(PoseArray, 'vln/candidates', self.candidates.append, 5)

    def _on_cmd(self, m) -> None:
        self.cmd.append((time.monotonic(), m.linear.x, m.linear.y, m.angular.z))

    def _on_odom(self, m) -> None:
        from ...ros.convert import pose2d_from_odom
        p = pose2d_from_odom(m)
        t = m.twist.twist
        self.odom.append((time.monotonic(), p.x, p.y, p.yaw,
                          math.hypot(t.linear.x, t.linear.y) + abs(t.angular.z) * 0.1))

    def spin(self, seconds: float, tick: Callable[[], None] | None = None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.exe.spin_once(timeout_sec=0.005)
            if tick is not None:
                tick()

    def spin_until(self, cond: Callable[[], bool], timeout_s: float,
                   tick: Callable[[], None] | None = None) -> bool:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.exe.spin_once(timeout_sec=0.005)
            if tick is not None:
                tick()
            if cond():
                return True
        return False

    def first_zero_after(self, t0: float) -> float | None:
        for t, vx, vy, wz in self.cmd:
            if t >= t0 and vx == 0.0 and vy == 0.0 and wz == 0.0:
                return t
        return None

    def moving_cmd_since(self, t0: float) -> bool:
        return any(t >= t0 and (vx or wz) for t, vx, _, wz in self.cmd)

    def all_zero_between(self, t0: float, t1: float) -> bool:
        return all(vx == 0.0 and vy == 0.0 and wz == 0.0
                   for t, vx, vy, wz in self.cmd if t0 <= t <= t1)

    def still_after(self, t0: float, speed: float = 0.02) -> float | None:
        for t, *_, v in self.odom:
            if t >= t0 and v < speed:
                return t
        return None

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.ctx)


class Feeder:
    """Publishes what the safety node watches, each input switchable, on a schedule."""

    RATES = {'odom': 50.0, 'camera': 10.0, 'status': 10.0, 'encoder': 10.0, 'scan': 10.0,
             'request': 50.0}

    def __init__(self, probe: Probe) -> None:
        from geometry_msgs.msg import Twist
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import Image, LaserScan
        from std_msgs.msg import Bool, String

        n = probe.node
        self.probe = probe
        self.pubs = {'odom': n.create_publisher(Odometry, 'odom', 20),
                     'camera': n.create_publisher(Image, 'vln/image', 5),
                     'status': n.create_publisher(String, 'vln/status', 10),
                     'encoder': n.create_publisher(String, 'vln/encoder/heartbeat', 10),
                     'scan': n.create_publisher(LaserScan, 'scan', 5),
                     'request': n.create_publisher(Twist, 'vln/cmd_vel_request', 20)}
        self.estop_pub = n.create_publisher(Bool, 'vln/estop', 10)
        self.action_pub = n.create_publisher(String, 'vln/action', 10)
        from geometry_msgs.msg import PoseStamped
        self.goal_pub = n.create_publisher(PoseStamped, 'vln/goal', 10)
        self.on = {k: True for k in self.RATES}
        self.next = {k: 0.0 for k in self.RATES}
        self.last = {k: 0.0 for k in self.RATES}
        self.odom_nan = False
        self.obstacle_m: float | None = None    # an obstacle straight ahead of the scanner
        self.request = REQUEST
        self._types = (Odometry, Image, String, LaserScan, Twist)

    def _msg(self, key: str):
        Odometry, Image, String, LaserScan, Twist = self._types
        if key == 'odom':
            m = Odometry()
            m.header.frame_id, m.child_frame_id = 'odom', 'base_link'
            m.pose.pose.orientation.w = 1.0
            if self.odom_nan:
                m.pose.pose.position.x = math.nan
            return m
        if key == 'camera':
            m = Image(height=4, width=4, encoding='rgb8', step=12)
            m.data = bytes(48)
            return m
        if key == 'status':
            return String(data=json.dumps({'state': 'moving'}))
        if key == 'encoder':
            return String(data=json.dumps({'episode': '', 'frames': 0}))
        if key == 'scan':
            m = LaserScan(angle_min=-math.pi / 2, angle_max=math.pi / 2,
                          angle_increment=math.pi / 60, range_min=0.05, range_max=20.0)
            m.ranges = [5.0] * 61
            if self.obstacle_m is not None:
                for i in range(28, 33):
                    m.ranges[i] = float(self.obstacle_m)
            return m
        m = Twist()
        m.linear.x, m.linear.y, m.angular.z = self.request
        return m

    def tick(self) -> None:
        now = time.monotonic()
        for key, rate in self.RATES.items():
            if self.on[key] and now >= self.next[key]:
                self.pubs[key].publish(self._msg(key))
                self.last[key] = now
                self.next[key] = max(self.next[key] + 1.0 / rate, now)
