"""Decision node: instruction in (start / preempt on vln/instruction, cancel on vln/cancel), the
next move out (vln/action), feedback on vln/status (JSON, also the controller's heartbeat)."""
from __future__ import annotations

import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from nav_msgs.msg import Odometry
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Empty, String
from std_srvs.srv import Trigger

from ..core.actions import Action, MoveSpec
from ..core.decision import DecisionLoop, LoopConfig
from ..core.policies import Decision, Observation, make_backend
from ..ros.common import declare_config, run_node
from ..ros.convert import pose2d_from_odom, s_from_time
from ..ros.images import check_tokens_msg, image_msg_to_tokens


@dataclass
class DecisionConfig:
    policy: str = 'oracle'            # 'oracle' (simulator only) | 'janus' | 'random'
    seed: int = 0                     # random policy
    checkpoint_dir: str = ''          # janus: local checkpoint folder
    device: str = 'cpu'
    episode_file: str = ''            # oracle: episode YAML with the reference path
    episode_id: str = ''
    forward_m: float = 0.25
    turn_deg: float = 30.0
    instruction: str = ''             # start with this instruction right away ('' = wait)
    max_steps: int = 400
    move_timeout_s: float = 30.0
    frame_timeout_s: float = 5.0
    max_frame_age_s: float = 1.0
    status_rate_hz: float = 4.0
    torch_threads: int = 1            # janus on CPU: torch threads (0 = torch's default)


