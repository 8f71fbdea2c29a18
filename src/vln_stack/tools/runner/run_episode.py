"""The main job: run one VLN episode in the headless simulator with the whole node graph.

Starts every node as its own process on an isolated ROS domain, gives the instruction at run time
(on vln/instruction, as a user would), prints per-step progress, and ends with NE, SR, OSR, SPL,
nDTW, steps and wall time, a top-down trajectory plot and a strip of camera frames.

    python -m vln_stack.tools.runner.run_episode              # embedded default (oracle policy)
    python -m vln_stack.tools.runner.run_episode --policy janus --checkpoint models/tiny-janus
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...core.episodes import Episode, find_episode
from ...core.metrics import EpisodeMetrics, episode_metrics
from ...core.paths import REPO_ROOT, config_dir
from ..eval.plots import frame_strip, trajectory_plot
from .graph import sim_graph
from .procs import ProcessGroup, ros_env

DEFAULT_EPISODE_FILE = 'episodes/indoor.yaml'
DEFAULT_EPISODE_ID = 'indoor_green_plant'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--episode-file', default='', help='episode YAML (default: the indoor set)')
    p.add_argument('--episode-id', default='', help='episode id in the file')
    p.add_argument('--robot', default='go2', help='robot profile: go2 | stretch3 | agri | path')
    p.add_argument('--policy', default='oracle', choices=['oracle', 'janus', 'openai', 'random'])
    p.add_argument('--seed', type=int, default=0, help='seed of the random policy')
    p.add_argument('--checkpoint', default='', help='checkpoint folder for --policy janus')
    p.add_argument('--janus-mode', default='released', choices=['released', 'streaming'],
                   help='janus LLM memory: the published protocol or our bounded memory')
    p.add_argument('--openai-base-url', default='http://127.0.0.1:8000/v1',
                   help='--policy openai: OpenAI-compatible endpoint (key from OPENAI_API_KEY)')
    p.add_argument('--openai-model', default='', help='--policy openai: model name '
                   "('' = the server's first model)")
    p.add_argument('--instruction', default='', help='override the episode instruction')
    p.add_argument('--rtf', type=float, default=1.0, help='simulator real-time factor')
    p.add_argument('--no-encoder', action='store_true', help='do not start the memory encoder')
    p.add_argument('--out', default=str(REPO_ROOT / 'outputs' / 'demo'), help='output folder')
    p.add_argument('--timeout-s', type=float, default=600.0, help='wall-clock bound')
    p.add_argument('--domain-id', type=int, default=-1, help='ROS_DOMAIN_ID (-1: from the PID)')
    p.add_argument('--record', default='', metavar='BAG_DIR',
                   help='record the run (sim time) into an MCAP rosbag2 (see tools.bags.record)')
    p.add_argument('--record-image-rate', type=float, default=2.0, metavar='HZ',
                   help='with --record: camera frames per second kept (0 = all); the frames '
                        'decisions are taken on are always kept')
    return p.parse_args(argv)


class EpisodeMonitor:
    """The runner's own rclpy node: instruction out; status, odometry and frames in."""

    def __init__(self) -> None:
        import rclpy
        from nav_msgs.msg import Odometry
        from rclpy.node import Node
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.rclpy = rclpy
        self.String = String
        self.node = Node('vln_episode_runner', parameter_overrides=[
            rclpy.parameter.Parameter('use_sim_time', value=True)])
        self.status: dict = {}
        self.status_count = 0
        self.pose = None
        self.path: list[tuple[float, float]] = []
        self.frame = None
        self.pub = self.node.create_publisher(String, 'vln/instruction', 10)
        self.node.create_subscription(String, 'vln/status', self._on_status, 10)
        self.node.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.node.create_subscription(Image, 'vln/image', self._on_image, 2)

    def _on_status(self, msg) -> None:
        self.status = json.loads(msg.data)
        self.status_count += 1

    def _on_odom(self, msg) -> None:
        from ...ros.convert import pose2d_from_odom
        self.pose = pose2d_from_odom(msg)
        if not self.path or math.dist(self.path[-1], (self.pose.x, self.pose.y)) > 0.02:
            self.path.append((self.pose.x, self.pose.y))

    def _on_image(self, msg) -> None:
        self.frame = msg

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.05, max(0.0, end - time.monotonic())))


