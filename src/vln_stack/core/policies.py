"""Policy backends for the decision node, one registry keyed by short name.

Backends register themselves with :func:`register_backend`; ``core`` holds the registry and the
two backends that need nothing above it:

- ``oracle``: follows the episode's reference path from the true pose (simulator only).
- ``random``: seeded random moves, the floor in evaluation.

The plug-ins live with what they need and register on import:

- ``janus`` (``vln_stack.models.janus_backend``): the JanusVLN multimodal LLM on fused
  dual-memory tokens (weights from a local folder).
- ``openai`` (``vln_stack.zero_shot.backend``): a zero-shot chat model behind an
  OpenAI-compatible endpoint.

``core`` imports nothing above it, so callers that pick a backend by name import
:mod:`vln_stack.backends`, which imports every plug-in and re-exports :func:`make_backend`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

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
    history_frames: int = 0             # past frames of this episode the model saw (memory)


class PolicyBackend:
    needs_pose = False
    needs_tokens = False
    needs_image = False

    def reset(self, instruction: str) -> None:  # new episode
        pass

    def decide(self, obs: Observation) -> Decision:
        raise NotImplementedError


BackendFactory = Callable[..., PolicyBackend]

BACKENDS: dict[str, BackendFactory] = {}
"""Policy name -> backend class (or factory), filled by :func:`register_backend`."""

_F = TypeVar('_F', bound=BackendFactory)


def register_backend(name: str) -> Callable[[_F], _F]:
    """Class (or factory) decorator: make a backend available to :func:`make_backend` as
    ``name``. Registering another object under a taken name is an error; registering the same
    one again (a module reload) is not."""

    def deco(factory: _F) -> _F:
        held = BACKENDS.get(name)
        if held is not None and _identity(held) != _identity(factory):
            raise ValueError(f'policy backend {name!r} is already registered ({held!r})')
        BACKENDS[name] = factory
        return factory

    return deco


def _identity(factory: Any) -> tuple[Any, Any]:
    return getattr(factory, '__module__', None), getattr(factory, '__qualname__', None)


@register_backend('oracle')
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


@register_backend('random')
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


def make_backend(name: str, **kwargs: Any) -> PolicyBackend:
    """Build the backend registered under ``name`` with the decision node's keyword options
    (each backend takes what it needs and ignores the rest)."""
    if name not in BACKENDS:
        raise ValueError(f'unknown policy {name!r} (have: {sorted(BACKENDS)})')
    return BACKENDS[name](**kwargs)
