"""Seeded episodes on procedural worlds (:mod:`vln_stack.sim.procgen`) with varied instructions,
and train / validation splits on disjoint layout seeds.

The reference path is planned as in :mod:`.make_episodes` (occupancy grid, A*, shortening); the
instruction describes it: the first turn, the doors it goes through (and the room it enters),
the lanes between crop rows it drives down, the turns (at a landmark when one is near), the
landmarks it passes, and where to stop relative to the goal landmark, named by colour and kind
("the red armchair"). The goal is next to that landmark, and nearer to it than to any other.

    python -m vln_stack.tools.eval.make_procedural --out DIR --train-layouts 20 \\
        --val-layouts 5 --episodes-per-layout 4 --seed 0

writes DIR/train.yaml and DIR/val.yaml in the format of config/episodes/*.yaml.
"""
from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np
import yaml

from ...sim.procgen import DOOR_WIDTH_M, STYLES, Layout, layout, world_name
from .make_episodes import (Grid, _line_free, _side, astar, episode_dict, occupancy,
                            shorten)

TRAIN_SEEDS = range(0, 100_000)          # layout seeds of the train split
VAL_SEEDS = range(100_000, 200_000)      # layout seeds of the validation split (unseen layouts)
# Path clearance (m) from obstacles: more than half the diagonal of the largest base (agri,
# 0.9 x 0.6 m), so a robot can turn anywhere on the path and stops short of the goal landmark.
CLEARANCE_M = 0.65

DOOR = ('go through the door', 'go through the doorway into {room}',
        'walk through the door into {room}', 'head through the doorway')
TURN = ('turn {side}', 'turn {side} at {lm}', 'take a {side} at {lm}', 'turn {side} after {lm}')
PASS = ('walk past {lm}', 'go past {lm} on your {side}', 'pass {lm}',
        'keep going past {lm}')
LANE = ('drive down the lane between the crop rows', 'follow the lane along the rows',
        'go along the crop rows')
STOP = ('stop beside {lm}', 'stop in front of {lm}', 'stop next to {lm}', 'wait by {lm}',
        'stop when you reach {lm}')
START = {'straight ahead': ('go straight ahead', 'walk forward', ''),
         'behind you': ('turn around', 'turn back'),
         'on your left': ('turn left', 'face left'), 'on your right': ('turn right',
                                                                         'face right')}


def _seg_dist(p, a, b) -> tuple[float, float]:
    """(distance of point ``p`` from segment ``a``-``b``, position along it in [0, 1])."""
    ax, ay = b[0] - a[0], b[1] - a[1]
    t = ((p[0] - a[0]) * ax + (p[1] - a[1]) * ay) / max(ax * ax + ay * ay, 1e-9)
    t = min(max(t, 0.0), 1.0)
    return math.dist(p, (a[0] + t * ax, a[1] + t * ay)), t


def _heading(a, b) -> float:
    return math.atan2(b[1] - a[1], b[0] - a[0])


def _crossing(door, a, b) -> float | None:
    """Where (fraction in [0, 1]) segment ``a``-``b`` goes through ``door``, or None."""
    k = 1 if door[2] == 'x' else 0              # the coordinate that changes through the door
    if (a[k] - door[k]) * (b[k] - door[k]) >= 0:
        return None
    t = (door[k] - a[k]) / (b[k] - a[k])
    along = a[1 - k] + t * (b[1 - k] - a[1 - k])
    return t if abs(along - door[1 - k]) <= DOOR_WIDTH_M / 2 else None


def _room_at(lay: Layout, p) -> str:
    for name, (x0, y0, x1, y1) in lay.rooms:
        if x0 < p[0] < x1 and y0 < p[1] < y1:
            return name
    return 'the next room'


def _lm_xy(lay: Layout, name: str) -> tuple[float, float]:
    p = lay.world.primitive(name)
    return p.pos[0], p.pos[1]


def lm_distance(lay: Layout, name: str, p) -> float:
    """Distance (m) from point ``p`` to the footprint of landmark ``name``'s main geom."""
    shape, v = lay.world.primitive(name).footprint()
    if shape == 'rect':
        return math.hypot(max(v[0] - p[0], 0, p[0] - v[2]), max(v[1] - p[1], 0, p[1] - v[3]))
    return max(math.dist(p, v[:2]) - v[2], 0.0)


