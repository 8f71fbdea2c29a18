"""Stop latency per fault, through real processes: each fault injected once, measured from outside.

Standalone faults run the safety node alone, fed by this tool's own publishers (odometry, camera
frames, the decision heartbeat, the encoder heartbeat, a LaserScan and 50 Hz velocity requests); graph
faults run the simulator graph and kill a node mid-move or drive at a wall. Latency is measured
from the fault (the last message before an input went silent, a kill, an e-stop) to the first
zero twist on ``cmd_vel``, and in the simulator to the base standing still on ``odom``.

    python -m vln_stack.tools.eval.safety_report                    # every fault, table + JSON
    python -m vln_stack.tools.eval.safety_report --only camera_freeze kill_decision

Action accuracy per robot profile: ``python -m vln_stack.tools.eval.action_report``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from ...core.paths import REPO_ROOT
from .safety_faults import (DEADLINES, GRAPH, STANDALONE, FaultResult, run_kill, run_standalone,
                            run_wall)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--only', nargs='+', default=[], choices=STANDALONE + GRAPH,
                   help='run only these faults')
    p.add_argument('--checkpoint', default='', help='checkpoint folder for kill_encoder (default: '
                   'a tiny random-weight one made locally)')
    p.add_argument('--out', default=str(REPO_ROOT / 'outputs' / 'safety_report.json'))
    p.add_argument('--log-dir', default='', help='node logs (default: a temporary folder)')
    args = p.parse_args(argv)
    wanted = tuple(args.only) or STANDALONE + GRAPH
    domain = 1 + (os.getpid() + 70) % 100
    logs = Path(args.log_dir or tempfile.mkdtemp(prefix='vln_safety_report_'))
    results: list[FaultResult] = []
    standalone = tuple(f for f in STANDALONE if f in wanted)
    if standalone:
        results += run_standalone(standalone, domain=domain, log_dir=logs / 'standalone')
    if 'kill_decision' in wanted:
        results.append(run_kill('decision', domain=domain, log_dir=logs / 'kill_decision'))
    if 'kill_encoder' in wanted:
        ckpt = args.checkpoint
        if not ckpt:
            from ...models.tiny_checkpoint import make_tiny_checkpoint
            ckpt = str(make_tiny_checkpoint(logs / 'tiny-janus', seed=0))
        results.append(run_kill('memory_encoder', domain=domain, log_dir=logs / 'kill_encoder',
                                checkpoint_dir=ckpt))
    if 'wall_refusal' in wanted:
        results.append(run_wall(domain=domain, log_dir=logs / 'wall_refusal'))

    def ms(v: float | None) -> str:
        return '-' if v is None else f'{v * 1000:.0f}'
    print(f'{"fault":15s} {"zero twist ms":>13s} {"past deadline ms":>16s} '
          f'{"base still ms":>13s}  ok  detail')
    for r in results:
        print(f'{r.fault:15s} {ms(r.zero_after_s):>13s} {ms(r.beyond_deadline_s):>16s} '
              f'{ms(r.still_after_s):>13s}  {"yes" if r.ok else "NO ":3s} {r.detail}')
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({'deadlines_s': DEADLINES, 'logs': str(logs),
                               'results': [asdict(r) for r in results]}, indent=2))
    print(f'written {out} (node logs in {logs}); action accuracy per profile: '
          'python -m vln_stack.tools.eval.action_report')
    return 0 if all(r.ok for r in results) else 1


if __name__ == '__main__':
    sys.exit(main())

