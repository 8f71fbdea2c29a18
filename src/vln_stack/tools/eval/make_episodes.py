"""Generate VLN episodes for the simulator worlds: start pose, landmark goal, reference path.

The reference path is the shortest path on an occupancy grid of the world's collidable geoms,
inflated by a clearance, then shortened where the straight line stays free. Instructions name
the goal landmark (and the first turn), so a language-following policy has what it needs.

    python -m vln_stack.tools.eval.make_episodes --world indoor --n 10 --seed 1 \\
        --out my_episodes.yaml
"""
from __future__ import annotations

import argparse
import heapq
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ...sim.worlds import get_world

# Landmark geoms per world and how an instruction names them.
LANDMARKS: dict[str, dict[str, str]] = {
    'indoor': {'red_bin': 'the red bin', 'white_fridge': 'the white fridge',
               'wooden_table': 'the wooden table', 'green_plant_pot': 'the green plant',
               'yellow_chair': 'the yellow chair', 'blue_sofa': 'the blue sofa',
               'black_tv': 'the black television', 'orange_shelf': 'the orange shelf'},
    'farm': {'red_barrel': 'the red barrel', 'blue_water_tank': 'the blue water tank',
             'white_shed': 'the white shed'},
    'greenhouse': {'blue_watering_cart': 'the blue watering cart',
                   'red_toolbox': 'the red toolbox', 'yellow_hose_reel': 'the yellow hose reel',
                   'white_water_tank': 'the white water tank',
                   'orange_crates': 'the orange crates'},
}
SKIP_PREFIXES = ('wall', 'floor', 'crop', 'fence', 'soil', 'ground', 'bench', 'glass', 'pot_',
                 'plant_', 'frame', 'roof', 'path', 'aisle')


@dataclass
class Grid:
    origin: tuple[float, float]
    res: float
    free: np.ndarray          # [H, W] bool, True = the base fits here

    def cell(self, x: float, y: float) -> tuple[int, int]:
        return int((y - self.origin[1]) / self.res), int((x - self.origin[0]) / self.res)

    def point(self, r: int, c: int) -> tuple[float, float]:
        return (float(self.origin[0] + (c + 0.5) * self.res),
                float(self.origin[1] + (r + 0.5) * self.res))

    def is_free(self, x: float, y: float) -> bool:
        r, c = self.cell(x, y)
        return 0 <= r < self.free.shape[0] and 0 <= c < self.free.shape[1] and bool(self.free[r, c])


def occupancy(world: str, clearance_m: float, res: float = 0.1) -> Grid:
    prims = get_world(world).primitives
    xs = [p.pos[0] for p in prims]
    ys = [p.pos[1] for p in prims]
    x0, x1 = min(xs) - 3, max(xs) + 3
    y0, y1 = min(ys) - 3, max(ys) + 3
    w, h = int((x1 - x0) / res), int((y1 - y0) / res)
    cx = x0 + (np.arange(w) + 0.5) * res
    cy = y0 + (np.arange(h) + 0.5) * res
    X, Y = np.meshgrid(cx, cy)
    free = np.ones((h, w), bool)
    for prim in (p for p in prims if p.collide):
        shape, v = prim.footprint()
        if shape == 'rect':
            dx = np.maximum(np.maximum(v[0] - X, X - v[2]), 0)
            dy = np.maximum(np.maximum(v[1] - Y, Y - v[3]), 0)
            free &= np.hypot(dx, dy) > clearance_m
        else:
            free &= np.hypot(X - v[0], Y - v[1]) > v[2] + clearance_m
    # Only the region enclosed by the world's outer geoms counts (no driving off the map).
    inner = (X > min(xs)) & (X < max(xs)) & (Y > min(ys)) & (Y < max(ys))
    return Grid((x0, y0), res, free & inner)


