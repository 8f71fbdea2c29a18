"""Encoder benchmark measurements: streaming memory vs full recompute, dual encoder, long run."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .encoder_setup import (LONG_RUN_MARKS, MB, OOM_ERRORS, MemoryProbe, Setup, clone_cache,
                            is_oom, log, median)


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
    img = lambda i: images[i % len(images)]  # noqa: E731
    # warm-up (first calls allocate / pick kernels)
    warm = agg.new_cache(initial_frames=setup.kv_initial, window_frames=setup.kv_window)
    for i in range(3):
        _time_call(setup, lambda i=i, c=warm: agg.forward_frame(img(i), c))
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
        row: dict[str, Any] = {
            'history_frames': n,
            'memory_frames': cache.num_frames,
            'attended_frames': cache.num_frames + 1,
            'cache_bytes_before': cache.nbytes,
        }
        _measure_stream_step(setup, agg, cache, img(n), probe, row)
        log(
            f'N={n:3d} stream {row["stream_ms"]:9.2f} ms (memory {row["memory_frames"]} frames, '
            f'filled in {time.perf_counter() - t_fill:.1f} s)'
        )
        # full recompute of the N+1 frames, block-causal, no memory
        seq = torch.stack([img(i) for i in range(n + 1)], dim=1)  # [1, N+1, 3, H, W]
        _measure_full(setup, agg, seq, probe, row)
        del seq
        rows.append(row)
    return rows


def _measure_stream_step(setup: Setup, agg, cache, nxt: torch.Tensor, probe: MemoryProbe,
                         row: dict[str, Any]) -> None:
    """Add frame ``nxt`` to copies of ``cache``: one untimed warm-up, then `repeats` timed steps,
    each on a fresh copy (plus, on CPU, an untimed pass for the memory peak)."""
    cuda = setup.device.type == 'cuda'
    times, peaks = [], []
    for r in range(setup.repeats + 1):
        c = clone_cache(cache)
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
        c = clone_cache(cache)
        peaks.append(_measure_memory(setup, probe, lambda c=c: agg.forward_frame(nxt, c)))
        del c
    row['stream_ms'] = median(times)
    row['stream_ms_min'] = min(times)
    row['stream_ms_all'] = times
    peak = None if any(p is None for p in peaks) else max(peaks)
    row['stream_step_peak_bytes'] = peak
    row['stream_peak_bytes'] = None if peak is None else row['cache_bytes_before'] + peak


def _measure_full(setup: Setup, agg, seq: torch.Tensor, probe: MemoryProbe,
                  row: dict[str, Any]) -> None:
    """Recompute the frames of ``seq`` from scratch, `repeats` times (OOM is a result)."""
    cuda = setup.device.type == 'cuda'
    n = row['history_frames']
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
    except OOM_ERRORS as err:
        if not is_oom(err):
            raise
        row['full_error'] = 'OOM'
        if cuda:
            torch.cuda.empty_cache()
    if times and row['full_error'] is None:
        row['full_ms'] = median(times)
        row['full_ms_min'] = min(times)
        row['full_ms_all'] = times
        row['full_peak_bytes'] = None if any(p is None for p in peaks) else max(peaks)
        row['speedup'] = row['full_ms'] / row['stream_ms']
        log(
            f'N={n:3d} full   {row["full_ms"]:9.2f} ms over {n + 1} frames '
            f'-> memory is {row["speedup"]:.1f}x faster'
        )
    else:
        row.update(full_ms=None, full_ms_min=None, full_ms_all=times, full_peak_bytes=None)
        row['speedup'] = None
        log(f'N={n:3d} full recompute failed: {row["full_error"]}')


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
            enc.cache = clone_cache(snapshot)
            if cuda:
                probe.begin()
            dt = _time_call(setup, lambda: enc.encode(rgb(n)))
            if r > 0:
                times.append(dt)
                if cuda:
                    peaks.append(probe.peak_delta())
        if not cuda:
            enc.cache = clone_cache(snapshot)
            peaks.append(_measure_memory(setup, probe, lambda: enc.encode(rgb(n))))
        cache_bytes = enc.cache.nbytes
        enc.cache = snapshot
        peak = None if any(p is None for p in peaks) else max(peaks)
        row = {
            'history_frames': n,
            'memory_frames': snapshot.num_frames,
            'encode_ms': median(times),
            'encode_ms_min': min(times),
            'encode_ms_all': times,
            'cache_bytes': cache_bytes,
            'step_peak_bytes': peak,
        }
        log(f'N={n:3d} dual encode {row["encode_ms"]:9.2f} ms')
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
            log(
                f'long run {n:4d}/{total}: memory {cache.num_frames} frames, '
                f'{cache.nbytes / MB:.2f} MB cache, last-50 p50 {median(recent):.2f} ms '
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

