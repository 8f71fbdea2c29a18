"""Seeded procedural worlds: multi-room indoor layouts and farm row layouts, as :class:`World`s.

World names ``procedural/indoor/<seed>`` and ``procedural/farm/<seed>`` resolve through
:func:`vln_stack.sim.worlds.get_world` (this module registers them in ``WORLD_MAKERS``; the package
``vln_stack.sim`` imports it), so the simulator bridge, the MJCF and the SDF builders use
them unchanged. The same seed always gives the identical world (a pure function of the name).

* indoor: two rows of rooms (>= 3 rooms in all) either side of a corridor along x; every room has
  a door to the corridor, neighbouring rooms sometimes a door between them; wall and floor
  colours vary per seed. Landmarks stand against the room walls: a colour x a kind (``KINDS``,
  e.g. "the red armchair"), with distractors (the same kind in another colour) and furniture
  that is not a landmark (``clutter_*``).
* farm: crop rows along +x with lanes between them; landmarks at the lane ends.

:class:`Layout` keeps what instructions need besides the geometry: the landmark phrases, the
doors and the rooms. Metres, world frame z up, half sizes as in :mod:`vln_stack.sim.worlds`.
"""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

from .worlds import WORLD_MAKERS, Primitive, World, _box, _cyl, _sphere, _wall

PREFIX = 'procedural/'
STYLES = ('indoor', 'farm')
DOOR_WIDTH_M = 1.8
CORRIDOR_WIDTH_M = 2.2

# Landmark colours: name -> RGBA text.
COLOURS = {'red': '0.85 0.1 0.1 1', 'blue': '0.1 0.25 0.85 1', 'green': '0.1 0.65 0.15 1',
           'yellow': '0.95 0.85 0.1 1', 'orange': '0.95 0.5 0.1 1', 'white': '0.95 0.95 0.95 1',
           'black': '0.08 0.08 0.08 1', 'purple': '0.5 0.15 0.65 1', 'pink': '0.95 0.5 0.7 1'}
# Floor colours of rooms (name -> RGBA text), used in instructions ("the room with the ...").
FLOORS = {'beige': '0.8 0.72 0.58 1', 'grey': '0.5 0.5 0.55 1', 'tan': '0.6 0.45 0.3 1',
          'pale blue': '0.6 0.7 0.85 1', 'pale green': '0.6 0.75 0.6 1',
          'terracotta': '0.7 0.4 0.3 1'}
WALLS = ('0.85 0.83 0.78 1', '0.75 0.8 0.9 1', '0.9 0.8 0.7 1', '0.8 0.88 0.8 1',
         '0.92 0.9 0.85 1')
CLUTTER = ('0.55 0.55 0.55 1', '0.7 0.65 0.55 1', '0.45 0.4 0.35 1')
CORRIDOR = '0.42 0.42 0.4 1'
BROWN = '0.45 0.25 0.1 1'
GREY = '0.3 0.3 0.3 1'


@dataclass(frozen=True)
class Kind:
    """A landmark kind: the noun an instruction uses, its colours and its parts.

    ``half`` is the (hx, hy) half footprint (m); a part is (suffix, shape, size, (dx, dy, z),
    rgba or None for the landmark's colour); the part with suffix '' is the landmark itself.
    """

    noun: str
    colours: tuple[str, ...]
    half: tuple[float, float]
    parts: tuple[tuple, ...]

    @property
    def key(self) -> str:
        return self.noun.replace(' ', '_')


