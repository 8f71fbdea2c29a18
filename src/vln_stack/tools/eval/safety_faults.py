"""The safety faults, each injected once through real processes and measured from outside
(:mod:`.safety_probe`): the safety node alone (:func:`run_standalone`) or the simulator graph
(:func:`run_kill`, :func:`run_wall`). The report (:mod:`.safety_report`) and tests/test_safety.py
run these."""
from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from ...core.paths import config_dir
from ..runner.procs import NodeSpec, ProcessGroup, ros_env
from .safety_probe import REQUEST, Feeder, Probe

STANDALONE = ('camera_freeze', 'odom_nan', 'heartbeat_loss', 'encoder_loss', 'oversized',
              'obstacle_scan', 'estop', 'cancel', 'sigterm')
GRAPH = ('kill_decision', 'kill_encoder', 'wall_refusal')
# Deadlines the standalone safety node runs with (seconds).
DEADLINES = {'odom': 0.3, 'camera': 0.5, 'status': 0.3, 'encoder': 0.4}


@dataclass
class FaultResult:
    fault: str
    ok: bool
    zero_after_s: float | None = None      # fault -> first zero twist on cmd_vel
    beyond_deadline_s: float | None = None  # watchdogs: zero twist after the deadline expired
    still_after_s: float | None = None      # simulator: fault -> base speed ~0 on odom
    detail: str = ''
    extra: dict = field(default_factory=dict)


def _safety_spec(log_name: str = 'safety') -> NodeSpec:
    params = {'use_sim_time': False, 'obstacle_source': 'scan', 'camera_topic': 'vln/image',
              'odom_timeout_s': DEADLINES['odom'], 'camera_timeout_s': DEADLINES['camera'],
              'status_timeout_s': DEADLINES['status'], 'encoder_timeout_s': DEADLINES['encoder'],
              'max_linear_mps': 0.5, 'max_angular_rps': 1.0, 'footprint_length_m': 0.6,
              'footprint_width_m': 0.3, 'obstacle_stop_m': 0.15}
    return NodeSpec('vln_stack.nodes.safety_node', log_name,
                    [config_dir() / 'params.yaml'], params)


def _moving(probe: Probe, feeder: Feeder, timeout_s: float = 3.0) -> bool:
    t0 = time.monotonic()
    return probe.spin_until(lambda: probe.moving_cmd_since(t0), timeout_s, feeder.tick)


def _watchdog(probe: Probe, feeder: Feeder, key: str, name: str) -> FaultResult:
    """Silence one input; zero twist must follow within its deadline + 0.2 s."""
    if not _moving(probe, feeder):
        return FaultResult(name, False, detail='not moving before the fault')
    t_moving = time.monotonic()
    probe.spin_until(lambda: feeder.last[key] > t_moving, 1.0, feeder.tick)
    feeder.on[key] = False
    t_fault = feeder.last[key]          # the input's last message, sent while moving
    ok = probe.spin_until(lambda: probe.first_zero_after(t_fault) is not None, 3.0, feeder.tick)
    t_zero = probe.first_zero_after(t_fault) if ok else None
    probe.spin(0.5, feeder.tick)        # still silent: stays stopped
    stayed = t_zero is not None and probe.all_zero_between(t_zero, time.monotonic())
    feeder.on[key] = True
    resumed = _moving(probe, feeder)
    if t_zero is None:
        return FaultResult(name, False, detail='no zero twist')
    lat = t_zero - t_fault
    beyond = lat - DEADLINES[key]
    good = stayed and resumed and beyond <= 0.2
    return FaultResult(name, good, lat, beyond, detail=f'deadline {DEADLINES[key]} s; stayed '
                       f'stopped {stayed}; resumed {resumed}')


def _odom_nan(probe: Probe, feeder: Feeder, log: Path) -> FaultResult:
    if not _moving(probe, feeder):
        return FaultResult('odom_nan', False, detail='not moving before the fault')
    feeder.odom_nan = True
    t0 = time.monotonic()
    probe.spin_until(lambda: probe.first_zero_after(t0) is not None, 2.0, feeder.tick)
    t_zero = probe.first_zero_after(t0)
    probe.spin(0.3, feeder.tick)
    stayed = t_zero is not None and probe.all_zero_between(t_zero, time.monotonic())
    feeder.odom_nan = False
    resumed = _moving(probe, feeder)
    text = log.read_text() if log.is_file() else ''
    said = 'odometry is not finite' in text
    lat = None if t_zero is None else t_zero - t0
    return FaultResult('odom_nan', bool(lat is not None and lat < 0.2 and stayed and resumed
                                        and said), lat,
                       detail=f'error logged {said}; stayed stopped {stayed}; resumed {resumed}')


