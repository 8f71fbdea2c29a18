"""The decision loop: one policy decision per executed move, each on a fresh camera frame.

ROS-free state machine; the decision node feeds it instructions, frame stamps, move reports and
the clock, and publishes what it returns. Every failure path ends in STOP.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .actions import Action

IDLE, WAITING_FRAME, DECIDING, MOVING = 'idle', 'waiting_frame', 'deciding', 'moving'
SUCCEEDED, CANCELED, FAILED = 'stopped', 'canceled', 'failed'
TERMINAL = (IDLE, SUCCEEDED, CANCELED, FAILED)


@dataclass
class LoopConfig:
    max_steps: int = 400              # JanusVLN forces STOP at step 400
    move_timeout_s: float = 30.0
    frame_timeout_s: float = 5.0
    max_frame_age_s: float = 1.0      # a frame older than this (vs now) is stale


@dataclass
class LoopState:
    state: str = IDLE
    instruction: str = ''
    episode: int = 0
    step: int = 0
    last_action: str = ''             # the latest decision
    last_executed: str = ''           # the latest move reported done
    reason: str = ''
    actions: list[str] = field(default_factory=list)


class DecisionLoop:
    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.s = LoopState()
        self._since = 0.0      # frames must be stamped at or after this time
        self._deadline = 0.0

    @property
    def active(self) -> bool:
        return self.s.state not in TERMINAL

    def start(self, instruction: str, now_s: float) -> list[Action]:
        """Start (or preempt with) a new instruction. Returns actions to publish (STOP on preempt)."""
        text = instruction.strip()
        if not text:
            raise ValueError('empty instruction')
        out = [Action.STOP] if self.s.state in (MOVING, DECIDING) else []
        self.s = LoopState(state=WAITING_FRAME, instruction=text, episode=self.s.episode + 1)
        self._since = now_s
        self._deadline = now_s + self.cfg.frame_timeout_s
        return out

    def cancel(self, now_s: float, reason: str = 'canceled') -> list[Action]:
        if not self.active:
            return []
        self.s.state, self.s.reason = CANCELED, reason
        return [Action.STOP]

    def fail(self, reason: str) -> list[Action]:
        was_active = self.active
        self.s.state, self.s.reason = FAILED, reason
        return [Action.STOP] if was_active else []

    def frame_ready(self, frame_stamp_s: float, now_s: float) -> bool:
        """True (and state -> deciding) when waiting and this frame is fresh enough to decide on."""
        if self.s.state != WAITING_FRAME:
            return False
        if frame_stamp_s < self._since:
            return False
        if now_s - frame_stamp_s > self.cfg.max_frame_age_s:
            return False
        self.s.state = DECIDING
        return True

    def on_decision(self, action: Action, now_s: float) -> list[Action]:
        if self.s.state != DECIDING:
            return []
        self.s.last_action = action.value
        self.s.actions.append(action.value)
        if action is Action.STOP:
            self.s.state, self.s.reason = SUCCEEDED, 'policy chose STOP'
            return [Action.STOP]
        self.s.state = MOVING
        self._deadline = now_s + self.cfg.move_timeout_s
        return [action]

    def on_move_done(self, result: str, reason: str, now_s: float) -> list[Action]:
        if self.s.state != MOVING:
            return []
        if result != 'succeeded':
            return self.fail(f'move {result}: {reason}')
        self.s.step += 1
        self.s.last_executed = self.s.last_action
        if self.s.step >= self.cfg.max_steps:
            self.s.state, self.s.reason = SUCCEEDED, f'max_steps ({self.cfg.max_steps}) reached'
            self.s.actions.append(Action.STOP.value)
            return [Action.STOP]
        self.s.state = WAITING_FRAME
        self._since = now_s
        self._deadline = now_s + self.cfg.frame_timeout_s
        return []

    def tick(self, now_s: float) -> list[Action]:
        """Timeouts: no fresh frame, or a move that never reports done."""
        if self.s.state == WAITING_FRAME and now_s > self._deadline:
            return self.fail(f'no fresh camera frame for {self.cfg.frame_timeout_s} s')
        if self.s.state == MOVING and now_s > self._deadline:
            return self.fail(f'move not reported done within {self.cfg.move_timeout_s} s')
        return []
