"""MJCF worlds for the headless simulator: an indoor multi-room flat and an outdoor farm row.

Each world is plain MJCF text built here (no downloaded assets). Landmarks are distinct,
nameable objects ("green plant", "red bin", ...) that instructions refer to.
"""
from __future__ import annotations

from dataclasses import dataclass


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


def _box(name: str, pos: tuple, size: tuple, rgba: str, collide: bool = True) -> str:
    flags = '' if collide else ' contype="0" conaffinity="0"'
    return (f'<geom name="{name}" type="box" pos="{pos[0]} {pos[1]} {pos[2]}" '
            f'size="{size[0]} {size[1]} {size[2]}" rgba="{rgba}"{flags}/>')


def _cyl(name: str, pos: tuple, radius: float, half_h: float, rgba: str) -> str:
    return (f'<geom name="{name}" type="cylinder" pos="{pos[0]} {pos[1]} {pos[2]}" '
            f'size="{radius} {half_h}" rgba="{rgba}"/>')


def _sphere(name: str, pos: tuple, radius: float, rgba: str) -> str:
    return (f'<geom name="{name}" type="sphere" pos="{pos[0]} {pos[1]} {pos[2]}" '
            f'size="{radius}" rgba="{rgba}"/>')


def _wall(name: str, x0: float, y0: float, x1: float, y1: float, rgba: str,
          height: float = 1.2, thick: float = 0.05) -> str:
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx = max(abs(x1 - x0) / 2, thick)
    hy = max(abs(y1 - y0) / 2, thick)
    return _box(name, (cx, cy, height / 2), (hx, hy, height / 2), rgba)


def _indoor_geoms() -> list[str]:
    """Three rooms along x: A [0,4], B [4,8], C [8,12], y in [0,6]; doorways in the inner walls."""
    g: list[str] = []
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
    return g


def _farm_geoms() -> list[str]:
    """Crop rows along +x at y = 0, 1.5, 3.0, ...; lanes between them; landmarks at row ends."""
    g: list[str] = []
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
    return g


WORLDS = {'indoor': _indoor_geoms, 'farm': _farm_geoms}


def build_mjcf(world: str, robot: RobotBody, start: tuple[float, float, float]) -> str:
    """MJCF of ``world`` with a velocity-controlled planar base (slide x, slide y, hinge yaw).

    ``start`` is (x, y, yaw_rad): the joints' zero is the world origin, so qpos = world pose.
    """
    if world not in WORLDS:
        raise ValueError(f'unknown world {world!r} (have: {sorted(WORLDS)})')
    sky = '0.55 0.7 0.9' if world == 'farm' else '0.3 0.3 0.3'
    hl, hw = robot.footprint_length_m / 2, robot.footprint_width_m / 2
    vfov = robot.vertical_fov_deg if hasattr(robot, 'vertical_fov_deg') else None
    import math
    vfov = math.degrees(2 * math.atan(math.tan(math.radians(robot.hfov_deg) / 2)
                                      * robot.image_height / robot.image_width))
    pitch = math.radians(robot.camera_pitch_deg)
    # Camera looks along body +x: camera x-axis = body -y, camera y-axis = body +z (pitched down).
    cy_x, cy_z = math.sin(pitch), math.cos(pitch)
    geoms = '\n      '.join(WORLDS[world]())
    return f"""<mujoco model="vln_{world}">
  <compiler angle="radian"/>
  <option timestep="0.002" integrator="implicitfast" gravity="0 0 -9.81"/>
  <visual>
    <global offwidth="{max(640, robot.image_width)}" offheight="{max(480, robot.image_height)}"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="{sky}" rgb2="0.1 0.1 0.1"
             width="64" height="64"/>
  </asset>
  <worldbody>
    <light pos="6 3 6" dir="0 0 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="ground" type="plane" size="40 40 0.1" rgba="0.4 0.4 0.4 1" contype="0"
          conaffinity="0"/>
      {geoms}
    <body name="base" pos="0 0 0">
      <joint name="base_x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="base_y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="base_yaw" type="hinge" axis="0 0 1" damping="0"/>
      <geom name="base_body" type="box" pos="0 0 0.15" size="{hl} {hw} 0.08" mass="15"
            rgba="0.2 0.2 0.2 1"/>
      <camera name="head" pos="{hl * 0.8} 0 {robot.camera_height_m}"
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
