"""Streaming JanusVLN decisions with a bounded LLM key/value memory (our `streaming` mode).

The released protocol (`JanusPolicy`, mode ``released``) re-encodes a prompt of up to 9 images every
step and keeps no LLM state. Here the LLM keeps a memory instead, bounded like the encoders':

* **sink**: the prompt head (system text + the instruction) is run once per episode and its keys /
  values are kept for the whole episode;
* **frames**: each step appends ONE frame block (``<|vision_start|>`` + the frame's fused tokens +
  ``<|vision_end|>``), keeping the first ``initial_frames`` blocks as attention sinks plus the last
  ``window_frames`` blocks; older blocks are evicted;
* **query**: a short question (the action list + the assistant turn) is run on top of the memory,
  the answer decoded greedily, and both are dropped again, so the memory holds only sink + frames.

The memory is a `SinkWindowCache` (llm_cache.py): per layer one buffer allocated once per episode,
written in place (append = write at the current length, eviction = one block copy, query dropped
by resetting the length), which the stock transformers model runs on as its cache.

Positions come from an explicit per-episode cursor (3D mRoPE: text tokens advance all three axes
together; an image block's tokens take (t, row, col) offsets from the cursor as in Qwen2.5-VL's
``get_rope_index``), never from the cache length: after an eviction a length-derived position would
go backwards (see ../shared/PLATFORM.md). Keys are cached after RoPE (transformers' convention), so
held blocks keep their original positions and the attention over them is order-independent.

What one step computes equals a full recompute of [sink, every frame block so far, query] under
the attention mask `equivalent_mask` returns: a frame block sees the sink, the blocks held when
it arrived and itself (causally); the query sees the sink, the blocks held now and itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .llm_policy import ACTIONS, SYSTEM_PROMPT, JanusPolicy, PolicyDecision

__all__ = [
    'STREAM_HEAD_TEMPLATE',
    'STREAM_QUERY',
    'STREAM_RETRY_QUERY',
    'StreamingJanusPolicy',
    'equivalent_mask',
    'frame_positions',
    'parse_actions',
    'text_positions',
]

if TYPE_CHECKING:
    from .llm_cache import SinkWindowCache

# The sink: system turn, then the task. Frame blocks follow, then the per-step query.
STREAM_HEAD_TEMPLATE = (
    f'<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n'
    'Your task is to {instruction} \n These images are your observations, oldest first:'
)
STREAM_QUERY = (
    ' The last image is your current observation.\n You should take one of the following '
    'actions:\n MOVE_FORWARD\n TURN_LEFT\n TURN_RIGHT\n STOP.<|im_end|>\n<|im_start|>assistant\n'
)
# Asked once when the first answer did not parse.
STREAM_RETRY_QUERY = (
    ' The last image is your current observation.\n Answer with exactly one of these words and '
    'nothing else: MOVE_FORWARD, TURN_LEFT, TURN_RIGHT, STOP.<|im_end|>\n<|im_start|>assistant\n'
)

_SPLIT = re.compile(r'[\s,;]+')


def parse_actions(text: str, max_actions: int = 1) -> tuple[list[str], bool]:
    """Strict parse of a chunk: 1..``max_actions`` action words separated by spaces, commas or
    newlines, nothing else. Returns ``(actions, True)`` or ``(['STOP'], False)``. Moves after a
    STOP are dropped (STOP ends the episode)."""
    words = [w for w in _SPLIT.split(text.strip()) if w]
    if not words or len(words) > max_actions or any(w not in ACTIONS for w in words):
        return ['STOP'], False
    if 'STOP' in words:
        words = words[: words.index('STOP') + 1]
    return words, True


def text_positions(cursor: int, n: int) -> torch.Tensor:
    """``[3, n]`` mRoPE positions of ``n`` text tokens starting at ``cursor``."""
    return torch.arange(cursor, cursor + n, dtype=torch.long).expand(3, n).clone()


def frame_positions(cursor: int, grid_hw: tuple[int, int]) -> tuple[torch.Tensor, int]:
    """``[3, rows*cols + 2]`` positions of one frame block and the cursor after it.

    ``<|vision_start|>`` takes ``cursor``; the merged image tokens take
    ``(cursor+1, cursor+1+row, cursor+1+col)`` (one temporal step, as for an image in
    Qwen2.5-VL); ``<|vision_end|>`` follows the largest of those.
    """
    rows, cols = int(grid_hw[0]), int(grid_hw[1])
    base = cursor + 1
    r = torch.arange(rows, dtype=torch.long).repeat_interleave(cols)
    c = torch.arange(cols, dtype=torch.long).repeat(rows)
    img = torch.stack([torch.full_like(r, base), base + r, base + c])
    end = base + max(rows, cols)
    pos = torch.cat(
        [torch.full((3, 1), cursor, dtype=torch.long), img, torch.full((3, 1), end, dtype=torch.long)],
        dim=1,
    )
    return pos, end + 1


def equivalent_mask(
    head_len: int, block_len: int, held_at_append: list[list[int]], held_now: list[int],
    query_len: int,
) -> torch.Tensor:
    """Boolean ``[L, L]`` mask (True = may attend) of [head, block_0..block_{T-1}, query] that a
    full recompute needs to reproduce the streaming computation.

    Args:
        held_at_append: for frame t, the frames (absolute indices < t) held when t was appended.
        held_now: frames held after the last append (the query's view).
    """
    n_frames = len(held_at_append)
    total = head_len + n_frames * block_len + query_len
    mask = torch.zeros(total, total, dtype=torch.bool)
    tril = lambda n: torch.ones(n, n, dtype=torch.bool).tril()  # noqa: E731
    mask[:head_len, :head_len] = tril(head_len)

    def block(t: int) -> slice:
        s = head_len + t * block_len
        return slice(s, s + block_len)

    for t, held in enumerate(held_at_append):
        rows = block(t)
        mask[rows, :head_len] = True
        for j in held:
            mask[rows, block(j)] = True
        mask[rows, rows] = tril(block_len)
    q = slice(head_len + n_frames * block_len, total)
    mask[q, :head_len] = True
    for j in held_now:
        mask[q, block(j)] = True
    mask[q, q] = tril(query_len)
    return mask


@dataclass
class StepTrace:
    """Bookkeeping of the last step (tests, benchmark)."""

    frames_seen: int
    frames_held: list[int]
    cursor: int
    memory_tokens: int
    memory_bytes: int


class StreamingJanusPolicy:
    """One decision per appended frame, over a bounded LLM memory (sink + frame window).

    Args:
        policy: a loaded `JanusPolicy` (its model, tokenizer, stop ids and embedding are reused).
        initial_frames, window_frames: frame blocks kept as sinks / as the recent window.
        max_actions: moves one answer may contain (a chunk; StreamVLN uses 4). 1 = one word.
        retries: after an unparsable answer, ask again (with `STREAM_RETRY_QUERY`) this often.
    """

    def __init__(
        self,
        policy: JanusPolicy,
        *,
        initial_frames: int = 8,
        window_frames: int = 48,
        max_actions: int = 1,
        retries: int = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        from .llm_cache import SinkWindowCache

        if max_actions < 1:
            raise ValueError(f'max_actions must be >= 1, got {max_actions}')
        self.policy = policy
        self.model = policy.model
        text_cfg = self.model.config.get_text_config()
        self.num_layers = int(text_cfg.num_hidden_layers)
        self.cache: SinkWindowCache = SinkWindowCache(
            self.num_layers, initial_frames=initial_frames, window_frames=window_frames
        )
        self.max_actions = max_actions
        self.retries = retries
        self._clock = clock
        self._embed = self.model.get_input_embeddings()
        self._started = False
        self.cursor = 0
        self.instruction = ''
        self.block_len: int | None = None
        self.held_at_append: list[list[int]] = []   # for `equivalent_mask` (tests)
        self._query_ids = {q: policy._ids(q) for q in (STREAM_QUERY, STREAM_RETRY_QUERY)}

    # ---- episode -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._embed.weight.device

    @property
    def frames(self) -> SinkWindowCache:
        """The memory's frame bookkeeping (`frame_ids()`, `num_frames`, `frames_seen`)."""
        return self.cache

    def head_ids(self, instruction: str) -> list[int]:
        return self.policy._ids(STREAM_HEAD_TEMPLATE.format(instruction=instruction))

    @torch.inference_mode()
    def reset(self, instruction: str) -> None:
        """New episode: empty memory, cursor 0, run the sink (system + instruction) once."""
        from transformers import DynamicCache

        self.instruction = instruction
        self.block_len = None
        self.held_at_append = []
        ids = torch.tensor([self.head_ids(instruction)], device=self.device)
        pos = text_positions(0, ids.shape[1]).to(self.device)[:, None]
        head = DynamicCache(config=self.model.config.get_text_config())
        self.model(inputs_embeds=self._embed(ids), position_ids=pos, past_key_values=head,
                   use_cache=True, logits_to_keep=1)
        self.cache.start_episode([(lay.keys, lay.values) for lay in head.layers])
        self.cursor = ids.shape[1]
        self._started = True

    @property
    def _reserve(self) -> int:
        """Tokens a query plus its answer may take after the memory."""
        return max(len(ids) for ids in self._query_ids.values()) + self.policy.max_new_tokens

    # ---- memory figures --------------------------------------------------------------------------
    @property
    def memory_tokens(self) -> int:
        return self.cache.memory_len

    @property
    def memory_bytes(self) -> int:
        """Bytes of the LLM key/value memory allocated (the per-layer buffers: sink, frame slots,
        staging slot and query area; flat from the episode's first frame on)."""
        return self.cache.nbytes

    @property
    def held_bytes(self) -> int:
        """Bytes of the keys/values actually held (sink + held frame blocks), below
        `memory_bytes` (the buffers also hold the staging slot and the query area)."""
        return self.cache.held_bytes

    def trace(self) -> StepTrace:
        return StepTrace(self.cache.frames_seen, self.cache.frame_ids(), self.cursor,
                         self.memory_tokens, self.memory_bytes)

    # ---- steps ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def append_frame(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> None:
        """Run one frame block over the memory and keep its keys/values (evicting if full)."""
        if not self._started:
            raise RuntimeError('reset(instruction) must start the episode before frames arrive')
        n = int(tokens.shape[0])
        if int(grid_hw[0]) * int(grid_hw[1]) != n:
            raise ValueError(f'{n} image tokens do not fill a {grid_hw[0]}x{grid_hw[1]} grid')
        width = self._embed.weight.shape[1]
        if tokens.dim() != 2 or tokens.shape[1] != width:
            raise ValueError(f'image tokens must be [N, {width}], got {tuple(tokens.shape)}')
        p = n + 2
        if self.block_len is not None and p != self.block_len:
            raise ValueError(f'frame block of {p} tokens, this episode uses {self.block_len}; '
                             'the camera resolution changed: start a new episode')
        marks = self._embed(torch.tensor(self.policy._vision, device=self.device))
        embeds = torch.cat([marks[:1], tokens.to(self.device, marks.dtype), marks[1:]])[None]
        pos, next_cursor = frame_positions(self.cursor, grid_hw)
        held_before = self.cache.frame_ids()
        self.cache.begin_frame(p, self._reserve)   # the block goes to slot `count`, in place
        self.model(inputs_embeds=embeds, position_ids=pos.to(self.device)[:, None],
                   past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        self.cache.commit_frame()                  # evicts by one block copy when full
        self.block_len = p
        self.cursor = next_cursor
        self.held_at_append.append(held_before)

    @torch.inference_mode()
    def query_logits(self, query: str = STREAM_QUERY):
        """Run the query over the memory; returns (model output, position of the next token).

        The query's keys/values (and those of tokens decoded on ``output.past_key_values``) sit
        after the memory until the next query or frame drops them."""
        if not self._started:
            raise RuntimeError('reset(instruction) must start the episode before a query')
        ids = torch.tensor([self._query_ids[query]], device=self.device)
        pos = text_positions(self.cursor, ids.shape[1]).to(self.device)[:, None]
        out = self.model(inputs_embeds=self._embed(ids), position_ids=pos,
                         past_key_values=self.cache.query_cache(), use_cache=True,
                         logits_to_keep=1)
        return out, self.cursor + ids.shape[1]

    @torch.inference_mode()
    def _answer(self, query: str) -> str:
        out, next_pos = self.query_logits(query)
        new_ids: list[int] = []
        for step in range(self.policy.max_new_tokens):
            token = int(out.logits[0, -1].argmax())
            if token in self.policy.stop_ids:
                break
            new_ids.append(token)
            if step + 1 == self.policy.max_new_tokens:
                break
            pos = torch.full((3, 1, 1), next_pos + step, dtype=torch.long, device=self.device)
            out = self.model(inputs_embeds=self._embed(torch.tensor([[token]], device=self.device)),
                             position_ids=pos, past_key_values=out.past_key_values, use_cache=True)
        self.cache.rewind()   # drop the query and the answer
        return self.policy.tokenizer.decode(new_ids, skip_special_tokens=True)

    def step(self, tokens: torch.Tensor, grid_hw: tuple[int, int]) -> tuple[PolicyDecision, list[str]]:
        """Append the current frame, answer. Returns the decision (first move) and the whole chunk.

        An unparsable answer is asked again ``retries`` times (stricter query); then STOP with
        ``valid=False``; ``raw_text`` holds every answer, separated by `` | ``.
        """
        t0 = self._clock()
        self.append_frame(tokens, grid_hw)
        raws: list[str] = []
        actions, valid = ['STOP'], False
        for attempt in range(self.retries + 1):
            raws.append(self._answer(STREAM_QUERY if attempt == 0 else STREAM_RETRY_QUERY))
            actions, valid = parse_actions(raws[-1], self.max_actions)
            if valid:
                break
        dec = PolicyDecision(action=actions[0], raw_text=' | '.join(raws), valid=valid,
                             latency_ms=(self._clock() - t0) * 1000.0)
        return dec, actions
