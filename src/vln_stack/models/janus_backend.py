"""Policy backend ``janus``: the JanusVLN multimodal LLM on fused dual-memory tokens.

Registers itself in :data:`vln_stack.core.policies.BACKENDS` on import (``vln_stack.backends``
imports it). torch and transformers load when a backend is built, not on import.
"""
from __future__ import annotations

import logging
from typing import Any

from ..core.actions import Action
from ..core.policies import Decision, Observation, PolicyBackend, register_backend

_LOG = logging.getLogger(__name__)


@register_backend('janus')
class JanusBackend(PolicyBackend):
    """The JanusVLN policy on fused dual-memory tokens, in one of two memory modes.

    - ``released``: the published protocol (../shared/CHECKPOINTS.md section 4): every step a
      prompt of the current frame plus up to 8 history frames sampled evenly over the WHOLE
      episode, no LLM state between steps, one action word, exact match, anything else STOP (no
      retry: the released code maps it to STOP, and a greedy re-decode would repeat it). History
      tokens are kept for every past frame at the LLM's dtype (never downcast), so memory grows
      with the episode as released (bounded by ``max_steps``; see tools.bench.memory_budget).
      With the encoder's ``token_layout: split`` the images use the released fusion (each
      history image's semantic tokens + lambda x the CURRENT frame's spatial tokens), so
      published weights see what they were trained on.
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
        from .llm_policy import JanusPolicy
        from .runtime import resolve_dtype
        if janus_mode not in ('released', 'streaming'):
            raise ValueError(f"janus_mode must be 'released' or 'streaming', got {janus_mode!r}")
        if not checkpoint_dir:
            raise ValueError(
                'policy "janus" needs checkpoint_dir (a local JanusVLN checkpoint folder, e.g. '
                'models/tiny-janus made by '
                '`python -m vln_stack.models.tiny_checkpoint --out models/tiny-janus`)')
        self.mode = janus_mode
        self.policy = JanusPolicy.from_folder(checkpoint_dir, device=device,
                                              dtype=resolve_dtype(dtype, device))
        self.width = int(self.policy.model.get_input_embeddings().weight.shape[1])
        self.history: list[Any] = []          # released: every past frame's image tokens
        self.stream = None
        if janus_mode == 'streaming':
            from .llm_memory import StreamingJanusPolicy
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
        from .llm_policy import sample_history
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
                _LOG.warning(
                    'janus released mode on fused tokens: per-frame fusion, not the released one '
                    '(set memory_encoder token_layout: split for the exact protocol)')
                self._warned_layout = True
            out = self.policy.decide(obs.instruction, self._sampled(), first, grid_hw=grid)
        else:
            from .dual_encoder import FusedFrame

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
