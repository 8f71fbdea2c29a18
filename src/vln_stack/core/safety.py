"""The safety layer between the velocity controller and the base, independent of the model path.

ROS-free: the safety node feeds arrival times of the watched inputs, e-stop and cancel events,
the obstacle clearance ahead and velocity requests, with the clock injected (seconds), and
publishes what :meth:`SafetyMonitor.filter` returns. Rules:

* watchdog: every watched input (odometry, camera frames, the decision heartbeat, the encoder's
  heartbeat) must have arrived within its deadline; otherwise the command is zero;
* e-stop: latched until :meth:`SafetyMonitor.reset_estop`;
* cancel: STOP on the action topic holds the robot until the next goal;
* bounds: non-finite commands become zero; speeds are clamped to the profile limits;
* obstacles: no forward motion while the clearance ahead is below the stop distance plus the
  braking distance of the requested speed, or while obstacle data is missing (turning is allowed).

Each stop carries what happened and what to do, for the node to log.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .limits import RobotLimits
from .watchdog import Watchdog

# Watched inputs: key -> (what it is, what to check when it goes silent).
WATCHED = {
    'odom': ('odometry', 'check the base driver and the odom remap'),
    'camera': ('camera frames', 'check the camera driver and camera_ingest'),
    'status': ('decision heartbeat (vln/status)',
               'check the decision node and the link to the GPU host'),
    'encoder': ('memory encoder heartbeat (vln/encoder/heartbeat)',
                'check the memory_encoder node and the link to the GPU host'),
}


@dataclass(frozen=True)
class SafetyConfig(RobotLimits):
    """The robot's :class:`RobotLimits` (speeds are clamped to them; the linear acceleration
    limit is the braking assumed for the stopping distance) plus deadlines (seconds) and the
    obstacle stop (metres). A deadline of 0 disables that check."""

    odom_timeout_s: float = 0.3
    camera_timeout_s: float = 0.5
    status_timeout_s: float = 0.3        # decision heartbeat is 10 Hz
    encoder_timeout_s: float = 0.0       # encoder heartbeat is 10 Hz; 0 = not watched
    request_timeout_s: float = 0.3       # a silent controller -> zero
    obstacle_check: bool = True          # False: no obstacle sensor on this robot
    obstacle_stop_m: float = 0.15        # no forward motion with an obstacle this close
    obstacle_timeout_s: float = 0.5      # obstacle data older than this blocks forward motion

    def timeout(self, key: str) -> float:
        return float(getattr(self, f'{key}_timeout_s'))

    def deadlines(self) -> dict[str, float]:
        """Watched input -> deadline, for :class:`~vln_stack.core.watchdog.Watchdog`."""
        return {key: self.timeout(key) for key in WATCHED}


@dataclass(frozen=True)
class Stop:
    """Why the robot may not move: a short key, what happened, what to do."""

    key: str
    what: str
    todo: str
    startup: bool = False     # an input that never arrived yet (not a fault while starting)


@dataclass(frozen=True)
class Command:
    """A filtered planar velocity command (m/s, m/s, rad/s) and what the filter changed."""

    vx: float = 0.0
    vy: float = 0.0
    wz: float = 0.0
    notes: tuple[str, ...] = ()

    @property
    def is_zero(self) -> bool:
        return self.vx == 0.0 and self.vy == 0.0 and self.wz == 0.0

    def same_motion(self, other: 'Command') -> bool:
        return (self.vx, self.vy, self.wz) == (other.vx, other.vy, other.wz)


ZERO = Command()


@dataclass
class _Clearance:
    value_m: float
    time_s: float


class SafetyMonitor:
    """The safety rules over the latest inputs; one per safety node."""

    def __init__(self, cfg: SafetyConfig) -> None:
        self.cfg = cfg
        self.watchdog = Watchdog(cfg.deadlines())
        self._estop = ''
        self._canceled = False
        self._odom_fault = ''
        self._clear: _Clearance | None = None
        self._active: dict[str, Stop] = {}
        self._blocked = ''          # why the latest forward request was blocked ('' = it was not)

    # --- inputs ---------------------------------------------------------------------------------
    def heard(self, key: str, now_s: float) -> None:
        """An input arrived (``odom``, ``camera``, ``status``, ``encoder`` or ``request``)."""
        self.watchdog.heard(key, now_s)

    def odometry(self, finite: bool, now_s: float, detail: str = '') -> None:
        """Odometry arrived; non-finite odometry is a fault until finite odometry arrives."""
        if finite:
            self._odom_fault = ''
            self.heard('odom', now_s)
        else:
            self._odom_fault = detail or 'NaN/inf in the odometry message'

    def engage_estop(self, source: str) -> bool:
        """Latch the e-stop; returns True when it was not engaged before."""
        new = not self._estop
        if new:
            self._estop = source
        return new

    def reset_estop(self) -> bool:
        """Release the e-stop; returns True when it was engaged."""
        was = bool(self._estop)
        self._estop = ''
        return was

    @property
    def estop(self) -> bool:
        return bool(self._estop)

    def cancel(self) -> None:
        """STOP on the action topic: hold until the next goal."""
        self._canceled = True

    def rearm(self) -> None:
        """A new goal: a cancel no longer holds the robot."""
        self._canceled = False

    def obstacle(self, clearance_m: float, now_s: float) -> None:
        """Clear distance ahead of the footprint's front edge (inf = nothing seen)."""
        self._clear = _Clearance(float(clearance_m), now_s)

    # --- state ----------------------------------------------------------------------------------
    def age(self, key: str, now_s: float) -> float:
        return self.watchdog.age(key, now_s)

    def stops(self, now_s: float) -> dict[str, Stop]:
        """Every reason that holds the robot now (empty: it may move)."""
        out: dict[str, Stop] = {}
        if self._estop:
            out['estop'] = Stop('estop', f'e-stop engaged ({self._estop})',
                                'make the area safe, then reset: ros2 service call vln/estop '
                                'std_srvs/srv/SetBool "{data: false}"')
        if self._odom_fault:
            out['odom_nan'] = Stop('odom_nan', f'odometry is not finite: {self._odom_fault}',
                                   'the base driver or its odometry is broken: check it; motion '
                                   'resumes with finite odometry')
        for key, age in self.watchdog.expired(now_s).items():
            what, todo = WATCHED[key]
            if math.isinf(age):
                out[key] = Stop(key, f'no {what} received yet', todo, startup=True)
            else:
                limit = self.cfg.timeout(key)
                out[key] = Stop(key, f'{what} silent for {age:.2f} s (deadline {limit:.2f} s)',
                                todo + '; motion resumes when it is back')
        if self._canceled:
            out['cancel'] = Stop('cancel', 'STOP on vln/action (cancel)',
                                 'nothing: the next goal re-arms motion')
        return out

    def clearance(self, now_s: float) -> float | None:
        """The latest clearance ahead, or None when missing or older than the deadline."""
        c = self._clear
        if c is None or now_s - c.time_s > self.cfg.obstacle_timeout_s:
            return None
        return c.value_m

    def forward_block(self, vx: float, now_s: float) -> str:
        """Why forward motion at ``vx`` m/s is not allowed now ('' = it is)."""
        if not self.cfg.obstacle_check or vx <= 0.0:
            return ''
        clear = self.clearance(now_s)
        if clear is None:
            return ('no fresh obstacle data (depth or scan): forward motion blocked; check the '
                    'sensor, or set obstacle_source none on a robot without one')
        need = self.cfg.obstacle_stop_m + self.cfg.braking_distance_m(vx)
        if clear < need:
            return (f'obstacle {clear:.2f} m ahead (stop distance {need:.2f} m): forward motion '
                    f'blocked, turning allowed; turn away or clear the path')
        return ''

    def update(self, now_s: float) -> tuple[list[Stop], list[Stop]]:
        """(stops that began, stops that ended) since the previous call, for logging."""
        now = self.stops(now_s)
        began = [s for k, s in now.items() if k not in self._active]
        ended = [s for k, s in self._active.items() if k not in now]
        self._active = now
        return began, ended

    # --- commands -------------------------------------------------------------------------------
    def filter(self, vx: float, vy: float, wz: float, now_s: float) -> Command:
        """The command to send for a request (never NaN/inf, never above the limits)."""
        if not all(math.isfinite(v) for v in (vx, vy, wz)):
            return Command(notes=(f'non-finite velocity request ({vx}, {vy}, {wz}) replaced by '
                                  f'zero: the controller is broken',))
        if self.stops(now_s):
            self._blocked = ''
            return ZERO
        notes = []
        lim = self.cfg.max_linear_mps
        speed = math.hypot(vx, vy)
        if speed > lim:
            notes.append(f'linear speed {speed:.2f} m/s clamped to {lim:.2f} m/s')
            vx, vy = vx * lim / speed, vy * lim / speed
        if abs(wz) > self.cfg.max_angular_rps:
            notes.append(f'angular speed {abs(wz):.2f} rad/s clamped to '
                         f'{self.cfg.max_angular_rps:.2f} rad/s')
            wz = math.copysign(self.cfg.max_angular_rps, wz)
        block = self.forward_block(vx, now_s)
        self._blocked = block
        if block:
            notes.append(block)
            vx, vy = 0.0, 0.0
        return Command(float(vx), float(vy), float(wz), tuple(notes))

    def request_fresh(self, now_s: float) -> bool:
        return self.age('request', now_s) <= self.cfg.request_timeout_s

    def status(self, now_s: float) -> dict:
        """State for vln/safety and diagnostics."""
        stops = self.stops(now_s)
        clear = self.clearance(now_s)
        return {
            'stopped': bool(stops), 'estop': self.estop,
            'reasons': [{'key': s.key, 'what': s.what, 'todo': s.todo} for s in stops.values()],
            'forward_blocked': bool(self._blocked) and self.request_fresh(now_s),
            'blocked_reason': self._blocked if self.request_fresh(now_s) else '',
            'obstacle_data': clear is not None,      # clearance_m None + data: nothing seen
            'clearance_m': round(clear, 3) if clear is not None and math.isfinite(clear) else None,
            'ages_s': {k: (round(self.age(k, now_s), 3) if math.isfinite(self.age(k, now_s))
                           else None) for k in (*WATCHED, 'request')},
        }
