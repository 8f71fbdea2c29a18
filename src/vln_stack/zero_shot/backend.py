"""``OpenAIBackend``: a zero-shot chat model behind an OpenAI-compatible endpoint picks each move.

Per episode the instruction is reordered into subtasks (``prompts.REORDER_SYSTEM``); per step the
camera frame (JPEG, base64 data URL) and the subtask list go to the model, whose tagged reply
gives the action and one subtask state change. A malformed reply is retried once with the reason;
a second malformed reply, or a request that fails after its retries, gives STOP with
``valid=False`` and the reason.

``reset()`` makes no network call (the decision node calls it from a subscription callback):
the reordering runs at the start of the episode's first ``decide()``, in the policy worker, or
explicitly through ``plan()``.
"""
from __future__ import annotations

import base64
import logging
import os
import time
from pathlib import Path
from typing import Any

from ..core.actions import Action, MoveSpec
from ..core.policies import Decision, Observation, PolicyBackend, register_backend
from .client import ChatClient, ChatError
from .prompts import (MalformedReply, SubtaskList, parse_step_reply, parse_subtasks,
                      reorder_messages, retry_messages, step_messages)

_LOG = logging.getLogger(__name__)


def read_api_key(env_var: str, key_file: str) -> str:
    """The key from ``key_file`` (first line) when given, else from ``$env_var``, else ''."""
    if key_file:
        path = Path(key_file).expanduser()
        try:
            lines = path.read_text(encoding='utf-8').strip().splitlines()
        except OSError as exc:
            raise ValueError(f'cannot read API key file {str(path)!r}: {exc.strerror}') from None
        return lines[0].strip() if lines else ''
    return os.environ.get(env_var, '').strip() if env_var else ''


