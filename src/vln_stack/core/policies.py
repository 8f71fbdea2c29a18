"""Policy backends for the decision node, one registry keyed by short name.

- ``oracle``: follows the episode's reference path from the true pose (simulator only).
- ``janus``: the JanusVLN multimodal LLM on fused dual-memory tokens (weights from a local folder).
- ``random``: seeded random moves, the floor in evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .actions import Action, MoveSpec
from .geometry import Pose2D


@dataclass
class Observation:
    """What a backend may use for one decision."""

    instruction: str
    pose: Pose2D | None = None          # odom-frame pose (oracle)
    tokens: Any = None                  # torch.Tensor [N, D] fused tokens of the current frame
    stamp_s: float = 0.0
    image: Any = None                   # numpy HxWx3 uint8 RGB camera frame (needs_image backends)


@dataclass
class Decision:
    """One policy answer. ``action`` is the move to execute now; ``more`` the rest of a chunk
    (executed without a new decision); ``valid`` False when the model's output did not parse
    (``action`` is then STOP and ``raw``/``reason`` say why)."""

    action: Action
    raw: str = ''
    valid: bool = True
    latency_ms: float = 0.0
    more: list[Action] = field(default_factory=list)
    subgoal: str = ''                   # current subgoal (zero-shot backends)
    thought: str = ''                   # the model's stated reasoning, for the log
    reason: str = ''                    # why the decision is what it is (errors, retries)


class PolicyBackend:
    needs_pose = False
    needs_tokens = False
    needs_image = False

    def reset(self, instruction: str) -> None:  # new episode
        pass

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError


class OracleBackend(PolicyBackend):
    needs_pose = True

    def __init__(self, episode_file: str, episode_id: str, spec: MoveSpec, **_: Any) -> None:
        from .episodes import find_episode
        from .oracle import OraclePolicy
        if not episode_file:
            raise ValueError('policy "oracle" needs episode_file (it follows the reference path; '
                             'simulator only)')
        self.episode = find_episode(episode_file, episode_id)
        self.policy = OraclePolicy(self.episode.reference_path, spec)

    def reset(self, instruction: str) -> None:
        self.policy.reset()

    def decide(self, obs: Observation) -> Decision:
        if obs.pose is None:
            return Decision(Action.STOP, 'no pose', valid=False)
        return Decision(self.policy.decide(obs.pose), 'oracle')


class BoundedHistory:
    """Past frames' fused tokens kept as sinks + a sliding window, like the encoder memory.

    The released JanusVLN protocol samples 8 history images evenly over *every* past frame, so
    its history grows with the episode. Here the first ``initial_frames`` and the last
    ``window_frames`` frames are kept (fp16), and the 8 samples are drawn from those: memory stops
    growing at ``initial_frames + window_frames`` frames, and below that bound the prompt is
    exactly the released one.
    """

    def __init__(self, initial_frames: int = 8, window_frames: int = 48) -> None:
        if initial_frames < 1 or window_frames < 1:
            raise ValueError('initial_frames and window_frames must be >= 1')
        self.initial_frames = initial_frames
        self.window_frames = window_frames
        self._sinks: list[Any] = []
        self._window: list[Any] = []
        self.frames_seen = 0

    def append(self, tokens: Any) -> None:
        item = tokens.half() if hasattr(tokens, 'half') else tokens
        if len(self._sinks) < self.initial_frames:
            self._sinks.append(item)
        else:
            self._window.append(item)
            if len(self._window) > self.window_frames:
                self._window.pop(0)
        self.frames_seen += 1

    def frames(self) -> list[Any]:
        """The kept frames, oldest first, as float32."""
        return [t.float() if hasattr(t, 'float') else t for t in self._sinks + self._window]

    def __len__(self) -> int:
        return len(self._sinks) + len(self._window)

    def clear(self) -> None:
        self._sinks, self._window, self.frames_seen = [], [], 0


class JanusBackend(PolicyBackend):
    needs_tokens = True

    def __init__(self, checkpoint_dir: str, device: str = 'cpu', *, history_initial: int = 8,
                 history_window: int = 48, **_: Any) -> None:
        from ..models.llm_policy import JanusPolicy
        if not checkpoint_dir:
            raise ValueError('policy "janus" needs checkpoint_dir (a local JanusVLN checkpoint '
                             'folder, e.g. models/tiny-janus made by '
                             '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`)')
        self.policy = JanusPolicy.from_folder(checkpoint_dir, device=device)
        self.history = BoundedHistory(history_initial, history_window)

    def reset(self, instruction: str) -> None:
        self.history.clear()

    def decide(self, obs: Observation) -> Decision:
        if obs.tokens is None:
            return Decision(Action.STOP, 'no fused tokens', valid=False)
        out = self.policy.decide(obs.instruction, self.history.frames(), obs.tokens)
        self.history.append(obs.tokens)
        return Decision(Action(out.action), out.raw_text, out.valid, out.latency_ms)


class RandomBackend(PolicyBackend):
    """The floor in evaluation: MOVE_FORWARD 60 %, TURN_LEFT / TURN_RIGHT 17.5 % each,
    STOP 5 %, from a seeded generator (reset per episode, so runs repeat)."""

    ACTIONS = (Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT, Action.STOP)
    WEIGHTS = (0.6, 0.175, 0.175, 0.05)

    def __init__(self, seed: int = 0, **_: Any) -> None:
        import random
        self.seed = seed
        self._rng = random.Random(seed)

    def reset(self, instruction: str) -> None:
        import random
        self._rng = random.Random(self.seed)

    def decide(self, obs: Observation) -> Decision:
        return Decision(self._rng.choices(self.ACTIONS, self.WEIGHTS)[0], 'random')


BACKENDS: dict[str, Callable[..., PolicyBackend]] = {
    'oracle': OracleBackend,
    'janus': JanusBackend,
    'random': RandomBackend,
}


def make_backend(name: str, **kwargs: Any) -> PolicyBackend:
    if name not in BACKENDS:
        raise ValueError(f'unknown policy {name!r} (have: {sorted(BACKENDS)})')
    return BACKENDS[name](**kwargs)
