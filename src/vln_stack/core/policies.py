"""Policy backends for the decision node, one registry keyed by short name.

- ``oracle``: follows the episode's reference path from the true pose (simulator only).
- ``janus``: the JanusVLN multimodal LLM on fused dual-memory tokens (weights from a local folder).
"""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class Decision:
    action: Action
    raw: str = ''
    valid: bool = True
    latency_ms: float = 0.0


class PolicyBackend:
    needs_pose = False
    needs_tokens = False

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


class JanusBackend(PolicyBackend):
    needs_tokens = True

    def __init__(self, checkpoint_dir: str, device: str = 'cpu', **_: Any) -> None:
        from ..models.llm_policy import JanusPolicy
        if not checkpoint_dir:
            raise ValueError('policy "janus" needs checkpoint_dir (a local JanusVLN checkpoint '
                             'folder, e.g. models/tiny-janus made by '
                             '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`)')
        self.policy = JanusPolicy.from_folder(checkpoint_dir, device=device)
        self.history: list[Any] = []

    def reset(self, instruction: str) -> None:
        self.history = []

    def decide(self, obs: Observation) -> Decision:
        if obs.tokens is None:
            return Decision(Action.STOP, 'no fused tokens', valid=False)
        out = self.policy.decide(obs.instruction, list(self.history), obs.tokens)
        self.history.append(obs.tokens)
        return Decision(Action(out.action), out.raw_text, out.valid, out.latency_ms)


BACKENDS: dict[str, Callable[..., PolicyBackend]] = {
    'oracle': OracleBackend,
    'janus': JanusBackend,
}


def make_backend(name: str, **kwargs: Any) -> PolicyBackend:
    if name not in BACKENDS:
        raise ValueError(f'unknown policy {name!r} (have: {sorted(BACKENDS)})')
    return BACKENDS[name](**kwargs)
