"""The main job: run one VLN episode in the headless simulator with the whole node graph.

Starts every node as its own process on an isolated ROS domain, gives the instruction at run time
(on vln/instruction, as a user would), prints per-step progress, and ends with NE, SR, OSR, SPL,
nDTW, steps and wall time, a top-down trajectory plot and a strip of camera frames.

    python -m vln_stack.tools.run_episode                     # embedded default (oracle policy)
    python -m vln_stack.tools.run_episode --policy janus --checkpoint models/tiny-janus
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from ..core.episodes import find_episode
from ..core.metrics import episode_metrics
from .graph import sim_graph
from .plots import frame_strip, trajectory_plot
from .procs import REPO_ROOT, ProcessGroup, config_dir, ros_env

DEFAULT_EPISODE_FILE = 'episodes/indoor.yaml'
DEFAULT_EPISODE_ID = 'indoor_green_plant'


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--episode-file', default='', help='episode YAML (default: the indoor set)')
    p.add_argument('--episode-id', default='', help='episode id in the file')
    p.add_argument('--robot', default='go2', help='robot profile: go2 | stretch3 | agri | path')
    p.add_argument('--policy', default='oracle', choices=['oracle', 'janus'])
    p.add_argument('--checkpoint', default='', help='checkpoint folder for --policy janus')
    p.add_argument('--instruction', default='', help='override the episode instruction')
    p.add_argument('--rtf', type=float, default=1.0, help='simulator real-time factor')
    p.add_argument('--no-encoder', action='store_true', help='do not start the memory encoder')
    p.add_argument('--out', default=str(REPO_ROOT / 'outputs' / 'demo'), help='output folder')
    p.add_argument('--timeout-s', type=float, default=600.0, help='wall-clock bound')
    p.add_argument('--domain-id', type=int, default=-1, help='ROS_DOMAIN_ID (-1: from the PID)')
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
        from ..ros.convert import pose2d_from_odom
        self.pose = pose2d_from_odom(msg)
        if not self.path or math.dist(self.path[-1], (self.pose.x, self.pose.y)) > 0.02:
            self.path.append((self.pose.x, self.pose.y))

    def _on_image(self, msg) -> None:
        self.frame = msg

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.05, max(0.0, end - time.monotonic())))


def run(args: argparse.Namespace) -> int:
    cfg = config_dir()
    episode_file = Path(args.episode_file) if args.episode_file else cfg / DEFAULT_EPISODE_FILE
    episode_id = args.episode_id or ('' if args.episode_file else DEFAULT_EPISODE_ID)
    episode = find_episode(episode_file, episode_id)
    instruction = args.instruction or episode.instruction
    if args.policy == 'janus':
        if not args.checkpoint:
            print('error: --policy janus needs --checkpoint FOLDER (a local JanusVLN checkpoint; '
                  'the tiny random-weight one is models/tiny-janus)', file=sys.stderr)
            return 2
        if not Path(args.checkpoint, 'config.json').is_file():
            print(f'error: checkpoint folder {args.checkpoint} has no config.json', file=sys.stderr)
            return 2
    domain = args.domain_id if args.domain_id >= 0 else 1 + os.getpid() % 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = ros_env(domain)
    os.environ.update({k: env[k] for k in ('ROS_DOMAIN_ID', 'ROS_AUTOMATIC_DISCOVERY_RANGE',
                                           'AMENT_PREFIX_PATH', 'ROS_LOG_DIR')})
    if 'FASTDDS_DEFAULT_PROFILES_FILE' in env:
        os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = env['FASTDDS_DEFAULT_PROFILES_FILE']
    if args.policy == 'oracle':
        print('policy: oracle (no trained checkpoint is configured: the oracle follows the '
              "episode's reference path; it validates the control stack and is the upper bound). "
              'Use --policy janus --checkpoint FOLDER for the model.')
    else:
        print(f'policy: janus, checkpoint {args.checkpoint}')
    print(f'episode {episode.episode_id} ({episode.world} world, robot {args.robot}): '
          f'"{instruction}"')
    # The memory encoder runs in the graph whenever a checkpoint is at hand (with the oracle its
    # fused tokens are published but not used); the tiny one comes from scripts/setup_env.sh.
    checkpoint = args.checkpoint
    if not checkpoint and (REPO_ROOT / 'models' / 'tiny-janus' / 'config.json').is_file():
        checkpoint = str(REPO_ROOT / 'models' / 'tiny-janus')
    specs = sim_graph(episode_file=episode_file, episode_id=episode.episode_id, robot=args.robot,
                      policy=args.policy, checkpoint_dir=checkpoint, real_time_factor=args.rtf,
                      with_encoder=not args.no_encoder and bool(checkpoint))
    import rclpy
    t_wall0 = time.monotonic()
    group = ProcessGroup(env, log_dir=out / 'logs')
    rclpy.init()
    mon = EpisodeMonitor()
    frames: list = []
    result = 1
    try:
        for spec in specs:
            group.start(spec)
        print(f'started {len(specs)} nodes on ROS_DOMAIN_ID={domain}: '
              f'{", ".join(s.name for s in specs)} (logs in {out / "logs"})')
        # Wait for the graph: decision heartbeat, odometry and a camera frame.
        deadline = time.monotonic() + 120.0
        while not (mon.status_count and mon.pose is not None and mon.frame is not None):
            mon.spin(0.2)
            dead = group.dead()
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f'graph did not come up (exited: {dead or "none"}); see '
                                   f'{out / "logs"}')
        mon.spin(1.0)
        mon.pub.publish(mon.String(data=instruction))
        print(f'instruction sent after {time.monotonic() - t_wall0:.1f} s of start-up')
        t_ep = time.monotonic()
        last_step, started = -1, False
        traj_steps: list[tuple[float, float]] = [(episode.start.x, episode.start.y)]
        while True:
            mon.spin(0.05)
            st = mon.status
            if st.get('episode', 0) >= 1 and st.get('state') not in ('idle', None):
                started = True
            if started and st.get('step', -1) != last_step:
                last_step = st['step']
                p = mon.pose
                d = math.dist((p.x, p.y), episode.goal)
                traj_steps.append((p.x, p.y))
                print(f'  step {last_step:3d}  {st.get("last_executed", "") or "(start)":12s} pose ({p.x:6.2f}, '
                      f'{p.y:6.2f}, {math.degrees(p.yaw):6.1f} deg)  to goal {d:5.2f} m  '
                      f'[{time.monotonic() - t_ep:5.1f} s]', flush=True)
                if mon.frame is not None:
                    from ..ros.images import image_msg_to_rgb
                    frames.append((f'step {last_step}', image_msg_to_rgb(mon.frame)))
            if started and st.get('state') in ('stopped', 'failed', 'canceled'):
                break
            dead = group.dead()
            if dead:
                raise RuntimeError(f'node(s) exited during the episode: {dead}; see {out / "logs"}')
            if time.monotonic() - t_wall0 > args.timeout_s:
                raise TimeoutError(f'episode not finished within {args.timeout_s} s')
        mon.spin(0.5)  # let the last odometry settle
        p = mon.pose
        traj_steps.append((p.x, p.y))
        if mon.frame is not None:
            from ..ros.images import image_msg_to_rgb
            frames.append(('end', image_msg_to_rgb(mon.frame)))
        m = episode_metrics(traj_steps, episode.reference_path, episode.goal,
                            episode.success_radius_m, steps=int(st.get('step', 0)))
        wall = time.monotonic() - t_wall0
        print(f'episode ended: {st.get("state")} ({st.get("reason", "")})')
        print(f'  NE {m.ne_m:.2f} m | SR {m.success:.0f} | OSR {m.oracle_success:.0f} | '
              f'SPL {m.spl:.3f} | nDTW {m.ndtw:.3f} | steps {m.steps} | path '
              f'{m.path_length_m:.2f} m (reference {episode.reference_length_m:.2f} m) | '
              f'wall {wall:.1f} s')
        plot = trajectory_plot(out / 'trajectory.png', episode, mon.path,
                               title=f'{episode.episode_id} ({args.policy}): SR {m.success:.0f}, '
                                     f'NE {m.ne_m:.2f} m, SPL {m.spl:.2f}')
        strip = frame_strip(out / 'frames.png', frames)
        (out / 'metrics.json').write_text(json.dumps({
            'episode': episode.episode_id, 'policy': args.policy, 'robot': args.robot,
            'state': st.get('state'), 'reason': st.get('reason'), **m.as_dict(),
            'wall_s': wall}, indent=2))
        print(f'wrote {plot}, {strip}, {out / "metrics.json"}')
        result = 0
    except (RuntimeError, TimeoutError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        for name in group.procs:
            log = out / 'logs' / f'{name}.log'
            if log.is_file():
                tail = log.read_text().strip().splitlines()[-5:]
                print(f'--- {name} (last lines) ---\n' + '\n'.join(tail), file=sys.stderr)
    finally:
        group.stop_all()
        mon.node.destroy_node()
        rclpy.try_shutdown()
    return result


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == '__main__':
    raise SystemExit(main())