def _oversized(probe: Probe, feeder: Feeder, log: Path) -> FaultResult:
    feeder.request = (5.0, 0.0, -10.0)
    t0 = time.monotonic()
    probe.spin(0.5, feeder.tick)
    got = [(vx, wz) for t, vx, _, wz in probe.cmd if t > t0 + 0.1]
    clamped = bool(got) and all(abs(vx) <= 0.5 + 1e-9 and abs(wz) <= 1.0 + 1e-9
                                for vx, wz in got) and (0.5, -1.0) in got
    feeder.request = (math.nan, 0.0, 0.2)
    t1 = time.monotonic()
    probe.spin(0.3, feeder.tick)
    nan_zero = probe.all_zero_between(t1 + 0.05, time.monotonic()) and \
        all(math.isfinite(v) for c in probe.cmd for v in c[1:])
    feeder.request = REQUEST
    _moving(probe, feeder)
    logged = 'non-finite velocity request' in (log.read_text() if log.is_file() else '')
    return FaultResult('oversized', clamped and nan_zero and logged, detail=(
        f'(5.0 m/s, -10 rad/s) -> {got[-1] if got else None}; NaN request -> zero {nan_zero}, '
        f'error logged {logged}'))


def _obstacle(probe: Probe, feeder: Feeder) -> FaultResult:
    if not _moving(probe, feeder):
        return FaultResult('obstacle_scan', False, detail='not moving before the fault')
    feeder.obstacle_m = 0.40       # 0.1 m from the 0.3 m front edge: below 0.15 m + braking
    t0 = time.monotonic()
    probe.spin_until(lambda: any(t > t0 and vx == 0.0 for t, vx, _, _ in probe.cmd), 2.0,
                     feeder.tick)
    t_block = next((t for t, vx, _, _ in probe.cmd if t > t0 and vx == 0.0), None)
    probe.spin(0.4, feeder.tick)
    after = [(vx, wz) for t, vx, _, wz in probe.cmd if t_block and t > t_block]
    turning = bool(after) and all(vx == 0.0 and abs(wz - REQUEST[2]) < 1e-9 for vx, wz in after)
    feeder.obstacle_m = None
    t1 = time.monotonic()
    resumed = probe.spin_until(lambda: any(t > t1 and vx > 0 for t, vx, _, _ in probe.cmd), 2.0,
                               feeder.tick)
    lat = None if t_block is None else t_block - t0
    return FaultResult('obstacle_scan', bool(lat is not None and turning and resumed), lat,
                       detail=f'forward blocked, turning kept {turning}; resumed {resumed}')


def _estop(probe: Probe, feeder: Feeder) -> FaultResult:
    from std_msgs.msg import Bool
    from std_srvs.srv import SetBool

    if not _moving(probe, feeder):
        return FaultResult('estop', False, detail='not moving before the fault')
    t0 = time.monotonic()
    feeder.estop_pub.publish(Bool(data=True))
    probe.spin_until(lambda: probe.first_zero_after(t0) is not None, 1.0, feeder.tick)
    t_zero = probe.first_zero_after(t0)
    feeder.estop_pub.publish(Bool(data=False))       # the topic cannot release it
    probe.spin(1.0, feeder.tick)
    latched = t_zero is not None and probe.all_zero_between(t_zero, time.monotonic())
    client = probe.node.create_client(SetBool, 'vln/estop')
    released = False
    if client.wait_for_service(timeout_sec=3.0):
        fut = client.call_async(SetBool.Request(data=False))
        probe.spin_until(fut.done, 3.0, feeder.tick)
        released = fut.done() and fut.result() is not None and fut.result().success
    resumed = _moving(probe, feeder)
    lat = None if t_zero is None else t_zero - t0
    return FaultResult('estop', bool(lat is not None and lat < 0.1 and latched and released
                                     and resumed), lat,
                       detail=f'latched {latched} (topic false ignored); service reset '
                              f'{released}; resumed {resumed}')


def _cancel(probe: Probe, feeder: Feeder) -> FaultResult:
    from std_msgs.msg import String

    from ...core.geometry import Pose2D
    from ...ros.convert import pose_stamped
    if not _moving(probe, feeder):
        return FaultResult('cancel', False, detail='not moving before the fault')
    t0 = time.monotonic()
    feeder.action_pub.publish(String(data='STOP'))
    probe.spin_until(lambda: probe.first_zero_after(t0) is not None, 1.0, feeder.tick)
    t_zero = probe.first_zero_after(t0)
    probe.spin(0.4, feeder.tick)
    held = t_zero is not None and probe.all_zero_between(t_zero, time.monotonic())
    feeder.goal_pub.publish(pose_stamped(Pose2D(1.0, 0.0, 0.0),
                                         probe.node.get_clock().now().to_msg(), 'odom'))
    resumed = _moving(probe, feeder)
    lat = None if t_zero is None else t_zero - t0
    return FaultResult('cancel', bool(lat is not None and lat < 0.1 and held and resumed), lat,
                       detail=f'held until the next goal {held}; resumed {resumed}')