_ALL = tuple(COLOURS)
INDOOR_KINDS = (
    Kind('armchair', _ALL, (0.4, 0.4), (('', 'box', (0.4, 0.4, 0.22), (0, 0, 0.22), None),
                                        ('_back', 'box', (0.1, 0.4, 0.3), (-0.3, 0, 0.74), None))),
    Kind('sofa', _ALL, (0.8, 0.35), (('', 'box', (0.8, 0.35, 0.35), (0, 0, 0.35), None),)),
    Kind('chair', _ALL, (0.25, 0.25), (('', 'box', (0.25, 0.25, 0.25), (0, 0, 0.25), None),)),
    Kind('table', _ALL, (0.55, 0.35), (('', 'box', (0.55, 0.35, 0.37), (0, 0, 0.37), None),)),
    Kind('cabinet', _ALL, (0.35, 0.25), (('', 'box', (0.35, 0.25, 0.6), (0, 0, 0.6), None),)),
    Kind('bookshelf', _ALL, (0.5, 0.2), (('', 'box', (0.5, 0.2, 0.8), (0, 0, 0.8), None),)),
    Kind('bin', _ALL, (0.22, 0.22), (('', 'cylinder', (0.22, 0.3), (0, 0, 0.3), None),)),
    Kind('plant', ('green', 'yellow', 'purple', 'red'), (0.38, 0.38),
         (('', 'sphere', (0.38,), (0, 0, 0.75), None),
          ('_pot', 'cylinder', (0.2, 0.2), (0, 0, 0.2), BROWN))),
    Kind('lamp', _ALL, (0.25, 0.25), (('', 'sphere', (0.25,), (0, 0, 1.45), None),
                                      ('_pole', 'cylinder', (0.04, 0.65), (0, 0, 0.65), GREY))),
    Kind('fridge', ('white', 'black', 'red', 'blue'), (0.35, 0.3),
         (('', 'box', (0.35, 0.3, 0.9), (0, 0, 0.9), None),)),
    Kind('television', ('black', 'white', 'blue'), (0.45, 0.1),
         (('', 'box', (0.45, 0.06, 0.28), (0, 0, 0.88), None),
          ('_stand', 'box', (0.45, 0.1, 0.3), (0, 0, 0.3), GREY))),
    Kind('ball', _ALL, (0.3, 0.3), (('', 'sphere', (0.3,), (0, 0, 0.3), None),)),
    Kind('stool', _ALL, (0.2, 0.2), (('', 'cylinder', (0.2, 0.25), (0, 0, 0.25), None),)),
    Kind('washing machine', ('white', 'black'), (0.3, 0.3),
         (('', 'box', (0.3, 0.3, 0.42), (0, 0, 0.42), None),)),
)
FARM_KINDS = (
    Kind('barrel', _ALL, (0.3, 0.3), (('', 'cylinder', (0.3, 0.45), (0, 0, 0.45), None),)),
    Kind('water tank', _ALL, (0.6, 0.6), (('', 'box', (0.6, 0.6, 0.8), (0, 0, 0.8), None),)),
    Kind('hay bale', ('yellow', 'orange'), (0.5, 0.4),
         (('', 'box', (0.5, 0.4, 0.4), (0, 0, 0.4), None),)),
    Kind('crate', _ALL, (0.35, 0.35), (('', 'box', (0.35, 0.35, 0.3), (0, 0, 0.3), None),)),
    Kind('trough', _ALL, (0.3, 0.6), (('', 'box', (0.3, 0.6, 0.25), (0, 0, 0.25), None),)),
    Kind('sign', _ALL, (0.3, 0.06), (('', 'box', (0.3, 0.04, 0.25), (0, 0, 1.2), None),
                                     ('_post', 'cylinder', (0.05, 0.5), (0, 0.0, 0.5), GREY))),
)


@dataclass(frozen=True)
class Layout:
    """A generated world and what instructions need of it.

    ``landmarks``: {primitive name: phrase, e.g. 'the red armchair'}; ``doors``: door centres
    and the axis their wall runs along, (x, y, 'x' or 'y'), ``DOOR_WIDTH_M`` wide; ``rooms``:
    (phrase, (xmin, ymin, xmax, ymax)), e.g. ('the room with the grey floor', ...) or
    ('the corridor', ...).
    """

    world: World
    landmarks: dict
    doors: tuple[tuple[float, float, str], ...] = ()
    rooms: tuple[tuple[str, tuple[float, float, float, float]], ...] = ()


