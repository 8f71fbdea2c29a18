"""ROS-free camera ingest core: resize frames for the model, cap the frame rate, scale intrinsics.

Everything here works on numpy arrays and plain floats (stamps in seconds), so it is unit-tested
without rclpy. The ``camera_ingest`` node (``vln_stack.nodes.camera_node``) wraps it.

Pixel convention: integer pixel coordinates are pixel centres (OpenCV / ROS CameraInfo). Resizing
by ``s`` maps a source coordinate ``u`` to ``(u + 0.5) * s - 0.5``, the mapping ``cv2.resize``
samples with, and :func:`scale_camera_intrinsics` applies the same mapping to K / P.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

RESIZE_MODES = ('resize', 'fit_width')


class FramePreprocessor:
    """Resize an HxWx3 uint8 RGB frame to the model input size.

    Modes:
      * ``resize``: output is exactly ``width x height``; the aspect ratio changes if the input's
        differs (fx and fy then scale differently).
      * ``fit_width``: output width is ``width``; the height follows the input's aspect ratio,
        ``round(h_in * width / w_in)`` (the ``height`` argument is ignored). A 1280x720 input at
        ``width=640`` becomes 640x360; a 640x480 one stays 640x480.

    Downscaling uses ``INTER_AREA`` (no aliasing), upscaling ``INTER_LINEAR``. A frame that is
    already the output size is returned as is (no copy).
    """

    def __init__(self, width: int = 640, height: int = 480, mode: str = 'resize') -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f'unknown resize mode {mode!r} (choose from {RESIZE_MODES})')
        if width <= 0 or (mode == 'resize' and height <= 0):
            raise ValueError(f'output size must be positive, got {width}x{height}')
        self.width = int(width)
        self.height = int(height)
        self.mode = mode

    def output_size(self, in_wh: tuple[int, int]) -> tuple[int, int]:
        """Output (width, height) in pixels for an input of (width, height)."""
        w_in, h_in = int(in_wh[0]), int(in_wh[1])
        if w_in <= 0 or h_in <= 0:
            raise ValueError(f'empty input frame {w_in}x{h_in}')
        if self.mode == 'resize':
            return self.width, self.height
        return self.width, max(1, int(round(h_in * self.width / w_in)))

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """rgb: [H, W, 3] uint8 -> [H_out, W_out, 3] uint8 (C-contiguous)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f'expected HxWx3 uint8 RGB, got {rgb.dtype} {rgb.shape}')
        h_in, w_in = rgb.shape[:2]
        w_out, h_out = self.output_size((w_in, h_in))
        if (w_out, h_out) == (w_in, h_in):
            return np.ascontiguousarray(rgb)
        shrink = w_out * h_out < w_in * h_in
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        return cv2.resize(rgb, (w_out, h_out), interpolation=interp)


class RateLimiter:
    """Decide from frame stamps (seconds) whether a frame may pass, at most ``max_rate_hz``.

    Frames pass on a slot schedule: after a frame passes at ``t``, the next slot opens at the
    previous slot + period (but no earlier than ``t + period / 2``, so a late frame cannot cause a
    burst). That keeps the long-run output rate at ``max_rate_hz`` even when it does not divide the
    input rate (30 Hz -> 14 Hz gives 14 Hz, not 10 Hz). A frame up to ``tolerance * period`` early
    still takes its slot, so stamp jitter does not halve the rate. ``max_rate_hz <= 0`` passes
    every frame. A stamp earlier than the last passed one (bag loop, simulation reset) restarts
    the schedule.

    Use :meth:`allow` (check and take the slot), or :meth:`check` then :meth:`commit` when the
    frame may still turn out unusable after the check (the slot is only taken on commit).
    """

    def __init__(self, max_rate_hz: float = 0.0, *, tolerance: float = 0.1) -> None:
        if not 0.0 <= tolerance < 0.5:
            raise ValueError(f'tolerance must be in [0, 0.5), got {tolerance}')
        self.max_rate_hz = float(max_rate_hz)
        self.period_s = 1.0 / self.max_rate_hz if self.max_rate_hz > 0 else 0.0
        self.tolerance = float(tolerance)
        self._next_s: float | None = None
        self._last_s: float | None = None

    def reset(self) -> None:
        self._next_s = None
        self._last_s = None

    def check(self, stamp_s: float) -> bool:
        """Whether a frame stamped ``stamp_s`` would pass now (does not take the slot)."""
        if self.period_s <= 0.0 or self._next_s is None or self._last_s is None:
            return True
        if stamp_s < self._last_s:
            return True
        return stamp_s >= self._next_s - self.tolerance * self.period_s

    def commit(self, stamp_s: float) -> None:
        """Record that a frame stamped ``stamp_s`` passed."""
        if self.period_s <= 0.0:
            self._last_s = stamp_s
            return
        if self._next_s is None or self._last_s is None or stamp_s < self._last_s:
            self._next_s = stamp_s + self.period_s
        else:
            self._next_s = max(self._next_s + self.period_s, stamp_s + 0.5 * self.period_s)
        self._last_s = stamp_s

    def allow(self, stamp_s: float) -> bool:
        """Check and, if the frame passes, take its slot."""
        if not self.check(stamp_s):
            return False
        self.commit(stamp_s)
        return True


