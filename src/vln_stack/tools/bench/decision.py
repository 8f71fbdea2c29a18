"""Decision-step benchmark of the `janus` backend: per-step latency and memory vs episode length.

Runs one episode of ``--steps`` decisions (default 500) on synthetic fused tokens (the LLM's cost
does not depend on their values) in each memory mode:

* ``released``: the published protocol - each step a fresh prompt of the current frame plus up to
  8 history frames sampled over the whole episode; every past frame's tokens are kept (fp16);
* ``streaming``: ours - the bounded LLM key/value memory (instruction sink + 8 initial + 48
  recent frame blocks), one new frame block per step;
* ``unbounded``: the same streaming code with a window as long as the episode (what a cache
  without eviction does), for contrast.

"State kept" is what the policy holds between steps: the history tokens (released) or the LLM
keys/values actually held (streaming; its buffers are allocated once for the full window).

For each mode it reports latency p50/p95 over the steps around 1, 10, 50, 100, 200, 300, 400 and
500, the state the policy keeps between steps (bytes), the process RSS, and the ratio
step 500 / step 50 (target for ``streaming``: <= 1.5). Decoding is greedy with the checkpoint's
budget (24 new tokens); random weights rarely emit a stop token, so every step decodes the full
budget (the worst case). Retries are off so each step is one answer.

Examples::

    python -m vln_stack.tools.bench.decision                 # tiny checkpoint, CPU
    python -m vln_stack.tools.bench.decision --checkpoint models/janusvln --device cuda \\
        --dtype bfloat16                                         # real size, GPU
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

MODES = ('released', 'streaming', 'unbounded')
MARKS = (1, 10, 50, 100, 200, 300, 400, 500)
INSTRUCTION = 'Walk down the hallway, turn left at the green plant and stop beside the sofa.'


def _rss_mb() -> float:
    try:
        with open('/proc/self/status') as fh:
            for line in fh:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def run_mode(policy, mode: str, steps: int, grid: tuple[int, int], device: str,
             progress: bool = True) -> dict:
    """One episode of ``steps`` decisions; per-step latency (ms) and kept-state bytes."""
    from ...models.dual_encoder import FusedFrame
    from ...models.llm_memory import StreamingJanusPolicy
    from ...models.llm_policy import sample_history

    width = policy.model.get_input_embeddings().weight.shape[1]
    dtype = policy.model.get_input_embeddings().weight.dtype
    n = grid[0] * grid[1]
    gen = torch.Generator().manual_seed(0)
    stream = None
    if mode != 'released':
        window = 48 if mode == 'streaming' else steps
        stream = StreamingJanusPolicy(policy, initial_frames=8, window_frames=window, retries=0)
        stream.reset(INSTRUCTION)
    history: list[torch.Tensor] = []
    lat, kept, rss = [], [], []
    t_start = time.monotonic()
    for step in range(1, steps + 1):
        sem = torch.randn(n, width, generator=gen).to(device, dtype)
        spa = torch.randn(n, width, generator=gen).to(device, dtype)
        _sync(device)
        t0 = time.perf_counter()
        if stream is not None:
            stream.step(sem + policy.lam * spa, grid)
            state = stream.held_bytes
        else:
            def frame(s, p):
                return FusedFrame(fused=s, semantic=s, spatial=p, grid_hw=grid, frame_index=0,
                                  memory_frames=0, latency_ms=0.0)
            shown = [history[i] for i in sample_history(len(history), policy.num_history)]
            policy.decide(INSTRUCTION, [frame(h.to(dtype), None) for h in shown],
                          frame(sem, spa), fusion='released')
            history.append(sem.half())
            state = sum(h.numel() * h.element_size() for h in history)
        _sync(device)
        lat.append((time.perf_counter() - t0) * 1000.0)
        kept.append(state)
        rss.append(_rss_mb())
        if progress and (step % 50 == 0 or step == steps):
            print(f'  {mode:9s} step {step:4d}/{steps}: {lat[-1]:7.1f} ms, kept '
                  f'{state / 2**20:8.2f} MiB  ({time.monotonic() - t_start:5.0f} s)',
                  file=sys.stderr, flush=True)
    return {'latency_ms': lat, 'kept_bytes': kept, 'rss_mb': rss}


def summarize(raw: dict, steps: int, span: int = 5) -> dict:
    """p50/p95 over the ``span`` steps ending at each mark; kept bytes at the mark."""
    out = {}
    lat = np.asarray(raw['latency_ms'])
    for m in (m for m in MARKS if m <= steps):
        win = lat[max(0, m - span):m]
        out[m] = {'p50_ms': float(np.percentile(win, 50)), 'p95_ms': float(np.percentile(win, 95)),
                  'kept_mib': raw['kept_bytes'][m - 1] / 2**20, 'rss_mb': raw['rss_mb'][m - 1]}
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--checkpoint', default='models/tiny-janus',
                    help='local JanusVLN checkpoint folder (default: the tiny one)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--dtype', default=None, choices=['float32', 'bfloat16', 'float16'],
                    help='LLM weights dtype (default: bfloat16 on CUDA, float32 on CPU)')
    ap.add_argument('--steps', type=int, default=500)
    ap.add_argument('--modes', default=','.join(MODES), help='comma list of ' + '/'.join(MODES))
    ap.add_argument('--grid', default='', help='merged token grid ROWSxCOLS per frame '
                    '(default: a 4:3 frame at the checkpoint input width; real size 17x23)')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0 = default)')
    ap.add_argument('--out', default='outputs/decision_benchmark.json')
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(',') if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f'unknown mode(s) {bad}; have {MODES}')
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dtype is None:
        args.dtype = 'bfloat16' if torch.device(args.device).type == 'cuda' else 'float32'

    from ...models.llm_policy import JanusPolicy
    folder = Path(args.checkpoint)
    if not folder.is_dir():
        print(f'error: checkpoint folder {folder} not found (make the tiny one with '
              '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`)',
              file=sys.stderr)
        return 2
    policy = JanusPolicy.from_folder(folder, device=args.device, dtype=getattr(torch, args.dtype))
    cols = policy.grid_cols or 8
    grid = tuple(int(v) for v in args.grid.lower().split('x')) if args.grid else \
        (max(1, round(cols * 0.75)), cols)
    print(f'decision benchmark: {folder} on {args.device} ({args.dtype}), {args.steps} steps, '
          f'grid {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens/frame, '
          f'{policy.max_new_tokens} new tokens/step, torch threads {torch.get_num_threads()}',
          flush=True)
    results = {}
    with torch.inference_mode():
        for mode in modes:
            raw = run_mode(policy, mode, args.steps, grid, args.device)
            results[mode] = {'summary': summarize(raw, args.steps), 'raw': raw}

    verdict = _print_table(results, modes, args.steps)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        'when': datetime.datetime.now().isoformat(timespec='seconds'),
        'machine': platform.platform(), 'cpu_count': os.cpu_count(),
        'torch_threads': torch.get_num_threads(), 'checkpoint': str(folder),
        'device': args.device, 'dtype': args.dtype, 'steps': args.steps, 'grid': grid,
        'ratio_last_over_50': verdict,
        'modes': {m: {'summary': r['summary'], 'latency_ms': r['raw']['latency_ms']}
                  for m, r in results.items()}}, indent=1))
    print(f'\nwrote {out}')
    return 0


def _print_table(results: dict, modes: list[str], steps: int) -> dict[str, float]:
    """Latency and kept state per mode at the marks; {mode: p50 at the last mark / at step 50}."""
    marks = [m for m in MARKS if m <= steps]
    print('\nper-step latency p50 / p95 (ms) and state kept between steps (MiB)')
    print('step   ' + ''.join(f'| {m:>22s} ' for m in modes))
    for m in marks:
        row = f'{m:5d}  '
        for mode in modes:
            s = results[mode]['summary'][m]
            row += f'| {s["p50_ms"]:6.1f} /{s["p95_ms"]:6.1f} {s["kept_mib"]:7.2f} '
        print(row)
    verdict = {}
    if 50 in marks and steps >= 50:
        last = marks[-1]
        print()
        for mode in modes:
            s = results[mode]['summary']
            ratio = s[last]['p50_ms'] / s[50]['p50_ms']
            verdict[mode] = ratio
            target = ' (target <= 1.5: ' + ('PASS' if ratio <= 1.5 else 'FAIL') + ')' \
                if mode == 'streaming' else ''
            print(f'{mode:9s}: step {last} / step 50 latency = {ratio:.2f}x; state '
                  f'{s[50]["kept_mib"]:.2f} -> {s[last]["kept_mib"]:.2f} MiB{target}')
    return verdict


if __name__ == '__main__':
    raise SystemExit(main())