def _parts(kind: Kind, colour: str, x: float, y: float) -> list[Primitive]:
    out = []
    for suffix, shape, size, (dx, dy, z), rgba in kind.parts:
        name = f'{colour}_{kind.key}{suffix}'
        rgba = COLOURS[colour] if rgba is None else rgba
        pos = (round(x + dx, 3), round(y + dy, 3), z)
        if shape == 'box':
            out.append(_box(name, pos, size, rgba))
        elif shape == 'cylinder':
            out.append(_cyl(name, pos, size[0], size[1], rgba))
        else:
            out.append(_sphere(name, pos, size[0], rgba))
    return out


def _wall_with_doors(name: str, a: tuple[float, float], b: tuple[float, float], doors: list,
                     rgba: str) -> list[Primitive]:
    """Wall segments from ``a`` to ``b`` (axis-aligned) with gaps at the door centres (along
    the wall coordinate)."""
    along = 0 if a[1] == b[1] else 1
    lo, hi = sorted((a[along], b[along]))
    cuts = [lo]
    for d in sorted(doors):
        cuts += [d - DOOR_WIDTH_M / 2, d + DOOR_WIDTH_M / 2]
    cuts.append(hi)
    out = []
    for i in range(0, len(cuts), 2):
        s, e = round(cuts[i], 3), round(cuts[i + 1], 3)
        if e - s < 0.05:
            continue
        p0 = (s, a[1]) if along == 0 else (a[0], s)
        p1 = (e, a[1]) if along == 0 else (a[0], e)
        out.append(_wall(f'{name}_{i // 2}', *p0, *p1, rgba))
    return out


def _choose_objects(rng: random.Random, kinds: tuple[Kind, ...], n: int) -> list[tuple]:
    """``n`` (kind, colour) pairs, unique, with at least one distractor pair (same kind, another
    colour)."""
    chosen: list[tuple] = []
    while len(chosen) < n:
        if chosen and (len(chosen) == 1 or rng.random() < 0.25):
            kind = chosen[rng.randrange(len(chosen))][0]        # a distractor of a chosen kind
        else:
            kind = rng.choice(kinds)
        colour = rng.choice(kind.colours)
        if (kind, colour) not in chosen:
            chosen.append((kind, colour))
    return chosen


def _fits(box, placed: list, keep_out: list) -> bool:
    x0, y0, x1, y1 = box
    for a0, b0, a1, b1 in placed:
        if x0 < a1 + 0.3 and a0 < x1 + 0.3 and y0 < b1 + 0.3 and b0 < y1 + 0.3:
            return False
    return all(math.hypot(min(max(px, x0), x1) - px, min(max(py, y0), y1) - py) > r
               for px, py, r in keep_out)


def _against_wall(rng: random.Random, room, half, placed, keep_out):
    """A centre (x, y) against a random wall of ``room`` for a footprint of ``half``, or None."""
    x0, y0, x1, y1 = room
    hx, hy = half
    for _ in range(30):
        side = rng.randrange(4)
        if side < 2:
            x = rng.uniform(x0 + hx + 0.1, x1 - hx - 0.1)
            y = y0 + hy + 0.1 if side == 0 else y1 - hy - 0.1
        else:
            y = rng.uniform(y0 + hy + 0.1, y1 - hy - 0.1)
            x = x0 + hx + 0.1 if side == 2 else x1 - hx - 0.1
        x, y = round(x, 2), round(y, 2)
        box = (x - hx, y - hy, x + hx, y + hy)
        if _fits(box, placed, keep_out):
            placed.append(box)
            return x, y
    return None


def _room_grid(rng: random.Random) -> tuple[list, float, float]:
    """South and north rows of room rectangles either side of the corridor: (rooms, length,
    corridor y)."""
    n_south = rng.randint(2, 3)
    widths = [round(rng.uniform(3.8, 5.0), 1) for _ in range(n_south)]
    length = sum(widths)
    ds, dn = round(rng.uniform(4.0, 5.5), 1), round(rng.uniform(4.0, 5.5), 1)
    xs = [0.0]
    for w in widths:
        xs.append(round(xs[-1] + w, 2))
    rooms = [(xs[i], 0.0, xs[i + 1], ds) for i in range(n_south)]
    n_north = rng.randint(1, 3)
    cuts = sorted(round(rng.uniform(3.8 * (i + 1), length - 3.8 * (n_north - i - 1)), 1)
                  for i in range(n_north - 1))
    cy = ds + CORRIDOR_WIDTH_M
    nx = [0.0] + cuts + [length]
    rooms += [(nx[i], cy, nx[i + 1], cy + dn) for i in range(n_north)]
    return rooms, length, ds


