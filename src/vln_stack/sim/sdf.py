"""SDF worlds for Gazebo from the world descriptions of :mod:`vln_stack.sim.worlds`.

The same primitives that the MuJoCo simulator compiles become static SDF models here, so both
simulators have identical geometry, names and colours. Three flavours:

* ``harmonic``: SDF 1.9 for gz sim (Harmonic and later), systems ``gz-sim-*-system`` /
  ``gz::sim::systems::*``;
* ``fortress``: the same world with Fortress names ``ignition-gazebo-*-system`` /
  ``ignition::gazebo::systems::*``;
* ``classic``: SDF 1.6 for Gazebo Classic 11 with the gazebo_ros plugins
  ``libgazebo_ros_planar_move.so`` and ``libgazebo_ros_camera.so``.

World contents: physics (2 ms steps, like the MuJoCo model), scene (ambient light, sky colour, no
shadows), a directional ``sun``, a ``ground_plane``, one static model per primitive (named after the
primitive, pose = its centre, one link ``link`` with a ``visual`` and, for colliding primitives, a
``collision`` of the same shape; non-colliding floor tiles get only the visual; the material's
ambient and diffuse are the primitive's RGBA, transparency = 1 - alpha) and the robot model
:data:`ROBOT_MODEL`. gz flavours also load the world systems Physics, UserCommands,
SceneBroadcaster and Sensors (render engine ogre2).

Size conventions: primitives are half-sizes (MuJoCo); SDF boxes get full sizes (2 x half), SDF
cylinders ``radius`` and ``length`` (2 x half height), spheres ``radius``.

Robot model ``vln_robot`` (pose = the start pose on the ground, yaw about z):

* link ``base_link``, the frame on the ground under the base centre (x forward, y left, z up,
  REP-103), gravity off (the base is velocity-controlled in the plane, like the MuJoCo slide
  joints); collision/visual box ``footprint_length x footprint_width x 0.16`` centred 0.15 m up;
* camera sensor ``camera`` on ``base_link`` at ``(0.4 * footprint_length, 0, camera_height_m)``,
  pitched down by ``camera_pitch_deg``, ``horizontal_fov`` = the profile's hfov, image size 320x240
  by default, RGB8, 10 Hz;
* gz: ``VelocityControl`` (geometry twist in the base frame) and ``OdometryPublisher``
  (``odom_frame`` = ``odom``, ``robot_base_frame`` = ``base_link``, 2D, 50 Hz; the odom frame is
  the world frame, so odometry poses are world poses as in the MuJoCo bridge);
* classic: ``gazebo_ros_planar_move`` (``odometry_frame`` odom, ``robot_base_frame`` base_link,
  odom TF off) and ``gazebo_ros_camera`` (``camera_name`` camera, ``frame_name``
  camera_optical_frame).

Topics:

* gz flavours publish on the gz-transport topics in :data:`GZ_TOPICS`; ``config/ros_gz_bridge.yaml``
  maps them to the stack's relative ROS names ``camera/image_raw``, ``camera/camera_info``,
  ``odom``, ``cmd_vel`` and to ``/clock``. gz-sensors derives the camera-info topic from the image
  topic (last segment replaced by ``camera_info``).
* classic publishes ROS topics directly: ``camera/image_raw``, ``camera/camera_info``, ``odom`` and
  subscribes ``cmd_vel`` in the plugins' ROS namespace (``namespace`` argument); ``/clock`` comes
  from ``libgazebo_ros_init.so`` (``gzserver -s libgazebo_ros_init.so``).
"""
from __future__ import annotations

import math
import textwrap
import xml.etree.ElementTree as ET

from .worlds import (BASE_BOX_HALF_HEIGHT, BASE_BOX_Z, BASE_MASS_KG, Primitive, RobotBody, World,
                     get_world, num, nums)

