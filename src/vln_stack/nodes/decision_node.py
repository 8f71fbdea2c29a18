"""Decision node: run-time instructions in, the next move out.

- ``vln/instruction`` (std_msgs/String): start an instruction; a new one while running preempts it.
- ``vln/cancel`` (std_srvs/Trigger): cancel; the robot stops.
- ``vln/action`` (std_msgs/String): the next move (MOVE_FORWARD / TURN_LEFT / TURN_RIGHT / STOP).
- ``vln/status`` (std_msgs/String, JSON, ``status_rate_hz``): feedback - state, step, last move,
  current subgoal, distance travelled, decision latency. It is also the robot side's heartbeat.
- ``vln/result`` (std_msgs/String, JSON, transient local): one message per ended episode - result
  (succeeded / canceled / preempted / step_limit / error), reason, steps, distance.

Inference runs on a worker thread, never on the executor; a decision is taken on the newest frame
stamped after the last move completed; a decision slower than ``decision_timeout_s`` is dropped
and the robot holds still (see `vln_stack.core.decision`).
"""
from __future__ import annotations

import json
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, String
from std_srvs.srv import Trigger

from ..core.actions import Action, MoveSpec
from ..core.decision import DecisionLoop, LoopConfig
from ..core.policies import Decision, Observation, make_backend
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, s_from_time
from ..ros.images import check_tokens_msg, image_msg_to_rgb, image_msg_to_tokens


@dataclass
class DecisionConfig:
    policy: str = 'oracle'            # 'oracle' (simulator only) | 'janus' | 'openai' | 'random'
    seed: int = 0                     # random policy
    checkpoint_dir: str = ''          # janus: local checkpoint folder
    device: str = 'cpu'
    janus_mode: str = 'released'      # janus: 'released' (published protocol) | 'streaming' (ours)
    janus_initial_frames: int = 8     # streaming: frame blocks kept as sinks in the LLM memory
    janus_window_frames: int = 48     # streaming: most recent frame blocks kept
    janus_max_actions: int = 1        # streaming: moves one answer may hold (StreamVLN: 4)
    janus_retries: int = 1            # streaming: re-asks after an unparsable answer
    openai_base_url: str = 'http://127.0.0.1:8000/v1'   # openai: OpenAI-compatible endpoint
    openai_model: str = ''
    openai_api_key_env: str = 'OPENAI_API_KEY'           # the key is read from here ...
    openai_api_key_file: str = ''                        # ... or from this file; never logged
    openai_timeout_s: float = 10.0
    openai_max_retries: int = 1
    openai_jpeg_quality: int = 80
    openai_max_tokens: int = 256
    openai_temperature: float = 0.0
    episode_file: str = ''            # oracle: episode YAML with the reference path
    episode_id: str = ''
    forward_m: float = 0.25
    turn_deg: float = 30.0
    instruction: str = ''             # start with this instruction right away ('' = wait)
    max_steps: int = 400
    move_timeout_s: float = 30.0
    frame_timeout_s: float = 5.0
    max_frame_age_s: float = 1.0
    decision_timeout_s: float = 10.0  # a slower decision is dropped, the robot holds (0 = none)
    max_dropped: int = 3              # dropped decisions in a row that end the episode
    max_refused: int = 10             # refused moves in a row that end the episode (0 = no limit)
    status_rate_hz: float = 10.0
    torch_threads: int = 1            # janus on CPU: torch threads (0 = torch's default)