def _turns(pts: list, min_leg_m: float = 1.0) -> list[tuple]:
    """(arc length m, turn angle rad, waypoint) of the path's turns; the jogs of legs shorter
    than ``min_leg_m`` add up into the next turn."""
    out, s, pending = [], 0.0, 0.0
    for a, b, c in zip(pts[:-2], pts[1:-1], pts[2:]):
        s += math.dist(a, b)
        pending += (_heading(b, c) - _heading(a, b) + math.pi) % (2 * math.pi) - math.pi
        if math.dist(b, c) >= min_leg_m:
            if abs(pending) > math.radians(40):
                out.append((s, pending, b))
            pending = 0.0
    return out


def path_events(lay: Layout, pts: list, target: str) -> list[tuple]:
    """Doors, turns and passed landmarks along ``pts``, in order: (arc length m, kind, data)."""
    events, used, s = [], {target}, 0.0
    for a, b in zip(pts[:-1], pts[1:]):
        seg = math.dist(a, b)
        for door in lay.doors:
            t = _crossing(door, a, b)
            if t is not None:
                u = (b[0] - a[0]) / seg, (b[1] - a[1]) / seg
                room = _room_at(lay, (door[0] + 0.6 * u[0], door[1] + 0.6 * u[1]))
                events.append((s + t * seg, 'door', room))
        mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        if seg > 3.0 and abs(b[1] - a[1]) < 0.3 * seg and _room_at(lay, mid) == 'the crop rows':
            events.append((s, 'lane', None))
        for name in lay.landmarks:
            d, t = _seg_dist(_lm_xy(lay, name), a, b)
            if name not in used and d < 1.6 and 0.1 < t < 0.9:
                side = _side(_heading(a, b), _heading(a, _lm_xy(lay, name)))
                used.add(name)
                events.append((s + t * seg, 'pass', (name, side.split()[-1])))
        s += seg
    for s_turn, angle, at in _turns(pts):
        near = [n for n in lay.landmarks if n not in used and lm_distance(lay, n, at) < 1.5]
        used.update(near[:1])
        events.append((s_turn, 'turn', ('left' if angle > 0 else 'right', near[:1])))
    return sorted(events, key=lambda e: e[0])


def describe(lay: Layout, pts: list, yaw: float, target: str, rng: random.Random) -> tuple:
    """(instruction text, landmark names it mentions) for the path ``pts`` from heading ``yaw``."""
    clauses, named = [], [target]
    first = rng.choice(START[_side(yaw, _heading(pts[0], pts[1]))])
    if first:
        clauses.append(first)
    events = path_events(lay, pts, target)
    passes = [e for e in events if e[1] == 'pass']
    n_pass = 2 if len(events) - len(passes) < 3 else 1
    keep = {id(e) for e in rng.sample(passes, min(len(passes), n_pass))}
    for event in events:
        _, kind, data = event
        if kind == 'door':
            clauses.append(rng.choice(DOOR).format(room=data))
        elif kind == 'lane':
            clauses.append(rng.choice(LANE))
        elif kind == 'turn':
            side, near = data
            text = rng.choice(TURN if near else TURN[:1])
            clauses.append(text.format(side=side, lm=lay.landmarks[near[0]] if near else ''))
            named += near if '{lm}' in text else []
        elif id(event) in keep:
            name, side = data
            text = rng.choice(PASS if side in ('left', 'right') else PASS[:1])
            clauses.append(text.format(lm=lay.landmarks[name], side=side))
            named.append(name)
    clauses.append(rng.choice(STOP).format(lm=lay.landmarks[target]))
    return _sentence(clauses, rng), named


def _sentence(clauses: list[str], rng: random.Random) -> str:
    """One instruction from ``clauses``: varied joiners, capitalised, ends with a full stop."""
    text = clauses[0]
    for i, clause in enumerate(clauses[1:], start=2):
        joiner = rng.choice((' and ', ', then ', '. Then ') if i == len(clauses)
                            else (', ', ', then '))
        text += joiner + clause
    return text[0].upper() + text[1:] + '.'


def _goal_near(lay: Layout, roomy: Grid, target: str, rng: random.Random, standoff_m: float):
    """A goal ``standoff_m`` from ``target``, free on the ``roomy`` grid (a robot facing any way
    stops short of every obstacle), nearer to it than to any other landmark; or None."""
    x, y = _lm_xy(lay, target)
    angle, r = rng.uniform(-math.pi, math.pi), 0.0
    while lm_distance(lay, target, (x + r * math.cos(angle), y + r * math.sin(angle))) \
            < standoff_m:
        r += 0.05
    goal = (round(x + r * math.cos(angle), 2), round(y + r * math.sin(angle), 2))
    if not roomy.is_free(*goal):
        return None
    mine = lm_distance(lay, target, goal)
    if any(lm_distance(lay, n, goal) <= mine + 0.2 for n in lay.landmarks if n != target):
        return None
    return goal


