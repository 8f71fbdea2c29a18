"""Robot profiles (config/robots/<name>.yaml): limits, camera, footprint, remaps, driver needs.

A profile is turned into per-node parameter overrides and topic remappings, used the same way by
the launch files, the demo runner and the tests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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

    def node_params(self) -> dict[str, dict[str, Any]]:
        """Per-node parameter overrides implied by this profile."""
        cam = self.camera
        return {
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
        return out


_REQUIRED_LIMITS = ('max_linear_mps', 'max_angular_rps', 'max_linear_accel_mps2',
                    'max_angular_accel_rps2')


def load_profile(name_or_path: str, config_dir: Path | None = None) -> RobotProfile:
    """A profile by short name (``go2``, ``stretch3``, ``agri``) or by YAML path."""
    path = Path(name_or_path)
    if not path.suffix:
        if config_dir is None:
            from ..tools.procs import config_dir as _cfg
            config_dir = _cfg()
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
            driver=dict(raw.get('driver') or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f'{path}: malformed robot profile: missing or bad {exc}') from exc
    for key in ('height_m', 'hfov_deg'):
        if key not in prof.camera:
            raise ValueError(f'{path}: camera.{key} is required')
    return prof
