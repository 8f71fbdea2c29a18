"""Decision node: run-time instructions in, the next move out.

- ``vln/instruction`` (std_msgs/String): start an instruction; a new one while running preempts it.
- ``vln/cancel`` (std_srvs/Trigger): cancel; the robot stops.
- ``vln/action`` (std_msgs/String): the next move (MOVE_FORWARD / TURN_LEFT / TURN_RIGHT / STOP).
- ``vln/status`` (std_msgs/String, JSON, ``status_rate_hz``): feedback - state, step, last move,
  current subgoal, distance travelled, decision latency. It is also the robot side's heartbeat.
- ``vln/result`` (std_msgs/String, JSON, transient local): one message per ended episode - result
  (succeeded / canceled / preempted / step_limit / error), reason, steps, distance.

A lifecycle node: the policy (for ``janus`` the LLM, at ``dtype``) loads in ``configure``; with
``autostart`` (default) the node configures and activates itself. Until then instructions are
refused with a reason. Inference and episode resets run in order on one worker thread, never on
the executor (`vln_stack.core.policy_worker`); a decision is taken on the newest frame stamped
after the last move completed; a decision slower than ``decision_timeout_s`` is dropped and the
robot holds still (see `vln_stack.core.decision`).

Policies on encoder tokens (``janus``) pick the camera frame to decide on from ``vln/image`` and
ask the memory encoder to encode exactly that frame (``vln/encode_request``, String JSON with the
episode and the frame stamp), so the encoder's memory holds one frame per decision; the tokens come
back on ``vln/fused_tokens``. ``diagnostics`` reports the policy's state (ERROR after a failure).
"""
from __future__ import annotations

import json
import math
import time
import uuid
from concurrent.futures import Future

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, String
from std_srvs.srv import Trigger

from ..core.actions import Action, MoveSpec
from ..core.decision import DecisionLoop, LoopConfig
from ..backends import Decision, Observation, make_backend
from ..core.decision_params import DecisionConfig
from ..core.decision_report import (EpisodeFigures, diagnostics_report, refused_result,
                                    result_report, status_report)
from ..core.policy_worker import PolicyWorker, StaleDecision
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, s_from_time
from ..ros.images import check_tokens_msg, image_msg_to_rgb, image_msg_to_tokens


class DecisionNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__('decision')
        self.cfg = c = declare_config(self, DecisionConfig)
        self.loop = DecisionLoop(LoopConfig(c.max_steps, c.move_timeout_s, c.frame_timeout_s,
                                            c.max_frame_age_s, c.decision_timeout_s,
                                            c.max_dropped, c.max_refused, c.encode_retry_s))
        self.backend = None
        self.worker: PolicyWorker | None = None
        self.fig = EpisodeFigures(policy=c.policy)          # distance, latency, errors, ...
        self._run = uuid.uuid4().hex[:8]                    # tells this node's episodes apart
        self._pose = None
        self._last_xy: tuple[float, float] | None = None
        self._camera: tuple[float, Image] | None = None     # newest vln/image (stamp_s, message)
        self._frame: tuple[float, object] | None = None     # what the next decision is taken on
        self._pending: tuple[Future, int] | None = None    # (future, decision_seq)
        self._resetting: Future | None = None
        self._requested: tuple[float, float] | None = None  # (frame stamp, wall time) to encoder
        self._old_request: float | None = None   # the last frame asked for by the previous episode
        self._reported = 0                                  # last episode whose result went out
        self._tokens_sub = None
        self.action_pub = self.create_publisher(String, 'vln/action', 10)
        self.status_pub = self.create_publisher(String, 'vln/status', 10)
        self.result_pub = self.create_publisher(String, 'vln/result', QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.reset_pub = self.create_publisher(Empty, 'vln/episode_reset', 10)
        self.request_pub = self.create_publisher(String, 'vln/encode_request', 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, 'diagnostics', 5)
        self.create_subscription(String, 'vln/instruction', self._on_instruction, 10)
        self.create_subscription(String, 'vln/move_done', self._on_move_done, 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        self.create_subscription(Image, 'vln/image', self._on_image, 2)
        self.create_service(Trigger, 'vln/cancel', self._on_cancel)
        self.create_timer(0.05, self._tick)
        self.create_timer(1.0 / c.status_rate_hz, self._publish_status)
        self.create_timer(1.0, self._publish_diagnostics)
        self._autostart = c.instruction
        if c.autostart:
            # steady clock: with use_sim_time and no /clock yet the node must still configure
            self._boot = self.create_timer(0.1, self._boot_once,
                                           clock=Clock(clock_type=ClockType.STEADY_TIME))

    # --- lifecycle ----------------------------------------------------------------------------
    def _boot_once(self) -> None:
        self._boot.cancel()
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        c = self.cfg
        if c.policy == 'janus' and c.torch_threads > 0:
            import torch
            torch.set_num_threads(c.torch_threads)
        kwargs = {k: v for k, v in vars(c).items() if k not in ('policy', 'forward_m', 'turn_deg')}
        t0 = time.monotonic()
        try:
            backend = make_backend(c.policy, spec=MoveSpec(c.forward_m, c.turn_deg), **kwargs)
        except Exception as exc:  # noqa: BLE001 - any load failure leaves the node unconfigured
            self.fig.error = f'policy {c.policy!r} not loaded: {type(exc).__name__}: {exc}'
            self.get_logger().error(
                f'{self.fig.error}. To do: fix the parameters (checkpoint_dir, device, dtype, '
                'episode_file) and configure again; instructions are refused until then')
            return TransitionCallbackReturn.FAILURE
        self.backend, self.worker = backend, PolicyWorker(backend)
        self.fig.error, self.fig.loaded = '', True
        if backend.needs_tokens:
            self.loop.cfg.frame_source = ('fused tokens from the memory encoder (check its log '
                                          'and diagnostics)')
        if backend.needs_tokens and self._tokens_sub is None:
            self._tokens_sub = self.create_subscription(Image, 'vln/fused_tokens',
                                                        self._on_tokens, 5)
        note = ' (simulator only: follows the reference path)' if c.policy == 'oracle' else ''
        mode = f' ({c.janus_mode} memory, {c.dtype} on {c.device})' if c.policy == 'janus' else ''
        self.get_logger().info(
            f'policy {c.policy}{mode}{note} ready in {time.monotonic() - t0:.1f} s; waiting for '
            f'an instruction on {self.resolve_topic_name("vln/instruction")}')
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._publish(self.loop.cancel(self._now(), 'policy unloaded'))
        if self.worker is not None:
            self.worker.shutdown()
        self.backend, self.worker, self.fig.loaded = None, None, False
        return TransitionCallbackReturn.SUCCESS

    # --- inputs -------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_odom(self, msg: Odometry) -> None:
        pose = pose2d_from_odom(msg)
        if not pose.is_finite():
            self._pose = None
            return
        self._pose = pose
        if self._last_xy is not None and self.loop.active:
            step = math.hypot(pose.x - self._last_xy[0], pose.y - self._last_xy[1])
            if step < 1.0:   # a jump (odometry reset) is not travel
                self.fig.distance_m += step
        self._last_xy = (pose.x, pose.y)

    def _on_image(self, msg: Image) -> None:
        self._camera = (s_from_time(msg.header.stamp), msg)
        if self.backend is None:
            return
        if not self.backend.needs_tokens:
            self._frame = self._camera
        else:   # at once: the frame the next decision is taken on (the loop asks once a wait)
            self._request_encoding(self._now())

    def _on_tokens(self, msg: Image) -> None:
        try:
            check_tokens_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f'{exc}: dropped', throttle_duration_sec=2.0)
            return
        stamp = s_from_time(msg.header.stamp)
        if self._old_request is not None and abs(stamp - self._old_request) < 1e-6:
            return   # encoded into the previous episode's memory: never decided on in this one
        if self._requested is not None and abs(stamp - self._requested[0]) < 1e-6:
            self.fig.encode_ms = (time.monotonic() - self._requested[1]) * 1000.0
        # Keep the message; it becomes a tensor in the policy worker, only when decided on.
        self._frame = (stamp, msg)

    def _on_instruction(self, msg: String) -> None:
        if self.worker is None:
            why = (f'the policy is not loaded ({self.fig.error or "not configured"}); fix the '
                   'parameters and configure the decision node again')
            self.get_logger().error(f'instruction refused: {why}')
            self.result_pub.publish(String(data=json.dumps(
                refused_result(msg.data, why, self.fig, self._now()))))
            return
        previous = self.loop.s
        was_active = self.loop.active
        try:
            out = self.loop.start(msg.data, self._now())
        except ValueError as exc:
            self.get_logger().error(f'instruction refused: {exc}')
            return
        self._publish(out)   # STOP first when a running episode is preempted
        if was_active:
            self.get_logger().info(f'episode {previous.episode} preempted by a new instruction')
            previous.result, previous.reason = 'preempted', 'a new instruction arrived'
            self._publish_result(previous)
        self.fig.new_episode()
        self._old_request = self._requested[0] if self._requested is not None else None
        self._requested, self._frame = None, None   # nothing seen before this episode is used
        # behind any decision still running, on the worker: nothing of the old episode leaks in
        self._resetting = self.worker.reset(self.loop.s.episode, self.loop.s.instruction)
        self.reset_pub.publish(Empty())
        self.get_logger().info(f'episode {self.loop.s.episode}: "{self.loop.s.instruction}"')
        self._after_change()

    def _on_cancel(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        out = self.loop.cancel(self._now())
        self._publish(out)
        resp.success = bool(out)
        resp.message = 'canceled, robot stopped' if out else f'nothing to cancel ({self.loop.s.state})'
        self._after_change()
        return resp

    def _on_move_done(self, msg: String) -> None:
        try:
            rep = json.loads(msg.data)
            result, reason = str(rep['result']), str(rep.get('reason', ''))
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f'unreadable move report {msg.data!r}: stopping')
            result, reason = 'aborted', 'unreadable move report'
        if result == 'refused' and self.loop.s.state == 'moving':
            self.get_logger().warning(f'{self.loop.s.last_action} refused by the robot side: '
                                      f'{reason}; holding, deciding again')
        self._publish(self.loop.on_move_done(result, reason, self._now()))
        self._after_change()

    # --- loop ---------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self._autostart and self._graph_ready():
            text, self._autostart = self._autostart, ''
            self._on_instruction(String(data=text))
        now = self._now()
        before = self.loop.s.reason
        self._publish(self.loop.tick(now))
        if self.loop.s.reason != before and 'dropped' in self.loop.s.reason:
            self.get_logger().warning(self.loop.s.reason)
        self._after_change()
        if not self._reset_done() or self.backend is None:
            return
        if self._pending is not None:
            fut, seq = self._pending
            if not fut.done():
                return
            self._pending = None
            self._take(fut, seq)
            return
        if self._frame is None:
            return
        stamp, frame = self._frame
        if self.loop.frame_ready(stamp, now):
            obs = Observation(self.loop.s.instruction, self._pose, frame, stamp)
            if self.backend.needs_pose and obs.pose is None:
                self._publish(self.loop.fail('no valid odometry for the oracle'))
                self._after_change()
                return
            fut = self.worker.decide(self.loop.s.episode, lambda: self._timed_decide(obs))
            self._pending = (fut, self.loop.s.decision_seq)

    def _reset_done(self) -> bool:
        """False while the episode's backend reset runs; a failed reset ends the episode."""
        fut = self._resetting
        if fut is None:
            return True
        if not fut.done():
            return False
        self._resetting = None
        exc = fut.exception()
        if exc is not None and self.loop.active:
            self.fig.error = f'policy reset failed: {type(exc).__name__}: {exc}'
            self.get_logger().error(f'{self.fig.error}; the robot holds. To do: check the policy '
                                    '(e.g. its server) and give the instruction again')
            self._publish(self.loop.fail(self.fig.error))
            self._after_change()
            return False
        return True

    def _request_encoding(self, now: float) -> None:
        """Send the camera frame this decision will be taken on to the memory encoder."""
        if self._camera is None:
            return
        stamp, msg = self._camera
        if not self.loop.wants_encoding(stamp, now):
            return
        self._requested = (stamp, time.monotonic())
        self.request_pub.publish(String(data=json.dumps({
            'episode': f'{self._run}-{self.loop.s.episode}',
            'sec': msg.header.stamp.sec, 'nanosec': msg.header.stamp.nanosec})))

    def _take(self, fut: Future, seq: int) -> None:
        """Apply a finished decision (ignored by the loop when it was dropped meanwhile)."""
        try:
            dec: Decision = fut.result()
        except StaleDecision:
            return
        except Exception as exc:  # noqa: BLE001 - a policy crash must stop the robot
            if seq == self.loop.s.decision_seq and self.loop.s.state == 'deciding':
                self.fig.error = f'policy failed: {describe_error(exc, self.cfg)}'
                self.get_logger().error(f'{self.fig.error}; the robot holds')
                self._publish(self.loop.fail(f'policy error: {type(exc).__name__}: {exc}'))
                self._after_change()
            return
        if seq != self.loop.s.decision_seq or self.loop.s.state != 'deciding':
            self.get_logger().info(f'late decision {dec.action.value} '
                                   f'({dec.latency_ms:.0f} ms) ignored')
            return
        self._log_decision(dec, seq)

    def _log_decision(self, dec: Decision, seq: int) -> None:
        self.fig.decision_ms = dec.latency_ms
        self.fig.decisions += 1
        self.fig.history_frames = dec.history_frames
        if dec.subgoal:
            self.fig.subgoal = dec.subgoal
        if not dec.valid:
            why = dec.reason or f'policy output {dec.raw[:60]!r} is not an action'
            self.get_logger().error(f'{why}: STOP')
        self._publish(self.loop.on_decision(dec.action, self._now(), dec.more, seq,
                                            valid=dec.valid, reason='' if dec.valid else why))
        chunk = f' (+{",".join(a.value for a in dec.more)})' if dec.more else ''
        thought = f' - {dec.thought[:80]}' if dec.thought else ''
        memory = (f', {dec.history_frames} history frames, encode {self.fig.encode_ms:.0f} ms'
                  if self.backend.needs_tokens else '')
        self.get_logger().info(f'step {self.loop.s.step}: {dec.action.value}{chunk} '
                               f'({dec.latency_ms:.0f} ms{memory}){thought}')
        self._after_change()

    def _timed_decide(self, obs: Observation) -> Decision:
        """The backend's decision, with its wall time (ms) as the step latency."""
        t0 = time.perf_counter()
        msg = obs.tokens
        obs.tokens = None
        if isinstance(msg, Image):
            if self.backend.needs_tokens:
                import torch
                obs.tokens = torch.from_numpy(image_msg_to_tokens(msg))
            elif self.backend.needs_image:
                obs.image = image_msg_to_rgb(msg)
        dec = self.backend.decide(obs)
        dec.latency_ms = (time.perf_counter() - t0) * 1000.0
        return dec

    def _graph_ready(self) -> bool:
        """For the startup instruction: a frame arrived and the motion nodes are listening."""
        return (self.backend is not None and self._camera is not None
                and self.action_pub.get_subscription_count() >= 2
                and (self._pose is not None or not self.backend.needs_pose))

    def _publish(self, actions: list[Action]) -> None:
        for act in actions:
            self.action_pub.publish(String(data=act.value))

    def _after_change(self) -> None:
        """Publish the result once per ended episode, and fresh feedback."""
        s = self.loop.s
        if s.episode > self._reported and not self.loop.active and s.state != 'idle':
            self._publish_result(s)
            self._publish_status()

    def _publish_result(self, s) -> None:
        self._reported = max(self._reported, s.episode)
        text = (f'episode {s.episode} ended: {s.result} ({s.reason}) after {s.step} moves, '
                f'{self.fig.distance_m:.2f} m')
        # (rclpy fixes a log call site's severity: one call per level)
        if s.result in ('succeeded', 'canceled', 'preempted'):
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        self.result_pub.publish(String(data=json.dumps(result_report(s, self.fig, self._now()))))

    def _publish_status(self) -> None:
        self.status_pub.publish(String(data=json.dumps(
            status_report(self.loop.s, self.fig, self._now()))))

    def _publish_diagnostics(self) -> None:
        level, message, values = diagnostics_report(self.loop.s, self.fig)
        st = DiagnosticStatus(name='vln_stack: decision', hardware_id=self.cfg.device,
                              level=bytes([level]), message=message)
        st.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        arr = DiagnosticArray(status=[st])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)

    def on_shutdown(self, state: LifecycleState | None = None) -> TransitionCallbackReturn:
        self._publish(self.loop.cancel(self._now(), 'decision node shutting down'))
        if self.worker is not None:
            self.worker.shutdown()
        return TransitionCallbackReturn.SUCCESS


def describe_error(exc: BaseException, cfg: DecisionConfig) -> str:
    """The log line for a failed decision (an out-of-memory error names the memory asked for)."""
    if cfg.policy != 'janus':
        return f'{type(exc).__name__}: {exc}'
    from ..models.runtime import describe_model_error
    return describe_model_error(exc, what='the janus decision step', device=cfg.device,
                                todo='give the instruction again once fixed')


def main(args: list[str] | None = None) -> int:
    return run_node(DecisionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