def _sigterm(probe: Probe, feeder: Feeder, group: ProcessGroup, name: str) -> FaultResult:
    if not _moving(probe, feeder):
        return FaultResult('sigterm', False, detail='not moving before the fault')
    proc = group.procs[name]
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    probe.spin_until(lambda: proc.poll() is not None, 5.0, feeder.tick)
    probe.spin(0.3, feeder.tick)
    last = probe.cmd[-1] if probe.cmd else None
    t_zero = probe.first_zero_after(t0)
    ok = last is not None and last[1:] == (0.0, 0.0, 0.0) and proc.poll() is not None
    return FaultResult('sigterm', ok, None if t_zero is None else t_zero - t0,
                       detail=f'exit code {proc.poll()}; last twist on cmd_vel '
                              f'{last[1:] if last else None}')


def run_standalone(faults: tuple[str, ...], *, domain: int, log_dir: Path) -> list[FaultResult]:
    """The safety node alone, fed by this process; one node process for all faults."""
    out: list[FaultResult] = []
    probe = Probe(domain)
    feeder = Feeder(probe)
    with ProcessGroup(ros_env(domain), log_dir=log_dir) as group:
        group.start(_safety_spec())
        log = log_dir / 'safety.log'
        if not _moving(probe, feeder, 30.0):
            probe.close()
            raise RuntimeError(f'safety node never passed a request (log: {log}): '
                               f'{log.read_text()[-2000:] if log.is_file() else "no log"}')
        for fault in faults:
            if fault in ('camera_freeze', 'heartbeat_loss', 'encoder_loss'):
                key = {'camera_freeze': 'camera', 'heartbeat_loss': 'status',
                       'encoder_loss': 'encoder'}[fault]
                out.append(_watchdog(probe, feeder, key, fault))
            elif fault == 'odom_nan':
                out.append(_odom_nan(probe, feeder, log))
            elif fault == 'oversized':
                out.append(_oversized(probe, feeder, log))
            elif fault == 'obstacle_scan':
                out.append(_obstacle(probe, feeder))
            elif fault == 'estop':
                out.append(_estop(probe, feeder))
            elif fault == 'cancel':
                out.append(_cancel(probe, feeder))
            elif fault == 'sigterm':
                out.append(_sigterm(probe, feeder, group, 'safety'))
    probe.close()
    return out


# --- through the simulator graph ----------------------------------------------------------------

def run_kill(node: str, *, domain: int, log_dir: Path, checkpoint_dir: str = '') -> FaultResult:
    """Farm lane, agri profile, 2 m moves; SIGKILL ``node`` (decision | memory_encoder) while the
    base drives at speed, then measure the zero twist and the base stopping."""
    from ..runner.graph import sim_graph
    name = 'kill_decision' if node == 'decision' else 'kill_encoder'
    overrides: dict = {'waypoint': {'forward_m': 2.0}}
    if node == 'memory_encoder':   # the oracle ignores the encoder: watch it as for janus
        overrides['safety'] = {'encoder_timeout_s': DEADLINES['encoder']}
    specs = sim_graph(episode_file=config_dir() / 'episodes' / 'farm.yaml',
                      episode_id='farm_row_barrel', robot='agri', checkpoint_dir=checkpoint_dir,
                      with_encoder=node == 'memory_encoder', overrides=overrides)
    probe = Probe(domain)
    from std_msgs.msg import String
    status: dict = {}
    probe.node.create_subscription(String, 'vln/status', lambda m: status.update(
        json.loads(m.data)), 10)
    info: list = []
    probe.node.create_subscription(String, 'vln/encoder/heartbeat', info.append, 10)
    pub = probe.node.create_publisher(String, 'vln/instruction', 10)
    try:
        with ProcessGroup(ros_env(domain), log_dir=log_dir) as group:
            for spec in specs:
                group.start(spec)
            up = probe.spin_until(lambda: bool(status) and bool(probe.odom) and probe.safety and
                                  pub.get_subscription_count() > 0 and
                                  (node != 'memory_encoder' or len(info) > 3), 120)
            if not up:
                return FaultResult(name, False, detail=f'graph not up; exited {group.dead()}')
            probe.spin(1.0)
            pub.publish(String(data='Drive down the lane and stop at the red barrel.'))
            if not probe.spin_until(lambda: probe.odom[-1][4] > 0.3, 60):
                return FaultResult(name, False, detail=f'never moved: {status}, '
                                   f'safety {probe.safety.get("reasons")}')
            group.kill(node)
            t_kill = time.monotonic()
            p_kill = probe.odom[-1][1:3]
            probe.spin(2.0)
            t_zero = probe.first_zero_after(t_kill)
            t_still = probe.still_after(t_kill)
            p_end = probe.odom[-1][1:3]
            stayed = t_zero is not None and probe.all_zero_between(t_zero, time.monotonic())
            log = (log_dir / 'safety.log').read_text()
            said = 'silent for' in log
    finally:
        probe.close()
    zero = None if t_zero is None else t_zero - t_kill
    still = None if t_still is None else t_still - t_kill
    ok = zero is not None and zero <= 0.5 and still is not None and still <= 0.6 and stayed \
        and said
    return FaultResult(name, ok, zero, still_after_s=still, detail=(
        f'ran on {math.dist(p_kill, p_end):.2f} m after the kill; stayed stopped {stayed}; '
        f'stop logged {said}'))


