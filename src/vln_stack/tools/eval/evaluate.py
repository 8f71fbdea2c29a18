"""Closed-loop evaluation: N episodes through the full ROS graph in the headless simulator.

For each policy and episode the whole graph is started on its own ROS domain, the instruction is
sent at run time, and the episode is scored with the VLN-CE metrics: NE, SR and OSR (success
radius 3 m by default), SPL, nDTW, plus steps and the policy's per-step latency (p50/p95).
Writes results.json and report.md (with a top-down trajectory plot per episode).

    python -m vln_stack.tools.eval.evaluate --policies oracle random --n 4
    python -m vln_stack.tools.eval.evaluate --episodes config/episodes/farm.yaml --robot agri
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ...core.episodes import load_episodes
from ...core.paths import REPO_ROOT, config_dir
from ..runner.run_episode import EpisodeRun, default_checkpoint, run_one

METRICS = ('ne_m', 'success', 'oracle_success', 'spl', 'ndtw', 'steps')


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = int(width * done / max(total, 1))
    return '[' + '#' * filled + '.' * (width - filled) + f'] {done}/{total}'


def summarise(runs: list[dict]) -> dict:
    ok = [r for r in runs if 'error' not in r]
    out: dict = {'episodes': len(runs), 'errors': len(runs) - len(ok)}
    for key in METRICS:
        vals = [float(r[key]) for r in ok]
        out[key] = float(np.mean(vals)) if vals else float('nan')
    lat = [x for r in ok for x in r.get('decision_ms', [])]
    out['decision_ms_p50'] = float(np.percentile(lat, 50)) if lat else float('nan')
    out['decision_ms_p95'] = float(np.percentile(lat, 95)) if lat else float('nan')
    out['wall_s'] = float(sum(r.get('wall_s', 0.0) for r in runs))
    return out


def write_report(path: Path, summary: dict[str, dict], runs: dict[str, list[dict]],
                 meta: dict) -> None:
    lines = ['# VLN evaluation', '',
             f'Episodes: `{meta["episodes_file"]}` ({meta["n"]} episodes), robot `{meta["robot"]}`, '
             f'success radius {meta["success_radius_m"]} m, headless MuJoCo, full ROS 2 graph.',
             '', '| policy | episodes | SR | OSR | SPL | nDTW | NE (m) | steps | decision p50 / p95 '
             '(ms) | errors |', '|---|---|---|---|---|---|---|---|---|---|']
    for pol, s in summary.items():
        lines.append(f'| {pol} | {s["episodes"]} | {s["success"]:.2f} | {s["oracle_success"]:.2f} '
                     f'| {s["spl"]:.3f} | {s["ndtw"]:.3f} | {s["ne_m"]:.2f} | {s["steps"]:.1f} | '
                     f'{s["decision_ms_p50"]:.2f} / {s["decision_ms_p95"]:.2f} | {s["errors"]} |')
    for pol, rs in runs.items():
        lines += ['', f'## {pol}', '', '| episode | state | SR | NE (m) | SPL | nDTW | steps |',
                  '|---|---|---|---|---|---|---|']
        for r in rs:
            if 'error' in r:
                lines.append(f'| {r["episode"]} | error: {r["error"][:80]} | | | | | |')
                continue
            lines.append(f'| {r["episode"]} | {r["state"]} | {r["success"]:.0f} | '
                         f'{r["ne_m"]:.2f} | {r["spl"]:.3f} | {r["ndtw"]:.3f} | {r["steps"]} |')
        lines.append('')
        for r in rs:
            if r.get('plot'):
                rel = os.path.relpath(r['plot'], path.parent)
                lines.append(f'![{pol} {r["episode"]}]({rel})')
    path.write_text('\n'.join(lines) + '\n')


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--episodes', default=str(config_dir() / 'episodes' / 'heldout.yaml'))
    p.add_argument('--ids', nargs='*', default=[], help='only these episode ids')
    p.add_argument('--n', type=int, default=0, help='first N episodes (0 = all)')
    p.add_argument('--policies', nargs='+', default=['oracle', 'random'],
                   choices=['oracle', 'random', 'janus'])
    p.add_argument('--checkpoint', default='', help='checkpoint folder for janus')
    p.add_argument('--robot', default='go2')
    p.add_argument('--success-radius-m', type=float, default=3.0,
                   help='VLN-CE success distance (the episode files carry their own; this wins)')
    p.add_argument('--use-episode-radius', action='store_true',
                   help="score with each episode's own success_radius_m instead")
    p.add_argument('--rtf', type=float, default=1.0)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--timeout-s', type=float, default=600.0, help='per episode')
    p.add_argument('--out', default=str(REPO_ROOT / 'outputs' / 'eval'))
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    eps_file = Path(args.episodes)
    episodes = load_episodes(eps_file)
    if args.ids:
        episodes = [e for e in episodes if e.episode_id in set(args.ids)]
    if args.n:
        episodes = episodes[:args.n]
    if not episodes:
        print(f'error: no episodes selected from {eps_file}', file=sys.stderr)
        return 2
    if 'janus' in args.policies and not args.checkpoint:
        args.checkpoint = default_checkpoint()
        if not args.checkpoint:
            print('error: janus needs --checkpoint FOLDER', file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    radius = None if args.use_episode_radius else args.success_radius_m
    print(f'evaluating {len(episodes)} episodes x {len(args.policies)} policies from {eps_file}',
          flush=True)
    runs = _run_all(args, eps_file, episodes, out, radius)
    summary = {pol: summarise(rs) for pol, rs in runs.items()}
    meta = {'episodes_file': str(eps_file), 'n': len(episodes), 'robot': args.robot,
            'success_radius_m': radius if radius is not None else 'per episode'}
    (out / 'results.json').write_text(json.dumps({'meta': meta, 'summary': summary,
                                                  'runs': runs}, indent=2))
    write_report(out / 'report.md', summary, runs, meta)
    print()
    print(f'{"policy":8s} {"n":>3s} {"SR":>5s} {"OSR":>5s} {"SPL":>6s} {"nDTW":>6s} {"NE m":>6s} '
          f'{"steps":>6s} {"p50 ms":>7s} {"p95 ms":>7s}')
    for pol, s in summary.items():
        print(f'{pol:8s} {s["episodes"]:3d} {s["success"]:5.2f} {s["oracle_success"]:5.2f} '
              f'{s["spl"]:6.3f} {s["ndtw"]:6.3f} {s["ne_m"]:6.2f} {s["steps"]:6.1f} '
              f'{s["decision_ms_p50"]:7.2f} {s["decision_ms_p95"]:7.2f}')
    print(f'wrote {out / "results.json"} and {out / "report.md"}')
    return 0 if all(s['errors'] == 0 for s in summary.values()) else 1


def _run_all(args: argparse.Namespace, eps_file: Path, episodes: list, out: Path,
             radius: float | None) -> dict[str, list[dict]]:
    """Every episode with every policy, one line of progress each; {policy: result rows}."""
    total = len(episodes) * len(args.policies)
    runs: dict[str, list[dict]] = {pol: [] for pol in args.policies}
    done, t0 = 0, time.monotonic()
    for pol in args.policies:
        for i, ep in enumerate(episodes):
            ep_out = out / pol / ep.episode_id
            domain = 1 + (os.getpid() + done) % 100
            try:
                res: EpisodeRun = run_one(
                    eps_file, ep, policy=pol, robot=args.robot,
                    checkpoint=args.checkpoint or default_checkpoint(), rtf=args.rtf,
                    with_encoder=pol == 'janus', out=ep_out, timeout_s=args.timeout_s,
                    domain=domain, success_radius_m=radius, seed=args.seed + i, verbose=False)
                row = res.as_dict()
                line = (f'{res.state:8s} SR {res.metrics.success:.0f} NE {res.metrics.ne_m:5.2f} m '
                        f'SPL {res.metrics.spl:.2f} nDTW {res.metrics.ndtw:.2f} '
                        f'steps {res.metrics.steps}')
            except (RuntimeError, TimeoutError) as exc:
                row = {'episode': ep.episode_id, 'policy': pol, 'error': str(exc)}
                line = f'error: {str(exc).splitlines()[0]}'
            runs[pol].append(row)
            done += 1
            print(f'{_bar(done, total)} {pol:7s} {ep.episode_id:22s} {line} '
                  f'[{time.monotonic() - t0:6.0f} s]', flush=True)
    return runs


if __name__ == '__main__':
    raise SystemExit(main())