@dataclass
class EpisodeRun:
    """What one closed-loop episode produced."""

    episode_id: str
    policy: str
    robot: str
    state: str
    reason: str
    metrics: EpisodeMetrics
    wall_s: float
    decision_ms: list[float] = field(default_factory=list)
    trajectory: list[tuple[float, float]] = field(default_factory=list)
    plot: Path | None = None
    strip: Path | None = None

    def as_dict(self) -> dict:
        return {'episode': self.episode_id, 'policy': self.policy, 'robot': self.robot,
                'state': self.state, 'reason': self.reason, **self.metrics.as_dict(),
                'wall_s': self.wall_s, 'decision_ms': self.decision_ms,
                'plot': str(self.plot) if self.plot else None}


def default_checkpoint() -> str:
    """The tiny checkpoint written by scripts/setup_env.sh, if present."""
    tiny = REPO_ROOT / 'models' / 'tiny-janus'
    return str(tiny) if (tiny / 'config.json').is_file() else ''


def setup_ros_env(domain: int) -> dict[str, str]:
    env = ros_env(domain)
    for key in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE', 'AMENT_PREFIX_PATH',
                'ROS_LOG_DIR', 'FASTDDS_DEFAULT_PROFILES_FILE'):
        if key in env:
            os.environ[key] = env[key]
    return env


def run_one(episode_file: Path, episode: Episode, *, policy: str = 'oracle', robot: str = 'go2',
            checkpoint: str = '', instruction: str = '', rtf: float = 1.0,
            with_encoder: bool = True, out: Path, timeout_s: float = 600.0, domain: int = 0,
            success_radius_m: float | None = None, seed: int = 0,
            verbose: bool = True, record: str = '',
            record_image_rate: float = 2.0,
            decision_params: dict | None = None) -> EpisodeRun:
    """Run ``episode`` closed loop through the whole node graph; raises RuntimeError or
    TimeoutError when the graph cannot run it (a node died, nothing came up)."""
    import rclpy

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    instruction = instruction or episode.instruction
    out.mkdir(parents=True, exist_ok=True)
    env = setup_ros_env(domain)
    specs = sim_graph(episode_file=episode_file, episode_id=episode.episode_id, robot=robot,
                      policy=policy, checkpoint_dir=checkpoint, real_time_factor=rtf,
                      with_encoder=with_encoder and bool(checkpoint) and policy != 'openai',
                      overrides={'decision': {'seed': seed, 'max_steps': episode.max_steps,
                                              **(decision_params or {})}})
    t_wall0 = time.monotonic()
    group = ProcessGroup(env, log_dir=out / 'logs')
    rclpy.init()
    mon = EpisodeMonitor()
    recorder = None
    try:
        if record:  # the whole run, on sim time, into an MCAP rosbag2 (tools.bags.record)
            from ..bags.record import BagRecorder
            recorder = BagRecorder(record, use_sim_time=True, max_image_rate_hz=record_image_rate,
                                   custom_data={'episode_file': str(episode_file),
                                                'episode_id': episode.episode_id, 'robot': robot,
                                                'policy': policy, 'checkpoint': checkpoint,
                                                'instruction': instruction}).start()
        for spec in specs:
            group.start(spec)
        say(f'started {len(specs)} nodes on ROS_DOMAIN_ID={domain}: '
            f'{", ".join(s.name for s in specs)} (logs in {out / "logs"})')
        _wait_graph_up(mon, group, out)
        mon.spin(1.0)
        mon.pub.publish(mon.String(data=instruction))
        say(f'instruction sent after {time.monotonic() - t_wall0:.1f} s of start-up')
        trace = _follow_episode(mon, group, out, episode, say,
                                deadline=t_wall0 + timeout_s, timeout_s=timeout_s)
        radius = success_radius_m if success_radius_m is not None else episode.success_radius_m
        return _episode_run(trace, mon, episode, policy, robot, radius, out, t_wall0)
    finally:
        if recorder is not None:
            say(f'recorded {recorder.stop().summary()}')
        group.stop_all()
        mon.node.destroy_node()
        rclpy.try_shutdown()


