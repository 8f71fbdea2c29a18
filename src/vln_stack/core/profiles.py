"""Robot profiles (config/robots/<name>.yaml): limits, camera, footprint, remaps, driver needs.

A profile is turned into per-node parameter overrides and topic remappings, used the same way by
the launch files, the demo runner and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .paths import config_dir as default_config_dir

PROFILE_NAMES = ('go2', 'stretch3', 'agri')


@dataclass(frozen=True)
class RobotProfile:
    name: str
    description: str
    limits: dict[str, float]
    camera: dict[str, Any]
    footprint: dict[str, float]
    remaps: dict[str, str] = field(default_factory=dict)
    driver: dict[str, Any] = field(default_factory=dict)
    safety: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)   # model: planar | go2 | stretch3

    @property
    def camera_x_m(self) -> float:
        """Camera position forward of the base centre (default: where the simulator mounts it,
        0.4 x the footprint length; see sim.worlds.RobotBody.camera_offset)."""
        return float(self.camera.get('x_m', 0.4 * float(self.footprint['length_m'])))

    def geometry_params(self) -> dict[str, float]:
        """Camera and footprint geometry, as the waypoint and safety nodes take it."""
        return {'camera_height_m': float(self.camera['height_m']),
                'camera_pitch_deg': float(self.camera.get('pitch_deg', 0.0)),
                'camera_x_m': self.camera_x_m,
                'footprint_length_m': float(self.footprint['length_m']),
                'footprint_width_m': float(self.footprint['width_m'])}

    def node_params(self) -> dict[str, dict[str, Any]]:
        """Per-node parameter overrides implied by this profile."""
        cam = self.camera
        safety = self.safety
        return {
            'waypoint': {
                **self.geometry_params(),
                'obstacle_margin_m': float(safety.get('obstacle_margin_m', 0.3)),
            },
            'safety': {
                **{k: float(self.limits[k]) for k in ('max_linear_mps', 'max_angular_rps',
                                                      'max_linear_accel_mps2')},
                **self.geometry_params(),
                'obstacle_source': str(safety.get('obstacle_source', 'none')),
                'obstacle_stop_m': float(safety.get('obstacle_stop_m', 0.15)),
                'scan_x_m': float(safety.get('scan_x_m', 0.0)),
                'scan_yaw_deg': float(safety.get('scan_yaw_deg', 0.0)),
            },
            'velocity_controller': {
                **{k: float(v) for k, v in self.limits.items()},
                'mode_service': str(self.driver.get('mode_service', '')),
            },
            'sim_bridge': {
                'camera_height_m': float(cam['height_m']),
                'hfov_deg': float(cam['hfov_deg']),
                'camera_pitch_deg': float(cam.get('pitch_deg', 0.0)),
                'footprint_length_m': float(self.footprint['length_m']),
                'footprint_width_m': float(self.footprint['width_m']),
                'sim_model': str(self.sim.get('model', 'planar')),
            },
            'camera_ingest': {
                'input_compressed': bool(cam.get('compressed', False)),
            },
        }

    def robot_remaps(self) -> dict[str, str]:
        """Remappings for the real robot (not used in simulation, where the bridge matches us)."""
        out = dict(self.remaps)
        topic = self.camera.get('topic')
        if topic:
            suffix = '/compressed' if self.camera.get('compressed', False) else ''
            out['camera/image_raw' + suffix] = topic
        info = self.camera.get('info_topic')
        if info:
            out['camera/camera_info'] = info
        for key, ours in (('depth_topic', 'camera/depth/image_raw'),
                          ('depth_info_topic', 'camera/depth/camera_info'),
                          ('scan_topic', 'scan')):
            theirs = self.camera.get(key) or self.safety.get(key)
            if theirs:
                out[ours] = str(theirs)
        return out


_REQUIRED_LIMITS = ('max_linear_mps', 'max_angular_rps', 'max_linear_accel_mps2',
                    'max_angular_accel_rps2')


def load_profile(name_or_path: str, config_dir: Path | None = None) -> RobotProfile:
    """A profile by short name (``go2``, ``stretch3``, ``agri``) or by YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        if config_dir is None:
            config_dir = default_config_dir()
        path = config_dir / 'robots' / f'{name_or_path}.yaml'
    if not path.is_file():
        raise FileNotFoundError(f'robot profile not found: {path} (profiles: {PROFILE_NAMES})')
    raw = yaml.safe_load(path.read_text()) or {}
    try:
        limits = {k: float(v) for k, v in raw['limits'].items()}
        missing = [k for k in _REQUIRED_LIMITS if k not in limits]
        if missing:
            raise KeyError(f'limits.{missing[0]}')
        prof = RobotProfile(
            name=str(raw['robot']), description=str(raw.get('description', '')),
            limits=limits, camera=dict(raw['camera']), footprint=dict(raw['footprint']),
            remaps={str(k): str(v) for k, v in (raw.get('remaps') or {}).items()},
            driver=dict(raw.get('driver') or {}), safety=dict(raw.get('safety') or {}),
            sim=dict(raw.get('sim') or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'{path}: malformed robot profile: missing or bad {exc}') from exc
    for key in ('height_m', 'hfov_deg'):
        if key not in prof.camera:
            raise ValueError(f'{path}: camera.{key} is required')
    return prof
