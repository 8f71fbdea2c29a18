"""Simulation worlds described once, as data, and the MJCF of the headless MuJoCo simulator.

A world is a list of static primitives (:class:`Primitive`: box, cylinder or sphere with a name,
a world-frame centre, a size, an RGBA colour and a collide flag) plus a few scene settings
(:class:`World`). :func:`build_mjcf` turns a world into MJCF for :mod:`vln_stack.sim.planar_sim`;
:mod:`vln_stack.sim.sdf` turns the *same* description into SDF for Gazebo, so both simulators
see the same geometry, names and colours.

Worlds (``WORLDS``):

* ``indoor``: three rooms along x with doorways and household landmarks.
* ``farm``: outdoor crop rows with lanes and landmarks at the row ends.
* ``greenhouse``: a glass-walled greenhouse with benches of potted plants either side of a central
  aisle, for the agricultural robot; landmarks: blue watering cart, red toolbox, yellow hose reel.

Landmarks are distinct, nameable objects ("green plant", "red bin", ...) that instructions refer
to; their primitive names are what ``landmarks`` in the episode files list.

Conventions: metres, world frame z up (the simulator's odom frame), colours RGBA in [0, 1].
Sizes follow MuJoCo's half-size convention:

* box: ``(hx, hy, hz)``, half-extents along the world axes (primitives are never rotated);
* cylinder: ``(radius, half_height)``, axis along world z;
* sphere: ``(radius,)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

KINDS = {'box': 3, 'cylinder': 2, 'sphere': 1}     # kind -> number of size values

# The robot base's collision box in the base frame (on the ground, x forward, z up): centre
# height, half-height and mass. Length and width come from the robot's footprint.
BASE_BOX_Z = 0.15
BASE_BOX_HALF_HEIGHT = 0.08
BASE_MASS_KG = 15.0


@dataclass(frozen=True)
class RobotBody:
    """What the simulator needs of a robot profile (metres, degrees, pixels)."""

    camera_height_m: float = 0.38
    hfov_deg: float = 79.0
    image_width: int = 320
    image_height: int = 240
    footprint_length_m: float = 0.6
    footprint_width_m: float = 0.3
    camera_pitch_deg: float = 0.0

    @classmethod
    def from_profile(cls, profile, image_width: int = 320, image_height: int = 240) -> RobotBody:
        """The body of a :class:`vln_stack.core.profiles.RobotProfile` (camera, footprint)."""
        cam, fp = profile.camera, profile.footprint
        return cls(camera_height_m=float(cam['height_m']), hfov_deg=float(cam['hfov_deg']),
                   image_width=int(image_width), image_height=int(image_height),
                   footprint_length_m=float(fp['length_m']),
                   footprint_width_m=float(fp['width_m']),
                   camera_pitch_deg=float(cam.get('pitch_deg', 0.0)))

    @property
    def vertical_fov_deg(self) -> float:
        """Vertical field of view of the pinhole camera (square pixels)."""
        return math.degrees(2 * math.atan(math.tan(math.radians(self.hfov_deg) / 2)
                                          * self.image_height / self.image_width))

    @property
    def camera_offset(self) -> tuple[float, float, float]:
        """Camera position in the base frame (x forward, z up; the base frame is on the ground)."""
        return (self.footprint_length_m / 2 * 0.8, 0.0, self.camera_height_m)


@dataclass(frozen=True)
class Primitive:
    """One static geom of a world (see the module docstring for the size convention)."""

    kind: str
    name: str
    pos: tuple[float, float, float]
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]
    collide: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'{self.name}: unknown primitive kind {self.kind!r}')
        if len(self.size) != KINDS[self.kind] or len(self.pos) != 3 or len(self.rgba) != 4:
            raise ValueError(f'{self.name}: bad pos/size/rgba for a {self.kind}')
        object.__setattr__(self, 'pos', tuple(float(v) for v in self.pos))
        object.__setattr__(self, 'size', tuple(float(v) for v in self.size))
        object.__setattr__(self, 'rgba', tuple(float(v) for v in self.rgba))

    def footprint(self) -> tuple[str, tuple[float, ...]]:
        """Top-down shape: ('rect', (xmin, ymin, xmax, ymax)) or ('circle', (x, y, r))."""
        x, y, _ = self.pos
        if self.kind == 'box':
            hx, hy, _ = self.size
            return 'rect', (x - hx, y - hy, x + hx, y + hy)
        return 'circle', (x, y, self.size[0])


@dataclass(frozen=True)
class World:
    name: str
    description: str
    primitives: tuple[Primitive, ...]
    sky_rgb: tuple[float, float, float] = (0.3, 0.3, 0.3)
    light_pos: tuple[float, float, float] = (6.0, 3.0, 6.0)
    spawn: tuple[float, float, float] = (0.0, 0.0, 0.0)   # default robot (x, y, yaw_rad)

    def __post_init__(self) -> None:
        names = [p.name for p in self.primitives]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'world {self.name}: duplicate primitive names {dup}')

    def primitive(self, name: str) -> Primitive:
        for p in self.primitives:
            if p.name == name:
                return p
        raise KeyError(f'world {self.name} has no primitive {name!r}')


def num(v: float) -> str:
    """Shortest stable decimal text of a number (``6``, ``0.05``, ``-1.5``), same for MJCF/SDF."""
    v = round(float(v), 9)
    if v == 0:
        return '0'
    text = repr(v)
    return text[:-2] if text.endswith('.0') else text


def nums(values) -> str:
    return ' '.join(num(v) for v in values)


# ---- world descriptions ----------------------------------------------------------------------

def _rgba(text: str) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in text.split())   # type: ignore[return-value]


def _box(name, pos, size, rgba, collide=True) -> Primitive:
    return Primitive('box', name, pos, size, _rgba(rgba), collide)


def _cyl(name, pos, radius, half_h, rgba, collide=True) -> Primitive:
    return Primitive('cylinder', name, pos, (radius, half_h), _rgba(rgba), collide)


def _sphere(name, pos, radius, rgba, collide=True) -> Primitive:
    return Primitive('sphere', name, pos, (radius,), _rgba(rgba), collide)


def _wall(name: str, x0: float, y0: float, x1: float, y1: float, rgba: str,
          height: float = 1.2, thick: float = 0.05) -> Primitive:
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx = max(abs(x1 - x0) / 2, thick)
    hy = max(abs(y1 - y0) / 2, thick)
    return _box(name, (cx, cy, height / 2), (hx, hy, height / 2), rgba)


def _indoor() -> World:
    """Three rooms along x: A [0,4], B [4,8], C [8,12], y in [0,6]; doorways in the inner walls."""
    g: list[Primitive] = []
    wall = '0.85 0.83 0.78 1'
    g.append(_wall('wall_south', 0, 0, 12, 0, wall))
    g.append(_wall('wall_north', 0, 6, 12, 6, wall))
    g.append(_wall('wall_west', 0, 0, 0, 6, wall))
    g.append(_wall('wall_east', 12, 0, 12, 6, wall))
    # A|B wall at x=4 with a doorway y in [2.4, 3.6]; B|C wall at x=8 with a doorway y in [4.0, 5.2]
    g.append(_wall('wall_ab_1', 4, 0, 4, 2.4, '0.75 0.8 0.9 1'))
    g.append(_wall('wall_ab_2', 4, 3.6, 4, 6, '0.75 0.8 0.9 1'))
    g.append(_wall('wall_bc_1', 8, 0, 8, 4.0, '0.9 0.8 0.7 1'))
    g.append(_wall('wall_bc_2', 8, 5.2, 8, 6, '0.9 0.8 0.7 1'))
    # Room floors in distinct colours (thin, non-colliding tiles on the ground plane).
    g.append(_box('floor_a', (2, 3, 0.001), (2, 3, 0.001), '0.55 0.45 0.35 1', collide=False))
    g.append(_box('floor_b', (6, 3, 0.001), (2, 3, 0.001), '0.5 0.5 0.55 1', collide=False))
    g.append(_box('floor_c', (10, 3, 0.001), (2, 3, 0.001), '0.45 0.55 0.45 1', collide=False))
    # Landmarks.
    g.append(_cyl('red_bin', (1.0, 5.2, 0.3), 0.22, 0.3, '0.85 0.1 0.1 1'))
    g.append(_box('white_fridge', (3.5, 5.5, 0.9), (0.35, 0.3, 0.9), '0.95 0.95 0.95 1'))
    g.append(_box('wooden_table', (2.0, 0.8, 0.38), (0.6, 0.4, 0.38), '0.55 0.35 0.15 1'))
    g.append(_cyl('green_plant_pot', (7.2, 1.0, 0.2), 0.2, 0.2, '0.45 0.25 0.1 1'))
    g.append(_sphere('green_plant_leaves', (7.2, 1.0, 0.75), 0.38, '0.1 0.7 0.15 1'))
    g.append(_box('yellow_chair', (5.2, 5.3, 0.25), (0.25, 0.25, 0.25), '0.95 0.85 0.1 1'))
    g.append(_box('blue_sofa', (10.8, 5.4, 0.35), (0.9, 0.4, 0.35), '0.1 0.25 0.8 1'))
    g.append(_box('black_tv', (11.9, 2.0, 0.8), (0.05, 0.6, 0.35), '0.05 0.05 0.05 1'))
    g.append(_box('orange_shelf', (9.0, 0.3, 0.6), (0.6, 0.2, 0.6), '0.95 0.5 0.1 1'))
    return World('indoor', 'three rooms with doorways and household landmarks', tuple(g),
                 spawn=(1.5, 3.0, 0.0))


def _farm() -> World:
    """Crop rows along +x at y = -1.5, 0, 1.5, 3, 4.5; lanes between them; landmarks at row ends."""
    g: list[Primitive] = []
    g.append(_box('soil', (9, 3, 0.001), (12, 8, 0.001), '0.45 0.32 0.2 1', collide=False))
    for r, y in enumerate((-1.5, 0.0, 1.5, 3.0, 4.5)):
        for i, x in enumerate(range(2, 15)):
            g.append(_cyl(f'crop_{r}_{i}_stem', (x + 0.25 * (r % 2), y, 0.2), 0.05, 0.2,
                          '0.2 0.55 0.1 1'))
            g.append(_sphere(f'crop_{r}_{i}_top', (x + 0.25 * (r % 2), y, 0.45), 0.2,
                             '0.25 0.7 0.15 1'))
    g.append(_cyl('red_barrel', (16.2, 0.75, 0.45), 0.3, 0.45, '0.85 0.1 0.1 1'))
    g.append(_box('blue_water_tank', (16.2, 3.75, 0.8), (0.6, 0.6, 0.8), '0.15 0.3 0.85 1'))
    g.append(_box('white_shed', (-1.5, 6.5, 1.2), (1.2, 1.0, 1.2), '0.92 0.92 0.9 1'))
    g.append(_box('fence_north', (9, 7.5, 0.5), (11, 0.05, 0.5), '0.6 0.45 0.3 1'))
    g.append(_box('fence_south', (9, -3.5, 0.5), (11, 0.05, 0.5), '0.6 0.45 0.3 1'))
    return World('farm', 'outdoor crop rows with lanes and landmarks at the row ends', tuple(g),
                 sky_rgb=(0.55, 0.7, 0.9), spawn=(1.0, 0.75, 0.0))


# Greenhouse layout (x along the central aisle, y across it):
#   outer glass walls x in [0, 16], y in [0, 10], 2.4 m high; a door in the west wall y [4.2, 5.8]
#   central aisle y in [3.6, 6.4] (2.8 m wide), running the full length
#   benches 1 m wide (x) and 3 m long (y), 0.75 m high, at x = 2.5, 5, 7.5, 10, 12.5:
#     south row y in [0.6, 3.6] (bench_s1..s5), north row y in [6.4, 9.4] (bench_n1..n5)
#   side aisles between benches 1.5 m wide: x [3, 4.5], [5.5, 7], [8, 9.5], [10.5, 12]
#   west corner x [0, 2] (hose reel), east utility area x [13, 16] (cart, tank, crates)
GH_BENCH_X = (2.5, 5.0, 7.5, 10.0, 12.5)
GH_BENCH_Y = {'s': 2.1, 'n': 7.9}


def _greenhouse() -> World:
    g: list[Primitive] = []
    glass = '0.75 0.88 0.95 0.3'
    frame = '0.7 0.72 0.75 1'
    h = 2.4
    g.append(_box('gravel_floor', (8, 5, 0.001), (8, 5, 0.001), '0.62 0.58 0.5 1', collide=False))
    g.append(_box('aisle_floor', (8, 5, 0.002), (8, 1.4, 0.002), '0.78 0.78 0.75 1',
                  collide=False))
    g.append(_wall('glass_south', 0, 0, 16, 0, glass, height=h, thick=0.03))
    g.append(_wall('glass_north', 0, 10, 16, 10, glass, height=h, thick=0.03))
    g.append(_wall('glass_east', 16, 0, 16, 10, glass, height=h, thick=0.03))
    g.append(_wall('glass_west_1', 0, 0, 0, 4.2, glass, height=h, thick=0.03))
    g.append(_wall('glass_west_2', 0, 5.8, 0, 10, glass, height=h, thick=0.03))
    # Aluminium frame posts every 4 m along the long walls, at the corners and beside the door.
    posts = [(x, y) for x in (0, 4, 8, 12, 16) for y in (0, 10)]
    posts += [(16, 5.0), (0, 4.1), (0, 5.9)]
    for i, (x, y) in enumerate(posts):
        g.append(_box(f'frame_post_{i}', (x, y, h / 2), (0.06, 0.06, h / 2), frame))
    # Benches with potted plants: 2 columns x 5 pots per bench.
    plant_colours = ('0.15 0.6 0.15 1', '0.3 0.7 0.2 1', '0.75 0.35 0.6 1', '0.2 0.5 0.25 1',
                     '0.9 0.75 0.2 1')
    for side, cy in GH_BENCH_Y.items():
        for b, cx in enumerate(GH_BENCH_X, start=1):
            name = f'bench_{side}{b}'
            g.append(_box(name, (cx, cy, 0.375), (0.5, 1.5, 0.375), '0.45 0.5 0.45 1'))
            leaves = plant_colours[(b - 1 + (side == 'n')) % len(plant_colours)]
            for c, dx in enumerate((-0.25, 0.25)):
                for r, dy in enumerate((-1.2, -0.6, 0.0, 0.6, 1.2)):
                    x, y = cx + dx, cy + dy
                    g.append(_cyl(f'{name}_pot_{c}_{r}', (x, y, 0.85), 0.11, 0.1,
                                  '0.72 0.4 0.22 1'))
                    g.append(_sphere(f'{name}_plant_{c}_{r}', (x, y, 1.07), 0.16, leaves))
    # Landmarks.
    g.append(_box('blue_watering_cart', (15.0, 5.0, 0.4), (0.5, 0.35, 0.4), '0.1 0.3 0.85 1'))
    g.append(_cyl('blue_watering_cart_can', (15.0, 5.0, 0.95), 0.15, 0.15, '0.2 0.45 0.95 1'))
    g.append(_box('red_toolbox', (8.75, 9.5, 0.15), (0.3, 0.18, 0.15), '0.85 0.1 0.1 1'))
    g.append(_box('yellow_hose_reel_stand', (1.0, 8.5, 0.05), (0.35, 0.35, 0.05),
                  '0.3 0.3 0.3 1'))
    g.append(_cyl('yellow_hose_reel', (1.0, 8.5, 0.4), 0.3, 0.3, '0.95 0.85 0.1 1'))
    g.append(_cyl('white_water_tank', (15.0, 8.8, 0.7), 0.5, 0.7, '0.93 0.93 0.92 1'))
    g.append(_box('orange_crates', (15.0, 1.2, 0.3), (0.4, 0.6, 0.3), '0.95 0.5 0.1 1'))
    return World('greenhouse', 'glass greenhouse, benches of potted plants, central aisle',
                 tuple(g), sky_rgb=(0.55, 0.7, 0.9), light_pos=(8.0, 5.0, 6.0),
                 spawn=(0.8, 5.0, 0.0))


WORLDS: dict[str, World] = {w.name: w for w in (_indoor(), _farm(), _greenhouse())}


# Worlds made from their name on demand: {name prefix: function(name) -> World}. The package
# vln_stack.sim registers 'procedural/' (seeded worlds of vln_stack.sim.procgen) on import.
WORLD_MAKERS: dict[str, Callable[[str], World]] = {}


def get_world(world: str) -> World:
    """The world named ``world``: one of ``WORLDS`` or one a ``WORLD_MAKERS`` prefix names,
    e.g. the seeded procedural world ``procedural/indoor/7``."""
    for prefix, make in WORLD_MAKERS.items():
        if world.startswith(prefix):
            return make(world)
    if world not in WORLDS:
        raise ValueError(f'unknown world {world!r} (have: {sorted(WORLDS)})')
    return WORLDS[world]


# ---- MJCF ------------------------------------------------------------------------------------

def _mjcf_geom(p: Primitive) -> str:
    flags = '' if p.collide else ' contype="0" conaffinity="0"'
    return (f'<geom name="{p.name}" type="{p.kind}" pos="{nums(p.pos)}" '
            f'size="{nums(p.size)}" rgba="{nums(p.rgba)}"{flags}/>')


def build_mjcf(world: str, robot: RobotBody, start: tuple[float, float, float]) -> str:
    """MJCF of ``world`` with a velocity-controlled planar base (slide x, slide y, hinge yaw).

    ``start`` is (x, y, yaw_rad): the joints' zero is the world origin, so qpos = world pose.
    """
    w = get_world(world)
    hl, hw = robot.footprint_length_m / 2, robot.footprint_width_m / 2
    vfov = robot.vertical_fov_deg
    pitch = math.radians(robot.camera_pitch_deg)
    # Camera looks along body +x: camera x-axis = body -y, camera y-axis = body +z (pitched down).
    cy_x, cy_z = math.sin(pitch), math.cos(pitch)
    cam_x, _, cam_z = robot.camera_offset
    geoms = '\n      '.join(_mjcf_geom(p) for p in w.primitives)
    return f"""<mujoco model="vln_{w.name}">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast" gravity="0 0 -9.81"/>
  <visual>
    <global offwidth="{max(640, robot.image_width)}" offheight="{max(480, robot.image_height)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="{nums(w.sky_rgb)}" rgb2="0.1 0.1 0.1"
             width="64" height="64"/>
  </asset>
  <worldbody>
    <light pos="{nums(w.light_pos)}" dir="0 0 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="ground" type="plane" size="40 40 0.1" rgba="0.4 0.4 0.4 1" contype="0"
          conaffinity="0"/>
      {geoms}
    <body name="base" pos="0 0 0">
      <joint name="base_x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="0"/>
      <geom name="base_body" type="box" pos="0 0 {num(BASE_BOX_Z)}" size="{hl} {hw} \
{num(BASE_BOX_HALF_HEIGHT)}" mass="{num(BASE_MASS_KG)}"
            rgba="0.2 0.2 0.2 1"/>
      <camera name="head" pos="{cam_x} 0 {cam_z}"
              xyaxes="0 -1 0 {cy_x} 0 {cy_z}" fovy="{vfov:.4f}"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="base_x" kv="3000" ctrllimited="false"/>
    <velocity name="vy" joint="base_y" kv="3000" ctrllimited="false"/>
    <velocity name="wz" joint="base_yaw" kv="300" ctrllimited="false"/>
  </actuator>
  <keyframe>
    <key name="start" qpos="{start[0]} {start[1]} {start[2]}"/>
  </keyframe>
</mujoco>
"""
