"""Encoder-memory benchmark: streaming VGGT memory vs full recompute, dual encoder, long run.

For each history length N (``--frames``) it measures, on the spatial encoder (VGGT aggregator):

* **stream**: time to add frame N+1 with the bounded global-attention K/V memory holding the
  previous frames (``min(N, initial + window)`` of them; released bounds 8 + 48 frames);
* **full**: time to recompute all N+1 frames from scratch (block-causal frame mask, no memory);
* their ratio, the memory held (``FrameKVCache.nbytes``) and the peak working memory of each.

It also times the whole dual encoder (`DualMemoryEncoder.encode`: preprocessing, spatial with
memory, 2x2 merge + merger, Qwen vision tower, fusion) after N frames, then streams
``--long-run`` frames through the spatial memory and reports memory at frames 56, 100, 200 and
500 (cache bytes, process RSS, window peak) plus latency p50/p95 per window.

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` around each call (peak above what was
allocated before = transient working memory). On CPU, peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) above the RSS before the call, after ``malloc_trim`` so that freed heap
pages must be faulted in again; this runs in an extra untimed pass so it does not disturb timings.

Targets (the issue's, on the spatial encoder's cached global-attention memory):

1. with memory, per-frame cost at N=48 <= 2x the cost at N=8;
2. at N=32, the memory is >= 10x faster than a full recompute;
3. peak memory flat (within 5%) from frame 56 to frame 500 of the long run (and the cache's bytes
   identical).

Examples::

    python -m vln_stack.tools.bench.encoder                       # tiny preset, CPU
    python -m vln_stack.tools.bench.encoder --preset vggt-1b --device cuda
    python -m vln_stack.tools.bench.encoder --preset vggt-1b --device cpu \\
        --frames 1,2 --long-run 0 --no-dual --width 224 --repeats 1   # small CPU try
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from .encoder_measure import long_run, measure_dual, measure_spatial
from .encoder_report import evaluate_targets, format_report
from .encoder_setup import (DEFAULT_FRAMES, DEFAULT_LONG_RUN, DUAL_PRESET, MemoryProbe, Setup,
                            build_aggregator, build_dual, default_repeats, log,
                            resolve_bench_dtype, source_frames)

__all__ = ['main', 'parse_frames', 'run_benchmark']


def parse_frames(text: str) -> list[int]:
    """``'1,2,4'`` -> sorted unique non-negative ints."""
    try:
        values = sorted({int(part) for part in text.split(',') if part.strip()})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f'--frames wants comma-separated ints: {text!r}') from err
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f'--frames wants non-negative ints: {text!r}')
    return values


# ---- driver ------------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace) -> dict:
    t_wall = time.perf_counter()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda asked for, but torch.cuda.is_available() is False')
    if args.threads:
        torch.set_num_threads(args.threads)
    setup, settings, rgbs, images = _setup(args, device)
    hw, tokens, dtype = setup.image_hw, setup.tokens_per_frame, setup.dtype
    probe = MemoryProbe(device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == 'cuda'
        else f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)'
    )
    log(
        f'preset {args.preset}, {device_name}, {str(dtype).removeprefix("torch.")}, frames '
        f'{hw[0]}x{hw[1]} ({tokens} tokens/frame), memory {setup.kv_initial}+{setup.kv_window} '
        f'frames, N in {args.frames}, repeats {setup.repeats}, threads {setup.threads}, '
        f'long run {args.long_run}'
    )
    t0 = time.perf_counter()
    enc = None
    if args.dual:
        log(f'building DualMemoryEncoder preset {DUAL_PRESET[args.preset]} (random weights) ...')
        enc = build_dual(args.preset, settings, args.seed, device, dtype)
        agg = enc.aggregator
    else:
        log(f'building VGGT aggregator preset {args.preset} (random weights) ...')
        agg = build_aggregator(args.preset, args.seed, device, dtype)
    log(f'built in {time.perf_counter() - t0:.1f} s')

    result: dict[str, Any] = {'setup': _setup_meta(args, setup, device_name, probe)}
    with torch.inference_mode():
        result['spatial'] = measure_spatial(setup, agg, images, args.frames, probe)
        if enc is not None:
            result['dual'] = measure_dual(setup, enc, rgbs, args.frames, probe)
            result['dual_meta'] = {
                'preset': DUAL_PRESET[args.preset],
                'vggt_layer': enc.layer_index,
                'input_width': settings.input_width,
            }
        if args.long_run > 0:
            result['long_run'] = long_run(setup, agg, images, args.long_run, probe)
    result['targets'] = evaluate_targets(result['spatial'], result.get('long_run'))
    result['wall_s'] = time.perf_counter() - t_wall
    return result


def _setup(args: argparse.Namespace, device: torch.device) -> tuple[Setup, Any, list, list]:
    """(setup, encoder settings, source RGB frames, preprocessed frames on ``device``)."""
    from ...models.presets import ENCODER_PRESETS
    from ...models.semantic import preprocess_rgb
    from ...models.vggt import VGGT_PRESETS

    dtype = resolve_bench_dtype(args.dtype, device)
    settings, _ = ENCODER_PRESETS[DUAL_PRESET[args.preset]]
    changes = {}
    if args.width:
        changes['input_width'] = args.width
    if args.kv_initial is not None:
        changes['kv_initial_frames'] = args.kv_initial
    if args.kv_window is not None:
        changes['kv_window_frames'] = args.kv_window
    settings = dataclasses.replace(settings, **changes)

    rgbs = source_frames(args.seed)
    patch = VGGT_PRESETS[args.preset].patch_size
    images = [
        preprocess_rgb(f, settings.input_width, patch_size=patch)[None].to(device) for f in rgbs
    ]
    hw = tuple(images[0].shape[-2:])
    tokens = VGGT_PRESETS[args.preset].patch_start_idx + (hw[0] // patch) * (hw[1] // patch)
    setup = Setup(
        preset=args.preset,
        device=device,
        dtype=dtype,
        autocast=dtype != torch.float32,
        width=settings.input_width,
        image_hw=hw,
        tokens_per_frame=tokens,
        kv_initial=settings.kv_initial_frames,
        kv_window=settings.kv_window_frames,
        repeats=args.repeats or default_repeats(args.preset, device),
        threads=torch.get_num_threads(),
    )
    return setup, settings, rgbs, images


def _setup_meta(args: argparse.Namespace, setup: Setup, device_name: str,
                probe: MemoryProbe) -> dict[str, Any]:
    return {
        'preset': args.preset,
        'device': str(setup.device),
        'device_name': device_name,
        'dtype': str(setup.dtype).removeprefix('torch.'),
        'autocast': setup.autocast,
        'width': setup.width,
        'image_hw': list(setup.image_hw),
        'tokens_per_frame': setup.tokens_per_frame,
        'kv_initial': setup.kv_initial,
        'kv_window': setup.kv_window,
        'frames': args.frames,
        'repeats': setup.repeats,
        'threads': setup.threads,
        'seed': args.seed,
        'torch': torch.__version__,
        'python': platform.python_version(),
        'memory_method': probe.method,
        'full_recompute': 'VGGTAggregator.forward(images[:, :N+1]) block-causal frame mask',
        'started': datetime.datetime.now().isoformat(timespec='seconds'),
    }


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='python -m vln_stack.tools.bench.encoder',
        description='Streaming VGGT memory vs full recompute, dual-encoder cost, long run.',
    )
    p.add_argument('--preset', choices=sorted(DUAL_PRESET), default='tiny')
    p.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N')
    p.add_argument(
        '--dtype',
        choices=('auto', 'float32', 'bfloat16', 'float16', 'fp32', 'bf16', 'fp16'),
        default='auto',
        help='weights dtype, with autocast when not float32; auto (default) = bfloat16 on CUDA, '
        'float32 on CPU; fp32/bf16/fp16 are accepted as short names',
    )
    p.add_argument(
        '--frames',
        type=parse_frames,
        default=list(DEFAULT_FRAMES),
        help='history lengths N, comma-separated (default 1,2,4,8,16,32,48,64)',
    )
    p.add_argument(
        '--long-run', type=int, default=DEFAULT_LONG_RUN, help='frames to stream (0: skip)'
    )
    p.add_argument('--repeats', type=int, default=0, help='timed repeats per point (median)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave)')
    p.add_argument(
        '--width',
        type=int,
        default=0,
        help='preprocessing width in px (default: the preset, 224 tiny / 644 vggt-1b)',
    )
    p.add_argument('--kv-initial', type=int, default=None, help='sink frames (default 8)')
    p.add_argument('--kv-window', type=int, default=None, help='recent frames (default 48)')
    p.add_argument(
        '--no-dual', dest='dual', action='store_false', help='skip the dual-encoder timing'
    )
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', type=Path, default=Path('outputs/encoder_benchmark.json'))
    p.add_argument(
        '--strict', action='store_true', help='exit with status 1 when a target FAILs'
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.repeats < 0 or args.long_run < 0 or args.threads < 0:
        raise SystemExit('--repeats, --long-run and --threads must be >= 0')
    result = run_benchmark(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    result['json_path'] = str(args.json)
    args.json.write_text(json.dumps(_json_safe(result), indent=1))
    print(format_report(result), flush=True)
    failed = any(t['status'] == 'FAIL' for t in result['targets'])
    return 1 if (failed and args.strict) else 0


if __name__ == '__main__':
    raise SystemExit(main())