FLAVORS = ('harmonic', 'fortress', 'classic')
ROBOT_MODEL = 'vln_robot'
ODOM_FRAME = 'odom'
BASE_FRAME = 'base_link'
CAMERA_FRAME = 'camera_optical_frame'
CAMERA_RATE_HZ = 10.0
ODOM_RATE_HZ = 50.0
STEP_S = 0.002          # physics step, same as the MuJoCo model

# gz-transport topics of the gz flavours (the ros_gz bridge config maps them to ROS names).
GZ_TOPICS = {
    'clock': '/clock',
    'image': f'/model/{ROBOT_MODEL}/camera/image_raw',
    'camera_info': f'/model/{ROBOT_MODEL}/camera/camera_info',   # derived by gz-sensors
    'odom': f'/model/{ROBOT_MODEL}/odometry',
    'odom_tf': f'/model/{ROBOT_MODEL}/odometry_tf',                # not bridged
    'cmd_vel': f'/model/{ROBOT_MODEL}/cmd_vel',
}

# The stack's ROS names (relative names resolve in the launch namespace).
ROS_TOPICS = {'clock': '/clock', 'image': 'camera/image_raw', 'camera_info': 'camera/camera_info',
              'odom': 'odom', 'cmd_vel': 'cmd_vel'}

_GZ_SYSTEMS = ('physics', 'user-commands', 'scene-broadcaster', 'sensors')
_GZ_CLASS = {'physics': 'Physics', 'user-commands': 'UserCommands',
             'scene-broadcaster': 'SceneBroadcaster', 'sensors': 'Sensors',
             'velocity-control': 'VelocityControl', 'odometry-publisher': 'OdometryPublisher'}


def gz_plugin(system: str, flavor: str) -> tuple[str, str]:
    """(filename, name) of a gz system, e.g. ``('gz-sim-physics-system',
    'gz::sim::systems::Physics')`` (Harmonic) or the ``ignition-gazebo`` names (Fortress)."""
    cls = _GZ_CLASS[system]
    if flavor == 'harmonic':
        return f'gz-sim-{system}-system', f'gz::sim::systems::{cls}'
    if flavor == 'fortress':
        return f'ignition-gazebo-{system}-system', f'ignition::gazebo::systems::{cls}'
    raise ValueError(f'no gz systems in flavor {flavor!r}')


def server_command(flavor: str, sdf_path: str) -> list[str]:
    """Headless simulator server command line for a world file of ``flavor``."""
    if flavor == 'harmonic':
        return ['gz', 'sim', '-s', '-r', '--headless-rendering', sdf_path]
    if flavor == 'fortress':
        return ['ign', 'gazebo', '-s', '-r', '--headless-rendering', sdf_path]
    if flavor == 'classic':
        return ['gzserver', '-s', 'libgazebo_ros_init.so', sdf_path]
    raise ValueError(f'unknown flavor {flavor!r} (have: {FLAVORS})')


# ---- XML helpers -----------------------------------------------------------------------------

def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _pose(parent: ET.Element, xyz, rpy=(0.0, 0.0, 0.0)) -> None:
    _sub(parent, 'pose', nums(tuple(xyz) + tuple(rpy)))


def _geometry(parent: ET.Element, p: Primitive) -> None:
    geo = _sub(parent, 'geometry')
    if p.kind == 'box':
        _sub(_sub(geo, 'box'), 'size', nums(2 * s for s in p.size))
    elif p.kind == 'cylinder':
        cyl = _sub(geo, 'cylinder')
        _sub(cyl, 'radius', num(p.size[0]))
        _sub(cyl, 'length', num(2 * p.size[1]))
    else:
        _sub(_sub(geo, 'sphere'), 'radius', num(p.size[0]))


def _material(parent: ET.Element, rgba) -> None:
    mat = _sub(parent, 'material')
    _sub(mat, 'ambient', nums(rgba))
    _sub(mat, 'diffuse', nums(rgba))
    _sub(mat, 'specular', '0.1 0.1 0.1 1')


