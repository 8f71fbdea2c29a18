"""Standard VLN metrics: NE, SR, OSR, SPL, nDTW (Anderson et al. 2018; Ilharco et al. 2019)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

Point = tuple[float, float]


def path_length(points: Sequence[Point]) -> float:
    return float(sum(math.dist(a, b) for a, b in zip(points[:-1], points[1:])))


def densify(points: Sequence[Point], spacing_m: float) -> list[Point]:
    """Resample a polyline so consecutive points are at most ``spacing_m`` apart."""
    out: list[Point] = [tuple(points[0])]  # type: ignore[list-item]
    for a, b in zip(points[:-1], points[1:]):
        seg = math.dist(a, b)
        n = max(1, int(math.ceil(seg / spacing_m)))
        for i in range(1, n + 1):
            t = i / n
            out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
    return out


def dtw(query: Sequence[Point], reference: Sequence[Point]) -> float:
    """Dynamic time warping distance with Euclidean point cost."""
    q = np.asarray(query, dtype=float)
    r = np.asarray(reference, dtype=float)
    cost = np.linalg.norm(q[:, None, :] - r[None, :, :], axis=2)
    acc = np.full((len(q) + 1, len(r) + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, len(q) + 1):
        for j in range(1, len(r) + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(acc[-1, -1])


def ndtw(query: Sequence[Point], reference: Sequence[Point], threshold_m: float) -> float:
    """Normalised DTW in (0, 1]: exp(-DTW / (|R| * d_th))."""
    return float(math.exp(-dtw(query, reference) / (len(reference) * threshold_m)))


@dataclass(frozen=True)
class EpisodeMetrics:
    ne_m: float
    success: float
    oracle_success: float
    spl: float
    ndtw: float
    path_length_m: float
    steps: int

    def as_dict(self) -> dict:
        return asdict(self)


def episode_metrics(trajectory: Sequence[Point], reference: Sequence[Point], goal: Point,
                    success_radius_m: float, steps: int,
                    *, ndtw_spacing_m: float = 0.25) -> EpisodeMetrics:
    """Metrics of one episode; ``trajectory`` is the agent's positions, start to end."""
    if len(trajectory) == 0:
        raise ValueError('empty trajectory')
    traj = [tuple(map(float, p)) for p in trajectory]
    if not all(math.isfinite(v) for p in traj for v in p):
        raise ValueError('trajectory contains non-finite positions')
    ne = math.dist(traj[-1], goal)
    success = 1.0 if ne <= success_radius_m else 0.0
    oracle = 1.0 if min(math.dist(p, goal) for p in traj) <= success_radius_m else 0.0
    ref_len = path_length(reference)
    walked = path_length(traj)
    spl = success * ref_len / max(walked, ref_len, 1e-9)
    q = densify(traj, ndtw_spacing_m) if len(traj) > 1 else traj
    r = densify(reference, ndtw_spacing_m)
    return EpisodeMetrics(ne_m=ne, success=success, oracle_success=oracle, spl=spl,
                          ndtw=ndtw(q, r, success_radius_m), path_length_m=walked, steps=steps)