class DecisionNode(Node):
    def __init__(self) -> None:
        super().__init__('decision')
        self.cfg = c = declare_config(self, DecisionConfig)
        self.loop = DecisionLoop(LoopConfig(c.max_steps, c.move_timeout_s, c.frame_timeout_s,
                                            c.max_frame_age_s))
        if c.policy == 'janus' and c.torch_threads > 0:
            import torch
            torch.set_num_threads(c.torch_threads)
        self.backend = make_backend(c.policy, episode_file=c.episode_file,
                                    episode_id=c.episode_id, checkpoint_dir=c.checkpoint_dir,
                                    device=c.device, spec=MoveSpec(c.forward_m, c.turn_deg),
                                    seed=c.seed)
        self._pose = None
        self._frame: tuple[float, object] | None = None   # (stamp_s, tokens or None)
        self._pending: Future | None = None
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix='policy')
        self.action_pub = self.create_publisher(String, 'vln/action', 10)
        self.status_pub = self.create_publisher(String, 'vln/status', 10)
        self.reset_pub = self.create_publisher(Empty, 'vln/episode_reset', 10)
        self.create_subscription(String, 'vln/instruction', self._on_instruction, 10)
        self.create_subscription(String, 'vln/move_done', self._on_move_done, 10)
        if self.backend.needs_pose:
            self.create_subscription(Odometry, 'odom', self._on_odom, 20)
        if self.backend.needs_tokens:
            self.create_subscription(Image, 'vln/fused_tokens', self._on_tokens, 5)
        else:
            self.create_subscription(Image, 'vln/image', self._on_image, 2)
        self.create_service(Trigger, 'vln/cancel', self._on_cancel)
        self.create_timer(0.05, self._tick)
        self.create_timer(1.0 / c.status_rate_hz, self._publish_status)
        note = ' (simulator only: follows the reference path)' if c.policy == 'oracle' else ''
        self.get_logger().info(f'policy {c.policy}{note}; waiting for an instruction on '
                               f'{self.resolve_topic_name("vln/instruction")}')
        self._autostart = c.instruction
        self._last_latency_ms = 0.0

    # --- inputs -------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_odom(self, msg: Odometry) -> None:
        pose = pose2d_from_odom(msg)
        self._pose = pose if pose.is_finite() else None

    def _on_image(self, msg: Image) -> None:
        self._frame = (s_from_time(msg.header.stamp), None)

    def _on_tokens(self, msg: Image) -> None:
        try:
            check_tokens_msg(msg)
        except ValueError as exc:
            self.get_logger().warning(f'{exc}: dropped', throttle_duration_sec=2.0)
            return
        # Keep the message; it becomes a tensor in the policy worker, only when decided on.
        self._frame = (s_from_time(msg.header.stamp), msg)

    def _on_instruction(self, msg: String) -> None:
        try:
            out = self.loop.start(msg.data, self._now())
        except ValueError as exc:
            self.get_logger().error(f'instruction refused: {exc}')
            return
        self._publish(out)
        self.backend.reset(self.loop.s.instruction)
        self.reset_pub.publish(Empty())
        self.get_logger().info(f'episode {self.loop.s.episode}: "{self.loop.s.instruction}"')
        self._publish_status()

    def _on_cancel(self, _req: Trigger.Request, resp: Trigger.Response) -> Trigger.Response:
        out = self.loop.cancel(self._now())
        self._publish(out)
        resp.success = bool(out)
        resp.message = 'canceled, robot stopped' if out else f'nothing to cancel ({self.loop.s.state})'
        self._publish_status()
        return resp

    def _on_move_done(self, msg: String) -> None:
        try:
            rep = json.loads(msg.data)
            result, reason = str(rep['result']), str(rep.get('reason', ''))
        except (ValueError, KeyError, TypeError):
            self.get_logger().error(f'unreadable move report {msg.data!r}: stopping')
            result, reason = 'aborted', 'unreadable move report'
        self._publish(self.loop.on_move_done(result, reason, self._now()))
        if self.loop.s.state == 'failed':
            self.get_logger().error(f'episode failed: {self.loop.s.reason}')

    # --- loop ---------------------------------------------------------------------------------
    def _tick(self) -> None:
        if self._autostart and self._graph_ready():
            text, self._autostart = self._autostart, ''
            self._on_instruction(String(data=text))
        now = self._now()
        self._publish(self.loop.tick(now))
        if self._pending is not None:
            if self._pending.done():
                fut, self._pending = self._pending, None
                try:
                    dec: Decision = fut.result()
                except Exception as exc:  # noqa: BLE001 - a policy crash must stop the robot
                    self.get_logger().error(f'policy failed: {type(exc).__name__}: {exc}')
                    self._publish(self.loop.fail(f'policy error: {exc}'))
                    return
                self._last_latency_ms = dec.latency_ms
                self._publish(self.loop.on_decision(dec.action, self._now()))
                if not dec.valid:
                    self.get_logger().warning(f'policy output {dec.raw!r} is not an action: STOP')
                    self.loop.s.reason = f'policy output {dec.raw[:40]!r} is not an action: STOP'
                self.get_logger().info(
                    f'step {self.loop.s.step}: {dec.action.value} ({dec.latency_ms:.0f} ms)')
                self._publish_status()
            return
        if self._frame is None:
            return
        stamp, tokens = self._frame
        if self.loop.frame_ready(stamp, now):
            obs = Observation(self.loop.s.instruction, self._pose, tokens, stamp)
            if self.backend.needs_pose and obs.pose is None:
                self._publish(self.loop.fail('no valid odometry for the oracle'))
                return
            self._pending = self._worker.submit(self._timed_decide, obs)

    def _timed_decide(self, obs: Observation) -> Decision:
        """The backend's decision, with its wall time (ms) as the step latency."""
        t0 = time.perf_counter()
        if isinstance(obs.tokens, Image):
            import torch
            obs.tokens = torch.from_numpy(image_msg_to_tokens(obs.tokens))
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

    def _publish_status(self) -> None:
        s = self.loop.s
        self.status_pub.publish(String(data=json.dumps({
            'state': s.state, 'instruction': s.instruction, 'episode': s.episode, 'step': s.step,
            'last_action': s.last_action, 'last_executed': s.last_executed,
            'decision_ms': round(self._last_latency_ms, 3), 'reason': s.reason, 'policy': self.cfg.policy,
            'stamp': self._now()})))

    def on_shutdown(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def main(args: list[str] | None = None) -> int:
    return run_node(DecisionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
