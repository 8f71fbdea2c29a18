"""Encoder benchmark building blocks: constants, the memory probe, the run setup, model builders."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import dataclasses
import sys
from collections.abc import Sequence

import numpy as np
import torch

# preset of the spatial encoder -> DualMemoryEncoder preset that contains it
DUAL_PRESET = {'tiny': 'tiny', 'vggt-1b': 'janusvln-7b'}
DEFAULT_FRAMES = (1, 2, 4, 8, 16, 32, 48, 64)
DEFAULT_LONG_RUN = 500
LONG_RUN_MARKS = (100, 200, 500)  # plus the memory capacity (56 with the released bounds)
SOURCE_HW = (480, 640)  # habitat camera size; preprocessed like JanusVLN to --width
POOL_SIZE = 8  # distinct random frames, cycled
MB = 1024.0 * 1024.0
OOM_ERRORS = (RuntimeError, getattr(torch, 'OutOfMemoryError', torch.cuda.OutOfMemoryError))


def log(msg: str) -> None:
    """Progress line (stderr, so stdout holds only the report)."""
    print(f'[encoder_benchmark] {msg}', file=sys.stderr, flush=True)


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


def resolve_bench_dtype(name: str, device: torch.device) -> torch.dtype:
    from ...models.runtime import resolve_dtype
    short = {'fp32': 'float32', 'bf16': 'bfloat16', 'fp16': 'float16'}
    return resolve_dtype(short.get(name, name), device)


def default_repeats(preset: str, device: torch.device) -> int:
    if preset == 'tiny':
        return 7
    return 3 if device.type == 'cuda' else 1


def source_frames(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SOURCE_HW, 3), dtype=np.uint8) for _ in range(POOL_SIZE)]


def build_dual(preset: str, settings, seed: int, device, dtype):
    from ...models.dual_encoder import DualMemoryEncoder
    from ...models.presets import ENCODER_PRESETS

    _, vision = ENCODER_PRESETS[DUAL_PRESET[preset]]
    modules = DualMemoryEncoder.build_modules(settings, vision, seed=seed)
    return DualMemoryEncoder(*modules, settings=settings, device=device, dtype=dtype)


def build_aggregator(preset: str, seed: int, device, dtype):
    from ...models.vggt import VGGT_PRESETS, VGGTAggregator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        agg = VGGTAggregator(VGGT_PRESETS[preset]).init_random(seed)
    return agg.to(device, dtype).eval()


def clone_cache(cache):
    """Independent copy of a `FrameKVCache` (buffers copied), to repeat one step on one state."""
    return copy.deepcopy(cache)


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


def is_oom(err: BaseException) -> bool:
    if isinstance(err, OOM_ERRORS[1]):
        return True
    text = str(err).lower()
    return 'out of memory' in text or "can't allocate" in text
