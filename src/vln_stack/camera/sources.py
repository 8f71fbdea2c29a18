"""Frame sources read by the ``camera_ingest`` node's worker thread (ROS-free).

One small ABC, :class:`FrameSource`, and a registry keyed by short names:

* ``realsense``: an Intel RealSense camera through ``pyrealsense2``, chosen by serial, or the
  playback of a recorded ``.bag`` file (``enable_device_from_file``). Colour stream only:
  enabling colour and depth together on a recording whose streams do not overlap in time makes
  the pipeline's syncer wait forever.
* ``opencv``: ``cv2.VideoCapture`` of a device index (``"0"``), a URL (``rtsp://...``,
  ``http://...``) or a video file (optionally looped, paced at the file's frame rate).

The ``topic`` source (an existing Image / CompressedImage topic) lives in the node.
Hardware SDKs are imported in :meth:`FrameSource.open`, never at import time.

    src = make_source('opencv', uri='clip.avi', loop=True)
    with src:
        item = src.read(timeout_s=1.0)   # (rgb [H, W, 3] uint8, stamp_s or None) or None
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

Frame = tuple[np.ndarray, 'float | None']


class SourceUnavailableError(RuntimeError):
    """A source cannot be opened: SDK or system library missing, no device, bad file/URL."""


@dataclass
class CameraIntrinsics:
    """Pinhole intrinsics at the source's native resolution (pixels; ROS CameraInfo names)."""

    width: int
    height: int
    k: np.ndarray  # 3x3
    distortion_model: str = 'plumb_bob'
    d: list[float] = field(default_factory=list)


class FrameSource(ABC):
    """A camera-like producer of RGB frames. Not thread-safe: one reader thread at a time."""

    name: ClassVar[str] = ''
    default_frame_id: ClassVar[str] = 'camera_optical_frame'

    @abstractmethod
    def open(self) -> None:
        """Acquire the device / file; raises :class:`SourceUnavailableError` with the reason."""

    @abstractmethod
    def read(self, timeout_s: float) -> Frame | None:
        """Next frame as (rgb [H, W, 3] uint8, stamp in seconds or None), or None on timeout.

        ``stamp_s`` is the source's own time (device clock, position in a file), informative
        only; the node stamps device frames with its ROS clock.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the device; safe to call twice."""

    @property
    def finished(self) -> bool:
        """True once a non-looping file source has delivered its last frame."""
        return False

    def intrinsics(self) -> CameraIntrinsics | None:
        """Intrinsics of the delivered frames, when the source knows them (after open())."""
        return None

    def __enter__(self) -> 'FrameSource':
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SOURCES: dict[str, type[FrameSource]] = {}


def register_source(name: str) -> Callable[[type[FrameSource]], type[FrameSource]]:
    """Class decorator: make a FrameSource available to :func:`make_source` under ``name``."""

    def deco(cls: type[FrameSource]) -> type[FrameSource]:
        if name in SOURCES and SOURCES[name] is not cls:
            raise ValueError(f'frame source {name!r} is already registered')
        cls.name = name
        SOURCES[name] = cls
        return cls

    return deco


def make_source(name: str, **options: Any) -> FrameSource:
    """Build the source registered under ``name`` with its keyword options (not opened yet)."""
    try:
        cls = SOURCES[name]
    except KeyError:
        raise ValueError(f'unknown frame source {name!r} (known: {sorted(SOURCES)})') from None
    return cls(**options)


def import_pyrealsense2() -> Any:
    """Import pyrealsense2, turning the usual failures into an actionable message."""
    try:
        import pyrealsense2 as rs  # noqa: PLC0415 - optional SDK, imported lazily
    except ImportError as exc:
        text = str(exc)
        if 'libusb' in text:
            hint = ('pyrealsense2 needs the Debian/Ubuntu package libusb-1.0-0 '
                    '(sudo apt-get install -y libusb-1.0-0)')
        else:
            hint = 'install it with: pip install pyrealsense2'
        raise SourceUnavailableError(f'cannot import pyrealsense2 ({text}); {hint}') from exc
    return rs


