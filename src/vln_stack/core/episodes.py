"""VLN episodes (instruction, start pose, goal, reference path, success radius) from YAML files."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .geometry import Pose2D


@dataclass(frozen=True)
class Episode:
    episode_id: str
    world: str
    instruction: str
    start: Pose2D
    goal: tuple[float, float]
    reference_path: tuple[tuple[float, float], ...]
    success_radius_m: float = 1.0
    max_steps: int = 200
    landmarks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reference_length_m(self) -> float:
        pts = self.reference_path
        return sum(math.dist(a, b) for a, b in zip(pts[:-1], pts[1:]))


def _episode_from_dict(raw: dict, world: str, source: Path) -> Episode:
    try:
        start = raw['start']
        path = tuple((float(p[0]), float(p[1])) for p in raw['reference_path'])
        goal = (float(raw['goal'][0]), float(raw['goal'][1]))
        ep = Episode(
            episode_id=str(raw['id']),
            world=str(raw.get('world', world)),
            instruction=str(raw['instruction']).strip(),
            start=Pose2D(float(start['x']), float(start['y']),
                         math.radians(float(start.get('yaw_deg', 0.0)))),
            goal=goal,
            reference_path=path,
            success_radius_m=float(raw.get('success_radius_m', 1.0)),
            max_steps=int(raw.get('max_steps', 200)),
            landmarks=tuple(raw.get('landmarks', ())),
        )
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f'{source}: malformed episode {raw.get("id", "?")!r}: {exc!r}') from exc
    if len(ep.reference_path) < 2:
        raise ValueError(f'{source}: episode {ep.episode_id} needs a reference path of >= 2 points')
    if math.dist(ep.reference_path[-1], ep.goal) > 1e-6:
        raise ValueError(f'{source}: episode {ep.episode_id}: reference path must end at the goal')
    if math.dist(ep.reference_path[0], (ep.start.x, ep.start.y)) > 1e-6:
        raise ValueError(f'{source}: episode {ep.episode_id}: reference path must start at start')
    return ep


def load_episodes(path: Path | str) -> list[Episode]:
    """All episodes of one YAML file (top-level ``world`` and ``episodes`` list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'episode file not found: {path}')
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or 'episodes' not in data:
        raise ValueError(f'{path}: expected a mapping with an "episodes" list')
    world = str(data.get('world', ''))
    return [_episode_from_dict(raw, world, path) for raw in data['episodes']]


def find_episode(path: Path | str, episode_id: str = '') -> Episode:
    """One episode by id ('' = the first one in the file)."""
    eps = load_episodes(path)
    if not episode_id:
        return eps[0]
    for ep in eps:
        if ep.episode_id == episode_id:
            return ep
    raise KeyError(f'episode {episode_id!r} not in {path} (have: {[e.episode_id for e in eps]})')
