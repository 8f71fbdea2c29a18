"""FrameKVCache: sinks kept, oldest non-sink frame evicted, memory bounded."""

from __future__ import annotations

import pytest
import torch

from vln_stack.models.kv_cache import FrameKVCache


def _frame(i: int, heads: int = 2, tokens: int = 3, dim: int = 4) -> torch.Tensor:
    """[1, heads, 1, tokens, dim] filled with the frame number (content identifies the frame)."""
    return torch.full((1, heads, 1, tokens, dim), float(i))


def _held(cache: FrameKVCache, layer: int = 0) -> list[int]:
    k, v = cache.get(layer)
    assert torch.equal(k, v)
    return [int(x) for x in k[0, 0, :, 0, 0]]


def test_empty_and_fill_below_capacity():
    cache = FrameKVCache(2, initial_frames=2, window_frames=3)
    assert cache.get(0) is None and cache.num_frames == 0 and cache.nbytes == 0
    for i in range(4):
        cache.append(0, _frame(i), _frame(i))
    assert _held(cache) == [0, 1, 2, 3]
    assert cache.frame_ids() == [0, 1, 2, 3]
    assert cache.get(1) is None  # layers are independent


def test_eviction_order_keeps_sinks_and_recent_window():
    cache = FrameKVCache(1, initial_frames=2, window_frames=3)
    expected_after = {
        5: [0, 1, 2, 3, 4],
        6: [0, 1, 3, 4, 5],  # first eviction: frame 2 (oldest non-sink)
        7: [0, 1, 4, 5, 6],
        9: [0, 1, 6, 7, 8],
        12: [0, 1, 9, 10, 11],
    }
    for i in range(12):
        cache.append(0, _frame(i), _frame(i))
        if i + 1 in expected_after:
            assert _held(cache) == expected_after[i + 1], f'after {i + 1} frames'
            assert cache.frame_ids() == expected_after[i + 1]
    assert cache.num_frames == 5 and cache.frames_seen == 12
    k, v = cache.get(0, ordered=False)  # storage order (a view): same frames, for attention
    assert sorted(int(x) for x in k[0, 0, :, 0, 0]) == expected_after[12]
    assert torch.equal(k, v)


def test_released_bounds_56_frames_and_memory_stops_growing():
    cache = FrameKVCache(3)  # defaults: 8 sinks + 48 recent
    assert cache.capacity == 56
    sizes = []
    for i in range(130):
        for layer in range(3):
            cache.append(layer, _frame(i), _frame(i))
        sizes.append(cache.nbytes)
    assert cache.num_frames == 56
    assert _held(cache, 2) == list(range(8)) + list(range(130 - 48, 130))
    assert len(set(sizes)) == 1  # buffers preallocated once; never grow
    # 56 held frames + 1 staging slot (the frame being attended, see FrameKVCache.stage)
    assert sizes[-1] == 3 * 2 * (56 + 1) * _frame(0).numel() * 4


def test_reset_and_shape_checks():
    cache = FrameKVCache(1, initial_frames=1, window_frames=2)
    for i in range(5):
        cache.append(0, _frame(i), _frame(i))
    cache.reset()
    assert cache.num_frames == 0 and cache.frames_seen == 0 and cache.get(0) is None
    cache.append(0, _frame(7), _frame(7))
    assert _held(cache) == [7]
    with pytest.raises(ValueError, match='frame shape changed'):
        cache.append(0, _frame(8, tokens=4), _frame(8, tokens=4))
    with pytest.raises(ValueError):
        cache.append(
            0, torch.zeros(1, 2, 2, 3, 4), torch.zeros(1, 2, 2, 3, 4)
        )  # two frames at once
    with pytest.raises(ValueError):
        FrameKVCache(1, initial_frames=2, window_frames=0)


def test_stage_then_commit_shows_held_frames_plus_new_one_in_place():
    cache = FrameKVCache(1, initial_frames=2, window_frames=3)
    for i in range(8):
        held_before = _held(cache) if i else []
        ptr = cache.get(0, ordered=False)[0].data_ptr() if i else None
        k, v = cache.stage(0, _frame(i), _frame(i))
        # what frame i attends to: every held frame (evictee included) plus itself, no copy
        assert sorted(int(x) for x in k[0, 0, :, 0, 0]) == sorted(held_before + [i])
        assert torch.equal(k, v) and k.shape[2] == min(i, 5) + 1
        assert ptr is None or k.data_ptr() == ptr
        held_now = _held(cache) if i else []
        assert held_now == held_before and cache.frames_seen == i  # not committed yet
        cache.commit(0)
    assert _held(cache) == [0, 1, 5, 6, 7] and cache.frame_ids() == [0, 1, 5, 6, 7]
    # re-staging replaces the staged frame; commit needs a staged frame
    cache.stage(0, _frame(20), _frame(20))
    cache.stage(0, _frame(21), _frame(21))
    cache.commit(0)
    assert _held(cache) == [0, 1, 6, 7, 21]
    with pytest.raises(RuntimeError, match='without a staged frame'):
        cache.commit(0)
