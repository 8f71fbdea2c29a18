"""Timing of the step benchmark: synchronised wall time and CUDA peak memory per call, as rows."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def log(msg: str) -> None:
    print(f'[step_benchmark] {msg}', file=sys.stderr, flush=True)


@dataclass
class Row:
    metric: str
    frames: int | None
    p50_ms: float
    p95_ms: float
    samples: int
    peak_bytes: int | None


class Timer:
    """Synchronised wall time of a call and, on CUDA, its peak memory above what it started with."""

    def __init__(self, device: torch.device, repeats: int, warmup: int) -> None:
        self.cuda = device.type == 'cuda'
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device) if self.cuda else 0

    def once(self, fn: Callable[[], object]) -> tuple[float, int]:
        """``(ms, peak bytes above the start)`` of one call."""
        self.sync()
        start = self.allocated()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        fn()
        self.sync()
        ms = (time.perf_counter() - t0) * 1000.0
        return ms, (torch.cuda.max_memory_allocated(self.device) - start if self.cuda else 0)

    def measure(self, metric: str, frames: int | None, fn: Callable[[], object], *,
                prepare: Callable[[], object] | None = None,
                cleanup: Callable[[], object] | None = None) -> Row:
        """``warmup`` + ``repeats`` calls of ``fn``, each after ``prepare`` (untimed)."""
        times, peaks = [], []
        for i in range(self.warmup + self.repeats):
            resident = self.allocated()  # before `prepare` makes the benchmark's copy
            if prepare is not None:
                prepare()
            ms, extra = self.once(fn)
            if cleanup is not None:
                cleanup()
            if i >= self.warmup:
                times.append(ms)
                peaks.append(resident + extra)
        return make_row(metric, frames, times, max(peaks) if self.cuda else None)


def make_row(metric: str, frames: int | None, times: list[float], peak: int | None) -> Row:
    arr = np.asarray(times, dtype=np.float64)
    row = Row(metric, frames, float(np.percentile(arr, 50)), float(np.percentile(arr, 95)),
              len(times), peak)
    where = '' if frames is None else f' F={frames}'
    log(f'{metric}{where}: p50 {row.p50_ms:.2f} ms, p95 {row.p95_ms:.2f} ms ({len(times)} runs)')
    return row