def layout_episodes(world: str, n: int, seed: int = 0, *, clearance_m: float = CLEARANCE_M,
                    min_path_m: float = 4.0, success_radius_m: float = 1.0,
                    start_margin_m: float = 0.35, prefix: str = '') -> list[dict]:
    """``n`` episodes on the procedural ``world`` as dicts in the episode-file format; the
    start and the goal are ``start_margin_m`` further than ``clearance_m`` from every obstacle
    (room to turn on the spot; a robot stops short of the landmark)."""
    rng = random.Random(f'{world}/{seed}')
    lay = layout(world)
    grid = occupancy(world, clearance_m)
    # starts away from obstacles (room to turn on the spot before the first move)
    roomy = occupancy(world, clearance_m + start_margin_m)
    free_cells = np.argwhere(roomy.free)
    episodes: list[dict] = []
    for _ in range(200 * max(n, 1)):
        if len(episodes) == n:
            break
        target = rng.choice(sorted(lay.landmarks))
        goal = _goal_near(lay, roomy, target, rng, clearance_m + start_margin_m + 0.05)
        r, c = free_cells[rng.randrange(len(free_cells))]
        start = grid.point(int(r), int(c))
        cells = astar(grid, grid.cell(*start), grid.cell(*goal)) if goal else []
        if not cells:
            continue
        pts = shorten(grid, [start] + [grid.point(*rc) for rc in cells[1:-1]] + [goal])
        pts = [(round(float(x), 2), round(float(y), 2)) for x, y in pts]
        length = sum(math.dist(a, b) for a, b in zip(pts[:-1], pts[1:]))
        if length < min_path_m or not all(_line_free(grid, a, b)
                                          for a, b in zip(pts[:-1], pts[1:])):
            continue                       # too short, or rounding moved a segment onto a wall
        yaw = math.radians(30 * rng.randrange(12))
        text, named = describe(lay, pts, yaw, target, rng)
        episode_id = f'{prefix or world.replace("/", "_")}_{len(episodes):03d}'
        episodes.append(episode_dict(episode_id, world, text, pts, yaw, length,
                                     success_radius_m, named))
    if len(episodes) < n:
        raise RuntimeError(f'only {len(episodes)} of {n} episodes found in {world}')
    return episodes


def layout_seeds(n: int, seeds: range, seed: int) -> list[int]:
    """``n`` distinct layout seeds drawn from ``seeds`` (reproducible for ``seed``)."""
    return sorted(random.Random(f'{seeds.start}/{seed}').sample(seeds, n))


def make_split(split: str, n_layouts: int, per_layout: int, seed: int = 0,
               styles: tuple[str, ...] = STYLES, **kw) -> list[dict]:
    """Episodes of one split ('train' or 'val') on its own layout seeds, styles in turn."""
    seeds = layout_seeds(n_layouts, TRAIN_SEEDS if split == 'train' else VAL_SEEDS, seed)
    out: list[dict] = []
    for i, s in enumerate(seeds):
        style = styles[i % len(styles)]
        out += layout_episodes(world_name(style, s), per_layout, seed,
                               prefix=f'{split}_{style}_{s}', **kw)
    return out


def write_episodes(path: Path, episodes: list[dict], header: str = '') -> None:
    """Write ``episodes`` with the schema of config/episodes/*.yaml."""
    text = yaml.safe_dump({'world': 'procedural', 'episodes': episodes}, sort_keys=False,
                          width=100, default_flow_style=None)
    Path(path).write_text(header + text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', required=True, help='folder for train.yaml and val.yaml')
    p.add_argument('--train-layouts', type=int, default=20)
    p.add_argument('--val-layouts', type=int, default=5)
    p.add_argument('--episodes-per-layout', type=int, default=4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--styles', nargs='+', choices=STYLES, default=list(STYLES))
    p.add_argument('--min-path-m', type=float, default=4.0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (('train', args.train_layouts), ('val', args.val_layouts)):
        eps = make_split(split, n, args.episodes_per_layout, args.seed, tuple(args.styles),
                         min_path_m=args.min_path_m)
        header = (f'# Generated by: python -m vln_stack.tools.eval.make_procedural --seed '
                  f'{args.seed} ({split}: {n} layouts x {args.episodes_per_layout})\n')
        write_episodes(out / f'{split}.yaml', eps, header)
        print(f'wrote {len(eps)} {split} episodes to {out / f"{split}.yaml"}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
