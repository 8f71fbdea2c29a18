"""Headless MuJoCo simulator bridge: /clock, camera image + camera_info, odom out; cmd_vel in.

Also a depth image ``camera/depth/image_raw`` (32FC1 metres, z-depth, no return = inf) with
``camera/depth/camera_info`` from the same camera at the camera rate (``publish_depth``), and
optionally a LaserScan ``scan`` from the depth row that looks level (``publish_scan``; frame
``scan_frame``: level, at the camera).

Physics runs in its own thread at ``real_time_factor`` (0 = as fast as possible). Like the real
drivers (Go2 twist_mux, stretch_driver), the base stops when cmd_vel is older than
``cmd_vel_timeout_s``.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from geometry_msgs.msg import Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, LaserScan
from std_srvs.srv import Trigger

from ..core.episodes import find_episode
from ..core.geometry import quaternion_from_yaw
from ..ros.common import declare_config, run_node
from ..ros.convert import time_from_s
from ..core.candidates import CameraModel, horizon_scan
from ..ros.images import depth_to_image_msg, rgb_to_image_msg
from ..sim.robots import make_sim
from ..sim.worlds import RobotBody


@dataclass
class SimBridgeConfig:
    episode_file: str = ''            # YAML with the episode (world + start pose)
    episode_id: str = ''              # '' = the file's first episode
    camera_height_m: float = 0.38
    hfov_deg: float = 79.0
    camera_pitch_deg: float = 0.0
    image_width: int = 320
    image_height: int = 240
    footprint_length_m: float = 0.6
    footprint_width_m: float = 0.3
    camera_rate_hz: float = 10.0
    odom_rate_hz: float = 50.0
    clock_rate_hz: float = 100.0
    real_time_factor: float = 1.0
    sim_model: str = 'planar'         # planar | go2 (walking) | stretch3 (sim/robots.py)
    cmd_vel_timeout_s: float = 0.5
    odom_frame: str = 'odom'
    base_frame: str = 'base_link'
    camera_frame: str = 'camera_optical_frame'
    publish_depth: bool = True        # camera/depth/image_raw + camera/depth/camera_info
    publish_scan: bool = False        # scan (LaserScan) from the level depth row
    scan_frame: str = 'camera_scan'
    # std_srvs/Trigger the base must get before it drives, as stretch_driver's navigation mode:
    # until it is called, cmd_vel is ignored ('' = drives at once)
    mode_service: str = ''


class SimBridge(Node):
    def __init__(self) -> None:
        super().__init__('sim_bridge')
        self.cfg = declare_config(self, SimBridgeConfig)
        if not self.cfg.episode_file:
            raise ValueError('parameter episode_file is empty: give the episode YAML '
                             '(e.g. config/episodes/indoor.yaml)')
        self.episode = find_episode(self.cfg.episode_file, self.cfg.episode_id)
        body = RobotBody(self.cfg.camera_height_m, self.cfg.hfov_deg, self.cfg.image_width,
                         self.cfg.image_height, self.cfg.footprint_length_m,
                         self.cfg.footprint_width_m, self.cfg.camera_pitch_deg)
        self.sim = make_sim(self.cfg.sim_model, self.episode.world, body, self.episode.start)
        self._lock = threading.Lock()
        self._last_cmd_sim_t = -1e9
        self._collisions = 0
        self.clock_pub = self.create_publisher(Clock, '/clock', 10)
        self.image_pub = self.create_publisher(
            Image, 'camera/image_raw', QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
        self.info_pub = self.create_publisher(CameraInfo, 'camera/camera_info', 10)
        self.odom_pub = self.create_publisher(Odometry, 'odom', 20)
        if self.cfg.publish_depth or self.cfg.publish_scan:
            self.depth_pub = self.create_publisher(
                Image, 'camera/depth/image_raw',
                QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE))
            self.depth_info_pub = self.create_publisher(CameraInfo, 'camera/depth/camera_info', 10)
            self.scan_pub = self.create_publisher(LaserScan, 'scan', 10)
        self.create_subscription(Twist, 'cmd_vel', self._on_cmd_vel, 10)
        self.create_service(Trigger, 'sim/reset', self._on_reset)
        self._mode_ready = not self.cfg.mode_service
        if self.cfg.mode_service:
            self.create_service(Trigger, self.cfg.mode_service, self._on_mode)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name='physics', daemon=True)
        self._thread.start()
        self.get_logger().info(
            f'world {self.episode.world!r}, episode {self.episode.episode_id!r}, start '
            f'({self.episode.start.x:.2f}, {self.episode.start.y:.2f}, '
            f'{math.degrees(self.episode.start.yaw):.0f} deg), camera {body.image_width}x'
            f'{body.image_height} @ {self.cfg.camera_height_m} m, hfov {self.cfg.hfov_deg} deg, '
            f'rtf {self.cfg.real_time_factor}')

    def _on_cmd_vel(self, msg: Twist) -> None:
        vals = (msg.linear.x, msg.linear.y, msg.angular.z)
        if not all(math.isfinite(v) for v in vals):
            self.get_logger().warning('cmd_vel with non-finite values ignored; base stopped')
            vals = (0.0, 0.0, 0.0)
        if not self._mode_ready:
            self.get_logger().warning(
                f'cmd_vel ignored: the base is not in navigation mode; call '
                f'{self.cfg.mode_service} (std_srvs/Trigger) first', throttle_duration_sec=2.0)
            vals = (0.0, 0.0, 0.0)
        with self._lock:
            self.sim.set_command(*vals)
            self._last_cmd_sim_t = self.sim.time_s

    def _on_mode(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        self._mode_ready = True
        resp.success, resp.message = True, 'Now in navigation mode.'
        return resp

    def _on_reset(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self.sim.reset()
        resp.success, resp.message = True, f'reset to the start of {self.episode.episode_id}'
        return resp

    def _loop(self) -> None:
        try:
            self._run_physics()
        except Exception as exc:  # noqa: BLE001 - e.g. publishing after the context shut down
            if not self._stop.is_set():
                self.get_logger().error(f'physics loop died: {type(exc).__name__}: {exc}')
        finally:
            self.sim.close()  # the GL context belongs to this thread

    def _run_physics(self) -> None:
        cfg = self.cfg
        dt_clock = 1.0 / cfg.clock_rate_hz
        steps_per_tick = max(1, int(round(dt_clock / self.sim.timestep_s)))
        next_cam = next_odom = 0.0
        wall0, sim0 = time.monotonic(), self.sim.time_s
        while not self._stop.is_set():
            with self._lock:
                if self.sim.time_s - self._last_cmd_sim_t > cfg.cmd_vel_timeout_s:
                    self.sim.set_command(0.0, 0.0, 0.0)
                self.sim.step(steps_per_tick)
                t = self.sim.time_s
                if self.sim.in_collision():
                    self._collisions += 1
                    if self._collisions % 50 == 1:
                        self.get_logger().warning('the base is in contact with an obstacle')
            stamp = time_from_s(t)
            self.clock_pub.publish(Clock(clock=stamp))
            if t >= next_odom - 1e-9:
                next_odom = max(next_odom + 1.0 / cfg.odom_rate_hz, t)
                self._publish_odom(stamp)
            if t >= next_cam - 1e-9:
                next_cam = max(next_cam + 1.0 / cfg.camera_rate_hz, t)
                with self._lock:
                    rgb = self.sim.render()
                self.image_pub.publish(rgb_to_image_msg(rgb, stamp, cfg.camera_frame))
                self.info_pub.publish(self._camera_info(stamp))
                if cfg.publish_depth or cfg.publish_scan:
                    with self._lock:
                        depth = self.sim.render_depth()
                    self._publish_depth(depth, stamp)
            if cfg.real_time_factor > 0:
                ahead = (t - sim0) / cfg.real_time_factor - (time.monotonic() - wall0)
                if ahead > 0:
                    time.sleep(ahead)

    def _publish_odom(self, stamp) -> None:
        with self._lock:
            pose = self.sim.pose()
            vx, vy, wz = self.sim.body_velocity()
        msg = Odometry()
        msg.header.stamp = stamp
        msg.header.frame_id = self.cfg.odom_frame
        msg.child_frame_id = self.cfg.base_frame
        msg.pose.pose.position.x, msg.pose.pose.position.y = pose.x, pose.y
        qx, qy, qz, qw = quaternion_from_yaw(pose.yaw)
        o = msg.pose.pose.orientation
        o.x, o.y, o.z, o.w = qx, qy, qz, qw
        msg.twist.twist.linear.x, msg.twist.twist.linear.y = vx, vy
        msg.twist.twist.angular.z = wz
        self.odom_pub.publish(msg)

    def _publish_depth(self, depth, stamp) -> None:
        info = self._camera_info(stamp)
        if self.cfg.publish_depth:
            self.depth_pub.publish(depth_to_image_msg(depth, stamp, self.cfg.camera_frame))
            self.depth_info_pub.publish(info)
        if self.cfg.publish_scan:
            cam = CameraModel(info.k[0], info.k[4], info.k[2], info.k[5], info.width,
                              info.height, pitch_deg=self.cfg.camera_pitch_deg)
            try:
                angle_min, inc, ranges = horizon_scan(depth, cam)
            except ValueError as exc:
                self.get_logger().error(f'no scan: {exc}', throttle_duration_sec=10.0)
                return
            scan = LaserScan()
            scan.header.stamp, scan.header.frame_id = stamp, self.cfg.scan_frame
            scan.angle_min, scan.angle_increment = angle_min, inc
            scan.angle_max = angle_min + inc * (len(ranges) - 1)
            scan.scan_time = 1.0 / self.cfg.camera_rate_hz
            scan.range_min, scan.range_max = 0.05, 20.0
            scan.ranges = [float(r) for r in ranges]
            self.scan_pub.publish(scan)

    def _camera_info(self, stamp) -> CameraInfo:
        fx, fy, cx, cy = self.sim.intrinsics()
        info = CameraInfo()
        info.header.stamp = stamp
        info.header.frame_id = self.cfg.camera_frame
        info.width, info.height = self.cfg.image_width, self.cfg.image_height
        info.distortion_model = 'plumb_bob'
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def on_shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def main(args: list[str] | None = None) -> int:
    return run_node(SimBridge, args)


if __name__ == '__main__':
    raise SystemExit(main())
