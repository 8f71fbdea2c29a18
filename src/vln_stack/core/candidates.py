"""Candidate waypoints from geometry: how far the robot could drive along each of 12 headings.

D3D-VLP (section 3.1) chooses among navigable candidate waypoints proposed for 12 headings 30 deg
apart; here the candidates come from a depth image (or any obstacle points) instead of a learned
predictor. ROS-free: numpy arrays and dataclasses in and out.

Frames (REP-103/105): the base frame has x forward, y left, z up, its origin on the ground at
the centre of the footprint. A heading is an angle in the base frame, counter-clockwise positive
(0 = straight ahead, +pi/2 = left). The camera follows the ROS optical convention (z forward,
x right, y down), pitched down by ``pitch_deg`` and mounted ``x_m`` forward of the base centre at
``height_m`` above the ground. Depth images hold z-depth in metres (REP-118); 0, NaN and inf are
"no return".

The free distance of a heading is the clear length of a corridor as wide as the footprint (plus a
lateral margin), measured from the front edge of the footprint once the robot faces that heading.
Points on the floor (below ``floor_clearance_m``) and above ``max_obstacle_height_m`` are ignored,
and so are points inside the footprint (the robot's own body). Headings outside the sensor's
horizontal field of view are *unknown*: the sensor says nothing about them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import wrap_angle


@dataclass(frozen=True)
class CameraModel:
    """A pinhole depth camera on the base (pixels, metres, degrees)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    height_m: float = 0.38       # optical centre above the ground
    pitch_deg: float = 0.0       # tilted down (positive) from level
    x_m: float = 0.0             # forward of the base centre
    y_m: float = 0.0             # left of the base centre

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0 and self.width > 0 and self.height > 0):
            raise ValueError(f'bad camera intrinsics: fx={self.fx} fy={self.fy} '
                             f'{self.width}x{self.height}')

    @property
    def hfov_rad(self) -> float:
        """Horizontal field of view."""
        return 2.0 * math.atan(self.width / (2.0 * self.fx))


@dataclass(frozen=True)
class Footprint:
    length_m: float
    width_m: float

    @property
    def front_m(self) -> float:
        return self.length_m / 2.0


@dataclass(frozen=True)
class CandidateConfig:
    n_headings: int = 12                 # 30 deg apart (D3D-VLP)
    max_range_m: float = 3.0             # free distances are capped here
    lateral_margin_m: float = 0.05       # added on each side of the footprint's width
    floor_clearance_m: float = 0.08      # points lower than this are floor
    max_obstacle_height_m: float = 2.0   # points higher than this cannot be hit
    max_depth_m: float = 10.0            # depth beyond this is "no return"
    stride: int = 2                      # use every stride-th pixel in both directions


@dataclass(frozen=True)
class Candidate:
    """One heading: the free distance in metres, or ``None`` when the sensor cannot see it."""

    heading_rad: float
    free_m: float | None

    @property
    def known(self) -> bool:
        return self.free_m is not None

    @property
    def heading_deg(self) -> float:
        return math.degrees(self.heading_rad)

    def as_dict(self) -> dict:
        return {'heading_deg': round(self.heading_deg, 1), 'known': self.known,
                'free_m': None if self.free_m is None else round(self.free_m, 3)}


def headings(n: int = 12) -> np.ndarray:
    """``n`` headings, evenly spaced from 0 (ahead) counter-clockwise, in (-pi, pi]."""
    return np.array([math.remainder(2.0 * math.pi * i / n, 2.0 * math.pi) for i in range(n)])


def depth_points(depth_m: np.ndarray, cam: CameraModel, *, stride: int = 1,
                 max_depth_m: float = 10.0) -> np.ndarray:
    """Depth image [H, W] (z-depth, metres) -> [N, 3] points (x, y, z) in the base frame.

    Pixels without a valid return (0, NaN, inf, beyond ``max_depth_m``) are dropped.
    """
    if depth_m.ndim != 2:
        raise ValueError(f'expected an HxW depth image, got shape {depth_m.shape}')
    s = max(1, int(stride))
    d = np.asarray(depth_m[::s, ::s], dtype=np.float64)
    v, u = np.mgrid[0:depth_m.shape[0]:s, 0:depth_m.shape[1]:s]
    ok = np.isfinite(d) & (d > 0.0) & (d <= max_depth_m)
    d, u, v = d[ok], u[ok], v[ok]
    xo = (u - cam.cx) / cam.fx * d        # optical: x right, y down, z forward
    yo = (v - cam.cy) / cam.fy * d
    th = math.radians(cam.pitch_deg)
    c, sn = math.cos(th), math.sin(th)
    forward = d * c - yo * sn
    up = -yo * c - d * sn
    return np.stack([cam.x_m + forward, cam.y_m - xo, cam.height_m + up], axis=1)


def obstacle_points(points: np.ndarray, footprint: Footprint, cfg: CandidateConfig) -> np.ndarray:
    """[N, 3] base-frame points -> [M, 2] (x, y) of those the robot could hit."""
    if points.size == 0:
        return np.zeros((0, 2))
    z = points[:, 2]
    keep = (z >= cfg.floor_clearance_m) & (z <= cfg.max_obstacle_height_m)
    inside = (np.abs(points[:, 0]) <= footprint.length_m / 2) & \
        (np.abs(points[:, 1]) <= footprint.width_m / 2)
    return points[keep & ~inside, :2]


