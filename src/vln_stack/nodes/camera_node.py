"""camera_ingest: bring one camera stream to the model's input size and rate.

Sources (parameter ``source``):
  * ``topic``: subscribes ``camera/image_raw`` (sensor_msgs/Image) or, with ``input_compressed``,
    ``camera/image_raw/compressed`` (sensor_msgs/CompressedImage); frames keep their header stamp.
  * ``realsense`` / ``opencv``: a :mod:`vln_stack.camera.sources` device read in a worker thread;
    frames are stamped with the node clock (``use_sim_time`` respected).

Publishes ``vln/image`` (sensor_msgs/Image rgb8), optionally ``vln/image/compressed`` (JPEG), and
``vln/camera_info`` (the latest ``camera/camera_info``, or the device's own intrinsics, scaled to
the output size; one per output frame, same header). ``diagnostics`` once a second with frames
in/out/dropped, rates and per-frame processing time. Malformed frames are dropped, counted and
reported in a throttled warning. All topic names are relative; remap them per robot.
Inputs are subscribed BEST_EFFORT (they match any publisher), outputs are RELIABLE (they match
any subscriber), both KEEP_LAST ``qos_depth``.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vln_stack.camera.ingest import (FramePreprocessor, IngestStats, RateLimiter,
                                     scale_camera_intrinsics)
from vln_stack.camera.sources import SOURCES, CameraIntrinsics, FrameSource, make_source
from vln_stack.ros.common import declare_config, run_node
from vln_stack.ros.convert import s_from_time
from vln_stack.ros.images import (compressed_msg_to_rgb, image_msg_to_rgb,
                                  rgb_to_compressed_msg, rgb_to_image_msg)

STALE_AFTER_S = 3.0


@dataclass
class CameraIngestConfig:
    """Parameters of ``camera_ingest`` (one ROS parameter each; floats must be written 2.0)."""

    source: str = 'topic'            # 'topic' | 'realsense' | 'opencv'
    input_compressed: bool = False   # topic source: CompressedImage on camera/image_raw/compressed
    width: int = 640                 # output width, pixels
    height: int = 480                # output height, pixels (ignored by fit_width)
    resize_mode: str = 'resize'      # 'resize' (exact size) | 'fit_width' (keep aspect)
    max_rate_hz: float = 0.0         # output rate cap on frame stamps; 0 = every frame
    publish_compressed: bool = False  # also JPEG on vln/image/compressed
    jpeg_quality: int = 80           # 1..100
    frame_id: str = ''               # '' keeps the input's (device: the source's default)
    realsense_serial: str = ''       # '' = first device; digits need a '_' prefix or quotes
    realsense_file: str = ''         # .bag recording to play instead of a device
    opencv_uri: str = ''             # device index ("0"), URL or video file
    loop_file: bool = True           # repeat recordings / video files
    qos_depth: int = 5               # history depth of inputs and outputs


class CameraIngestNode(Node):
    """Thin rclpy wrapper: message or device frame -> FramePreprocessor -> vln/image."""

    def __init__(self) -> None:
        super().__init__('camera_ingest')
        cfg = declare_config(self, CameraIngestConfig)
        self._validate(cfg)
        self.cfg = cfg
        self._pre = FramePreprocessor(cfg.width, cfg.height, cfg.resize_mode)
        self._rate = RateLimiter(cfg.max_rate_hz)
        self._stats = IngestStats()
        self._stats.window(time.monotonic())  # first diagnostics rate covers start-up
        self._lock = threading.Lock()
        self._last_out_mono: float | None = None
        self._info: CameraInfo | None = None
        self._source_error = ''

        in_qos = QoSProfile(depth=cfg.qos_depth, history=HistoryPolicy.KEEP_LAST,
                            reliability=ReliabilityPolicy.BEST_EFFORT)
        out_qos = QoSProfile(depth=cfg.qos_depth, history=HistoryPolicy.KEEP_LAST,
                             reliability=ReliabilityPolicy.RELIABLE)
        self._pub = self.create_publisher(Image, 'vln/image', out_qos)
        self._pub_jpeg = (self.create_publisher(CompressedImage, 'vln/image/compressed', out_qos)
                          if cfg.publish_compressed else None)
        self._pub_info = self.create_publisher(CameraInfo, 'vln/camera_info', out_qos)
        self._pub_diag = self.create_publisher(DiagnosticArray, 'diagnostics', 10)
        self.create_subscription(CameraInfo, 'camera/camera_info', self._on_info, in_qos)

        self._source: FrameSource | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        if cfg.source == 'topic':
            if cfg.input_compressed:
                self._hw_id = 'topic:camera/image_raw/compressed'
                self.create_subscription(CompressedImage, 'camera/image_raw/compressed',
                                         self._on_compressed, in_qos)
            else:
                self._hw_id = 'topic:camera/image_raw'
                self.create_subscription(Image, 'camera/image_raw', self._on_image, in_qos)
        else:
            self._source = self._make_source(cfg)
            self._source.open()  # raises SourceUnavailableError with the reason: fatal
            intr = self._source.intrinsics()
            if intr is not None:
                self._info = _intrinsics_to_info(intr)
            self._worker = threading.Thread(target=self._read_loop, name='camera_ingest_reader',
                                            daemon=True)
            self._worker.start()

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.create_timer(1.0, self._publish_diagnostics, clock=steady,
                          callback_group=MutuallyExclusiveCallbackGroup())
        mode = f'{self._pre.width}x{self._pre.height}' if cfg.resize_mode == 'resize' \
            else f'width {self._pre.width}, keep aspect'
        rate = f'max {cfg.max_rate_hz:g} Hz' if cfg.max_rate_hz > 0 else 'no rate limit'
        self.get_logger().info(f'{self._hw_id} -> vln/image ({mode}, {rate})')

    # --- setup -------------------------------------------------------------------------------
    @staticmethod
    def _validate(cfg: CameraIngestConfig) -> None:
        known = ['topic', *sorted(SOURCES)]
        if cfg.source not in known:
            raise ValueError(f'source must be one of {known}, got {cfg.source!r}')
        if not 1 <= cfg.jpeg_quality <= 100:
            raise ValueError(f'jpeg_quality must be 1..100, got {cfg.jpeg_quality}')
        if cfg.qos_depth < 1:
            raise ValueError(f'qos_depth must be >= 1, got {cfg.qos_depth}')
        if cfg.max_rate_hz < 0:
            raise ValueError(f'max_rate_hz must be >= 0, got {cfg.max_rate_hz}')

    def _make_source(self, cfg: CameraIngestConfig) -> FrameSource:
        if cfg.source == 'realsense':
            self._hw_id = (f'realsense:file:{cfg.realsense_file}' if cfg.realsense_file
                           else f'realsense:{cfg.realsense_serial or "any"}')
            return make_source('realsense', serial=cfg.realsense_serial,
                               file=cfg.realsense_file, loop=cfg.loop_file)
        self._hw_id = f'{cfg.source}:{cfg.opencv_uri}'
        if cfg.source == 'opencv':
            return make_source('opencv', uri=cfg.opencv_uri, loop=cfg.loop_file)
        return make_source(cfg.source)

    # --- topic source ------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self._on_message(msg, image_msg_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._on_message(msg, compressed_msg_to_rgb)

    def _on_message(self, msg: Image | CompressedImage,
                    decode: Callable[[Any], np.ndarray]) -> None:
        t0 = time.perf_counter()
        stamp_s = s_from_time(msg.header.stamp)
        with self._lock:
            self._stats.record_in()
            if not self._rate.check(stamp_s):
                self._stats.record_drop('rate_limit')
                return
        try:
            rgb = decode(msg)
        except ValueError as exc:
            self._drop_malformed(f'{type(msg).__name__} stamped {stamp_s:.3f}: {exc}')
            return
        self._emit(rgb, msg.header.stamp, msg.header.frame_id, stamp_s, t0)

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    # --- device sources ----------------------------------------------------------------------
    def _read_loop(self) -> None:
        """Worker thread: read the device, stamp with the node clock, process, publish."""
        source = self._source
        assert source is not None
        finished_logged = False
        while not self._stop.is_set():
            try:
                item = source.read(timeout_s=0.5)
                if item is None:
                    if source.finished and not finished_logged:
                        self.get_logger().info(f'{self._hw_id}: end of recording')
                        finished_logged = True
                    continue
                self._on_device_frame(item[0], source.default_frame_id)
            except Exception as exc:  # noqa: BLE001 - keep the node alive, report it
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: publishers / context are going away
                self._source_error = f'{type(exc).__name__}: {exc}'
                with self._lock:
                    self._stats.record_drop('other', self._source_error)
                self.get_logger().error(f'{self._hw_id}: {self._source_error}',
                                        throttle_duration_sec=5.0)
                self._stop.wait(0.5)

    def _on_device_frame(self, rgb: np.ndarray, frame_id: str) -> None:
        t0 = time.perf_counter()
        now = self.get_clock().now()
        stamp_s = now.nanoseconds * 1e-9
        with self._lock:
            self._stats.record_in()
            if now.nanoseconds == 0:
                self._stats.record_drop('other', 'clock is zero (use_sim_time, no /clock yet)')
                return
            if not self._rate.check(stamp_s):
                self._stats.record_drop('rate_limit')
                return
        self._emit(rgb, now.to_msg(), frame_id, stamp_s, t0)

    # --- common path -------------------------------------------------------------------------
    def _emit(self, rgb: np.ndarray, stamp, in_frame_id: str, stamp_s: float, t0: float) -> None:
        try:
            out = self._pre(rgb)
        except ValueError as exc:
            self._drop_malformed(f'frame stamped {stamp_s:.3f}: {exc}')
            return
        with self._lock:
            self._rate.commit(stamp_s)
        frame_id = self.cfg.frame_id or in_frame_id
        self._pub.publish(rgb_to_image_msg(out, stamp, frame_id))
        if self._pub_jpeg is not None:
            self._pub_jpeg.publish(rgb_to_compressed_msg(out, stamp, frame_id,
                                                         quality=self.cfg.jpeg_quality))
        info = self._info
        if info is not None:
            scaled = self._scaled_info(info, (rgb.shape[1], rgb.shape[0]),
                                       (out.shape[1], out.shape[0]))
            if scaled is not None:
                scaled.header.stamp = stamp
                scaled.header.frame_id = frame_id
                self._pub_info.publish(scaled)
        with self._lock:
            self._stats.record_out((time.perf_counter() - t0) * 1e3)
            self._last_out_mono = time.monotonic()

    def _scaled_info(self, info: CameraInfo, in_wh: tuple[int, int],
                     out_wh: tuple[int, int]) -> CameraInfo | None:
        from_wh = (int(info.width), int(info.height)) if info.width and info.height else in_wh
        try:
            k = scale_camera_intrinsics(np.asarray(info.k), from_wh, out_wh)
            p = scale_camera_intrinsics(np.asarray(info.p), from_wh, out_wh)
        except ValueError as exc:
            self.get_logger().warning(f'camera_info not scaled: {exc}', throttle_duration_sec=5.0)
            return None
        msg = CameraInfo()
        msg.width, msg.height = int(out_wh[0]), int(out_wh[1])
        msg.distortion_model = info.distortion_model
        msg.d = list(info.d)
        msg.k = [float(v) for v in k.ravel()]
        msg.r = list(info.r)
        msg.p = [float(v) for v in p.ravel()]
        return msg

    def _drop_malformed(self, reason: str) -> None:
        with self._lock:
            self._stats.record_drop('malformed', reason)
            count = self._stats.dropped['malformed']
        self.get_logger().warning(f'dropped malformed frame ({count} so far): {reason}',
                                  throttle_duration_sec=2.0)

    # --- diagnostics -------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        now_mono = time.monotonic()
        with self._lock:
            st = self._stats
            win = st.window(now_mono)
            values = {
                'source': self._hw_id,
                'frames_in': st.frames_in,
                'frames_out': st.frames_out,
                'dropped_total': sum(st.dropped.values()),
                'dropped_rate_limit': st.dropped['rate_limit'],
                'dropped_malformed': st.dropped['malformed'],
                'dropped_other': st.dropped['other'],
                'input_rate_hz': f'{win["input_rate_hz"]:.2f}',
                'output_rate_hz': f'{win["output_rate_hz"]:.2f}',
                'proc_ms_mean': f'{st.proc_ms_mean:.2f}',
                'proc_ms_max': f'{st.proc_ms_max:.2f}',
                'last_drop_reason': st.last_drop_reason,
            }
            last_out = self._last_out_mono
        status = DiagnosticStatus()
        status.name = f'{self.get_name()}: camera ingest'
        status.hardware_id = self._hw_id
        if self._source_error and (last_out is None or now_mono - last_out > STALE_AFTER_S):
            status.level, status.message = DiagnosticStatus.ERROR, self._source_error
        elif win['malformed_in_window']:
            status.level = DiagnosticStatus.WARN
            status.message = f'{int(win["malformed_in_window"])} malformed frame(s) dropped'
        elif last_out is None or now_mono - last_out > STALE_AFTER_S:
            status.level, status.message = DiagnosticStatus.WARN, 'no frames'
        else:
            status.level = DiagnosticStatus.OK
            status.message = f'{win["output_rate_hz"]:.1f} Hz out'
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._pub_diag.publish(arr)

    def on_shutdown(self) -> None:
        """Stop the reader thread and release the device (called by run_node)."""
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=2.0)
            self._worker = None
        if self._source is not None:
            self._source.close()
            self._source = None

    def destroy_node(self) -> None:
        self.on_shutdown()
        super().destroy_node()


def _intrinsics_to_info(intr: CameraIntrinsics) -> CameraInfo:
    msg = CameraInfo()
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = intr.distortion_model
    msg.d = list(intr.d)
    msg.k = [float(v) for v in np.asarray(intr.k, dtype=float).ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [float(v) for v in np.hstack([np.asarray(intr.k, dtype=float),
                                          np.zeros((3, 1))]).ravel()]
    return msg


def main(args: list[str] | None = None) -> int:
    return run_node(CameraIngestNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