def _wait_graph_up(mon: EpisodeMonitor, group: ProcessGroup, out: Path) -> None:
    """Until the decision node has loaded its policy and odometry and frames arrive."""
    deadline = time.monotonic() + 120.0
    while not (mon.status_count and mon.status.get('loaded', True)
               and mon.pose is not None and mon.frame is not None):
        mon.spin(0.2)
        if mon.status.get('error') and not mon.status.get('loaded', True):
            raise RuntimeError(_with_logs(f'the decision node could not load its policy: '
                                          f'{mon.status["error"]}', group, out))
        dead = group.dead()
        if dead or time.monotonic() > deadline:
            raise RuntimeError(_with_logs(f'graph did not come up (exited: {dead or "none"})',
                                          group, out))


@dataclass
class _Trace:
    """What the runner saw of one episode: the pose at every step, the decision times, frames
    and the final status."""
    steps: list[tuple[float, float]]
    decision_ms: list[float] = field(default_factory=list)
    frames: list = field(default_factory=list)
    status: dict = field(default_factory=dict)


def _follow_episode(mon: EpisodeMonitor, group: ProcessGroup, out: Path, episode: Episode,
                    say: Callable[[str], None], *, deadline: float, timeout_s: float) -> _Trace:
    """Print every step until the episode is over; the last pose and frame come after it."""
    from ...ros.images import image_msg_to_rgb

    t_ep = time.monotonic()
    last_step, started = -1, False
    trace = _Trace([(episode.start.x, episode.start.y)])
    while True:
        mon.spin(0.05)
        st = trace.status = mon.status
        if st.get('episode', 0) >= 1 and st.get('state') not in ('idle', None):
            started = True
        if started and st.get('step', -1) != last_step:
            last_step = st['step']
            p = mon.pose
            trace.steps.append((p.x, p.y))
            if last_step > 0:
                trace.decision_ms.append(float(st.get('decision_ms', 0.0)))
            say(f'  step {last_step:3d}  {st.get("last_executed", "") or "(start)":12s} '
                f'pose ({p.x:6.2f}, {p.y:6.2f}, {math.degrees(p.yaw):6.1f} deg)  to goal '
                f'{math.dist((p.x, p.y), episode.goal):5.2f} m  '
                f'[{time.monotonic() - t_ep:5.1f} s]')
            if mon.frame is not None:
                trace.frames.append((f'step {last_step}', image_msg_to_rgb(mon.frame)))
        if started and st.get('state') in ('stopped', 'failed', 'canceled'):
            break
        dead = group.dead()
        if dead:
            raise RuntimeError(_with_logs(f'node(s) exited during the episode: {dead}',
                                          group, out))
        if time.monotonic() > deadline:
            raise TimeoutError(f'episode not finished within {timeout_s} s')
    mon.spin(0.5)  # let the last odometry settle
    p = mon.pose
    trace.steps.append((p.x, p.y))
    if mon.frame is not None:
        trace.frames.append(('end', image_msg_to_rgb(mon.frame)))
    return trace