def scan_points(ranges: np.ndarray, angle_min: float, angle_increment: float, *,
                range_min: float = 0.0, range_max: float = math.inf, x_m: float = 0.0,
                y_m: float = 0.0, yaw_rad: float = 0.0) -> np.ndarray:
    """A planar LaserScan (sensor at (x_m, y_m), rotated yaw_rad in the base frame) -> [N, 2]
    base-frame (x, y) points of the valid returns."""
    r = np.asarray(ranges, dtype=np.float64)
    a = angle_min + angle_increment * np.arange(r.size) + yaw_rad
    ok = np.isfinite(r) & (r >= max(range_min, 1e-6)) & (r <= range_max)
    r, a = r[ok], a[ok]
    return np.stack([x_m + r * np.cos(a), y_m + r * np.sin(a)], axis=1)


def clearance(points_xy: np.ndarray, heading_rad: float, half_width_m: float,
              front_m: float) -> float:
    """Clear distance (>= 0, inf when nothing is there) from the front edge of a robot facing
    ``heading_rad`` to the nearest point in its corridor of half-width ``half_width_m``."""
    if points_xy.size == 0:
        return math.inf
    c, s = math.cos(heading_rad), math.sin(heading_rad)
    along = points_xy[:, 0] * c + points_xy[:, 1] * s
    lateral = -points_xy[:, 0] * s + points_xy[:, 1] * c
    hit = (along > 0.0) & (np.abs(lateral) <= half_width_m)
    if not hit.any():
        return math.inf
    return max(0.0, float(along[hit].min()) - front_m)


def corridor_clearance(points_xy: np.ndarray, footprint: Footprint, lateral_margin_m: float,
                       heading_rad: float = 0.0) -> float:
    """The clear distance along ``heading_rad`` (0 = straight ahead) for this footprint: the
    corridor is the footprint's width plus ``lateral_margin_m`` on each side, measured from its
    front edge. The one definition of "clearance ahead": the waypoint node's forward-move refusal
    reads it through the heading-0 candidate, the safety node's obstacle stop directly."""
    return clearance(points_xy, heading_rad, footprint.width_m / 2 + lateral_margin_m,
                     footprint.front_m)


def candidates_from_points(points_xy: np.ndarray, footprint: Footprint, cfg: CandidateConfig,
                           *, fov_center_rad: float = 0.0,
                           fov_rad: float = 2.0 * math.pi) -> list[Candidate]:
    """Free distance per heading from obstacle points seen by a sensor covering ``fov_rad``
    around ``fov_center_rad`` (headings outside it are unknown)."""
    out = []
    for h in headings(cfg.n_headings):
        if abs(wrap_angle(h - fov_center_rad)) > fov_rad / 2 + 1e-9:
            out.append(Candidate(float(h), None))
            continue
        free = corridor_clearance(points_xy, footprint, cfg.lateral_margin_m, float(h))
        out.append(Candidate(float(h), min(free, cfg.max_range_m)))
    return out


def candidates_from_depth(depth_m: np.ndarray, cam: CameraModel, footprint: Footprint,
                          cfg: CandidateConfig = CandidateConfig()) -> list[Candidate]:
    """The 12 candidates from one depth image (headings outside the camera's horizontal field
    of view are unknown)."""
    pts = obstacle_points(depth_points(depth_m, cam, stride=cfg.stride,
                                       max_depth_m=cfg.max_depth_m), footprint, cfg)
    return candidates_from_points(pts, footprint, cfg, fov_rad=cam.hfov_rad)


def horizon_scan(depth_m: np.ndarray, cam: CameraModel,
                 n_beams: int | None = None) -> tuple[float, float, np.ndarray]:
    """A planar scan from the depth image row that looks level (at the camera's height).

    Returns (angle_min, angle_increment, ranges [n_beams]) in a level frame at the camera, beams
    counter-clockwise across the horizontal field of view; no return = inf. Raises ValueError
    when the camera is pitched so far that no row looks level.
    """
    th = math.radians(cam.pitch_deg)
    v = int(round(cam.cy - cam.fy * math.tan(th)))
    if not 0 <= v < depth_m.shape[0]:
        raise ValueError(f'no image row looks level at pitch {cam.pitch_deg} deg')
    n = int(n_beams or cam.width)
    half = cam.hfov_rad / 2
    angles = np.linspace(-half, half, n)
    u = np.clip(np.round(cam.cx - cam.fx * np.tan(angles) / math.cos(th)), 0,
                cam.width - 1).astype(int)
    d = np.asarray(depth_m[v, u], dtype=np.float64)
    ranges = d / (np.cos(angles) * math.cos(th))
    ranges[~(np.isfinite(d) & (d > 0))] = math.inf
    inc = float(angles[1] - angles[0]) if n > 1 else 0.0
    return float(angles[0]), inc, ranges