def encode_jpeg(image: Any, quality: int) -> str:
    """RGB uint8 image [H, W, 3] -> base64 JPEG text."""
    import cv2  # a heavy import, only when a frame is encoded
    import numpy as np

    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 uint8 RGB image, got {arr.dtype} {arr.shape}')
    ok, buf = cv2.imencode('.jpg', np.ascontiguousarray(arr[:, :, ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError('JPEG encoding failed')
    return base64.b64encode(buf.tobytes()).decode('ascii')


class _Plan:
    """One episode's instruction, its subtasks and the actions taken."""

    def __init__(self, instruction: str, subtasks: SubtaskList, note: str) -> None:
        self.instruction = instruction
        self.subtasks = subtasks
        self.note = note              # '' or why the fallback plan is used
        self.actions: list[str] = []
        self.reported = False         # note already put into a Decision.reason


@register_backend('openai')
class OpenAIBackend(PolicyBackend):
    """Zero-shot policy ``openai``: any OpenAI-compatible chat endpoint with image input.

    Each request: ``openai_timeout_s`` per attempt, ``openai_max_retries`` retries after
    ``openai_backoff_s * 2**(k-1)`` s (at most ``openai_max_backoff_s``, longer when a 429/503
    says ``Retry-After``), all within ``openai_max_total_s`` (0: ``(1 + retries) * timeout`` plus
    the backoffs). See :mod:`vln_stack.zero_shot.client`."""

    needs_image = True

    def __init__(self, spec: MoveSpec | None = None, *,
                 openai_base_url: str = 'http://127.0.0.1:8000/v1',
                 openai_model: str = '',
                 openai_api_key_env: str = 'OPENAI_API_KEY',
                 openai_api_key_file: str = '',
                 openai_timeout_s: float = 10.0,
                 openai_max_retries: int = 1,
                 openai_jpeg_quality: int = 80,
                 openai_max_tokens: int = 256,
                 openai_temperature: float = 0.0,
                 openai_backoff_s: float = 0.5,
                 openai_max_backoff_s: float = 8.0,
                 openai_max_total_s: float = 0.0,
                 **_: Any) -> None:
        if not 1 <= int(openai_jpeg_quality) <= 100:
            raise ValueError(f'openai_jpeg_quality must be in [1, 100], got {openai_jpeg_quality}')
        self.spec = spec if spec is not None else MoveSpec()
        self.jpeg_quality = int(openai_jpeg_quality)
        self.client = ChatClient(openai_base_url, openai_model,
                                 api_key=read_api_key(openai_api_key_env, openai_api_key_file),
                                 timeout_s=openai_timeout_s, max_retries=openai_max_retries,
                                 max_tokens=openai_max_tokens, temperature=openai_temperature,
                                 backoff_s=openai_backoff_s, max_backoff_s=openai_max_backoff_s,
                                 max_total_s=openai_max_total_s or None)
        self._instruction = ''
        self._plan: _Plan | None = None

    # --- episode -------------------------------------------------------------------------------
    def reset(self, instruction: str) -> None:
        """New episode; no network call here (the plan is made on the first decide())."""
        self._instruction = instruction
        self._plan = None

    @property
    def subtasks(self) -> SubtaskList | None:
        return self._plan.subtasks if self._plan is not None else None

    def plan(self, instruction: str | None = None) -> SubtaskList:
        """Reorder ``instruction`` (default: the reset one) into subtasks now: one retry on a
        malformed reply, then the whole instruction as the single subtask."""
        text = self._instruction if instruction is None else instruction
        self._instruction = text
        self._plan = self._make_plan(text)
        return self._plan.subtasks

    def _make_plan(self, instruction: str) -> _Plan:
        try:
            self._ensure_model()
            messages = reorder_messages(instruction)
            reply = self.client.complete(messages)
            try:
                entries = parse_subtasks(reply.text)
            except MalformedReply as exc:
                _LOG.warning('reorder reply malformed (%s); retrying once', exc)
                reply = self.client.complete(
                    retry_messages(messages, reply.text, str(exc), 'the JSON array'))
                entries = parse_subtasks(reply.text)
        except (ChatError, MalformedReply) as exc:
            note = f'reordering failed ({exc}); one subtask = the whole instruction'
            _LOG.warning('%s', note)
            return _Plan(instruction, SubtaskList.whole_instruction(instruction), note)
        subtasks = SubtaskList.from_texts(entries)
        _LOG.info('instruction reordered into %d subtasks: %s', len(subtasks),
                  ' | '.join(item.subtask for item in subtasks.items))
        return _Plan(instruction, subtasks, '')

    def _ensure_model(self) -> None:
        """With no model configured, use the first one the endpoint lists (vLLM serves one)."""
        if self.client.model:
            return
        models = self.client.list_models()
        if not models:
            raise ChatError(f'GET {self.client.base_url}/models lists no model; set openai_model')
        self.client.model = models[0]
        _LOG.info('openai_model not set: using %r served at %s', models[0], self.client.base_url)

    # --- one step ------------------------------------------------------------------------------
    def decide(self, obs: Observation) -> Decision:
        t0 = time.monotonic()
        plan = self._plan
        if plan is None or plan.instruction != obs.instruction:
            plan = self._plan = self._make_plan(obs.instruction)
        notes = [] if plan.reported else ([plan.note] if plan.note else [])
        plan.reported = True

        def stop(raw: str, why: str) -> Decision:
            reason = '; '.join(notes + [why])
            _LOG.warning('STOP: %s', why)
            return Decision(Action.STOP, raw, valid=False, reason=reason,
                            latency_ms=(time.monotonic() - t0) * 1e3,
                            subgoal=plan.subtasks.current_text())

        if obs.image is None:
            return stop('', 'no camera image')
        try:
            image_b64 = encode_jpeg(obs.image, self.jpeg_quality)
        except ValueError as exc:
            return stop('', str(exc))
        messages = step_messages(plan.instruction, plan.subtasks, plan.actions, image_b64,
                                 self.spec)
        raw = ''
        for attempt in (1, 2):
            try:
                if not self.client.model:
                    self._ensure_model()
                reply = self.client.complete(messages)
            except ChatError as exc:
                tries = getattr(exc, 'attempts', 1)
                return stop(raw, f'request failed after {tries} attempt(s): {exc}')
            raw = reply.text
            try:
                step = parse_step_reply(raw, plan.subtasks)
            except MalformedReply as exc:
                if attempt == 2:
                    return stop(raw, f'malformed reply twice: {exc}')
                _LOG.warning('malformed step reply (%s); retrying once', exc)
                notes.append(f'retried after a malformed reply: {exc}')
                messages = retry_messages(messages, raw, str(exc), 'the three tags')
                continue
            break
        plan.subtasks.apply(step.change)
        plan.actions.append(step.action.value)
        return Decision(step.action, raw, valid=True,
                        latency_ms=(time.monotonic() - t0) * 1e3,
                        subgoal=plan.subtasks.current_text(), thought=step.thought,
                        reason='; '.join(notes))