def _static_model(world_el: ET.Element, p: Primitive) -> None:
    model = _sub(world_el, 'model', name=p.name)
    _sub(model, 'static', 'true')
    _pose(model, p.pos)
    link = _sub(model, 'link', name='link')
    if p.collide:
        _geometry(_sub(link, 'collision', name='collision'), p)
    vis = _sub(link, 'visual', name='visual')
    _geometry(vis, p)
    _material(vis, p.rgba)
    if p.rgba[3] < 1.0:
        _sub(vis, 'transparency', num(1.0 - p.rgba[3]))
    _sub(vis, 'cast_shadows', 'false')


def _ground(world_el: ET.Element) -> None:
    model = _sub(world_el, 'model', name='ground_plane')
    _sub(model, 'static', 'true')
    link = _sub(model, 'link', name='link')
    for tag in ('collision', 'visual'):
        el = _sub(link, tag, name=tag)
        plane = _sub(_sub(el, 'geometry'), 'plane')
        _sub(plane, 'normal', '0 0 1')
        _sub(plane, 'size', '80 80')      # MuJoCo ground: half-size 40 x 40
        if tag == 'visual':
            _material(el, (0.4, 0.4, 0.4, 1.0))


def _base_link(model: ET.Element, robot: RobotBody) -> ET.Element:
    """Link ``base_link``: gravity off, the box's inertia, collision and visual; returns it."""
    length, width = robot.footprint_length_m, robot.footprint_width_m
    height = 2 * BASE_BOX_HALF_HEIGHT
    link = _sub(model, 'link', name=BASE_FRAME)
    _sub(link, 'gravity', 'false')
    inertial = _sub(link, 'inertial')
    _pose(inertial, (0.0, 0.0, BASE_BOX_Z))
    _sub(inertial, 'mass', num(BASE_MASS_KG))
    inertia = _sub(inertial, 'inertia')
    m = BASE_MASS_KG
    for tag, val in (('ixx', m / 12 * (width ** 2 + height ** 2)), ('ixy', 0.0), ('ixz', 0.0),
                     ('iyy', m / 12 * (length ** 2 + height ** 2)), ('iyz', 0.0),
                     ('izz', m / 12 * (length ** 2 + width ** 2))):
        _sub(inertia, tag, num(val))
    for tag in ('collision', 'visual'):
        el = _sub(link, tag, name=f'base_{tag}')
        _pose(el, (0.0, 0.0, BASE_BOX_Z))
        _sub(_sub(_sub(el, 'geometry'), 'box'), 'size', nums((length, width, height)))
        if tag == 'visual':
            _material(el, (0.2, 0.2, 0.2, 1.0))
    return link


def _camera_sensor(link: ET.Element, robot: RobotBody, flavor: str) -> ET.Element:
    """Camera sensor ``camera`` on ``link`` (gz flavours: with its gz topic); returns it."""
    sensor = _sub(link, 'sensor', name='camera', type='camera')
    # SDF cameras look along +x with +z up: a positive pitch about y tilts the view down.
    _pose(sensor, robot.camera_offset, (0.0, math.radians(robot.camera_pitch_deg), 0.0))
    _sub(sensor, 'always_on', 'true')
    _sub(sensor, 'update_rate', num(CAMERA_RATE_HZ))
    _sub(sensor, 'visualize', 'false')
    if flavor != 'classic':
        _sub(sensor, 'topic', GZ_TOPICS['image'])
    cam = _sub(sensor, 'camera', name='head')
    _sub(cam, 'horizontal_fov', num(math.radians(robot.hfov_deg)))
    image = _sub(cam, 'image')
    _sub(image, 'width', str(int(robot.image_width)))
    _sub(image, 'height', str(int(robot.image_height)))
    _sub(image, 'format', 'R8G8B8')
    clip = _sub(cam, 'clip')
    _sub(clip, 'near', '0.05')
    _sub(clip, 'far', '100')
    return sensor


