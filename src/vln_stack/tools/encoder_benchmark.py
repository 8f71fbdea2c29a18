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

    python -m vln_stack.tools.encoder_benchmark                       # tiny preset, CPU
    python -m vln_stack.tools.encoder_benchmark --preset vggt-1b --device cuda
    python -m vln_stack.tools.encoder_benchmark --preset vggt-1b --device cpu \\
        --frames 1,2 --long-run 0 --no-dual --width 224 --repeats 1   # small CPU try
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ['MemoryProbe', 'main', 'parse_frames', 'run_benchmark']

# preset of the spatial encoder -> DualMemoryEncoder preset that contains it
DUAL_PRESET = {'tiny': 'tiny', 'vggt-1b': 'janusvln-7b'}
DEFAULT_FRAMES = (1, 2, 4, 8, 16, 32, 48, 64)
DEFAULT_LONG_RUN = 500
LONG_RUN_MARKS = (100, 200, 500)  # plus the memory capacity (56 with the released bounds)
SOURCE_HW = (480, 640)  # habitat camera size; preprocessed like JanusVLN to --width
POOL_SIZE = 8  # distinct random frames, cycled
MB = 1024.0 * 1024.0
_OOM_ERRORS = (RuntimeError, getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError))


def _log(msg: str) -> None:
    """Progress line (stderr, so stdout holds only the report)."""
    print(f'[encoder_benchmark] {msg}', file=sys.stderr, flush=True)


def parse_frames(text: str) -> list[int]:
    """``'1,2,4'`` -> sorted unique non-negative ints."""
    try:
        values = sorted({int(part) for part in text.split(',') if part.strip()})
    except ValueError as err:
        raise argparse.ArgumentTypeError(f'--frames wants comma-separated ints: {text!r}') from err
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f'--frames wants non-negative ints: {text!r}')
    return values


