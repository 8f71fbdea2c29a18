"""The ROS-free safety rules (core/safety.py) and candidate waypoints (core/candidates.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from import_rules import static_ros_imports
from vln_stack.core.candidates import (CameraModel, CandidateConfig, Footprint,
                                       candidates_from_depth, candidates_from_points, clearance,
                                       depth_points, headings, horizon_scan, obstacle_points,
                                       scan_points)
from vln_stack.core.safety import SafetyConfig, SafetyMonitor

CFG = SafetyConfig(max_linear_mps=0.5, max_angular_rps=1.0, odom_timeout_s=0.3,
                   camera_timeout_s=0.5, status_timeout_s=0.4, encoder_timeout_s=0.4,
                   obstacle_stop_m=0.15)


def _fresh(cfg: SafetyConfig = CFG, t: float = 10.0) -> SafetyMonitor:
    mon = SafetyMonitor(cfg)
    for key in ('odom', 'camera', 'status', 'encoder', 'request'):
        mon.heard(key, t)
    mon.obstacle(math.inf, t)
    return mon


# --- safety -------------------------------------------------------------------------------------

def test_fresh_inputs_pass_commands_within_limits():
    mon = _fresh()
    cmd = mon.filter(0.3, 0.0, 0.5, 10.01)
    assert (cmd.vx, cmd.wz) == (0.3, 0.5) and not cmd.notes
    assert mon.stops(10.01) == {}


def test_oversized_commands_are_clamped_and_nan_becomes_zero():
    mon = _fresh()
    cmd = mon.filter(5.0, 0.0, -10.0, 10.01)
    assert cmd.vx == pytest.approx(0.5) and cmd.wz == -1.0 and len(cmd.notes) == 2
    diag = mon.filter(3.0, 4.0, 0.0, 10.01)        # planar speed, direction kept
    assert math.hypot(diag.vx, diag.vy) == pytest.approx(0.5) and diag.vy / diag.vx == \
        pytest.approx(4 / 3)
    for bad in (math.nan, math.inf, -math.inf):
        cmd = mon.filter(bad, 0.0, 0.2, 10.01)
        assert cmd.is_zero and 'non-finite' in cmd.notes[0]


@pytest.mark.parametrize('key', ['odom', 'camera', 'status', 'encoder'])
def test_each_watchdog_stops_after_its_deadline_and_recovers(key):
    mon = _fresh()
    limit = CFG.timeout(key)
    for other in ('odom', 'camera', 'status', 'encoder'):
        if other != key:
            mon.heard(other, 10.0 + limit + 0.05)
    mon.heard('request', 10.0 + limit + 0.05)
    mon.obstacle(math.inf, 10.0 + limit + 0.05)
    assert not mon.filter(0.2, 0, 0, 10.0 + limit - 0.01).is_zero
    now = 10.0 + limit + 0.06
    stops = mon.stops(now)
    assert list(stops) == [key] and 'deadline' in stops[key].what and stops[key].todo
    assert mon.filter(0.2, 0, 0.3, now).is_zero
    mon.heard(key, now)
    assert not mon.filter(0.2, 0, 0, now).is_zero


def test_a_disabled_watchdog_never_stops():
    cfg = SafetyConfig(status_timeout_s=0.0, encoder_timeout_s=0.0, obstacle_check=False)
    mon = SafetyMonitor(cfg)
    mon.heard('odom', 0.0)
    mon.heard('camera', 0.0)
    assert mon.stops(0.1) == {}
    assert mon.stops(1.0).keys() == {'odom', 'camera'}


def test_inputs_never_seen_are_startup_stops():
    mon = SafetyMonitor(CFG)
    stops = mon.stops(0.0)
    assert set(stops) == {'odom', 'camera', 'status', 'encoder'}
    assert all(s.startup and 'received yet' in s.what for s in stops.values())


def test_estop_latches_until_reset():
    mon = _fresh()
    assert mon.engage_estop('test') and not mon.engage_estop('again')
    for dt in (0.0, 0.01, 0.1):
        mon.heard('request', 10.0 + dt)
        assert mon.filter(0.3, 0, 0.5, 10.0 + dt).is_zero
    assert 'vln/estop' in mon.stops(10.1)['estop'].todo
    assert mon.reset_estop() and not mon.reset_estop()
    assert not mon.filter(0.3, 0, 0.5, 10.1).is_zero


def test_nan_odometry_stops_until_finite_odometry():
    mon = _fresh()
    mon.odometry(False, 10.05, 'pose (nan, 0)')
    stop = mon.stops(10.06)['odom_nan']
    assert 'not finite' in stop.what and 'nan' in stop.what
    assert mon.filter(0.2, 0, 0, 10.06).is_zero
    mon.odometry(True, 10.07)
    assert not mon.filter(0.2, 0, 0, 10.07).is_zero


def test_cancel_holds_until_the_next_goal():
    mon = _fresh()
    mon.cancel()
    assert mon.filter(0.2, 0, 0, 10.0).is_zero and 'cancel' in mon.stops(10.0)
    mon.rearm()
    assert not mon.filter(0.2, 0, 0, 10.0).is_zero


def test_obstacle_blocks_forward_motion_but_not_turning_or_reversing():
    mon = _fresh()
    mon.obstacle(0.10, 10.0)
    cmd = mon.filter(0.3, 0.0, 0.4, 10.01)
    assert cmd.vx == 0.0 and cmd.wz == 0.4 and 'obstacle 0.10 m ahead' in cmd.notes[-1]
    assert mon.filter(-0.1, 0, 0, 10.01).vx == -0.1
    # the braking distance of the requested speed counts: 0.4 m clear stops 0.5 m/s (0.15+0.125)
    mon.obstacle(0.25, 10.0)
    assert mon.filter(0.5, 0, 0, 10.01).vx == 0.0
    assert mon.filter(0.2, 0, 0, 10.01).vx == 0.2
    # missing or stale obstacle data blocks forward motion too
    assert mon.status(10.01)['forward_blocked'] is False
    late = 10.0 + CFG.obstacle_timeout_s + 0.01
    for key in ('odom', 'camera', 'status', 'encoder', 'request'):
        mon.heard(key, late)
    assert mon.filter(0.2, 0, 0, late).vx == 0.0
    st = mon.status(late)
    assert st['forward_blocked'] is True and 'no fresh obstacle data' in st['blocked_reason']


def test_transitions_are_reported_once():
    mon = _fresh()
    assert mon.update(10.0) == ([], [])
    began, ended = mon.update(10.45)
    assert {s.key for s in began} == {'odom', 'status', 'encoder'} and not ended
    assert mon.update(10.46) == ([], [])
    mon.heard('odom', 10.47)
    began, ended = mon.update(10.47)
    assert not began and [s.key for s in ended] == ['odom']


def test_request_freshness():
    mon = _fresh()
    assert mon.request_fresh(10.0 + CFG.request_timeout_s - 1e-6)
    assert not mon.request_fresh(10.0 + CFG.request_timeout_s + 0.01)


def test_bad_limits_are_refused():
    with pytest.raises(ValueError, match='max_linear_mps'):
        SafetyConfig(max_linear_mps=math.nan)


# --- candidates ---------------------------------------------------------------------------------

def _camera(w=160, h=120, hfov_deg=90.0, height_m=0.5, pitch_deg=0.0, x_m=0.2) -> CameraModel:
    f = (w / 2) / math.tan(math.radians(hfov_deg) / 2)
    return CameraModel(f, f, (w - 1) / 2, (h - 1) / 2, w, h, height_m, pitch_deg, x_m)


def _wall_depth(cam: CameraModel, wall_x: float, floor: bool = True) -> np.ndarray:
    """Ray-cast a level camera at a wall plane x = wall_x (base frame) above a floor."""
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(float)
    th = math.radians(cam.pitch_deg)
    # ray direction in the base frame for each pixel (optical z = 1)
    yo = (v - cam.cy) / cam.fy
    fwd = math.cos(th) - yo * math.sin(th)
    up = -yo * math.cos(th) - math.sin(th)
    t_wall = (wall_x - cam.x_m) / fwd                # scale along the ray (= z-depth)
    depth = np.where(fwd > 0, t_wall, np.inf)
    if floor:
        t_floor = np.where(up < 0, cam.height_m / -np.minimum(up, -1e-9), np.inf)
        depth = np.minimum(depth, t_floor)
    return depth.astype(np.float32)


def test_headings_are_twelve_30_degrees_apart_counter_clockwise():
    h = np.degrees(headings())
    assert len(h) == 12 and h[0] == 0 and h[1] == pytest.approx(30) and h[3] == pytest.approx(90)
    assert h[9] == pytest.approx(-90)


def test_depth_points_land_where_the_geometry_says():
    cam = _camera(pitch_deg=20.0)
    depth = _wall_depth(cam, wall_x=2.0)
    pts = depth_points(depth, cam)
    on_wall = pts[np.abs(pts[:, 0] - 2.0) < 1e-4]
    on_floor = pts[np.abs(pts[:, 2]) < 1e-4]
    assert len(on_wall) + len(on_floor) == len(pts) and len(on_wall) and len(on_floor)


def test_wall_ahead_gives_the_clear_distance_from_the_front_and_floor_is_ignored():
    cam = _camera(hfov_deg=90.0)
    fp = Footprint(0.6, 0.3)
    cands = candidates_from_depth(_wall_depth(cam, wall_x=1.5), cam, fp)
    by_deg = {round(c.heading_deg): c for c in cands}
    assert by_deg[0].free_m == pytest.approx(1.5 - 0.3, abs=0.01)
    # +-30 deg: the corridor's near edge meets the wall first
    half_w = 0.15 + CandidateConfig().lateral_margin_m
    expect = (1.5 - half_w * math.sin(math.radians(30))) / math.cos(math.radians(30)) - 0.3
    assert by_deg[30].free_m == pytest.approx(expect, abs=0.02)
    assert by_deg[-30].free_m == pytest.approx(expect, abs=0.02)
    # outside the 90 deg field of view: unknown, said so
    unknown = [d for d, c in by_deg.items() if not c.known]
    assert sorted(unknown) == sorted([60, 90, 120, 150, 180, -150, -120, -90, -60])
    assert by_deg[90].as_dict() == {'heading_deg': 90.0, 'known': False, 'free_m': None}
    # only floor in view (no wall): capped at the maximum range
    floor_only = candidates_from_depth(_wall_depth(cam, wall_x=1e6), cam, fp)
    assert floor_only[0].free_m == CandidateConfig().max_range_m


def test_footprint_width_decides_what_is_in_the_way():
    pts = np.array([[1.3, 0.25]])                  # a post 0.25 m left of the centre line
    narrow = candidates_from_points(pts, Footprint(0.6, 0.3), CandidateConfig())
    wide = candidates_from_points(pts, Footprint(0.6, 0.6), CandidateConfig())
    assert narrow[0].free_m == 3.0                 # 0.15 + 0.05 < 0.25: passes
    assert wide[0].free_m == pytest.approx(1.0)    # 0.30 + 0.05 > 0.25: 1.3 - 0.3
    assert clearance(np.zeros((0, 2)), 0.0, 0.2, 0.3) == math.inf
    assert clearance(np.array([[-1.0, 0.0]]), 0.0, 0.2, 0.3) == math.inf   # behind


def test_own_body_and_overhead_points_are_not_obstacles():
    fp = Footprint(0.6, 0.3)
    pts = np.array([[0.1, 0.0, 0.3],    # inside the footprint: the robot itself
                    [1.0, 0.0, 2.5],    # above the robot
                    [1.0, 0.0, 0.02],   # floor
                    [1.2, 0.0, 0.5]])   # a real obstacle
    keep = obstacle_points(pts, fp, CandidateConfig())
    assert keep.tolist() == [[1.2, 0.0]]


def test_16bit_style_invalid_depth_is_ignored():
    cam = _camera()
    depth = _wall_depth(cam, 1.5)
    depth[:, : cam.width // 2] = np.nan      # half the image without returns
    depth[0, 0] = 0.0
    pts = depth_points(depth, cam)
    assert np.isfinite(pts).all()


def test_scan_points_and_horizon_scan():
    pts = scan_points([1.0, math.inf, 0.01, 2.0], -math.pi / 2, math.pi / 2, range_min=0.05,
                      range_max=10.0, x_m=0.1)
    assert pts.shape == (2, 2)
    assert pts[0] == pytest.approx([0.1, -1.0], abs=1e-9)
    assert pts[1] == pytest.approx([0.1 - 2.0, 0.0], abs=1e-9)      # the beam at 180 deg
    for pitch in (0.0, 15.0):
        cam = _camera(pitch_deg=pitch, x_m=0.0)
        a0, inc, ranges = horizon_scan(_wall_depth(cam, 2.0, floor=False), cam)
        angles = a0 + inc * np.arange(len(ranges))
        assert a0 == pytest.approx(-math.pi / 4) and angles[-1] == pytest.approx(math.pi / 4)
        mid = len(ranges) // 2
        assert ranges[mid] == pytest.approx(2.0 / math.cos(angles[mid]), rel=0.02)
        assert ranges[0] == pytest.approx(2.0 / math.cos(angles[0]), rel=0.03)
    with pytest.raises(ValueError, match='level'):
        horizon_scan(np.ones((120, 160)), _camera(pitch_deg=80.0))


def test_the_safety_core_never_imports_rclpy():
    # (every ROS-free package is checked in test_core; this file's modules once more, quickly)
    assert static_ros_imports(['vln_stack.core.safety', 'vln_stack.core.candidates']) == []


def test_candidate_messages_in_the_odom_frame():
    import json

    from vln_stack.core.geometry import Pose2D
    from vln_stack.ros.candidates import candidate_msgs

    cands = candidates_from_points(np.array([[1.3, 0.0]]), Footprint(0.6, 0.3), CandidateConfig(),
                                   fov_rad=math.radians(90))
    robot = Pose2D(2.0, 1.0, math.pi / 2)          # facing +y in the odom frame
    from builtin_interfaces.msg import Time
    poses, markers, info = candidate_msgs(cands, robot, Time(sec=3), 'odom', red_below_m=0.5)
    assert poses.header.stamp.sec == 3
    assert poses.header.frame_id == 'odom' and len(poses.poses) == 12
    ahead = poses.poses[0].position                # free 1.0 m along +y
    assert (ahead.x, ahead.y) == pytest.approx((2.0, 2.0), abs=1e-9)
    back = poses.poses[6].position                 # unknown: left at the robot
    assert (back.x, back.y) == pytest.approx((2.0, 1.0))
    assert len(markers.markers) == 24
    labels = [m.text for m in markers.markers if m.text]
    assert '0: 1.00 m' in labels and '180: unknown' in labels
    data = json.loads(info.data)
    assert data['candidates'][0] == {'heading_deg': 0.0, 'known': True, 'free_m': 1.0}
    assert data['candidates'][3]['known'] is False