def _indoor_walls(rng: random.Random, rooms: list, length: float, ds: float, wall: str):
    """Walls of the room grid, with doors; returns (primitives, doors (x, y, axis of the
    wall))."""
    cy = ds + CORRIDOR_WIDTH_M
    top = max(r[3] for r in rooms)
    south = [r for r in rooms if r[1] == 0.0]
    north = [r for r in rooms if r[1] == cy]
    g = [_wall('wall_south', 0, 0, length, 0, wall), _wall('wall_west', 0, 0, 0, top, wall),
         _wall('wall_north', 0, top, length, top, wall),
         _wall('wall_east', length, 0, length, top, wall)]
    doors: list[tuple[float, float]] = []
    for row, y in ((south, ds), (north, cy)):
        xs = [round(rng.uniform(r[0] + 1.2, r[2] - 1.2), 2) for r in row]
        g += _wall_with_doors(f'wall_corridor_{len(doors)}', (0, y), (length, y), xs, wall)
        doors += [(x, y, 'x') for x in xs]
        for a, b in zip(row[:-1], row[1:]):
            ys = [round(rng.uniform(a[1] + 1.2, a[3] - 1.2), 2)] if rng.random() < 0.5 else []
            g += _wall_with_doors(f'wall_{len(g)}', (a[2], a[1]), (a[2], a[3]), ys, wall)
            doors += [(a[2], yd, 'y') for yd in ys]
    return g, doors


def procedural_indoor(seed: int) -> Layout:
    """Rooms either side of a corridor with landmarks against the walls (see the module doc)."""
    rng = random.Random(f'indoor/{seed}')
    rooms, length, ds = _room_grid(rng)
    wall = rng.choice(WALLS)
    g, doors = _indoor_walls(rng, rooms, length, ds, wall)
    floor_names = rng.sample(sorted(FLOORS), len(rooms))
    named_rooms = []
    corridor = (0.0, ds, length, ds + CORRIDOR_WIDTH_M)
    for i, (room, fname) in enumerate(zip(rooms + [corridor], floor_names + ['corridor'])):
        x0, y0, x1, y1 = room
        g.append(_box(f'floor_{i}', ((x0 + x1) / 2, (y0 + y1) / 2, 0.001),
                      ((x1 - x0) / 2, (y1 - y0) / 2, 0.001), FLOORS.get(fname, CORRIDOR),
                      collide=False))
        named_rooms.append((f'the room with the {fname} floor' if i < len(rooms)
                            else 'the corridor', room))
    keep_out = [(x, y, DOOR_WIDTH_M) for x, y, _ in doors]
    x0, y0, x1, y1 = rooms[0]
    spawn = (round((x0 + x1) / 2, 2), round((y0 + y1) / 2, 2), 0.0)
    keep_out.append((spawn[0], spawn[1], 1.0))
    placed: list = []
    landmarks = {}
    for kind, colour in _choose_objects(rng, INDOOR_KINDS, 3 * len(rooms)):
        room = rooms[len(landmarks) % len(rooms)]
        at = _against_wall(rng, room, kind.half, placed, keep_out)
        if at is not None:
            g += _parts(kind, colour, *at)
            landmarks[f'{colour}_{kind.key}'] = f'the {colour} {kind.noun}'
    for i in range(rng.randint(2, 4)):                    # furniture that is not a landmark
        half = (round(rng.uniform(0.2, 0.5), 2), round(rng.uniform(0.2, 0.5), 2))
        at = _against_wall(rng, rng.choice(rooms), half, placed, keep_out)
        if at is not None:
            g.append(_box(f'clutter_{i}', (*at, 0.3), (*half, 0.3), rng.choice(CLUTTER)))
    world = World(f'{PREFIX}indoor/{seed}', f'procedural indoor layout, {len(rooms)} rooms',
                  tuple(g), light_pos=(length / 2, ds, 6.0), spawn=spawn)
    return Layout(world, landmarks, tuple(doors), tuple(named_rooms))


