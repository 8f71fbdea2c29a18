"""Top-down trajectory plot and camera-frame strip (OpenCV only, PNG out)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ...core.episodes import Episode
from ...sim.worlds import get_world


def trajectory_plot(path: Path, episode: Episode, trajectory: Sequence[tuple[float, float]],
                    *, title: str = '', px_per_m: float = 50.0) -> Path:
    prims = get_world(episode.world).primitives
    pts = np.array(list(trajectory) + list(episode.reference_path), dtype=float)
    xs, ys = list(pts[:, 0]), list(pts[:, 1])
    for prim in prims:   # world extent from each primitive's top-down box
        shape, v = prim.footprint()
        box = v if shape == 'rect' else (v[0] - v[2], v[1] - v[2], v[0] + v[2], v[1] + v[2])
        xs += [box[0], box[2]]
        ys += [box[1], box[3]]
    x0, x1, y0, y1 = min(xs) - 0.5, max(xs) + 0.5, min(ys) - 0.5, max(ys) + 0.5
    w, h = int((x1 - x0) * px_per_m), int((y1 - y0) * px_per_m) + 40
    img = np.full((h, w, 3), 250, np.uint8)

    def px(x: float, y: float) -> tuple[int, int]:
        return int((x - x0) * px_per_m), int(40 + (y1 - y) * px_per_m)

    for prim in sorted(prims, key=lambda p: p.pos[2]):
        color = tuple(int(255 * c) for c in prim.rgba[2::-1])  # RGB -> BGR
        shape, v = prim.footprint()
        if shape == 'rect':
            cv2.rectangle(img, px(v[0], v[3]), px(v[2], v[1]), color, -1)
        else:
            cv2.circle(img, px(v[0], v[1]), max(1, int(v[2] * px_per_m)), color, -1)
    gx, gy = episode.goal
    cv2.circle(img, px(gx, gy), int(episode.success_radius_m * px_per_m), (0, 160, 0), 2)
    ref = np.array([px(*p) for p in episode.reference_path], np.int32)
    cv2.polylines(img, [ref], False, (0, 180, 0), 2)
    if len(trajectory) > 1:
        tr = np.array([px(*p) for p in trajectory], np.int32)
        cv2.polylines(img, [tr], False, (200, 60, 0), 2)
    sx, sy = episode.start.x, episode.start.y
    cv2.circle(img, px(sx, sy), 6, (0, 0, 0), -1)
    ex, ey = px(sx + 0.5 * math.cos(episode.start.yaw), sy + 0.5 * math.sin(episode.start.yaw))
    cv2.arrowedLine(img, px(sx, sy), (ex, ey), (0, 0, 0), 2)
    if trajectory:
        cv2.drawMarker(img, px(*trajectory[-1]), (0, 0, 220), cv2.MARKER_TILTED_CROSS, 14, 3)
    cv2.putText(img, title or episode.episode_id, (8, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, 'green: reference + success radius   blue: robot   x: end', (8, h - 8),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)
    return path


def frame_strip(path: Path, frames: Sequence[tuple[str, np.ndarray]], *, max_frames: int = 8,
                height: int = 120) -> Path | None:
    """Up to ``max_frames`` RGB frames, evenly spaced, side by side with their labels."""
    if not frames:
        return None
    idx = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    tiles = []
    for i in idx:
        label, rgb = frames[int(i)]
        scale = height / rgb.shape[0]
        tile = cv2.resize(rgb[:, :, ::-1], (int(rgb.shape[1] * scale), height))
        cv2.rectangle(tile, (0, 0), (tile.shape[1], 18), (0, 0, 0), -1)
        cv2.putText(tile, label, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.hstack(tiles))
    return path
