"""Streaming LLM memory (`streaming` mode): incremental decoding with eviction equals a full
recompute under the equivalent attention mask; positions from the cursor; clean episodes."""

from __future__ import annotations

import pytest
import torch

from vln_stack.models.llm_memory import (
    STREAM_QUERY,
    STREAM_RETRY_QUERY,
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
def folder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=1)


@pytest.fixture(scope='module')
def policy(folder) -> JanusPolicy:
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


# ---- in-place memory (SinkWindowCache) ---------------------------------------------------------
def _buffer_ptrs(stream: StreamingJanusPolicy) -> list[tuple[int, int]]:
    return [(lay.keys.data_ptr(), lay.values.data_ptr()) for lay in stream.cache.layers]


def _spy_updates(stream: StreamingJanusPolicy, monkeypatch) -> list[bool]:
    """Record, for every `update` the attention calls, whether the keys/values it got back are
    views of the layer's own buffer covering exactly the layer's length (no concatenated copy)."""
    reads: list[bool] = []
    for layer in stream.cache.layers:
        def spy(k, v, *args, _orig=layer.update, _layer=layer, **kwargs):
            ks, vs = _orig(k, v, *args, **kwargs)
            reads.append(ks.data_ptr() == _layer.keys.data_ptr()
                         and vs.data_ptr() == _layer.values.data_ptr()
                         and ks.shape[2] == vs.shape[2] == _layer.length)
            return ks, vs
        monkeypatch.setattr(layer, 'update', spy)
    return reads


@torch.inference_mode()
def test_memory_appends_and_evicts_in_place(policy, monkeypatch):
    stream = StreamingJanusPolicy(policy, initial_frames=2, window_frames=3, max_actions=4)
    stream.reset(INSTRUCTION)
    frames = _frames(14, seed=7)
    stream.append_frame(frames[0], GRID)
    ptrs, allocated = _buffer_ptrs(stream), stream.memory_bytes
    reads = _spy_updates(stream, monkeypatch)
    block = GRID[0] * GRID[1] + 2
    head = len(stream.head_ids(INSTRUCTION))
    for t, f in enumerate(frames[1:], start=1):
        if t % 3:
            stream.append_frame(f, GRID)
            stream.query_logits()
        else:
            stream.step(f, GRID)        # query + greedy answer written after the memory
        expect = list(range(t + 1)) if t < 5 else [0, 1] + list(range(t - 2, t + 1))
        assert stream.frames.frame_ids(0) == expect, t
        assert stream.frames.num_frames == len(expect) and stream.frames.frames_seen == t + 1
        assert _buffer_ptrs(stream) == ptrs, f'buffers reallocated at step {t}'
        assert stream.memory_bytes == allocated, t
        assert stream.memory_tokens == head + len(expect) * block
    assert len(reads) > 2 * len(frames) and all(reads)
    stream.cache.rewind()   # the query / answer are dropped by resetting the length
    assert all(lay.get_seq_length() == stream.memory_tokens for lay in stream.cache.layers)


@torch.inference_mode()
def test_buffers_hold_the_layout_and_are_reused_by_the_next_episode(policy, monkeypatch):
    stream = StreamingJanusPolicy(policy, initial_frames=1, window_frames=2)
    stream.reset(INSTRUCTION)
    head, block = len(stream.head_ids(INSTRUCTION)), GRID[0] * GRID[1] + 2
    written: list[torch.Tensor] = []    # layer 0's keys of each frame block, as computed
    lay = stream.cache.layers[0]

    def spy(k, v, *args, _orig=lay.update, **kwargs):
        if k.shape[2] == block:
            written.append(k.clone())
        return _orig(k, v, *args, **kwargs)
    monkeypatch.setattr(lay, 'update', spy)
    frames = _frames(5, seed=11)
    for f in frames:
        stream.append_frame(f, GRID)
    reserve = max(len(policy._ids(q)) for q in (STREAM_QUERY, STREAM_RETRY_QUERY))
    assert lay.keys.shape[2] == head + (1 + 2 + 1) * block + reserve + policy.max_new_tokens
    assert lay.keys.dtype == torch.float64
    # slots hold frames [0 | 3, 4]: frame 3 evicted frame 1 (slot 1), frame 4 frame 2 (slot 2)
    assert stream.frames.frame_ids() == [0, 3, 4]
    for slot, frame in enumerate([0, 3, 4]):
        start = head + slot * block
        assert torch.equal(lay.keys[:, :, start:start + block], written[frame]), slot
    ptrs = _buffer_ptrs(stream)
    stream.reset(INSTRUCTION)
    assert stream.frames.num_frames == 0 and stream.memory_tokens == head
    # a query before the first frame sees the head alone
    got, _ = stream.query_logits()
    query_len = len(policy._ids(STREAM_QUERY))
    ref = _full_recompute(policy, stream, [], equivalent_mask(head, block, [], [], query_len))
    assert (got.logits[0, -1] - ref).abs().max() < 1e-9
    stream.append_frame(frames[0], GRID)
    assert _buffer_ptrs(stream) == ptrs    # same shapes: the buffers are reused
    stream.reset(INSTRUCTION + ' Then turn around.')
    stream.append_frame(frames[0], GRID)
    assert lay.keys.shape[2] >= stream.memory_tokens + block + reserve + policy.max_new_tokens


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize('device', [
    'cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                          reason='no CUDA device'))])
@torch.inference_mode()
def test_in_place_memory_runs_in_any_dtype_and_device(folder, dtype, device):
    pol = JanusPolicy.from_folder(folder, device=device, dtype=dtype)
    stream = StreamingJanusPolicy(pol, initial_frames=1, window_frames=2)
    stream.reset(INSTRUCTION)
    frames = [f.to(dtype) for f in _frames(5, seed=13)]
    stream.append_frame(frames[0], GRID)
    ptrs = _buffer_ptrs(stream)
    for f in frames[1:]:
        dec, _ = stream.step(f, GRID)
        assert dec.action in ('MOVE_FORWARD', 'TURN_LEFT', 'TURN_RIGHT', 'STOP')
    assert _buffer_ptrs(stream) == ptrs and stream.frames.frame_ids() == [0, 3, 4]
    lay = stream.cache.layers[0]
    assert lay.keys.dtype == dtype and lay.keys.device.type == device
    assert torch.isfinite(lay.keys[:, :, : stream.memory_tokens].float()).all()