def _episode_run(trace: _Trace, mon: EpisodeMonitor, episode: Episode, policy: str, robot: str,
                 radius: float, out: Path, t_wall0: float) -> EpisodeRun:
    """Metrics, trajectory plot and frame strip of a finished episode."""
    st = trace.status
    m = episode_metrics(trace.steps, episode.reference_path, episode.goal, radius,
                        steps=int(st.get('step', 0)))
    plot = trajectory_plot(out / 'trajectory.png', episode, mon.path,
                           title=f'{episode.episode_id} ({policy}): SR {m.success:.0f}, '
                                 f'NE {m.ne_m:.2f} m, SPL {m.spl:.2f}')
    strip = frame_strip(out / 'frames.png', trace.frames)
    return EpisodeRun(episode.episode_id, policy, robot, str(st.get('state')),
                      str(st.get('reason', '')), m, time.monotonic() - t_wall0, trace.decision_ms,
                      list(mon.path), plot, strip)


def _with_logs(message: str, group: ProcessGroup, out: Path) -> str:
    lines = [message + f'; logs in {out / "logs"}']
    for name in group.procs:
        log = out / 'logs' / f'{name}.log'
        if log.is_file():
            tail = log.read_text().strip().splitlines()[-5:]
            if tail:
                lines.append(f'--- {name} (last lines) ---\n' + '\n'.join(tail))
    return '\n'.join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config_dir()
    episode_file = Path(args.episode_file) if args.episode_file else cfg / DEFAULT_EPISODE_FILE
    episode_id = args.episode_id or ('' if args.episode_file else DEFAULT_EPISODE_ID)
    episode = find_episode(episode_file, episode_id)
    if args.policy == 'janus':
        if not args.checkpoint:
            print('error: --policy janus needs --checkpoint FOLDER (a local JanusVLN checkpoint; '
                  'the tiny random-weight one is models/tiny-janus)', file=sys.stderr)
            return 2
        if not Path(args.checkpoint, 'config.json').is_file():
            print(f'error: checkpoint folder {args.checkpoint} has no config.json', file=sys.stderr)
            return 2
    if args.policy == 'oracle':
        print('policy: oracle (no trained checkpoint is configured: the oracle follows the '
              "episode's reference path; it validates the control stack and is the upper bound). "
              'Use --policy janus --checkpoint FOLDER for the model.')
    else:
        print(f'policy: {args.policy}' + (
            f', checkpoint {args.checkpoint}, {args.janus_mode} memory' if args.policy == 'janus'
            else f', endpoint {args.openai_base_url}' if args.policy == 'openai' else ''))
    print(f'episode {episode.episode_id} ({episode.world} world, robot {args.robot}): '
          f'"{args.instruction or episode.instruction}"')
    # The memory encoder runs in the graph whenever a checkpoint is at hand (with the oracle its
    # fused tokens are published but not used); the tiny one comes from scripts/setup_env.sh.
    out = Path(args.out)
    if args.record and Path(args.record).exists():
        print(f'error: --record {args.record} exists already', file=sys.stderr)
        return 2
    try:
        res = run_one(episode_file, episode, policy=args.policy, robot=args.robot,
                      checkpoint=args.checkpoint or default_checkpoint(),
                      instruction=args.instruction, rtf=args.rtf,
                      with_encoder=not args.no_encoder, out=out, timeout_s=args.timeout_s,
                      domain=args.domain_id if args.domain_id >= 0 else 1 + os.getpid() % 100,
                      seed=args.seed, record=args.record,
                      record_image_rate=args.record_image_rate,
                      decision_params={'janus_mode': args.janus_mode,
                                       'openai_base_url': args.openai_base_url,
                                       'openai_model': args.openai_model})
    except (RuntimeError, TimeoutError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    m = res.metrics
    print(f'episode ended: {res.state} ({res.reason})')
    print(f'  NE {m.ne_m:.2f} m | SR {m.success:.0f} | OSR {m.oracle_success:.0f} | '
          f'SPL {m.spl:.3f} | nDTW {m.ndtw:.3f} | steps {m.steps} | path '
          f'{m.path_length_m:.2f} m (reference {episode.reference_length_m:.2f} m) | '
          f'wall {res.wall_s:.1f} s')
    (out / 'metrics.json').write_text(json.dumps(res.as_dict(), indent=2))
    print(f'wrote {res.plot}, {res.strip}, {out / "metrics.json"}')
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    raise SystemExit(main())
