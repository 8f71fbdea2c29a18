"""Safety node: the last stage before the base, independent of the model path (robot-side).

In: ``vln/cmd_vel_request`` (geometry_msgs/Twist from the velocity controller), ``odom``, camera
frames (``camera_topic``, default the ingest's ``vln/image``), the decision heartbeat
``vln/status``, the encoder's ``vln/encoder/heartbeat``, ``vln/action`` (STOP = cancel),
``vln/goal`` and the waypoint node's ``vln/move`` goals (re-arm after a cancel), ``vln/estop``
(std_msgs/Bool, true latches) and the obstacle
sensor: ``camera/depth/image_raw`` + ``camera/depth/camera_info`` or ``scan``.
Out: ``cmd_vel`` (bounded Twist), ``vln/safety`` (JSON state), ``diagnostics``.
Service: ``vln/estop`` (std_srvs/SetBool: true engages, false resets).

Rules in :mod:`vln_stack.core.safety`; the check timer (``check_rate_hz`` >= 20) turns any new
stop into a zero twist within one period, and shutdown sends a last zero twist.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped, Twist
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, LaserScan
from std_msgs.msg import Bool, String
from std_srvs.srv import SetBool

from ..core.actions import Action
from ..core.candidates import (CameraModel, CandidateConfig, Footprint, corridor_clearance,
                               depth_points, obstacle_points, scan_points)
from ..core.limits import RobotLimits
from ..core.safety import ZERO, Command, SafetyConfig, SafetyMonitor
from ..core.waypoint import GOAL, Handoff
from ..ros.common import declare_config, publish_final, run_node
from ..ros.convert import s_from_time
from ..ros.images import depth_msg_to_metres

SENSOR_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any pub


@dataclass(frozen=True)
class SafetyNodeConfig(RobotLimits):
    """Parameters: the robot's limits (:class:`RobotLimits`, shared with the velocity controller)
    and these."""

    odom_timeout_s: float = 0.3
    camera_timeout_s: float = 0.5
    status_timeout_s: float = 0.3       # vln/status is 10 Hz
    encoder_timeout_s: float = 0.0      # vln/encoder/heartbeat (10 Hz); 0 = not watched
    request_timeout_s: float = 0.3
    camera_topic: str = 'vln/image'     # or camera/image_raw
    obstacle_source: str = 'depth'      # depth | scan | none
    obstacle_stop_m: float = 0.15
    obstacle_timeout_s: float = 0.5
    lateral_margin_m: float = 0.05
    footprint_length_m: float = 0.6
    footprint_width_m: float = 0.3
    camera_height_m: float = 0.38
    camera_pitch_deg: float = 0.0
    camera_x_m: float = 0.24
    scan_x_m: float = 0.0               # LaserScan origin in the base frame
    scan_yaw_deg: float = 0.0
    floor_clearance_m: float = 0.08
    max_obstacle_height_m: float = 2.0
    depth_stride: int = 4
    check_rate_hz: float = 25.0
    state_rate_hz: float = 5.0


class SafetyNode(Node):
    def __init__(self) -> None:
        super().__init__('safety')
        self.cfg = c = declare_config(self, SafetyNodeConfig)
        if c.obstacle_source not in ('depth', 'scan', 'none'):
            raise ValueError(f'obstacle_source must be depth, scan or none, got '
                             f'{c.obstacle_source!r}')
        if c.check_rate_hz < 20.0:
            raise ValueError(f'check_rate_hz must be >= 20 Hz, got {c.check_rate_hz}')
        self.monitor = SafetyMonitor(SafetyConfig(
            **RobotLimits.of(c).limit_kwargs(), odom_timeout_s=c.odom_timeout_s,
            camera_timeout_s=c.camera_timeout_s, status_timeout_s=c.status_timeout_s,
            encoder_timeout_s=c.encoder_timeout_s, request_timeout_s=c.request_timeout_s,
            obstacle_check=c.obstacle_source != 'none', obstacle_stop_m=c.obstacle_stop_m,
            obstacle_timeout_s=c.obstacle_timeout_s))
        self.footprint = Footprint(c.footprint_length_m, c.footprint_width_m)
        self.points_cfg = CandidateConfig(lateral_margin_m=c.lateral_margin_m,
                                          floor_clearance_m=c.floor_clearance_m,
                                          max_obstacle_height_m=c.max_obstacle_height_m,
                                          stride=c.depth_stride)
        self._info: CameraInfo | None = None
        self._request = ZERO
        self._out = ZERO
        self._zero_repeat = 0
        self.cmd_pub = self.create_publisher(Twist, 'cmd_vel', 10)
        self.state_pub = self.create_publisher(String, 'vln/safety', 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self.create_subscription(Twist, 'vln/cmd_vel_request', self._on_request, 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.create_subscription(Image, c.camera_topic, self._heard('camera'), SENSOR_QOS)
        self.create_subscription(String, 'vln/status', self._heard('status'), 10)
        self.create_subscription(String, 'vln/encoder/heartbeat', self._heard('encoder'), 10)
        self.create_subscription(String, 'vln/action', self._on_action, 10)
        self.create_subscription(PoseStamped, 'vln/goal', lambda _m: self.monitor.rearm(), 10)
        self.create_subscription(String, 'vln/move', self._on_move, 10)
        self.create_subscription(Bool, 'vln/estop', self._on_estop_topic, 10)
        self.create_service(SetBool, 'vln/estop', self._on_estop_service)
        if c.obstacle_source == 'depth':
            self.create_subscription(CameraInfo, 'camera/depth/camera_info',
                                     lambda m: setattr(self, '_info', m), SENSOR_QOS)
            self.create_subscription(Image, 'camera/depth/image_raw', self._on_depth, SENSOR_QOS)
        elif c.obstacle_source == 'scan':
            self.create_subscription(LaserScan, 'scan', self._on_scan, SENSOR_QOS)
        self.create_timer(1.0 / c.check_rate_hz, self._check)
        self.create_timer(1.0 / c.state_rate_hz, self._publish_state)
        self.get_logger().info(
            f'limits {c.max_linear_mps} m/s, {c.max_angular_rps} rad/s; deadlines odom '
            f'{c.odom_timeout_s} s, camera {c.camera_timeout_s} s ({c.camera_topic}), heartbeat '
            f'{c.status_timeout_s} s, encoder {c.encoder_timeout_s or "off"}; obstacles from '
            f'{c.obstacle_source}, stop at {c.obstacle_stop_m} m')

    def _now(self) -> float:
        return s_from_time(self.get_clock().now())

    def _heard(self, key: str):
        def record(_msg) -> None:
            now = self._now()
            if now > 0.0:     # use_sim_time before the first /clock: nothing is fresh yet
                self.monitor.heard(key, now)
        return record

    # --- inputs ---------------------------------------------------------------------------------
    def _on_odom(self, msg: Odometry) -> None:
        p, q, t = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
        vals = (p.x, p.y, p.z, q.x, q.y, q.z, q.w, t.linear.x, t.linear.y, t.angular.z)
        finite = all(math.isfinite(v) for v in vals)
        if self._now() <= 0.0:
            return
        self.monitor.odometry(finite, self._now(), '' if finite else
                              f'pose ({p.x}, {p.y}), twist ({t.linear.x}, {t.angular.z})')
        if not finite:
            self._check()

    def _on_request(self, msg: Twist) -> None:
        now = self._now()
        self.monitor.heard('request', now)
        self._request = Command(msg.linear.x, msg.linear.y, msg.angular.z)
        cmd = self.monitor.filter(msg.linear.x, msg.linear.y, msg.angular.z, now)
        if cmd.notes and 'non-finite' in cmd.notes[0]:
            self.get_logger().error(cmd.notes[0], throttle_duration_sec=1.0)
            self._request = ZERO
        elif cmd.notes:
            self.get_logger().warning('; '.join(cmd.notes), throttle_duration_sec=1.0)
        self._send(cmd)

    def _on_action(self, msg: String) -> None:
        if msg.data.strip() == Action.STOP.value:
            self.monitor.cancel()
            self._check()

    def _on_move(self, msg: String) -> None:
        """A goal from the waypoint node re-arms at once (its vln/goal copy comes one hop later,
        from the velocity controller, possibly after the first velocity request)."""
        try:
            if Handoff.from_json(msg.data).result == GOAL:
                self.monitor.rearm()
        except ValueError:
            pass

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._engage('vln/estop topic')
        elif self.monitor.estop:
            self.get_logger().warning('vln/estop false on the topic does not release the e-stop: '
                                      'call the vln/estop service with data false')

    def _on_estop_service(self, req: SetBool.Request, resp: SetBool.Response) -> SetBool.Response:
        if req.data:
            self._engage('vln/estop service')
            resp.success, resp.message = True, 'e-stop engaged: robot stopped'
        else:
            was = self.monitor.reset_estop()
            resp.success = True
            resp.message = 'e-stop released' if was else 'e-stop was not engaged'
            if was:
                self.get_logger().warning('e-stop released by the vln/estop service')
            self._check()
        return resp

    def _engage(self, source: str) -> None:
        self.monitor.engage_estop(source)
        self._check()

    def _on_depth(self, msg: Image) -> None:
        info = self._info
        if info is None:
            return
        try:
            depth = depth_msg_to_metres(msg)
            c = self.cfg
            cam = CameraModel(info.k[0], info.k[4], info.k[2], info.k[5], msg.width, msg.height,
                              c.camera_height_m, c.camera_pitch_deg, c.camera_x_m)
            pts = obstacle_points(depth_points(depth, cam, stride=c.depth_stride),
                                  self.footprint, self.points_cfg)
        except ValueError as exc:
            self.get_logger().warning(f'depth frame dropped: {exc}', throttle_duration_sec=2.0)
            return
        self._obstacle(pts)

    def _on_scan(self, msg: LaserScan) -> None:
        c = self.cfg
        pts = scan_points(msg.ranges, msg.angle_min, msg.angle_increment,
                          range_min=msg.range_min, range_max=msg.range_max, x_m=c.scan_x_m,
                          yaw_rad=math.radians(c.scan_yaw_deg))
        self._obstacle(pts)

    def _obstacle(self, points_xy) -> None:
        self.monitor.obstacle(corridor_clearance(points_xy, self.footprint,
                                                 self.cfg.lateral_margin_m), self._now())

    # --- output ---------------------------------------------------------------------------------
    def _send(self, cmd: Command) -> None:
        if cmd.is_zero and not self._out.is_zero:
            self._zero_repeat = 5     # a few more zeros in case one is lost
        self._out = cmd
        msg = Twist()
        msg.linear.x, msg.linear.y, msg.angular.z = cmd.vx, cmd.vy, cmd.wz
        self.cmd_pub.publish(msg)

    def _check(self) -> None:
        now = self._now()
        began, ended = self.monitor.update(now)
        for stop in began:   # (rclpy wants one severity per logging call site)
            if stop.startup or stop.key == 'cancel':
                self.get_logger().info(f'STOP: {stop.what}. To do: {stop.todo}')
            else:
                self.get_logger().error(f'STOP: {stop.what}. To do: {stop.todo}')
        for stop in ended:
            self.get_logger().info(f'cleared: {stop.key} ({stop.what.split(":")[0]})')
        if self.monitor.request_fresh(now):
            r = self._request
            cmd = self.monitor.filter(r.vx, r.vy, r.wz, now)
        else:
            if not self._out.is_zero:
                self.get_logger().error(
                    f'STOP: no velocity request for {self.cfg.request_timeout_s} s while moving. '
                    f'To do: check the velocity_controller node')
            cmd = ZERO
        if not cmd.same_motion(self._out):
            if cmd.notes and not cmd.is_zero:
                self.get_logger().warning(cmd.notes[-1], throttle_duration_sec=1.0)
            self._send(cmd)
        elif cmd.is_zero and self._zero_repeat > 0:
            self._zero_repeat -= 1
            self._send(cmd)
        if began or ended:
            self._publish_state()

    def _publish_state(self) -> None:
        now = self._now()
        st = self.monitor.status(now)
        st['cmd'] = [round(self._out.vx, 4), round(self._out.vy, 4), round(self._out.wz, 4)]
        st['stamp'] = now
        self.state_pub.publish(String(data=json.dumps(st)))
        diag = DiagnosticStatus(name='vln_stack: safety', hardware_id=self.get_name())
        if st['estop']:
            diag.level = DiagnosticStatus.ERROR
        elif st['stopped'] or st['forward_blocked']:
            diag.level = DiagnosticStatus.WARN
        else:
            diag.level = DiagnosticStatus.OK
        diag.message = '; '.join(r['what'] for r in st['reasons']) or (
            'forward motion blocked' if st['forward_blocked'] else 'ok')
        diag.values = [KeyValue(key='estop', value=str(st['estop'])),
                       KeyValue(key='clearance_m', value=str(st['clearance_m']))] + [
            KeyValue(key=f'age_{k}_s', value=str(v)) for k, v in st['ages_s'].items()]
        arr = DiagnosticArray(status=[diag])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def on_shutdown(self) -> None:
        self._out = ZERO
        publish_final(self.cmd_pub, Twist())
        self.get_logger().info('shutting down: zero twist sent on cmd_vel')


def main(args: list[str] | None = None) -> int:
    return run_node(SafetyNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
