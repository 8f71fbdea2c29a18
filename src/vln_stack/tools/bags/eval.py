"""Evaluate the decision stack on recorded rosbag2 runs: closed replay and open loop.

    python -m vln_stack.tools.bags.eval replay BAG [--policy oracle] [--rate 4] [--repeat 2]
        [--episode-file F --episode-id ID] [--checkpoint DIR] [--out DIR]
    python -m vln_stack.tools.bags.eval openloop BAG [--policy janus --checkpoint DIR]
        [--every K] [--out DIR] [--instruction TEXT]

**replay** (:mod:`.replay`): the recorded camera, odometry, instructions and move reports are
played with /clock into fresh camera_ingest + decision (+ memory_encoder) nodes and the new
decisions are compared with the recorded ones. **openloop** (:mod:`.openloop`): no ROS graph, a
policy backend decides on each recorded decision step directly.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .openloop import openloop
from .replay import replay
from .replay_input import FRAME_MODES

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bags.eval',
                                 description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='mode', required=True)
    for mode in ('replay', 'openloop'):
        p = sub.add_parser(mode)
        p.add_argument('bag', type=Path, help='rosbag2 folder')
        p.add_argument('--policy', default='', choices=['', 'oracle', 'janus', 'random'],
                       help='default: the one recorded in the bag, else oracle')
        p.add_argument('--episode-file', default='', help='oracle: episode YAML (default: bag)')
        p.add_argument('--episode-id', default='')
        p.add_argument('--checkpoint', default='', help='janus: checkpoint folder')
        p.add_argument('--out', default='', help='output folder (default: a temp folder)')
    rp = sub.choices['replay']
    rp.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    rp.add_argument('--repeat', type=int, default=1, help='replays (to check determinism)')
    rp.add_argument('--retries', type=int, default=2,
                    help='extra attempts for replays that lost step with the recording (a '
                         'decision later than the next move report: the stack was too slow)')
    rp.add_argument('--clock-hz', type=float, default=25.0,
                    help='/clock messages per wall second (more starves the decision node\'s '
                         'timers, see the notes of vln_stack.tools.bags.replay)')
    rp.add_argument('--frames', default='guarded', choices=FRAME_MODES,
                    help='frames replayed: all; guarded = all but those stamped just before a '
                         'move report (ambiguous freshness); decision = one per decision')
    rp.add_argument('--guard-s', type=float, default=None,
                    help='guard window of --frames guarded (default: max(0.15, 1.5 * rate / '
                         'clock-hz) s, one replayed /clock step and a half)')
    rp.add_argument('--odom', default='hold', choices=['hold', 'all'],
                    help='hold: from each move report until the next one the replay sees the '
                         'pose the live decision had (deterministic); all: as recorded')
    rp.add_argument('--robot', default='', help='robot profile (default: the bag\'s)')
    rp.add_argument('--player', default='inprocess', choices=['inprocess', 'cli'],
                    help='inprocess: bag_play\'s playback core in this process, on a DDS '
                         'participant that is up before the nodes; cli: python -m '
                         'vln_stack.tools.bags.play (a new participant per replay, held at a '
                         'start gate for --settle-s)')
    rp.add_argument('--settle-s', type=float, default=2.0,
                    help='seconds the graph is left to finish DDS discovery before playing')
    rp.add_argument('--timeout-s', type=float, default=300.0)
    rp.add_argument('--domain-id', type=int, default=-1,
                    help='ROS domain of the replay graph (-1: a free one of 101, 215..232)')
    op = sub.choices['openloop']
    op.add_argument('--every', type=int, default=1,
                    help='bags without recorded decisions: decide on every K-th frame')
    op.add_argument('--instruction', default='', help='override the recorded instruction')
    op.add_argument('--image-topic', default='', help='camera topic (default: auto)')
    op.add_argument('--max-steps', type=int, default=0)
    op.add_argument('--encode-all', action='store_true',
                    help='janus: every frame enters the encoder memory, not only decision frames')
    op.add_argument('--device', default='cpu')
    op.add_argument('--torch-threads', type=int, default=1,
                    help='torch CPU threads (0 = torch default; more than the free cores is slow)')
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.mode == 'replay':
            summary = replay(args.bag, policy=args.policy, episode_file=args.episode_file,
                             episode_id=args.episode_id, checkpoint=args.checkpoint,
                             robot=args.robot, rate=args.rate, repeat=args.repeat,
                             clock_hz=args.clock_hz, frames=args.frames,
                             guard_s=args.guard_s, odom=args.odom, out_dir=args.out or None,
                             player=args.player, settle_s=args.settle_s,
                             retries=args.retries,
                             domain=args.domain_id if args.domain_id >= 0 else None,
                             timeout_s=args.timeout_s)
            ok = summary['replays_identical'] and \
                len(summary['replays']) == summary['replays_requested']
            return 0 if ok else 1
        openloop(args.bag, policy=args.policy, episode_file=args.episode_file,
                 episode_id=args.episode_id, checkpoint=args.checkpoint,
                 out_dir=args.out or None, every=args.every, instruction=args.instruction,
                 image_topic=args.image_topic, max_steps=args.max_steps,
                 encode_all=args.encode_all, device=args.device,
                 torch_threads=args.torch_threads)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TimeoutError) as exc:
        print(f'[bag_eval] error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