@register_source('realsense')
class RealSenseSource(FrameSource):
    """RealSense colour stream: a live camera (``serial``, '' = first found) or a ``.bag`` file.

    File playback runs at the recorded pace (``real_time``) and repeats when ``loop`` is set.
    A leading '_' on ``serial`` is ignored (realsense-ros convention), so an all-digit serial can
    pass through ROS parameters as a string: ``realsense_serial:=_233522074606``.
    """

    default_frame_id = 'camera_color_optical_frame'

    def __init__(self, *, serial: str = '', file: str = '', width: int = 640, height: int = 480,
                 fps: int = 30, loop: bool = True, real_time: bool = True) -> None:
        self.serial = serial.lstrip('_')
        self.file = file
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.loop = loop
        self.real_time = real_time
        self._rs: Any = None
        self._pipeline: Any = None
        self._playback: Any = None
        self._intr: CameraIntrinsics | None = None
        self._finished = False

    def open(self) -> None:
        rs = import_pyrealsense2()
        self._rs = rs
        cfg = rs.config()
        if self.file:
            path = Path(self.file)
            if not path.is_file():
                raise SourceUnavailableError(f'RealSense recording not found: {path}')
            cfg.enable_device_from_file(str(path), repeat_playback=self.loop)
        elif self.serial:
            cfg.enable_device(self.serial)
        cfg.enable_stream(rs.stream.color, self.width, self.height, rs.format.rgb8, self.fps)
        pipeline = rs.pipeline()
        try:
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            what = f'file {self.file}' if self.file else f'serial {self.serial or "<any>"}'
            raise SourceUnavailableError(
                f'RealSense ({what}) colour {self.width}x{self.height}@{self.fps} did not start: '
                f'{exc}') from exc
        self._pipeline = pipeline
        device = profile.get_device()
        if self.file:
            self._playback = device.as_playback()
            self._playback.set_real_time(self.real_time)
        vsp = profile.get_stream(rs.stream.color).as_video_stream_profile()
        intr = vsp.get_intrinsics()
        model = 'equidistant' if intr.model == rs.distortion.kannala_brandt4 else 'plumb_bob'
        self._intr = CameraIntrinsics(
            width=int(intr.width), height=int(intr.height),
            k=np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]]),
            distortion_model=model, d=[float(c) for c in intr.coeffs])
        self._finished = False

    def read(self, timeout_s: float) -> Frame | None:
        if self._pipeline is None:
            raise RuntimeError('RealSenseSource.read() before open()')
        if self._finished:
            time.sleep(min(timeout_s, 0.1))
            return None
        ok, frames = self._pipeline.try_wait_for_frames(max(1, int(timeout_s * 1000)))
        if not ok:
            if (self._playback is not None and not self.loop
                    and self._playback.current_status() == self._rs.playback_status.stopped):
                self._finished = True
            return None
        color = frames.get_color_frame()
        if not color:
            return None
        rgb = np.asanyarray(color.get_data()).copy()
        return rgb, float(color.get_timestamp()) * 1e-3

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass
        self._pipeline = None
        self._playback = None

    @property
    def finished(self) -> bool:
        return self._finished

    def intrinsics(self) -> CameraIntrinsics | None:
        return self._intr


@register_source('opencv')
class OpenCVSource(FrameSource):
    """``cv2.VideoCapture`` of a device index ("0"), a URL, or a video file.

    Files are paced at their frame rate (``real_time``; ``fps`` overrides a missing/odd rate) and
    rewound at the end when ``loop`` is set; their stamp is the position in the file (seconds).
    Devices and URLs are reopened after ``reopen_after`` consecutive failed reads. A blocking
    ``VideoCapture.read`` cannot be interrupted: URL reads are bounded by FFmpeg's read timeout.
    """

    def __init__(self, *, uri: str, loop: bool = False, real_time: bool = True,
                 fps: float = 0.0, reopen_after: int = 30) -> None:
        if not uri:
            raise ValueError('opencv source needs a uri (device index, URL or video file)')
        self.uri = uri
        self.loop = loop
        self.real_time = real_time
        self.fps = float(fps)
        self.reopen_after = int(reopen_after)
        self._cap: Any = None
        self._is_file = False
        self._period_s = 0.0
        self._next_due = 0.0
        self._failures = 0
        self._finished = False
        self._opened = False

    def _target(self) -> int | str:
        return int(self.uri) if self.uri.isdigit() else self.uri

    def open(self) -> None:
        import cv2  # noqa: PLC0415 - keep module import light

        target = self._target()
        self._is_file = isinstance(target, str) and '://' not in target
        if self._is_file and not Path(target).is_file():
            raise SourceUnavailableError(f'video file not found: {target}')
        params: list[int] = []
        if isinstance(target, str) and '://' in target:
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 5000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000]
        cap = cv2.VideoCapture(target, cv2.CAP_ANY, params)
        if not cap.isOpened():
            cap.release()
            raise SourceUnavailableError(f'cv2.VideoCapture could not open {self.uri!r}')
        self._cap = cap
        rate = self.fps or float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._period_s = 1.0 / rate if (self._is_file and self.real_time and 0 < rate < 1000) \
            else 0.0
        self._next_due = time.monotonic()
        self._failures = 0
        self._finished = False
        self._opened = True

    def read(self, timeout_s: float) -> Frame | None:
        import cv2  # noqa: PLC0415

        if not self._opened:
            raise RuntimeError('OpenCVSource.read() before open()')
        if self._cap is None:
            return self._try_reopen(timeout_s)
        if self._finished:
            time.sleep(min(timeout_s, 0.1))
            return None
        if self._period_s > 0:
            wait = self._next_due - time.monotonic()
            if wait > timeout_s:
                time.sleep(max(0.0, timeout_s))
                return None
            if wait > 0:
                time.sleep(wait)
        ok, bgr = self._cap.read()
        if not ok and self._is_file and self.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self._cap.read()
        if not ok or bgr is None:
            if self._is_file:
                self._finished = True
            else:
                self._failures += 1
                if self._failures >= self.reopen_after:
                    self._cap.release()
                    self._cap = None
            return None
        self._failures = 0
        if self._period_s > 0:
            self._next_due = max(self._next_due + self._period_s,
                                 time.monotonic() - self._period_s)
        stamp = float(self._cap.get(cv2.CAP_PROP_POS_MSEC)) * 1e-3 if self._is_file else None
        if bgr.ndim == 2:
            bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(bgr[:, :, 2::-1]), stamp

    def _try_reopen(self, timeout_s: float) -> Frame | None:
        try:
            self.open()
        except SourceUnavailableError:
            time.sleep(min(timeout_s, 1.0))
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
        self._cap = None
        self._opened = False

    @property
    def finished(self) -> bool:
        return self._finished