def _classic_plugins(model: ET.Element, sensor: ET.Element, namespace: str) -> None:
    """Gazebo Classic: ``gazebo_ros_camera`` on the sensor, ``gazebo_ros_planar_move`` on the
    model, both in the ROS namespace ``namespace`` ('' = none)."""
    cam_plugin = _sub(sensor, 'plugin', name='camera_driver', filename='libgazebo_ros_camera.so')
    if namespace:
        _sub(_sub(cam_plugin, 'ros'), 'namespace', namespace)
    _sub(cam_plugin, 'camera_name', 'camera')
    _sub(cam_plugin, 'frame_name', CAMERA_FRAME)
    move = _sub(model, 'plugin', name='planar_move', filename='libgazebo_ros_planar_move.so')
    if namespace:
        _sub(_sub(move, 'ros'), 'namespace', namespace)
    _sub(move, 'update_rate', num(1.0 / STEP_S))
    _sub(move, 'publish_rate', num(ODOM_RATE_HZ))
    _sub(move, 'publish_odom', 'true')
    _sub(move, 'publish_odom_tf', 'false')
    _sub(move, 'odometry_frame', ODOM_FRAME)
    _sub(move, 'robot_base_frame', BASE_FRAME)


def _gz_plugins(model: ET.Element, flavor: str) -> None:
    """gz flavours: the model's VelocityControl and OdometryPublisher systems."""
    filename, name = gz_plugin('velocity-control', flavor)
    vel = _sub(model, 'plugin', filename=filename, name=name)
    _sub(vel, 'topic', GZ_TOPICS['cmd_vel'])
    filename, name = gz_plugin('odometry-publisher', flavor)
    odom = _sub(model, 'plugin', filename=filename, name=name)
    _sub(odom, 'odom_frame', ODOM_FRAME)
    _sub(odom, 'robot_base_frame', BASE_FRAME)
    _sub(odom, 'odom_topic', GZ_TOPICS['odom'])
    _sub(odom, 'tf_topic', GZ_TOPICS['odom_tf'])
    _sub(odom, 'odom_publish_frequency', num(ODOM_RATE_HZ))
    _sub(odom, 'dimensions', '2')


def _robot(world_el: ET.Element, robot: RobotBody, start, flavor: str, namespace: str) -> None:
    """Model :data:`ROBOT_MODEL` at ``start``: base link, camera and the flavour's plugins."""
    model = _sub(world_el, 'model', name=ROBOT_MODEL)
    _pose(model, (start[0], start[1], 0.0), (0.0, 0.0, start[2]))
    sensor = _camera_sensor(_base_link(model, robot), robot, flavor)
    if flavor == 'classic':
        _classic_plugins(model, sensor, namespace)
    else:
        _gz_plugins(model, flavor)


def _header(world: World, robot: RobotBody, flavor: str, start, robot_name: str) -> str:
    if flavor == 'classic':
        run = 'gzserver -s libgazebo_ros_init.so <this file>   (Gazebo Classic 11 + gazebo_ros)'
        topics = ('ROS topics from the plugins: camera/image_raw, camera/camera_info, odom '
                  '(odom -> base_link), cmd_vel; /clock from libgazebo_ros_init.so')
    else:
        exe = 'gz sim' if flavor == 'harmonic' else 'ign gazebo'
        run = (f'{exe} -s -r <this file> with the headless-rendering flag (server only, running; '
               'see server_command() in src/vln_stack/sim/sdf.py, used by '
               'launch/gazebo.launch.py)')
        topics = (f'gz topics: image {GZ_TOPICS["image"]}, camera_info '
                  f'{GZ_TOPICS["camera_info"]}, odometry {GZ_TOPICS["odom"]} (odom -> base_link), '
                  f'cmd_vel {GZ_TOPICS["cmd_vel"]}, clock {GZ_TOPICS["clock"]}; '
                  'ROS side: config/ros_gz_bridge.yaml')
    lines = [
        f'World "{world.name}" ({world.description}) for {_FLAVOR_TEXT[flavor]}.',
        'Generated from src/vln_stack/sim/worlds.py (the description the MuJoCo simulator uses)',
        f'by the module vln_stack.tools.make_worlds (robot {robot_name}, flavor {flavor}).',
        'Do not edit; regenerate. tests/test_worlds_gazebo.py checks it is up to date.',
        f'Robot {ROBOT_MODEL} ({robot_name}): footprint {num(robot.footprint_length_m)} x '
        f'{num(robot.footprint_width_m)} m, camera {num(robot.camera_height_m)} m high, '
        f'hfov {num(robot.hfov_deg)} deg, pitch {num(robot.camera_pitch_deg)} deg, '
        f'{robot.image_width}x{robot.image_height};',
        f'spawned at x {num(start[0])}, y {num(start[1])}, yaw {num(start[2])} rad '
        '(launch/gazebo.launch.py writes a copy at the episode start).',
        'Frames: world = odom (metres, z up); base_link on the ground under the base centre.',
        topics + '.',
        f'Run: {run}',
    ]
    text = '\n'.join(textwrap.fill(ln, 98, initial_indent='  ', subsequent_indent='    ')
                     for ln in lines)
    if '--' in text:
        raise ValueError('an XML comment cannot hold "--"')
    return '<!--\n' + text + '\n-->\n'


