"""Memory encoder node: streaming dual implicit memory (VGGT spatial + Qwen2.5-VL semantic).

Lifecycle node: weights load in ``configure`` (a missing or mismatched checkpoint is logged with
its path and the node stays unconfigured, publishing nothing), fused tokens publish only while
``active``. With ``autostart`` (default) it configures and activates itself, like nav2's
lifecycle manager would.

Out: ``vln/fused_tokens`` (sensor_msgs/Image, encoding 32FC1, height = tokens N, width = LLM
width D, header = the camera frame's), ``vln/fused_tokens/info`` (std_msgs/String JSON: frame
index, memory occupancy, grid, latency), ``diagnostics``. In: ``vln/image``, ``vln/episode_reset``.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, String

from ..ros.common import declare_config, run_node
from ..ros.images import image_msg_to_rgb, tokens_to_image_msg


@dataclass
class EncoderConfig:
    checkpoint_dir: str = 'models/tiny-janus'   # local folder; nothing is downloaded
    device: str = 'cpu'
    initial_frames: int = 0           # > 0 overrides the checkpoint's sink-frame count
    window_frames: int = 0            # > 0 overrides the checkpoint's sliding window
    autostart: bool = True            # configure + activate on start-up
    torch_threads: int = 1            # CPU threads for torch (0 = torch's default)
    token_layout: str = 'fused'       # 'fused' [N, D] | 'split' [N, 2D] semantic|spatial (the
                                      # janus policy's released mode fuses them as released)


class EncoderNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__('memory_encoder')
        self.cfg = declare_config(self, EncoderConfig)
        if self.cfg.token_layout not in ('fused', 'split'):
            raise ValueError(f"token_layout must be 'fused' or 'split', got "
                             f"{self.cfg.token_layout!r}")
        self.encoder = None
        self._active = False
        self._latest: Image | None = None
        self._reset = False
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._stats = {'frames_in': 0, 'encoded': 0, 'dropped': 0, 'errors': 0, 'latency_ms': 0.0}
        self._error = ''
        self.tokens_pub = self.create_lifecycle_publisher(Image, 'vln/fused_tokens', 5)
        self.info_pub = self.create_lifecycle_publisher(String, 'vln/fused_tokens/info', 5)
        self.diag_pub = self.create_publisher(DiagnosticArray, 'diagnostics', 5)
        self.create_subscription(Image, 'vln/image', self._on_image, 2)
        self.create_subscription(Empty, 'vln/episode_reset', self._on_reset, 5)
        self.create_timer(1.0, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name='encoder', daemon=True)
        self._worker.start()
        if self.cfg.autostart:
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
        if self.cfg.torch_threads > 0:
            torch.set_num_threads(self.cfg.torch_threads)
        try:
            t0 = time.monotonic()
            enc = DualMemoryEncoder.from_folder(self.cfg.checkpoint_dir, device=self.cfg.device)
            if self.cfg.initial_frames > 0 or self.cfg.window_frames > 0:
                enc.cache = enc.aggregator.new_cache(
                    initial_frames=self.cfg.initial_frames or enc.settings.kv_initial_frames,
                    window_frames=self.cfg.window_frames or enc.settings.kv_window_frames)
        except (FileNotFoundError, ValueError, OSError, RuntimeError) as exc:
            self._error = f'{type(exc).__name__}: {exc}'
            self.get_logger().error(
                f'cannot load the dual encoder from {self.cfg.checkpoint_dir!r}: {exc}. '
                'Put a JanusVLN checkpoint folder there (or make the tiny one with '
                '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`) and '
                'configure again. No fused tokens are published.')
            return TransitionCallbackReturn.FAILURE
        self.encoder = enc
        mem = enc.cache
        self.get_logger().info(
            f'dual encoder loaded from {self.cfg.checkpoint_dir} in {time.monotonic() - t0:.1f} s '
            f'(vggt {enc.settings.vggt_preset}, input width {enc.settings.input_width}, '
            f'memory {mem.initial_frames} sink + {mem.window_frames} window frames)')
        self._error = ''
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._cv:
            self.encoder = None
        return TransitionCallbackReturn.SUCCESS

    # --- data -------------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        with self._cv:
            self._stats['frames_in'] += 1
            if self._latest is not None:
                self._stats['dropped'] += 1   # the encoder was busy: keep only the newest frame
            self._latest = msg
            self._cv.notify()

    def _on_reset(self, _msg: Empty) -> None:
        with self._cv:
            self._reset = True
            self._latest = None

    def _work(self) -> None:
        while not self._stop.is_set():
            with self._cv:
                self._cv.wait_for(lambda: self._latest is not None or self._stop.is_set(),
                                  timeout=0.5)
                msg, self._latest = self._latest, None
                enc = self.encoder
                if self._reset and enc is not None:
                    enc.reset()
                    self._reset = False
            if msg is None or enc is None:
                continue
            if not self._active:
                continue
            try:
                rgb = image_msg_to_rgb(msg)
                out = enc.encode(rgb)
            except ValueError as exc:
                self._stats['errors'] += 1
                self.get_logger().warning(f'frame dropped: {exc}', throttle_duration_sec=2.0)
                if 'frame size changed' in str(exc):
                    enc.reset()
                continue
            self._stats['encoded'] += 1
            self._stats['latency_ms'] = out.latency_ms
            if self.cfg.token_layout == 'split':
                tokens = np.concatenate([out.semantic.numpy(), out.spatial.numpy()], axis=1)
            else:
                tokens = out.fused.numpy()
            self.tokens_pub.publish(tokens_to_image_msg(tokens, msg.header))
            self.info_pub.publish(String(data=json.dumps({
                'stamp': msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                'frame_index': out.frame_index, 'memory_frames': out.memory_frames,
                'grid_hw': list(out.grid_hw), 'tokens': int(out.fused.shape[0]),
                'layout': self.cfg.token_layout,
                'width': int(out.fused.shape[1]), 'latency_ms': round(out.latency_ms, 2)})))

    def _publish_diagnostics(self) -> None:
        st = DiagnosticStatus(name='vln_stack: memory_encoder', hardware_id=self.cfg.device)
        if self._error:
            st.level, st.message = DiagnosticStatus.ERROR, self._error
        elif self.encoder is None:
            st.level, st.message = DiagnosticStatus.WARN, 'not configured'
        else:
            st.level, st.message = DiagnosticStatus.OK, 'encoding'
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
