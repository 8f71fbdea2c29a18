"""The decision loop: one policy decision per executed move, each on a fresh camera frame.

ROS-free state machine; the decision node feeds it instructions, frame stamps, decisions, move
reports and the clock, and publishes what it returns. Every failure path ends in STOP.

- A decision is taken only on a frame stamped after the last move completed and younger than
  ``max_frame_age_s``.
- A decision that takes longer than ``decision_timeout_s`` is dropped (its late answer is ignored,
  identified by `LoopState.decision_seq`); the robot holds still and the loop waits for a new frame.
  ``max_dropped`` drops in a row end the episode.
- A move the robot side refuses (an obstacle inside the margin) holds the robot and is decided
  again; ``max_refused`` refusals in a row end the episode with an error (a policy that keeps
  driving into the same obstacle must not burn its step budget at the obstacle).
- A policy may answer a chunk of moves: they are executed one after the other without a new
  decision (each still reported done by the controller).
- A move the robot side refuses (e.g. an obstacle inside the margin) holds the robot; the loop
  records why and asks the policy again on a fresh frame.
- Every episode ends with a `result`: ``succeeded`` (the policy chose STOP), ``canceled``,
  ``preempted`` (a new instruction arrived), ``step_limit`` or ``error``, and a reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .actions import Action

IDLE, WAITING_FRAME, DECIDING, MOVING = 'idle', 'waiting_frame', 'deciding', 'moving'
SUCCEEDED, CANCELED, FAILED = 'stopped', 'canceled', 'failed'
TERMINAL = (IDLE, SUCCEEDED, CANCELED, FAILED)
RESULTS = ('succeeded', 'canceled', 'preempted', 'step_limit', 'error')


@dataclass
class LoopConfig:
    max_steps: int = 400              # JanusVLN forces STOP at step 400
    move_timeout_s: float = 30.0
    frame_timeout_s: float = 5.0
    max_frame_age_s: float = 1.0      # a frame older than this (vs now) is stale
    decision_timeout_s: float = 10.0  # a slower decision is dropped (0 = no limit)
    max_dropped: int = 3              # drops in a row that end the episode
    max_refused: int = 10             # moves refused in a row that end the episode (0 = no limit)
    encode_retry_s: float = 2.0       # a frame sent to the encoder without tokens back is resent
    frame_source: str = 'camera frame'   # what a decision waits for, named in the timeout error


@dataclass
class LoopState:
    state: str = IDLE
    instruction: str = ''
    episode: int = 0
    step: int = 0                     # moves executed
    last_action: str = ''             # the latest decision
    last_executed: str = ''           # the latest move reported done
    reason: str = ''
    result: str = ''                  # one of RESULTS once the episode ended
    actions: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)   # rest of a chunk, executed next
    decision_seq: int = 0             # id of the decision in flight (late answers are ignored)
    dropped: int = 0                  # decisions dropped in a row
    refused: int = 0                  # moves refused by the robot side
    refused_in_row: int = 0


class DecisionLoop:
    def __init__(self, cfg: LoopConfig) -> None:
        self.cfg = cfg
        self.s = LoopState()
        self._since = 0.0      # frames must be stamped at or after this time
        self._deadline = 0.0
        self._requested_at: float | None = None   # when a frame last went to the encoder

    @property
    def active(self) -> bool:
        return self.s.state not in TERMINAL

    def _end(self, state: str, result: str, reason: str) -> list[Action]:
        was_active = self.active
        self.s.state, self.s.result, self.s.reason = state, result, reason
        self.s.queued = []
        return [Action.STOP] if was_active else []

    def start(self, instruction: str, now_s: float) -> list[Action]:
        """Start (or preempt with) a new instruction. Returns actions to publish (STOP on preempt).

        The previous episode, if it was running, ends as ``preempted`` (read `s` before calling
        to report it)."""
        text = instruction.strip()
        if not text:
            raise ValueError('empty instruction')
        out = [Action.STOP] if self.s.state in (MOVING, DECIDING) else []
        self.s = LoopState(state=WAITING_FRAME, instruction=text, episode=self.s.episode + 1,
                           decision_seq=self.s.decision_seq + 1)
        self._since = now_s
        self._deadline = now_s + self.cfg.frame_timeout_s
        self._requested_at = None
        return out

    def cancel(self, now_s: float, reason: str = 'canceled') -> list[Action]:
        if not self.active:
            return []
        return self._end(CANCELED, 'canceled', reason)

    def fail(self, reason: str) -> list[Action]:
        return self._end(FAILED, 'error', reason)

    def _fresh(self, frame_stamp_s: float, now_s: float) -> bool:
        return (frame_stamp_s >= self._since
                and now_s - frame_stamp_s <= self.cfg.max_frame_age_s)

    def wants_encoding(self, frame_stamp_s: float, now_s: float) -> bool:
        """For policies on encoder tokens: True (and the request is noted) when this camera frame
        should go to the memory encoder now, so the encoder's memory takes exactly one frame per
        decision. That is the first fresh frame of a wait, or a newer one when the last request
        got no tokens back within ``encode_retry_s`` (a dropped frame, a lost message)."""
        if self.s.state != WAITING_FRAME or not self._fresh(frame_stamp_s, now_s):
            return False
        if self._requested_at is not None and now_s - self._requested_at < self.cfg.encode_retry_s:
            return False
        self._requested_at = now_s
        return True

    def frame_ready(self, frame_stamp_s: float, now_s: float) -> bool:
        """True (and state -> deciding) when waiting and this frame is fresh enough to decide on.
        The decision then in flight is `LoopState.decision_seq`."""
        if self.s.state != WAITING_FRAME or not self._fresh(frame_stamp_s, now_s):
            return False
        self.s.state = DECIDING
        self.s.decision_seq += 1
        self._deadline = now_s + self.cfg.decision_timeout_s if self.cfg.decision_timeout_s > 0 \
            else float('inf')
        return True

    def on_decision(self, action: Action, now_s: float, more: list[Action] | None = None,
                    seq: int | None = None, *, valid: bool = True,
                    reason: str = '') -> list[Action]:
        """The policy's answer for decision ``seq`` (None: the one in flight). A late answer (its
        decision was dropped or the episode changed) returns [] and changes nothing.

        ``valid`` False: the policy's output was not an action (the policy then answers STOP;
        ``reason`` says why): the robot stops and the episode ends with result ``error``, reason
        ``no valid action: <reason>``."""
        if self.s.state != DECIDING or (seq is not None and seq != self.s.decision_seq):
            return []
        self.s.dropped = 0
        self.s.last_action = action.value
        self.s.actions.append(action.value)
        if not valid:
            return self._end(SUCCEEDED, 'error', f'no valid action: {reason}')
        if action is Action.STOP:
            return self._end(SUCCEEDED, 'succeeded', 'policy chose STOP')
        chunk = []
        for extra in more or []:
            chunk.append(extra.value)
            if extra is Action.STOP:
                break
        self.s.queued = chunk
        return self._move(action, now_s)

    def _move(self, action: Action, now_s: float) -> list[Action]:
        self.s.state = MOVING
        self._deadline = now_s + self.cfg.move_timeout_s
        return [action]

    def on_move_done(self, result: str, reason: str, now_s: float) -> list[Action]:
        if self.s.state != MOVING:
            return []
        if result == 'refused':   # the robot held still; ask again on a fresh frame
            self.s.refused += 1
            self.s.refused_in_row += 1
            self.s.step += 1
            self.s.queued = []
            self.s.reason = f'{self.s.last_action} refused: {reason}'
            if 0 < self.cfg.max_refused <= self.s.refused_in_row:
                return self.fail(
                    f'the robot side refused {self.s.refused_in_row} moves in a row (last: '
                    f'{self.s.last_action}, {reason}); the robot holds. To do: turn it away from '
                    'the obstacle or clear the path, then give the instruction again')
            return self._after_move(now_s)
        if result != 'succeeded':
            return self.fail(f'move {result}: {reason}')
        self.s.refused_in_row = 0
        self.s.step += 1
        self.s.last_executed = self.s.last_action
        return self._after_move(now_s)

    def _after_move(self, now_s: float) -> list[Action]:
        if self.s.step >= self.cfg.max_steps:
            self.s.actions.append(Action.STOP.value)
            return self._end(SUCCEEDED, 'step_limit', f'max_steps ({self.cfg.max_steps}) reached')
        if self.s.queued:
            nxt = Action(self.s.queued.pop(0))
            self.s.last_action = nxt.value
            self.s.actions.append(nxt.value)
            if nxt is Action.STOP:
                return self._end(SUCCEEDED, 'succeeded', 'policy chose STOP')
            return self._move(nxt, now_s)
        self.s.state = WAITING_FRAME
        self._since = now_s
        self._deadline = now_s + self.cfg.frame_timeout_s
        self._requested_at = None
        return []

    def tick(self, now_s: float) -> list[Action]:
        """Timeouts: no fresh frame, a decision too slow, or a move that never reports done."""
        if self.s.state == WAITING_FRAME and now_s > self._deadline:
            return self.fail(f'no fresh {self.cfg.frame_source} for {self.cfg.frame_timeout_s} s')
        if self.s.state == DECIDING and now_s > self._deadline:
            self.s.dropped += 1
            if self.s.dropped >= self.cfg.max_dropped:
                return self.fail(f'{self.s.dropped} decisions in a row took longer than '
                                 f'{self.cfg.decision_timeout_s} s')
            self.s.reason = (f'decision took longer than {self.cfg.decision_timeout_s} s: '
                             'dropped, robot holds, deciding again on a new frame')
            self.s.state = WAITING_FRAME
            self._since = now_s
            self._deadline = now_s + self.cfg.frame_timeout_s
            self._requested_at = None
            return []
        if self.s.state == MOVING and now_s > self._deadline:
            return self.fail(f'move not reported done within {self.cfg.move_timeout_s} s')
        return []