_FLAVOR_TEXT = {'harmonic': 'gz sim Harmonic (SDF 1.9)', 'fortress': 'Ignition Gazebo Fortress '
                '(SDF 1.9)', 'classic': 'Gazebo Classic 11 (SDF 1.6)'}


def build_sdf(world: str, robot: RobotBody, start: tuple[float, float, float] | None = None, *,
              flavor: str = 'harmonic', namespace: str = '', robot_name: str = 'go2') -> str:
    """SDF text of ``world`` with the robot at ``start`` (x, y, yaw_rad; default: the world's
    spawn pose). ``namespace`` is the ROS namespace of the classic plugins (gz flavours: give it
    to the bridge instead). ``robot_name`` only labels the header comment."""
    if flavor not in FLAVORS:
        raise ValueError(f'unknown flavor {flavor!r} (have: {FLAVORS})')
    w = get_world(world)
    start = tuple(float(v) for v in (w.spawn if start is None else start))
    root = ET.Element('sdf', version='1.6' if flavor == 'classic' else '1.9')
    world_el = _sub(root, 'world', name=f'vln_{w.name}')
    # gz sim picks its physics engine in the Physics system (type is ignored); Classic: ODE.
    physics = _sub(world_el, 'physics', name='2ms',
                   type='ode' if flavor == 'classic' else 'ignored')
    _sub(physics, 'max_step_size', num(STEP_S))
    _sub(physics, 'real_time_factor', '1')
    _sub(physics, 'real_time_update_rate', num(1.0 / STEP_S))
    if flavor != 'classic':
        for system in _GZ_SYSTEMS:
            filename, name = gz_plugin(system, flavor)
            plugin = _sub(world_el, 'plugin', filename=filename, name=name)
            if system == 'sensors':
                _sub(plugin, 'render_engine', 'ogre2')
    _sub(world_el, 'gravity', '0 0 -9.81')
    scene = _sub(world_el, 'scene')
    _sub(scene, 'ambient', '0.45 0.45 0.45 1')
    _sub(scene, 'background', nums(tuple(w.sky_rgb) + (1.0,)))
    _sub(scene, 'shadows', 'false')
    _sub(scene, 'grid', 'false')
    sun = _sub(world_el, 'light', name='sun', type='directional')
    _sub(sun, 'cast_shadows', 'false')
    _pose(sun, w.light_pos)
    _sub(sun, 'diffuse', '0.6 0.6 0.6 1')
    _sub(sun, 'specular', '0.1 0.1 0.1 1')
    _sub(sun, 'direction', '0 0 -1')
    _ground(world_el)
    for p in w.primitives:
        _static_model(world_el, p)
    _robot(world_el, robot, start, flavor, namespace)
    ET.indent(root, space='  ')
    body = ET.tostring(root, encoding='unicode')
    return ('<?xml version="1.0"?>\n' + _header(w, robot, flavor, start, robot_name)
            + body + '\n')
