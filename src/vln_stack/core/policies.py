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
    history_frames: int = 0             # past frames of this episode the model saw (memory)


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


class JanusBackend(PolicyBackend):
    """The JanusVLN policy on fused dual-memory tokens, in one of two memory modes.

    - ``released``: the published protocol (../shared/CHECKPOINTS.md section 4): every step a
      prompt of the current frame plus up to 8 history frames sampled evenly over the WHOLE
      episode, no LLM state between steps, one action word, exact match, anything else STOP (no
      retry: the released code maps it to STOP, and a greedy re-decode would repeat it). History
      tokens are kept for every past frame at the LLM's dtype (never downcast), so memory grows
      with the episode as released (bounded by ``max_steps``; see tools.memory_budget). With the encoder's ``token_layout: split`` the images use the
      released fusion (each history image's semantic tokens + lambda x the CURRENT frame's spatial
      tokens), so published weights see what they were trained on.
    - ``streaming`` (ours): `StreamingJanusPolicy`, a bounded LLM key/value memory (instruction
      sink + ``initial_frames`` + ``window_frames`` frame blocks), one new frame per step, chunks
      of up to ``max_actions`` moves, one retry on unparsable output.

    Token messages are ``[N, D]`` fused tokens, or ``[N, 2D]`` semantic|spatial (split layout).
    """

    needs_tokens = True

    def __init__(self, checkpoint_dir: str, device: str = 'cpu', *, janus_mode: str = 'released',
                 janus_initial_frames: int = 8, janus_window_frames: int = 48,
                 janus_max_actions: int = 1, janus_retries: int = 1, dtype: str = 'auto',
                 **_: Any) -> None:
        from ..models.llm_policy import JanusPolicy
        from ..models.runtime import resolve_dtype
        if janus_mode not in ('released', 'streaming'):
            raise ValueError(f"janus_mode must be 'released' or 'streaming', got {janus_mode!r}")
        if not checkpoint_dir:
            raise ValueError('policy "janus" needs checkpoint_dir (a local JanusVLN checkpoint '
                             'folder, e.g. models/tiny-janus made by '
                             '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`)')
        self.mode = janus_mode
        self.policy = JanusPolicy.from_folder(checkpoint_dir, device=device,
                                              dtype=resolve_dtype(dtype, device))
        self.width = int(self.policy.model.get_input_embeddings().weight.shape[1])
        self.history: list[Any] = []          # released: every past frame's image tokens
        self.stream = None
        if janus_mode == 'streaming':
            from ..models.llm_memory import StreamingJanusPolicy
            self.stream = StreamingJanusPolicy(
                self.policy, initial_frames=janus_initial_frames,
                window_frames=janus_window_frames, max_actions=janus_max_actions,
                retries=janus_retries)
        self._warned_layout = False

    def reset(self, instruction: str) -> None:
        self.history = []
        if self.stream is not None:
            self.stream.reset(instruction)

    def _grid(self, n: int) -> tuple[int, int]:
        cols = self.policy.grid_cols or n
        if n % cols:
            raise ValueError(f'{n} image tokens are not whole rows of {cols} merged columns')
        return n // cols, cols

    def _split(self, tokens: Any) -> tuple[Any, Any | None]:
        """(fused or semantic, spatial or None) from a [N, D] or [N, 2D] token tensor."""
        if tokens.dim() != 2 or tokens.shape[1] not in (self.width, 2 * self.width):
            raise ValueError(f'image tokens must be [N, {self.width}] (fused) or '
                             f'[N, {2 * self.width}] (split), got {tuple(tokens.shape)}')
        if tokens.shape[1] == self.width:
            return tokens, None
        return tokens[:, :self.width], tokens[:, self.width:]

    def _sampled(self) -> list[Any]:
        """The history frames the released prompt shows (sampled over the whole episode), so
        only those are converted; `JanusPolicy.decide` keeps all of at most 8 frames."""
        from ..models.llm_policy import sample_history
        return [self.history[i]
                for i in sample_history(len(self.history), self.policy.num_history)]

    def decide(self, obs: Observation) -> Decision:
        if obs.tokens is None:
            return Decision(Action.STOP, 'no fused tokens', valid=False, reason='no fused tokens')
        first, spatial = self._split(obs.tokens.float())
        grid = self._grid(first.shape[0])
        if self.stream is not None:
            held = self.stream.frames.num_frames
            fused = first if spatial is None else first + self.policy.lam * spatial
            out, chunk = self.stream.step(fused, grid)
            more = [Action(a) for a in chunk[1:]]
            return Decision(Action(out.action), out.raw_text, out.valid, out.latency_ms, more=more,
                            reason='' if out.valid else f'unparsable answer {out.raw_text[:60]!r}',
                            history_frames=held)
        if spatial is None:
            if not self._warned_layout:
                import logging
                logging.getLogger(__name__).warning(
                    'janus released mode on fused tokens: per-frame fusion, not the released one '
                    '(set memory_encoder token_layout: split for the exact protocol)')
                self._warned_layout = True
            out = self.policy.decide(obs.instruction, self._sampled(), first, grid_hw=grid)
        else:
            from ..models.dual_encoder import FusedFrame

            def frame(sem: Any, spa: Any) -> Any:
                return FusedFrame(fused=sem, semantic=sem, spatial=spa, grid_hw=grid,
                                  frame_index=0, memory_frames=0, latency_ms=0.0)
            past = [frame(h, None) for h in self._sampled()]
            out = self.policy.decide(obs.instruction, past, frame(first, spatial),
                                     fusion='released')
        past_frames = len(self.history)
        self.history.append(first.to(self.policy.dtype))   # the model's dtype: no silent downcast
        return Decision(Action(out.action), out.raw_text, out.valid, out.latency_ms,
                        reason='' if out.valid else f'not an action word: {out.raw_text[:60]!r}',
                        history_frames=past_frames)


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


def _openai_backend(**kwargs: Any) -> PolicyBackend:
    """Zero-shot chat model behind an OpenAI-compatible endpoint (vln_stack.zero_shot)."""
    from ..zero_shot.backend import OpenAIBackend
    return OpenAIBackend(**kwargs)


BACKENDS: dict[str, Callable[..., PolicyBackend]] = {
    'oracle': OracleBackend,
    'janus': JanusBackend,
    'random': RandomBackend,
    'openai': _openai_backend,
}


def make_backend(name: str, **kwargs: Any) -> PolicyBackend:
    if name not in BACKENDS:
        raise ValueError(f'unknown policy {name!r} (have: {sorted(BACKENDS)})')
    return BACKENDS[name](**kwargs)
