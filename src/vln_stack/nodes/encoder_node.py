"""Memory encoder node: streaming dual implicit memory (VGGT spatial + Qwen2.5-VL semantic).

Lifecycle node: weights load in ``configure`` at ``dtype`` (a missing or mismatched checkpoint is
logged with its path and the node stays unconfigured, publishing nothing), fused tokens publish
only while ``active``. With ``autostart`` (default) it configures and activates itself, like
nav2's lifecycle manager would.

Which frames enter the memory (``encode_on``):

- ``decision`` (default, as JanusVLN): exactly the frame each decision is taken on. The decision
  node names it on ``vln/encode_request`` (String JSON: episode id, frame stamp); the frame comes
  from ``vln/image`` (the last ``frame_buffer`` frames are kept). The memory then holds the first
  8 + the latest 48 steps of the episode. A request of a new episode resets the memory first, in
  order with the frames (``vln/episode_reset`` is not needed and is ignored in this mode).
- ``camera``: every ``camera_stride``-th camera frame the encoder keeps up with (denser memory,
  not what the released model saw); ``vln/episode_reset`` resets the memory.

Out: ``vln/fused_tokens`` (sensor_msgs/Image, encoding 32FC1, height = tokens N, width = LLM
width D, or 2D for ``token_layout: split``; header = the camera frame's), ``vln/fused_tokens/info``
(String JSON: episode, frame index, memory occupancy, grid, latency), ``vln/encoder/heartbeat``
(String JSON at ``heartbeat_hz`` while active and healthy; the safety node watches it), and
``diagnostics``. Any error in the model worker other than a bad frame (for example CUDA out of
memory) is logged with what to do, turns diagnostics to ERROR and silences the heartbeat, so the
robot side stops; the node encodes again after a reconfigure (cleanup + configure).
"""
from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, String

from ..ros.common import declare_config, run_node
from ..ros.convert import s_from_time
from ..ros.images import image_msg_to_rgb, tokens_to_image_msg


@dataclass
class EncoderConfig:
    checkpoint_dir: str = 'models/tiny-janus'   # local folder; nothing is downloaded
    device: str = 'cpu'
    dtype: str = 'auto'               # auto (bfloat16 on CUDA, else float32) | float32 | bfloat16
                                      # | float16
    encode_on: str = 'decision'       # 'decision' (one memory step per decision) | 'camera'
    camera_stride: int = 1            # encode_on camera: every n-th camera frame
    frame_buffer: int = 30            # recent camera frames kept to answer encode requests
    request_wait_s: float = 0.5       # how long a request waits for its frame to arrive
    initial_frames: int = 0           # > 0 overrides the checkpoint's sink-frame count
    window_frames: int = 0            # > 0 overrides the checkpoint's sliding window
    autostart: bool = True            # configure + activate on start-up
    torch_threads: int = 1            # CPU threads for torch (0 = torch's default)
    heartbeat_hz: float = 10.0        # vln/encoder/heartbeat while active and healthy
    token_layout: str = 'fused'       # 'fused' [N, D] | 'split' [N, 2D] semantic|spatial (the
                                      # janus policy's released mode fuses them as released)


@dataclass
class _Job:
    """One frame to encode: the image message and, for a decision request, its episode id."""

    msg: Image
    episode: str | None = None


def _stamp_key(stamp) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


class EncoderNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__('memory_encoder')
        self.cfg = c = declare_config(self, EncoderConfig)
        if c.token_layout not in ('fused', 'split'):
            raise ValueError(f"token_layout must be 'fused' or 'split', got {c.token_layout!r}")
        if c.encode_on not in ('decision', 'camera'):
            raise ValueError(f"encode_on must be 'decision' or 'camera', got {c.encode_on!r}")
        self.encoder = None
        self._active = False
        self._frames: OrderedDict[tuple[int, int], Image] = OrderedDict()  # decision mode
        self._requests: list[tuple[dict, float]] = []                      # (request, arrival)
        self._latest: Image | None = None                                  # camera mode
        self._camera_count = 0
        self._reset = False
        self._episode: str | None = None
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._stats = {'frames_in': 0, 'encoded': 0, 'dropped': 0, 'errors': 0, 'requests': 0,
                       'latency_ms': 0.0}
        self._error = ''
        self.tokens_pub = self.create_lifecycle_publisher(Image, 'vln/fused_tokens', 5)
        self.info_pub = self.create_lifecycle_publisher(String, 'vln/fused_tokens/info', 5)
        self.heartbeat_pub = self.create_publisher(String, 'vln/encoder/heartbeat', 5)
        self.diag_pub = self.create_publisher(DiagnosticArray, 'diagnostics', 5)
        self.create_subscription(Image, 'vln/image', self._on_image, 5)
        if c.encode_on == 'decision':
            self.create_subscription(String, 'vln/encode_request', self._on_request, 10)
        else:
            self.create_subscription(Empty, 'vln/episode_reset', self._on_reset, 5)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(1.0 / max(c.heartbeat_hz, 0.1), self._publish_heartbeat)
        self._worker = threading.Thread(target=self._work, name='encoder', daemon=True)
        self._worker.start()
        if c.autostart:
            # steady clock: with use_sim_time and no /clock yet the node must still configure
            self._boot = self.create_timer(0.1, self._autostart,
                                           clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _autostart(self) -> None:
        self._boot.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    # --- lifecycle --------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        import torch

        from ..models.dual_encoder import DualMemoryEncoder
        from ..models.runtime import resolve_dtype
        c = self.cfg
        if c.torch_threads > 0:
            torch.set_num_threads(c.torch_threads)
        try:
            t0 = time.monotonic()
            dtype = resolve_dtype(c.dtype, c.device)
            enc = DualMemoryEncoder.from_folder(c.checkpoint_dir, device=c.device, dtype=dtype)
            if c.initial_frames > 0 or c.window_frames > 0:
                enc.cache = enc.aggregator.new_cache(
                    initial_frames=c.initial_frames or enc.settings.kv_initial_frames,
                    window_frames=c.window_frames or enc.settings.kv_window_frames)
        except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
            self._error = f'{type(exc).__name__}: {exc}'
            self.get_logger().error(
                f'cannot load the dual encoder from {c.checkpoint_dir!r}: {exc}. '
                'Put a JanusVLN checkpoint folder there (or make the tiny one with '
                '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`) and '
                'configure again. No fused tokens are published.')
            return TransitionCallbackReturn.FAILURE
        with self._cv:
            self.encoder, self._error, self._episode = enc, '', None
        mem = enc.cache
        self.get_logger().info(
            f'dual encoder loaded from {c.checkpoint_dir} in {time.monotonic() - t0:.1f} s '
            f'({dtype} on {c.device}, vggt {enc.settings.vggt_preset}, input width '
            f'{enc.settings.input_width}, memory {mem.initial_frames} sink + '
            f'{mem.window_frames} window frames, one frame per '
            f'{"decision" if c.encode_on == "decision" else f"{c.camera_stride} camera frame(s)"})')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._cv:
            self.encoder, self._error = None, ''
        return TransitionCallbackReturn.SUCCESS

    # --- inputs -----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        with self._cv:
            self._stats['frames_in'] += 1
            if self.cfg.encode_on == 'decision':
                self._frames[_stamp_key(msg.header.stamp)] = msg
                while len(self._frames) > max(self.cfg.frame_buffer, 1):
                    self._frames.popitem(last=False)
            else:
                self._camera_count += 1
                if (self._camera_count - 1) % max(self.cfg.camera_stride, 1):
                    return
                if self._latest is not None:
                    self._stats['dropped'] += 1   # the encoder was busy: keep only the newest
                self._latest = msg
            self._cv.notify()

    def _on_request(self, msg: String) -> None:
        try:
            req = json.loads(msg.data)
            req = {'episode': str(req['episode']), 'key': (int(req['sec']), int(req['nanosec']))}
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f'unreadable encode request {msg.data!r}: ignored')
            return
        with self._cv:
            self._stats['requests'] += 1
            self._requests.append((req, time.monotonic()))
            self._cv.notify()

    def _on_reset(self, _msg: Empty) -> None:
        with self._cv:
            self._reset = True
            self._latest = None

    # --- worker -----------------------------------------------------------------------------
    def _next_job(self) -> _Job | None:
        """Under the lock: the next frame to encode, or None. A request whose frame has not
        arrived waits up to ``request_wait_s``, then is dropped with a warning."""
        if self.cfg.encode_on == 'camera':
            msg, self._latest = self._latest, None
            return _Job(msg) if msg is not None else None
        now = time.monotonic()
        while self._requests:
            req, arrived = self._requests[0]
            msg = self._frames.get(req['key'])
            if msg is not None:
                self._requests.pop(0)
                return _Job(msg, req['episode'])
            if now - arrived < self.cfg.request_wait_s:
                return None
            self._requests.pop(0)
            self._stats['dropped'] += 1
            self.get_logger().warning(
                f'encode request for frame {req["key"]} dropped: that frame never reached '
                'vln/image here within request_wait_s (the decision node will ask again)')
        return None

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self._work_once()
            except Exception as exc:  # noqa: BLE001 - the thread must never end silently
                self._fail(self.encoder, exc)

    def _job_ready(self) -> bool:
        """Under the lock: something to do now (a frame to encode, or a request to answer)."""
        if self.cfg.encode_on == 'camera':
            return self._latest is not None or self._stop.is_set()
        return any(key in self._frames for key in (r['key'] for r, _ in self._requests)) \
            or self._stop.is_set()

    def _work_once(self) -> None:
        with self._cv:
            # wakes at once when a job is ready; the timeout lets an unanswerable request expire
            self._cv.wait_for(self._job_ready, timeout=0.05)
            job = self._next_job()
            enc = self.encoder
            if self._reset and enc is not None:
                enc.reset()
                self._reset = False
        if job is None or enc is None or not self._active or self._error:
            return
        try:
            self._encode(enc, job)
        except ValueError as exc:   # a bad frame: dropped, the node carries on
            self._stats['errors'] += 1
            self.get_logger().warning(f'frame dropped: {exc}', throttle_duration_sec=2.0)
            if 'frame size changed' in str(exc):
                enc.reset()

    def _fail(self, enc, exc: BaseException) -> None:
        from ..models.runtime import describe_model_error
        self._stats['errors'] += 1
        self._error = describe_model_error(
            exc, what='the memory encoder', device=self.cfg.device,
            todo='the robot is held (no encoder heartbeat); fix the cause, then reconfigure '
                 'the node (ros2 lifecycle set memory_encoder deactivate, cleanup, configure, '
                 'activate) and give the instruction again')
        self.get_logger().error(self._error)
        try:
            if enc is not None:
                enc.reset()   # drop the episode's memory: it may be half-written
        except Exception:  # noqa: BLE001 - the error above is what matters
            pass

    def _encode(self, enc, job: _Job) -> None:
        if job.episode is not None and job.episode != self._episode:
            enc.reset()   # a new episode: in order with its first frame
            self._episode = job.episode
        out = enc.encode(image_msg_to_rgb(job.msg))
        self._stats['encoded'] += 1
        self._stats['latency_ms'] = out.latency_ms
        if self.cfg.token_layout == 'split':
            tokens = np.concatenate([out.semantic.numpy(), out.spatial.numpy()], axis=1)
        else:
            tokens = out.fused.numpy()
        header = job.msg.header
        self.tokens_pub.publish(tokens_to_image_msg(tokens, header))
        self.info_pub.publish(String(data=json.dumps({
            'stamp': s_from_time(header.stamp),
            'episode': job.episode or '', 'frame_index': out.frame_index,
            'memory_frames': out.memory_frames, 'grid_hw': list(out.grid_hw),
            'tokens': int(out.fused.shape[0]), 'layout': self.cfg.token_layout,
            'encode_on': self.cfg.encode_on, 'width': int(out.fused.shape[1]),
            'latency_ms': round(out.latency_ms, 2)})))

    # --- status -----------------------------------------------------------------------------
    def _healthy(self) -> bool:
        return (self.encoder is not None and self._active and not self._error
                and self._worker.is_alive())

    def _publish_heartbeat(self) -> None:
        if not self._healthy():
            return   # silence: the safety node holds the robot
        enc = self.encoder
        self.heartbeat_pub.publish(String(data=json.dumps({
            'episode': self._episode or '', 'frames': enc.frames_seen,
            'memory_frames': enc.cache.num_frames, 'encode_on': self.cfg.encode_on})))

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus(name='vln_stack: memory_encoder', hardware_id=self.cfg.device)
        if self._error:
            st.level, st.message = DiagnosticStatus.ERROR, self._error[:400]
        elif not self._worker.is_alive():
            st.level, st.message = DiagnosticStatus.ERROR, 'encoder worker thread ended'
        elif self.encoder is None:
            st.level, st.message = DiagnosticStatus.WARN, 'not configured'
        else:
            st.level, st.message = DiagnosticStatus.OK, f'encoding on {self.cfg.encode_on}'
        enc = self.encoder
        vals = {**self._stats,
                'memory_frames': enc.cache.num_frames if enc is not None else 0,
                'memory_capacity_frames': enc.cache.capacity if enc is not None else 0,
                'memory_mb': enc.cache.nbytes / 2**20 if enc is not None else 0.0}
        st.values = [KeyValue(key=k, value=f'{v:.1f}' if isinstance(v, float) else str(v))
                     for k, v in vals.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def on_shutdown(self, state: LifecycleState | None = None) -> TransitionCallbackReturn:
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=5.0)
        return TransitionCallbackReturn.SUCCESS


def main(args: list[str] | None = None) -> int:
    return run_node(EncoderNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