class DecisionNode(Node):
    def __init__(self) -> None:
        super().__init__('decision')
        self.cfg = c = declare_config(self, DecisionConfig)
        self.loop = DecisionLoop(LoopConfig(c.max_steps, c.move_timeout_s, c.frame_timeout_s,
                                            c.max_frame_age_s, c.decision_timeout_s,
                                            c.max_dropped, c.max_refused))
        if c.policy == 'janus' and c.torch_threads > 0:
            import torch
            torch.set_num_threads(c.torch_threads)
        kwargs = {k: v for k, v in vars(c).items() if k not in ('policy', 'forward_m', 'turn_deg')}
        self.backend = make_backend(c.policy, spec=MoveSpec(c.forward_m, c.turn_deg), **kwargs)
        self._pose = None
        self._last_xy: tuple[float, float] | None = None
        self._distance = 0.0
        self._frame: tuple[float, object] | None = None   # (stamp_s, message)
        self._pending: tuple[Future, int] | None = None    # (future, decision_seq)
        self._subgoal = ''
        self._reported = 0                                  # last episode whose result went out
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy')
        self.action_pub = self.create_publisher(String, 'vln/action', 10)
        self.status_pub = self.create_publisher(String, 'vln/status', 10)
        self.result_pub = self.create_publisher(String, 'vln/result', QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.reset_pub = self.create_publisher(Empty, 'vln/episode_reset', 10)
        self.create_subscription(String, 'vln/instruction', self._on_instruction, 10)
        self.create_subscription(String, 'vln/move_done', self._on_move_done, 10)
        self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        if self.backend.needs_tokens:
            self.create_subscription(Image, 'vln/fused_tokens', self._on_tokens, 5)
        else:
            self.create_subscription(Image, 'vln/image', self._on_image, 2)
        self.create_service(Trigger, 'vln/cancel', self._on_cancel)
        self.create_timer(0.05, self._tick)
        self.create_timer(1.0 / c.status_rate_hz, self._publish_status)
        note = ' (simulator only: follows the reference path)' if c.policy == 'oracle' else ''
        mode = f' ({c.janus_mode} memory)' if c.policy == 'janus' else ''
        self.get_logger().info(f'policy {c.policy}{mode}{note}; waiting for an instruction on '
                               f'{self.resolve_topic_name("vln/instruction")}')
        self._autostart = c.instruction
        self._last_latency_ms = 0.0

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
                self._distance += step
        self._last_xy = (pose.x, pose.y)

    def _on_image(self, msg: Image) -> None:
        self._frame = (s_from_time(msg.header.stamp), msg)

    def _on_tokens(self, msg: Image) -> None:
        try:
            check_tokens_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f'{exc}: dropped', throttle_duration_sec=2.0)
            return
        # Keep the message; it becomes a tensor in the policy worker, only when decided on.
        self._frame = (s_from_time(msg.header.stamp), msg)

    def _on_instruction(self, msg: String) -> None:
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
        self._distance, self._subgoal = 0.0, ''
        try:
            self.backend.reset(self.loop.s.instruction)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreachable zero-shot server
            self.get_logger().error(f'policy reset failed: {type(exc).__name__}: {exc}')
            self._publish(self.loop.fail(f'policy reset failed: {exc}'))
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
            self._pending = (self._worker.submit(self._timed_decide, obs), self.loop.s.decision_seq)

    def _take(self, fut: Future, seq: int) -> None:
        """Apply a finished decision (ignored by the loop when it was dropped meanwhile)."""
        try:
            dec: Decision = fut.result()
        except Exception as exc:  # noqa: BLE001 - a policy crash must stop the robot
            if seq == self.loop.s.decision_seq and self.loop.s.state == 'deciding':
                self.get_logger().error(f'policy failed: {type(exc).__name__}: {exc}')
                self._publish(self.loop.fail(f'policy error: {type(exc).__name__}: {exc}'))
                self._after_change()
            return
        if seq != self.loop.s.decision_seq or self.loop.s.state != 'deciding':
            self.get_logger().info(f'late decision {dec.action.value} '
                                   f'({dec.latency_ms:.0f} ms) ignored')
            return
        self._last_latency_ms = dec.latency_ms
        if dec.subgoal:
            self._subgoal = dec.subgoal
        if not dec.valid:
            why = dec.reason or f'policy output {dec.raw[:60]!r} is not an action'
            self.get_logger().error(f'{why}: STOP')
        self._publish(self.loop.on_decision(dec.action, self._now(), dec.more, seq))
        if not dec.valid:
            self.loop.s.result, self.loop.s.reason = 'error', f'no valid action: {why}'
        chunk = f' (+{",".join(a.value for a in dec.more)})' if dec.more else ''
        thought = f' - {dec.thought[:80]}' if dec.thought else ''
        self.get_logger().info(f'step {self.loop.s.step}: {dec.action.value}{chunk} '
                               f'({dec.latency_ms:.0f} ms){thought}')
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
        return (self._frame is not None and self.action_pub.get_subscription_count() >= 2
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
                f'{self._distance:.2f} m')
        # (rclpy fixes a log call site's severity: one call per level)
        if s.result in ('succeeded', 'canceled', 'preempted'):
            self.get_logger().info(text)
        else:
            self.get_logger().warning(text)
        self.result_pub.publish(String(data=json.dumps({
            'episode': s.episode, 'instruction': s.instruction, 'result': s.result,
            'reason': s.reason, 'steps': s.step, 'distance_m': round(self._distance, 3),
            'refused': s.refused, 'actions': s.actions, 'policy': self.cfg.policy,
            'stamp': self._now()})))

    def _publish_status(self) -> None:
        s = self.loop.s
        self.status_pub.publish(String(data=json.dumps({
            'state': s.state, 'instruction': s.instruction, 'episode': s.episode, 'step': s.step,
            'last_action': s.last_action, 'last_executed': s.last_executed,
            'queued': s.queued, 'subgoal': self._subgoal,
            'distance_m': round(self._distance, 3), 'result': s.result,
            'decision_ms': round(self._last_latency_ms, 3), 'reason': s.reason,
            'policy': self.cfg.policy, 'stamp': self._now()})))

    def on_shutdown(self) -> None:
        self._publish(self.loop.cancel(self._now(), 'decision node shutting down'))
        self._worker.shutdown(wait=False, cancel_futures=True)


def main(args: list[str] | None = None) -> int:
    return run_node(DecisionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