def wall_episode(folder: Path, clear_ahead_m: float, footprint_length_m: float) -> Path:
    """An indoor episode facing the west wall (its face at x = 0.05) with ``clear_ahead_m``
    between the footprint's front and the wall."""
    x = 0.05 + footprint_length_m / 2 + clear_ahead_m
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / 'wall.yaml'
    path.write_text(
        'world: indoor\nepisodes:\n  - id: facing_wall\n    instruction: Drive into the wall.\n'
        f'    start: {{x: {x:.3f}, y: 3.0, yaw_deg: 180.0}}\n    goal: [0.3, 3.0]\n'
        f'    reference_path: [[{x:.3f}, 3.0], [0.3, 3.0]]\n')
    return path


def run_wall(*, domain: int, log_dir: Path, robot: str = 'go2',
             clear_ahead_m: float = 0.3) -> FaultResult:
    """MOVE_FORWARD toward a wall inside the margin is refused (the base holds); a goal sent
    straight to the controller through the wall is stopped by the safety node before contact."""
    from std_msgs.msg import String

    from ...core.geometry import Pose2D
    from ...core.profiles import load_profile
    from ...ros.convert import pose_stamped
    from ..runner.graph import sim_graph
    prof = load_profile(robot)
    length = float(prof.footprint['length_m'])
    ep = wall_episode(log_dir, clear_ahead_m, length)
    specs = sim_graph(episode_file=ep, robot=robot,
                      include=('sim_bridge', 'waypoint', 'velocity_controller'),
                      overrides={'velocity_controller': {'decision_timeout_s': 0.0}})
    probe = Probe(domain)
    pub = probe.node.create_publisher(String, 'vln/action', 10)
    from geometry_msgs.msg import PoseStamped
    goal_pub = probe.node.create_publisher(PoseStamped, 'vln/goal', 10)
    try:
        with ProcessGroup(ros_env(domain), log_dir=log_dir) as group:
            for spec in specs:
                group.start(spec)
            if not probe.spin_until(lambda: bool(probe.odom) and bool(probe.candidates) and
                                    pub.get_subscription_count() >= 3, 90):
                return FaultResult('wall_refusal', False, detail=f'graph not up: {group.dead()}')
            probe.spin(1.0)
            start = probe.odom[-1]
            t0 = time.monotonic()
            pub.publish(String(data='MOVE_FORWARD'))
            probe.spin_until(lambda: bool(probe.done), 5.0)
            report = probe.done[-1] if probe.done else {}
            t_report = time.monotonic() - t0
            probe.spin(1.0)
            moved = math.dist(start[1:3], probe.odom[-1][1:3])
            cands = probe.candidates[-1]
            # Now bypass the waypoint node: a goal 1 m through the wall.
            probe.done.clear()
            here = probe.odom[-1]
            target = Pose2D(here[1] - 1.0, here[2], math.pi)
            goal_pub.publish(pose_stamped(target, probe.node.get_clock().now().to_msg(), 'odom'))
            probe.spin_until(lambda: bool(probe.done), 10.0)
            gap = probe.odom[-1][1] - length / 2 - 0.05     # front edge to the wall face
            blocked = probe.done[-1] if probe.done else {}
            touched = 'in contact' in (log_dir / 'sim_bridge.log').read_text()
    finally:
        probe.close()
    refused = report.get('result') == 'refused' and report.get('action') == 'MOVE_FORWARD'
    ok = refused and moved < 0.01 and len(cands.poses) == 12 and \
        blocked.get('result') == 'aborted' and gap > 0.02 and not touched
    return FaultResult('wall_refusal', ok, extra={'report': report, 'moved_m': round(moved, 4),
                                                  'safety_stop_gap_m': round(gap, 3),
                                                  'safety_stop_report': blocked},
                       detail=f'{report.get("result")} after {t_report:.2f} s: '
                              f'{report.get("reason")}; base moved {moved:.3f} m; a goal through '
                              f'the wall stopped {gap:.2f} m short ({blocked.get("result")})')