def procedural_farm(seed: int) -> Layout:
    """Crop rows along +x, lanes between them, landmarks at the east and west lane ends."""
    rng = random.Random(f'farm/{seed}')
    n_rows = rng.randint(4, 6)
    gap = round(rng.uniform(2.0, 2.6), 2)         # lanes wide enough for the path clearance
    x_end = 2 + rng.randint(8, 13)
    crop = rng.choice(('0.25 0.7 0.15 1', '0.4 0.65 0.1 1', '0.2 0.55 0.25 1'))
    top = (n_rows - 1) * gap
    g = [_box('soil', (x_end / 2, top / 2, 0.001), (x_end / 2 + 6, top / 2 + 5, 0.001),
              rng.choice(('0.45 0.32 0.2 1', '0.5 0.38 0.25 1')), collide=False)]
    for r in range(n_rows):
        for i, x in enumerate(range(2, x_end + 1)):
            xc = x + 0.25 * (r % 2)
            g.append(_cyl(f'crop_{r}_{i}_stem', (xc, r * gap, 0.2), 0.05, 0.2, '0.2 0.55 0.1 1'))
            g.append(_sphere(f'crop_{r}_{i}_top', (xc, r * gap, 0.45), 0.2, crop))
    fence = '0.6 0.45 0.3 1'
    x0, x1, y0, y1 = -5.5, x_end + 6.5, -3.5, top + 3.5
    g.append(_wall('fence_north', x0, y1, x1, y1, fence, height=1.0))
    g.append(_wall('fence_south', x0, y0, x1, y0, fence, height=1.0))
    g.append(_wall('fence_west', x0, y0, x0, y1, fence, height=1.0))
    g.append(_wall('fence_east', x1, y0, x1, y1, fence, height=1.0))
    lanes = [round((r + 0.5) * gap, 2) for r in range(n_rows - 1)]
    spots = [(x_end + 2.2, y) for y in lanes] + [(-2.0, y) for y in lanes[1:]]
    spots += [(x_end + 2.2, -1.6), (x_end + 2.2, top + 1.6)]
    rng.shuffle(spots)
    landmarks = {}
    for (kind, colour), at in zip(_choose_objects(rng, FARM_KINDS, min(len(spots), 7)), spots):
        g += _parts(kind, colour, *at)
        landmarks[f'{colour}_{kind.key}'] = f'the {colour} {kind.noun}'
    world = World(f'{PREFIX}farm/{seed}', f'procedural farm, {n_rows} crop rows', tuple(g),
                  sky_rgb=(0.55, 0.7, 0.9), light_pos=(x_end / 2, top / 2, 6.0),
                  spawn=(0.5, lanes[0], 0.0))
    return Layout(world, landmarks, rooms=(('the crop rows', (2.0, 0.0, x_end, top)),))


def is_procedural(name: str) -> bool:
    return name.startswith(PREFIX)


@functools.lru_cache(maxsize=64)
def layout(name: str) -> Layout:
    """The layout of ``procedural/<style>/<seed>`` (a pure function of the name)."""
    parts = name[len(PREFIX):].split('/') if is_procedural(name) else []
    if len(parts) != 2 or parts[0] not in STYLES or not parts[1].isdigit():
        raise ValueError(f'bad procedural world name {name!r} (want procedural/<style>/<seed>, '
                         f'style in {STYLES}, seed a non-negative integer)')
    make = procedural_indoor if parts[0] == 'indoor' else procedural_farm
    return make(int(parts[1]))


def world_name(style: str, seed: int) -> str:
    return f'{PREFIX}{style}/{int(seed)}'


WORLD_MAKERS[PREFIX] = lambda name: layout(name).world