# ---- memory ------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> int | None:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class MemoryProbe:
    """Peak memory of a region, on CUDA (allocator stats) or CPU (peak RSS above the start RSS)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == 'cuda'
        self._libc = None
        self.can_reset_rss_peak = False
        if not self.cuda:
            try:
                self._libc = ctypes.CDLL('libc.so.6')
            except OSError:
                self._libc = None
            self.can_reset_rss_peak = self._reset_hwm()
        self._start = 0

    @property
    def method(self) -> str:
        if self.cuda:
            return 'torch.cuda.max_memory_allocated - memory_allocated at start'
        if self.can_reset_rss_peak:
            return (
                'peak RSS (VmHWM reset via /proc/self/clear_refs) - RSS at start, '
                'after malloc_trim'
            )
        return 'unavailable (no /proc/self/clear_refs): peak columns left empty'

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            return True
        except OSError:
            return False

    @staticmethod
    def rss_bytes() -> int | None:
        kib = _proc_status_kib('VmRSS')
        return None if kib is None else kib * 1024

    def current(self) -> int | None:
        """Bytes in use now: CUDA allocated, or process RSS."""
        if self.cuda:
            return int(torch.cuda.memory_allocated(self.device))
        return self.rss_bytes()

    def begin(self, *, trim: bool = True) -> None:
        """Start a region: reset the peak counter and remember the current level."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = int(torch.cuda.memory_allocated(self.device))
            return
        if trim and self._libc is not None:
            with contextlib.suppress(AttributeError):
                self._libc.malloc_trim(0)
        self._reset_hwm()
        self._start = self.rss_bytes() or 0

    def peak(self) -> int | None:
        """Absolute peak since `begin` (CUDA: allocated bytes; CPU: RSS bytes)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        if not self.can_reset_rss_peak:
            return None
        kib = _proc_status_kib('VmHWM')
        return None if kib is None else kib * 1024

    def peak_delta(self) -> int | None:
        """Peak since `begin` above the level at `begin` (transient working memory)."""
        peak = self.peak()
        return None if peak is None else max(0, peak - self._start)


# ---- setup -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    preset: str
    device: torch.device
    dtype: torch.dtype
    autocast: bool
    width: int
    image_hw: tuple[int, int]
    tokens_per_frame: int
    kv_initial: int
    kv_window: int
    repeats: int
    threads: int

    def autocast_ctx(self):
        if self.autocast:
            return torch.autocast(self.device.type, dtype=self.dtype)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    from ..models.runtime import resolve_dtype
    short = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}
    return resolve_dtype(short.get(name, name), device)


def _default_repeats(preset: str, device: torch.device) -> int:
    if preset == 'tiny':
        return 7
    return 3 if device.type == 'cuda' else 1


def _source_frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SOURCE_HW, 3), dtype=np.uint8) for _ in range(POOL_SIZE)]


def _build_dual(preset: str, settings, seed: int, device, dtype):
    from ..models.dual_encoder import DualMemoryEncoder
    from ..models.presets import ENCODER_PRESETS

    _, vision = ENCODER_PRESETS[DUAL_PRESET[preset]]
    modules = DualMemoryEncoder.build_modules(settings, vision, seed=seed)
    return DualMemoryEncoder(*modules, settings=settings, device=device, dtype=dtype)


def _build_aggregator(preset: str, seed: int, device, dtype):
    from ..models.vggt import VGGT_PRESETS, VGGTAggregator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agg = VGGTAggregator(VGGT_PRESETS[preset]).init_random(seed)
    return agg.to(device, dtype).eval()


def _clone_cache(cache):
    """Independent copy of a `FrameKVCache` (buffers copied), to repeat one step on one state."""
    return copy.deepcopy(cache)


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, _OOM_ERRORS[1]):
        return True
    text = str(err).lower()
    return 'out of memory' in text or "can't allocate" in text


# ---- measurements ------------------------------------------------------------------------------
def _time_call(setup: Setup, fn: Callable[[], Any]) -> float:
    setup.sync()
    t0 = time.perf_counter()
    with setup.autocast_ctx():
        fn()
    setup.sync()
    return (time.perf_counter() - t0) * 1000.0


def _measure_memory(setup: Setup, probe: MemoryProbe, fn: Callable[[], Any]) -> int | None:
    probe.begin()
    with setup.autocast_ctx():
        fn()
    return probe.peak_delta()


def measure_spatial(
    setup: Setup, agg, images: list[torch.Tensor], frames: list[int], probe: MemoryProbe
) -> list[dict]:
    """Per N: stream (memory holds the previous frames) vs full block-causal recompute."""
    rows = []
    cuda = setup.device.type == 'cuda'
    img = lambda i: images[i % len(images)]  # noqa: E731
    # warm-up (first calls allocate / pick kernels)
    warm = agg.new_cache(initial_frames=setup.kv_initial, window_frames=setup.kv_window)
    for i in range(3):
        _time_call(setup, lambda i=i: agg.forward_frame(img(i), warm))
    _time_call(setup, lambda: agg(torch.stack([img(0), img(1)], dim=1)))
    del warm

    cache = agg.new_cache(initial_frames=setup.kv_initial, window_frames=setup.kv_window)
    streamed = 0
    for n in frames:
        t_fill = time.perf_counter()
        while streamed < n:
            with setup.autocast_ctx():
                agg.forward_frame(img(streamed), cache)
            streamed += 1
        nxt = img(n)
        row: dict[str, Any] = {
            'history_frames': n,
            'memory_frames': cache.num_frames,
            'attended_frames': cache.num_frames + 1,
            'cache_bytes_before': cache.nbytes,
        }
        # stream: one untimed warm-up on a copy, then `repeats` timed steps, each on a fresh copy
        times, peaks = [], []
        for r in range(setup.repeats + 1):
            c = _clone_cache(cache)
            if cuda:
                probe.begin()
            dt = _time_call(setup, lambda c=c: agg.forward_frame(nxt, c))
            if r > 0:
                times.append(dt)
                if cuda:
                    peaks.append(probe.peak_delta())
            row['cache_bytes'] = c.nbytes
            del c
        if not cuda:
            c = _clone_cache(cache)
            peaks.append(_measure_memory(setup, probe, lambda c=c: agg.forward_frame(nxt, c)))
            del c
        row['stream_ms'] = _median(times)
        row['stream_ms_min'] = min(times)
        row['stream_ms_all'] = times
        peak = None if any(p is None for p in peaks) else max(peaks)
        row['stream_step_peak_bytes'] = peak
        row['stream_peak_bytes'] = None if peak is None else row['cache_bytes_before'] + peak
        _log(
            f'N={n:3d} stream {row["stream_ms"]:9.2f} ms (memory {row["memory_frames"]} frames, '
            f'filled in {time.perf_counter() - t_fill:.1f} s)'
        )
        # full recompute of the N+1 frames, block-causal, no memory
        seq = torch.stack([img(i) for i in range(n + 1)], dim=1)  # [1, N+1, 3, H, W]
        times, peaks = [], []
        row['full_error'] = None
        try:
            for _ in range(setup.repeats):
                if cuda:
                    probe.begin()
                times.append(_time_call(setup, lambda: agg(seq)))
                if cuda:
                    peaks.append(probe.peak_delta())
            if not cuda:
                peaks.append(_measure_memory(setup, probe, lambda: agg(seq)))
        except _OOM_ERRORS as err:
            if not _is_oom(err):
                raise
            row['full_error'] = 'OOM'
            if cuda:
                torch.cuda.empty_cache()
        del seq
        if times and row['full_error'] is None:
            row['full_ms'] = _median(times)
            row['full_ms_min'] = min(times)
            row['full_ms_all'] = times
            row['full_peak_bytes'] = None if any(p is None for p in peaks) else max(peaks)
            row['speedup'] = row['full_ms'] / row['stream_ms']
            _log(
                f'N={n:3d} full   {row["full_ms"]:9.2f} ms over {n + 1} frames '
                f'-> memory is {row["speedup"]:.1f}x faster'
            )
        else:
            row.update(full_ms=None, full_ms_min=None, full_ms_all=times, full_peak_bytes=None)
            row['speedup'] = None
            _log(f'N={n:3d} full recompute failed: {row["full_error"]}')
        rows.append(row)
    return rows


def measure_dual(
    setup: Setup, enc, rgbs: list[np.ndarray], frames: list[int], probe: MemoryProbe
) -> list[dict]:
    """Per N: time of `DualMemoryEncoder.encode` for frame N+1 (spatial memory holds N frames)."""
    cuda = setup.device.type == 'cuda'
    rgb = lambda i: rgbs[i % len(rgbs)]  # noqa: E731
    enc.reset()
    for i in range(3):
        _time_call(setup, lambda i=i: enc.encode(rgb(i)))
    enc.reset()
    rows, streamed = [], 0
    for n in frames:
        while streamed < n:
            with setup.autocast_ctx():
                enc.encode(rgb(streamed))
            streamed += 1
        snapshot = enc.cache
        times, peaks = [], []
        for r in range(setup.repeats + 1):
            enc.cache = _clone_cache(snapshot)
            if cuda:
                probe.begin()
            dt = _time_call(setup, lambda: enc.encode(rgb(n)))
            if r > 0:
                times.append(dt)
                if cuda:
                    peaks.append(probe.peak_delta())
        if not cuda:
            enc.cache = _clone_cache(snapshot)
            peaks.append(_measure_memory(setup, probe, lambda: enc.encode(rgb(n))))
        cache_bytes = enc.cache.nbytes
        enc.cache = snapshot
        peak = None if any(p is None for p in peaks) else max(peaks)
        row = {
            'history_frames': n,
            'memory_frames': snapshot.num_frames,
            'encode_ms': _median(times),
            'encode_ms_min': min(times),
            'encode_ms_all': times,
            'cache_bytes': cache_bytes,
            'step_peak_bytes': peak,
        }
        _log(f'N={n:3d} dual encode {row["encode_ms"]:9.2f} ms')
        rows.append(row)
    return rows


def long_run(
    setup: Setup, agg, images: list[torch.Tensor], total: int, probe: MemoryProbe
) -> dict:
    """Stream ``total`` frames through the memory; memory at marks, latency per window."""
    capacity = setup.kv_initial + setup.kv_window
    marks = sorted({m for m in (capacity, *LONG_RUN_MARKS) if m <= total} | {total})
    cache = agg.new_cache(initial_frames=setup.kv_initial, window_frames=setup.kv_window)
    latencies: list[float] = []
    checkpoints = []
    probe.begin(trim=False)
    t_start = time.perf_counter()
    for i in range(total):
        latencies.append(
            _time_call(setup, lambda i=i: agg.forward_frame(images[i % len(images)], cache))
        )
        n = i + 1
        if n in marks:
            window_peak = probe.peak()
            checkpoints.append(
                {
                    'frame': n,
                    'memory_frames': cache.num_frames,
                    'cache_bytes': cache.nbytes,
                    'rss_bytes': MemoryProbe.rss_bytes(),
                    'allocated_bytes': probe.current() if probe.cuda else None,
                    'window_peak_bytes': window_peak,  # peak since the previous mark
                }
            )
            probe.begin(trim=False)
        if n % 50 == 0 or n == total:
            recent = latencies[-50:]
            _log(
                f'long run {n:4d}/{total}: memory {cache.num_frames} frames, '
                f'{cache.nbytes / MB:.2f} MB cache, last-50 p50 {_median(recent):.2f} ms '
                f'({time.perf_counter() - t_start:.0f} s)'
            )
    windows = []
    lo = 0
    for hi in marks:
        chunk = np.asarray(latencies[lo:hi])
        if chunk.size:
            windows.append(
                {
                    'frames': [lo + 1, hi],
                    'p50_ms': float(np.percentile(chunk, 50)),
                    'p95_ms': float(np.percentile(chunk, 95)),
                    'max_ms': float(chunk.max()),
                }
            )
        lo = hi
    return {
        'frames': total,
        'capacity_frames': capacity,
        'checkpoints': checkpoints,
        'windows': windows,
        'latency_ms': latencies,
    }


# ---- targets -----------------------------------------------------------------------------------
def _row(rows: list[dict], n: int) -> dict | None:
    return next((r for r in rows if r['history_frames'] == n), None)


def evaluate_targets(spatial: list[dict], long: dict | None) -> list[dict]:
    targets = []
    r8, r48 = _row(spatial, 8), _row(spatial, 48)
    t = {'name': 'stream cost N=48 <= 2x cost N=8', 'threshold': 2.0}
    if r8 and r48:
        t['value'] = r48['stream_ms'] / r8['stream_ms']
        t['status'] = 'PASS' if t['value'] <= 2.0 else 'FAIL'
        t['value_min'] = r48['stream_ms_min'] / r8['stream_ms_min']
        t['detail'] = (
            f'{r48["stream_ms"]:.2f} ms / {r8["stream_ms"]:.2f} ms = {t["value"]:.2f}x '
            f'(medians; from the minima {t["value_min"]:.2f}x)'
        )
    else:
        t.update(value=None, status='SKIP', detail='needs 8 and 48 in --frames')
    targets.append(t)

    r32 = _row(spatial, 32)
    t = {'name': 'N=32: memory >= 10x faster than full recompute', 'threshold': 10.0}
    if r32 and r32.get('speedup') is not None:
        t['value'] = r32['speedup']
        t['status'] = 'PASS' if t['value'] >= 10.0 else 'FAIL'
        t['detail'] = (
            f'{r32["full_ms"]:.2f} ms / {r32["stream_ms"]:.2f} ms = {t["value"]:.1f}x'
        )
    else:
        t.update(value=None, status='SKIP', detail='needs 32 in --frames (and a full run)')
    targets.append(t)

    t = {'name': 'peak memory flat (within 5%) from frame 56 to frame 500', 'threshold': 0.05}
    cps = (long or {}).get('checkpoints') or []
    cap = (long or {}).get('capacity_frames', 56)
    cps = [c for c in cps if c['frame'] >= cap]
    if len(cps) >= 2:
        first, last_frame = cps[0], cps[-1]['frame']
        if first['frame'] != 56 or last_frame != 500:
            t['name'] = (
                f'peak memory flat (within 5%) from frame {first["frame"]} to frame {last_frame}'
            )
        cache_const = len({c['cache_bytes'] for c in cps}) == 1
        peaks = [c['window_peak_bytes'] for c in cps]
        if any(p is None for p in peaks):
            peaks = [c['rss_bytes'] for c in cps]
        if any(p is None for p in peaks):
            t.update(value=None, status='SKIP', detail='no peak-memory counter on this host')
        else:
            dev = max(abs(p / peaks[0] - 1.0) for p in peaks)
            t['value'] = dev
            t['status'] = 'PASS' if cache_const and dev <= 0.05 else 'FAIL'
            t['detail'] = (
                f'cache bytes {"constant" if cache_const else "CHANGED"} '
                f'({cps[0]["cache_bytes"] / MB:.2f} MB); window peak max deviation from frame '
                f'{first["frame"]}: {100 * dev:.2f}% '
                f'({min(peaks) / MB:.1f}..{max(peaks) / MB:.1f} MB)'
            )
    else:
        t.update(
            value=None, status='SKIP', detail=f'needs --long-run >= {cap + 1} for two marks'
        )
    targets.append(t)
    return targets


# ---- report ------------------------------------------------------------------------------------
def _mb(value: int | None, width: int = 9) -> str:
    return f'{"-":>{width}}' if value is None else f'{value / MB:{width}.2f}'


def _ms(value: float | None, width: int = 10) -> str:
    return f'{"-":>{width}}' if value is None else f'{value:{width}.2f}'


def format_report(result: dict) -> str:
    meta = result['setup']
    lines = [
        '',
        f'== Encoder memory benchmark: preset {meta["preset"]} on {meta["device_name"]} '
        f'({meta["dtype"]}{", autocast" if meta["autocast"] else ""}) ==',
        f'frames {meta["image_hw"][0]}x{meta["image_hw"][1]} px (from {SOURCE_HW[1]}x'
        f'{SOURCE_HW[0]} RGB, width {meta["width"]}), {meta["tokens_per_frame"]} tokens/frame, '
        f'memory bounds {meta["kv_initial"]} sink + {meta["kv_window"]} recent frames, '
        f'{meta["repeats"]} repeats (median), {meta["threads"]} threads, torch {meta["torch"]}',
        f'memory: {meta["memory_method"]}',
        '',
        'Spatial encoder (VGGT aggregator, all layers): add frame N+1',
        '  stream = memory holds min(N, cap) frames; full = block-causal recompute of N+1 frames',
        '  peak = transient working memory of the call (+ cache bytes for stream)',
        f'  {"N":>4} {"mem fr":>6} {"stream ms":>10} {"(min)":>7} {"full ms":>10} {"speedup":>8} '
        f'{"cache MB":>9} {"stream pk":>9} {"full pk":>9}',
    ]
    for r in result['spatial']:
        sp = '-' if r['speedup'] is None else f'{r["speedup"]:.1f}x'
        full = _ms(r['full_ms']) if r.get('full_error') is None else f'{r["full_error"]:>10}'
        lines.append(
            f'  {r["history_frames"]:>4} {r["memory_frames"]:>6} {_ms(r["stream_ms"])} '
            f'{_ms(r["stream_ms_min"], 7)} {full} '
            f'{sp:>8} {_mb(r["cache_bytes"])} {_mb(r["stream_peak_bytes"])} '
            f'{_mb(r["full_peak_bytes"])}'
        )
    if result.get('dual'):
        dual_meta = result['dual_meta']
        lines += [
            '',
            f'Dual encoder (DualMemoryEncoder.encode, preset {dual_meta["preset"]}: preprocess + '
            f'VGGT to layer {dual_meta["vggt_layer"]} with memory + merger + Qwen vision tower '
            f'+ fusion)',
            f'  {"N":>4} {"mem fr":>6} {"encode ms":>10} {"vs N=min":>9} {"cache MB":>9} '
            f'{"step pk":>9}',
        ]
        base = result['dual'][0]['encode_ms']
        for r in result['dual']:
            lines.append(
                f'  {r["history_frames"]:>4} {r["memory_frames"]:>6} {_ms(r["encode_ms"])} '
                f'{r["encode_ms"] / base:8.2f}x {_mb(r["cache_bytes"])} '
                f'{_mb(r["step_peak_bytes"])}'
            )
    long = result.get('long_run')
    if long:
        peak_name = 'alloc pk' if meta['device'].startswith('cuda') else 'RSS pk'
        lines += [
            '',
            f'Long run: {long["frames"]} frames streamed through the memory '
            f'(capacity {long["capacity_frames"]} frames)',
            f'  {"frame":>6} {"mem fr":>6} {"cache MB":>9} {"RSS MB":>9} {peak_name:>9}'
            + ('  (alloc pk: CUDA peak allocated in the window)' if peak_name == 'alloc pk'
               else '  (RSS pk: peak RSS since the previous mark)'),
        ]
        for c in long['checkpoints']:
            lines.append(
                f'  {c["frame"]:>6} {c["memory_frames"]:>6} {_mb(c["cache_bytes"])} '
                f'{_mb(c["rss_bytes"])} {_mb(c["window_peak_bytes"])}'
            )
        lines.append(f'  {"frames":>11} {"p50 ms":>9} {"p95 ms":>9} {"max ms":>9}')
        for w in long['windows']:
            span = f'{w["frames"][0]}-{w["frames"][1]}'
            lines.append(
                f'  {span:>11} {w["p50_ms"]:9.2f} {w["p95_ms"]:9.2f} {w["max_ms"]:9.2f}'
            )
    lines += ['', 'Targets (spatial encoder, cached global-attention K/V memory):']
    for t in result['targets']:
        lines.append(f'  [{t["status"]}] {t["name"]}: {t["detail"]}')
    lines.append(f'\nwall time {result["wall_s"]:.1f} s; JSON: {result.get("json_path", "-")}')
    return '\n'.join(lines)


# ---- driver ------------------------------------------------------------------------------------
def run_benchmark(args: argparse.Namespace) -> dict:
    from ..models.presets import ENCODER_PRESETS
    from ..models.semantic import preprocess_rgb

    t_wall = time.perf_counter()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda asked for, but torch.cuda.is_available() is False')
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = _resolve_dtype(args.dtype, device)
    settings, _ = ENCODER_PRESETS[DUAL_PRESET[args.preset]]
    changes = {}
    if args.width:
        changes['input_width'] = args.width
    if args.kv_initial is not None:
        changes['kv_initial_frames'] = args.kv_initial
    if args.kv_window is not None:
        changes['kv_window_frames'] = args.kv_window
    settings = dataclasses.replace(settings, **changes)

    rgbs = _source_frames(args.seed)
    from ..models.vggt import VGGT_PRESETS

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
        repeats=args.repeats or _default_repeats(args.preset, device),
        threads=torch.get_num_threads(),
    )
    probe = MemoryProbe(device)
    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == 'cuda'
        else f'CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)'
    )
    _log(
        f'preset {args.preset}, {device_name}, {str(dtype).removeprefix("torch.")}, frames '
        f'{hw[0]}x{hw[1]} ({tokens} tokens/frame), memory {setup.kv_initial}+{setup.kv_window} '
        f'frames, N in {args.frames}, repeats {setup.repeats}, threads {setup.threads}, '
        f'long run {args.long_run}'
    )
    t0 = time.perf_counter()
    enc = None
    if args.dual:
        _log(f'building DualMemoryEncoder preset {DUAL_PRESET[args.preset]} (random weights) ...')
        enc = _build_dual(args.preset, settings, args.seed, device, dtype)
        agg = enc.aggregator
    else:
        _log(f'building VGGT aggregator preset {args.preset} (random weights) ...')
        agg = _build_aggregator(args.preset, args.seed, device, dtype)
    _log(f'built in {time.perf_counter() - t0:.1f} s')

    result: dict[str, Any] = {
        'setup': {
            'preset': args.preset,
            'device': str(device),
            'device_name': device_name,
            'dtype': str(dtype).removeprefix('torch.'),
            'autocast': setup.autocast,
            'width': setup.width,
            'image_hw': list(hw),
            'tokens_per_frame': tokens,
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
    }
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
        prog='python -m vln_stack.tools.encoder_benchmark',
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