def astar(grid: Grid, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    if not (grid.free[start] and grid.free[goal]):
        return []
    moves = [(-1, 0, 1.0), (1, 0, 1.0), (0, -1, 1.0), (0, 1, 1.0),
             (-1, -1, 1.414), (-1, 1, 1.414), (1, -1, 1.414), (1, 1, 1.414)]
    openq = [(0.0, start)]
    came: dict = {start: None}
    cost = {start: 0.0}
    while openq:
        _, cur = heapq.heappop(openq)
        if cur == goal:
            path = []
            while cur is not None:
                path.append(cur)
                cur = came[cur]
            return path[::-1]
        for dr, dc, step in moves:
            nxt = (cur[0] + dr, cur[1] + dc)
            if not (0 <= nxt[0] < grid.free.shape[0] and 0 <= nxt[1] < grid.free.shape[1]):
                continue
            if not grid.free[nxt]:
                continue
            new = cost[cur] + step
            if new < cost.get(nxt, math.inf):
                cost[nxt] = new
                came[nxt] = cur
                heapq.heappush(openq, (new + math.dist(nxt, goal), nxt))
    return []


def _line_free(grid: Grid, a: tuple[float, float], b: tuple[float, float]) -> bool:
    n = max(2, int(math.dist(a, b) / (grid.res / 2)))
    return all(grid.is_free(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
               for t in np.linspace(0, 1, n))


def shorten(grid: Grid, pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out = [pts[0]]
    i = 0
    while i < len(pts) - 1:
        j = len(pts) - 1
        while j > i + 1 and not _line_free(grid, pts[i], pts[j]):
            j -= 1
        out.append(pts[j])
        i = j
    return out


def _side(heading: float, target: float) -> str:
    d = (target - heading + math.pi) % (2 * math.pi) - math.pi
    if abs(d) < math.radians(30):
        return 'straight ahead'
    if abs(d) > math.radians(150):
        return 'behind you'
    return 'on your left' if d > 0 else 'on your right'


def episode_dict(episode_id: str, world: str, instruction: str, pts: list, yaw: float,
                 length: float, success_radius_m: float, landmarks: list[str]) -> dict:
    """One episode in the episode-file format: path ``pts`` (m, from the start to the goal),
    start heading ``yaw`` (rad), path ``length`` (m; sets max_steps at 0.25 m a step, x3)."""
    return {'id': episode_id, 'world': world, 'instruction': instruction,
            'start': {'x': pts[0][0], 'y': pts[0][1], 'yaw_deg': round(math.degrees(yaw), 1)},
            'goal': list(pts[-1]), 'reference_path': [list(p) for p in pts],
            'success_radius_m': success_radius_m,
            'max_steps': int(3 * length / 0.25 + 40), 'landmarks': landmarks}


def make_episodes(world: str, n: int, seed: int = 0, *, clearance_m: float = 0.45,
                  min_path_m: float = 4.0, success_radius_m: float = 1.0,
                  prefix: str = '') -> list[dict]:
    """``n`` episodes in ``world`` as dicts in the episode-file format."""
    rng = random.Random(seed)
    grid = occupancy(world, clearance_m)
    wld = get_world(world)
    names = LANDMARKS.get(world) or {
        p.name: 'the ' + p.name.replace('_', ' ') for p in wld.primitives
        if not p.name.startswith(SKIP_PREFIXES) and p.collide}
    free_cells = np.argwhere(grid.free)
    episodes: list[dict] = []
    tries = 0
    while len(episodes) < n and tries < 200 * max(n, 1):
        tries += 1
        lm = rng.choice(sorted(names))
        prim = wld.primitive(lm)
        pos, size = prim.pos, prim.size
        reach = (max(size[0], size[1]) if prim.kind == 'box' else size[0]) + clearance_m + 0.25
        angle = rng.uniform(-math.pi, math.pi)
        goal = (float(pos[0]) + reach * math.cos(angle), float(pos[1]) + reach * math.sin(angle))
        if not grid.is_free(*goal):
            continue
        r, c = free_cells[rng.randrange(len(free_cells))]
        start = grid.point(int(r), int(c))
        cells = astar(grid, grid.cell(*start), grid.cell(*goal))
        if not cells:
            continue
        pts = [start] + [grid.point(*rc) for rc in cells[1:-1]] + [goal]
        pts = shorten(grid, pts)
        length = sum(math.dist(a, b) for a, b in zip(pts[:-1], pts[1:]))
        if length < min_path_m:
            continue
        yaw = math.radians(30 * rng.randrange(12))
        first = math.atan2(pts[1][1] - pts[0][1], pts[1][0] - pts[0][0])
        text = {'straight ahead': 'Go straight ahead', 'behind you': 'Turn around',
                'on your left': 'Turn left', 'on your right': 'Turn right'}[_side(yaw, first)]
        instruction = f'{text}, find {names[lm]} and stop next to it.'
        pts = [(round(float(x), 2), round(float(y), 2)) for x, y in pts]
        episodes.append(episode_dict(f'{prefix or world}_{len(episodes):03d}', world,
                                     instruction, pts, yaw, length, success_radius_m, [lm]))
    if len(episodes) < n:
        raise RuntimeError(f'only {len(episodes)} of {n} episodes found in {world} after '
                           f'{tries} tries (clearance {clearance_m} m, min path {min_path_m} m)')
    return episodes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--world', required=True)
    p.add_argument('--n', type=int, default=10)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--clearance-m', type=float, default=0.45)
    p.add_argument('--min-path-m', type=float, default=4.0)
    p.add_argument('--success-radius-m', type=float, default=1.0)
    p.add_argument('--prefix', default='')
    p.add_argument('--out', required=True)
    args = p.parse_args(argv)
    eps = make_episodes(args.world, args.n, args.seed, clearance_m=args.clearance_m,
                        min_path_m=args.min_path_m, success_radius_m=args.success_radius_m,
                        prefix=args.prefix)
    header = (f'# Generated by: python -m vln_stack.tools.eval.make_episodes --world {args.world} '
              f'--n {args.n} --seed {args.seed}\n')
    Path(args.out).write_text(header + yaml.safe_dump({'world': args.world, 'episodes': eps},
                                                      sort_keys=False, width=100,
                                                      default_flow_style=None))
    print(f'wrote {len(eps)} episodes to {args.out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
