"""Streaming LLM memory (`streaming` mode): incremental decoding with eviction equals a full
recompute under the equivalent attention mask; positions from the cursor; clean episodes."""

from __future__ import annotations

import pytest
import torch

from vln_stack.models.llm_memory import (
    STREAM_QUERY,
    StreamingJanusPolicy,
    equivalent_mask,
    frame_positions,
    parse_actions,
    text_positions,
)
from vln_stack.models.llm_policy import JanusPolicy
from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint

INSTRUCTION = 'Go down the hall and stop beside the green plant.'
GRID = (3, 4)   # 12 merged tokens per frame keeps the recompute small


@pytest.fixture(scope='module')
def policy(tmp_path_factory) -> JanusPolicy:
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=1)
    pol = JanusPolicy.from_folder(folder, dtype=torch.float64)
    return pol


def _frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(GRID[0] * GRID[1], 128, generator=g, dtype=torch.float64) for _ in range(n)]


def _full_recompute(policy: JanusPolicy, stream: StreamingJanusPolicy, frames, mask) -> torch.Tensor:
    """Logits of the last query token from ONE forward over [head, all blocks, query]."""
    model = policy.model
    embed = model.get_input_embeddings()
    head = stream.head_ids(INSTRUCTION)
    marks = embed(torch.tensor(policy._vision))
    parts = [embed(torch.tensor(head))]
    pos = [text_positions(0, len(head))]
    cursor = len(head)
    for f in frames:
        parts.append(torch.cat([marks[:1], f, marks[1:]]))
        p, cursor = frame_positions(cursor, GRID)
        pos.append(p)
    query = policy._ids(STREAM_QUERY)
    parts.append(embed(torch.tensor(query)))
    pos.append(text_positions(cursor, len(query)))
    out = model(inputs_embeds=torch.cat(parts)[None], position_ids=torch.cat(pos, 1)[:, None],
                attention_mask=mask[None, None], use_cache=False)
    return out.logits[0, -1]


@torch.inference_mode()
def test_streaming_with_eviction_equals_masked_full_recompute(policy):
    stream = StreamingJanusPolicy(policy, initial_frames=2, window_frames=3)
    stream.reset(INSTRUCTION)
    frames = _frames(9)
    for t, f in enumerate(frames):
        stream.append_frame(f, GRID)
        got, _ = stream.query_logits()
        got = got.logits[0, -1]
        held = stream.frames.frame_ids(0)
        expect_held = list(range(t + 1)) if t < 5 else [0, 1] + list(range(t - 2, t + 1))
        assert held == expect_held
        mask = equivalent_mask(len(stream.head_ids(INSTRUCTION)), GRID[0] * GRID[1] + 2,
                               stream.held_at_append, held, len(policy._ids(STREAM_QUERY)))
        ref = _full_recompute(policy, stream, frames[: t + 1], mask)
        assert (got - ref).abs().max() < 1e-9, t
    # once frames were evicted the result is not plain causal attention over everything
    causal = torch.ones_like(mask).tril()
    plain = _full_recompute(policy, stream, frames, causal)
    assert (got - plain).abs().max() > 1e-6


@torch.inference_mode()
def test_positions_match_get_rope_index_and_cursor_never_goes_back(policy):
    stream = StreamingJanusPolicy(policy, initial_frames=1, window_frames=1)
    stream.reset(INSTRUCTION)
    # the positions of [head, 3 blocks] equal the model's own get_rope_index on that sequence
    head = stream.head_ids(INSTRUCTION)
    n = GRID[0] * GRID[1]
    vs, ve = policy._vision
    ids = head + ([vs] + [policy.image_token_id] * n + [ve]) * 3
    ids_t = torch.tensor([ids])
    is_image = (ids_t == policy.image_token_id).to(torch.int)
    grid_thw = torch.tensor([[1, GRID[0] * 2, GRID[1] * 2]] * 3)
    ref, _ = policy.model.model.get_rope_index(ids_t, mm_token_type_ids=is_image,
                                               image_grid_thw=grid_thw)
    pos = [text_positions(0, len(head))]
    cursor = len(head)
    for _ in range(3):
        p, cursor = frame_positions(cursor, GRID)
        pos.append(p)
    assert torch.equal(torch.cat(pos, 1), ref[:, 0])
    cursors = []
    for f in _frames(5):
        stream.append_frame(f, GRID)
        cursors.append(stream.cursor)
    assert all(b > a for a, b in zip(cursors, cursors[1:]))   # evictions do not move it back
    assert stream.frames.num_frames == 2


@torch.inference_mode()
def test_new_episode_starts_from_a_clean_memory(policy):
    stream = StreamingJanusPolicy(policy, initial_frames=2, window_frames=2)
    frames = _frames(6, seed=3)
    stream.reset(INSTRUCTION)
    stream.append_frame(frames[0], GRID)
    first, _ = stream.query_logits()
    first = first.logits[0, -1].clone()
    for f in frames[1:]:
        stream.append_frame(f, GRID)
    bytes_full = stream.memory_bytes
    stream.reset(INSTRUCTION)
    assert stream.frames.num_frames == 0 and stream.frames.frames_seen == 0
    assert stream.cursor == len(stream.head_ids(INSTRUCTION))
    stream.append_frame(frames[0], GRID)
    again, _ = stream.query_logits()
    assert torch.equal(again.logits[0, -1], first)
    assert stream.memory_bytes <= bytes_full


@torch.inference_mode()
def test_memory_is_bounded(policy):
    stream = StreamingJanusPolicy(policy, initial_frames=2, window_frames=3)
    stream.reset(INSTRUCTION)
    sizes = []
    for f in _frames(12, seed=5):
        stream.append_frame(f, GRID)
        sizes.append((stream.memory_tokens, stream.held_bytes, stream.memory_bytes))
    assert len(set(sizes[4:])) == 1          # flat once 2 + 3 frames are held
    assert sizes[0][0] < sizes[4][0] and sizes[0][1] < sizes[4][1]
    assert sizes[4][1] <= sizes[4][2]         # held <= allocated (window + staging slot)


def test_parse_actions_is_strict():
    assert parse_actions('MOVE_FORWARD') == (['MOVE_FORWARD'], True)
    assert parse_actions('MOVE_FORWARD, TURN_LEFT', 4) == (['MOVE_FORWARD', 'TURN_LEFT'], True)
    assert parse_actions('MOVE_FORWARD STOP TURN_LEFT', 4) == (['MOVE_FORWARD', 'STOP'], True)
    assert parse_actions('MOVE_FORWARD TURN_LEFT', 1) == (['STOP'], False)   # chunk too long
    for bad in ('', 'move_forward', 'MOVE_FORWARD.', 'Go MOVE_FORWARD', 'FORWARD'):
        assert parse_actions(bad, 4) == (['STOP'], False), bad


@torch.inference_mode()
def test_errors_are_clear(policy):
    stream = StreamingJanusPolicy(policy)
    with pytest.raises(RuntimeError, match='reset'):
        stream.append_frame(_frames(1)[0], GRID)
    stream.reset(INSTRUCTION)
    with pytest.raises(ValueError, match='grid'):
        stream.append_frame(_frames(1)[0], (2, 2))
    stream.append_frame(_frames(1)[0], GRID)
    with pytest.raises(ValueError, match='resolution changed'):
        stream.append_frame(torch.randn(8, 128, dtype=torch.float64), (2, 4))
