"""Realised motion per action in the simulator, per robot profile.

Starts the simulator bridge, the waypoint node and the velocity controller as processes, sends
discrete actions on vln/action, and measures from odometry what each one actually did.

    python -m vln_stack.tools.eval.action_report                   # all profiles
    python -m vln_stack.tools.eval.action_report --robots go2 --turn-deg 15
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...core.geometry import wrap_angle
from ...core.paths import config_dir
from ..runner.graph import sim_graph
from ..runner.procs import ProcessGroup, ros_env

SEQUENCE = ['MOVE_FORWARD'] * 4 + ['TURN_LEFT'] * 3 + ['TURN_RIGHT'] * 4 + ['TURN_LEFT']


@dataclass
class Realised:
    action: str
    forward_m: float
    lateral_m: float
    turn_deg: float
    duration_s: float
    result: str


def measure_profile(robot: str, *, forward_m: float, turn_deg: float, domain: int,
                    log_dir: Path, rtf: float = 1.0, settle_s: float = 0.4,
                    sequence: list[str] | None = None) -> list[Realised]:
    """Run ``sequence`` (default :data:`SEQUENCE`) on ``robot``'s simulated counterpart; each
    action's motion is read ``settle_s / rtf`` s after its move_done (a walking robot takes
    ~0.5 s to come to rest)."""
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.node import Node
    from std_msgs.msg import String

    from ...ros.convert import pose2d_from_odom

    ep_file = config_dir() / 'episodes' / 'calibration.yaml'
    specs = sim_graph(episode_file=ep_file, robot=robot, real_time_factor=rtf,
                      include=('sim_bridge', 'waypoint', 'velocity_controller'),
                      overrides={'waypoint': {'forward_m': forward_m, 'turn_deg': turn_deg},
                                 'velocity_controller': {'decision_timeout_s': 0.0}})
    env = ros_env(domain)
    out: list[Realised] = []
    rclpy.init(args=['--ros-args', '-r', '__node:=vln_action_report'],
               domain_id=domain)
    node = Node('vln_action_report')
    state: dict = {'pose': None, 'done': None}

    def on_odom(msg: Odometry) -> None:
        state['pose'] = pose2d_from_odom(msg)

    def on_done(msg: String) -> None:
        state['done'] = json.loads(msg.data)

    node.create_subscription(Odometry, 'odom', on_odom, 20)
    node.create_subscription(String, 'vln/move_done', on_done, 10)
    pub = node.create_publisher(String, 'vln/action', 10)

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.02)

    with ProcessGroup(env, log_dir=log_dir / robot) as group:
        for spec in specs:
            group.start(spec)
        deadline = time.monotonic() + 60
        while (state['pose'] is None or pub.get_subscription_count() < 2) and \
                time.monotonic() < deadline:
            spin(0.1)
        if state['pose'] is None:
            raise RuntimeError(f'{robot}: no odometry from the simulator (logs: {log_dir})')
        spin(2.0)  # the velocity controller's odometry, too
        for action in sequence or SEQUENCE:
            out.append(_realise(action, state, pub, spin, settle_s / max(rtf, 0.1)))
    node.destroy_node()
    rclpy.try_shutdown()
    return out



def _realise(action: str, state: dict, pub: Any, spin: Callable[[float], None],
             settle_wall_s: float) -> Realised:
    """Send ``action``; its motion in the frame of the pose before it, read once settled."""
    from std_msgs.msg import String

    before = state['pose']
    state['done'] = None
    t0 = time.monotonic()
    pub.publish(String(data=action))
    while state['done'] is None and time.monotonic() - t0 < 30:
        spin(0.02)
    spin(settle_wall_s)  # settle, then read the pose
    after = state['pose']
    c, s = math.cos(before.yaw), math.sin(before.yaw)
    dx, dy = after.x - before.x, after.y - before.y
    return Realised(action, c * dx + s * dy, -s * dx + c * dy,
                    math.degrees(wrap_angle(after.yaw - before.yaw)), time.monotonic() - t0,
                    (state['done'] or {}).get('result', 'no report'))

def summarise(rows: list[Realised], forward_m: float, turn_deg: float) -> dict[str, dict]:
    summary = {}
    for action, target in (('MOVE_FORWARD', forward_m), ('TURN_LEFT', turn_deg),
                           ('TURN_RIGHT', -turn_deg)):
        sel = [r for r in rows if r.action == action]
        if not sel:
            continue
        vals = [r.forward_m if action == 'MOVE_FORWARD' else r.turn_deg for r in sel]
        errs = [v - target for v in vals]
        summary[action] = {'n': len(sel), 'commanded': target,
                           'mean': sum(vals) / len(vals),
                           'max_abs_error': max(abs(e) for e in errs),
                           'max_lateral_m': max(abs(r.lateral_m) for r in sel),
                           'mean_duration_s': sum(r.duration_s for r in sel) / len(sel),
                           'all_succeeded': all(r.result == 'succeeded' for r in sel)}
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--robots', nargs='+', default=['go2', 'stretch3', 'agri'])
    p.add_argument('--forward-m', type=float, default=0.25)
    p.add_argument('--turn-deg', type=float, default=30.0)
    p.add_argument('--tolerance-m', type=float, default=0.03)
    p.add_argument('--tolerance-deg', type=float, default=3.0)
    p.add_argument('--rtf', type=float, default=1.0)
    p.add_argument('--settle-s', type=float, default=0.4,
                   help='read the pose this long after each move_done')
    p.add_argument('--json', default='', help='also write the summary to this file')
    p.add_argument('--log-dir', default='/tmp/vln_action_report')
    args = p.parse_args(argv)
    domain = 1 + (os.getpid() + 50) % 100
    report, ok = {}, True
    print(f'realised motion per action (commanded {args.forward_m} m / {args.turn_deg} deg; '
          f'tolerance +-{args.tolerance_m} m / +-{args.tolerance_deg} deg)')
    print(f'{"robot":9s} {"action":13s} {"n":>2s} {"mean":>8s} {"max|err|":>9s} '
          f'{"max lat m":>9s} {"s/move":>7s}  ok')
    for robot in args.robots:
        rows = measure_profile(robot, forward_m=args.forward_m, turn_deg=args.turn_deg,
                               domain=domain, log_dir=Path(args.log_dir), rtf=args.rtf,
                               settle_s=args.settle_s)
        summ = summarise(rows, args.forward_m, args.turn_deg)
        report[robot] = summ
        for action, s in summ.items():
            tol = args.tolerance_m if action == 'MOVE_FORWARD' else args.tolerance_deg
            good = s['max_abs_error'] <= tol and s['all_succeeded']
            ok &= good
            unit = 'm' if action == 'MOVE_FORWARD' else 'deg'
            print(f'{robot:9s} {action:13s} {s["n"]:2d} {s["mean"]:7.3f}{unit[0]} '
                  f'{s["max_abs_error"]:8.3f}{unit[0]} {s["max_lateral_m"]:9.3f} '
                  f'{s["mean_duration_s"]:7.2f}  {"yes" if good else "NO"}', flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    print('all within tolerance' if ok else 'SOME ACTIONS OUT OF TOLERANCE')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