def intrinsics_scaling(from_wh: tuple[int, int], to_wh: tuple[int, int]) -> np.ndarray:
    """3x3 matrix S with ``K_out = S @ K_in`` for a resize from ``from_wh`` to ``to_wh`` pixels."""
    (w0, h0), (w1, h1) = from_wh, to_wh
    if min(w0, h0, w1, h1) <= 0:
        raise ValueError(f'sizes must be positive, got {from_wh} -> {to_wh}')
    sx, sy = w1 / w0, h1 / h0
    return np.array([[sx, 0.0, 0.5 * (sx - 1.0)],
                     [0.0, sy, 0.5 * (sy - 1.0)],
                     [0.0, 0.0, 1.0]])


def scale_camera_intrinsics(K: np.ndarray, from_wh: tuple[int, int],
                            to_wh: tuple[int, int]) -> np.ndarray:
    """Scale a camera matrix for an image resized from ``from_wh`` to ``to_wh`` (pixels).

    K: 3x3 intrinsics (or a 3x4 projection matrix P, or anything flat of 9 / 12 values). Returns
    the same shape as given: fx' = fx * sx, fy' = fy * sy, cx' = (cx + 0.5) * sx - 0.5,
    cy' = (cy + 0.5) * sy - 0.5 (pixel-centre convention, matching ``cv2.resize``); for P the
    Tx/Ty column scales with fx/fy. Distortion coefficients need no change.
    """
    arr = np.asarray(K, dtype=np.float64)
    if arr.size not in (9, 12):
        raise ValueError(f'expected a 3x3 K or 3x4 P, got shape {arr.shape}')
    mat = arr.reshape(3, arr.size // 3)
    out = intrinsics_scaling(from_wh, to_wh) @ mat
    if not np.all(np.isfinite(out)):
        raise ValueError('intrinsics are not finite')
    return out.reshape(arr.shape)


def seconds_to_stamp(t_s: float) -> tuple[int, int]:
    """float seconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    ns = int(round(t_s * 1e9))
    sec, nsec = divmod(ns, 1_000_000_000)
    return int(sec), int(nsec)


DROP_KINDS = ('rate_limit', 'malformed', 'other')


@dataclass
class IngestStats:
    """Frame counters of one ingest pipeline plus a sliding window for rates (not thread-safe)."""

    frames_in: int = 0
    frames_out: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_KINDS, 0))
    last_drop_reason: str = ''
    proc_ms_total: float = 0.0
    proc_ms_max: float = 0.0
    _win_start_s: float | None = None
    _win_in: int = 0
    _win_out: int = 0
    _win_malformed: int = 0

    def record_in(self) -> None:
        self.frames_in += 1
        self._win_in += 1

    def record_out(self, proc_ms: float) -> None:
        self.frames_out += 1
        self._win_out += 1
        self.proc_ms_total += proc_ms
        self.proc_ms_max = max(self.proc_ms_max, proc_ms)

    def record_drop(self, kind: str, reason: str = '') -> None:
        if kind not in self.dropped:
            raise ValueError(f'unknown drop kind {kind!r} (known: {DROP_KINDS})')
        self.dropped[kind] += 1
        if kind == 'malformed':
            self._win_malformed += 1
        if reason:
            self.last_drop_reason = reason

    @property
    def proc_ms_mean(self) -> float:
        return self.proc_ms_total / self.frames_out if self.frames_out else 0.0

    def window(self, now_s: float) -> dict[str, float]:
        """Rates over the time since the previous call (first call: zero rates); starts anew."""
        out = {'input_rate_hz': 0.0, 'output_rate_hz': 0.0,
               'malformed_in_window': float(self._win_malformed), 'window_s': 0.0}
        if self._win_start_s is not None and now_s > self._win_start_s:
            span = now_s - self._win_start_s
            out.update(input_rate_hz=self._win_in / span, output_rate_hz=self._win_out / span,
                       window_s=span)
        self._win_start_s = now_s
        self._win_in = self._win_out = self._win_malformed = 0
        return out
