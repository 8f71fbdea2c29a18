"""The streaming LLM memory as a transformers cache that appends and evicts in place.

`SinkWindowCache` is a `transformers.Cache` the stock Qwen2.5-VL text model runs on unchanged
(its attention calls ``update``; mask creation calls ``get_seq_length`` / ``get_mask_sizes``).
Each layer keeps ONE buffer ``[B, kv_heads, T_max, head_dim]`` for keys and one for values,
allocated once per episode and laid out as::

    [ head (sink) | frame slot 0 .. slot capacity-1 | staging slot | query / answer area ]

with ``capacity = initial_frames + window_frames`` slots of one frame block each. ``update`` writes
the new keys/values at the layer's current length and returns views of ``[:length]``, so attention
reads the memory where it lies (no concatenation, no copy of the held memory).

Frames follow `FrameKVCache`'s staging-slot scheme: a new block is written at slot ``count`` (a
free slot while not full, the staging slot once full), so the held blocks plus the new block are
always contiguous; `commit_frame` then either keeps it there or, when full, copies it over the
oldest window block (one block copy per layer and step) and advances the ring. Keys are stored
after RoPE (transformers' convention), so the storage order of the blocks does not matter to
attention. The query and the decoded answer go after the held blocks and are dropped by `rewind`.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from .kv_cache import check_bounds

__all__ = ['SinkWindowCache', 'SlabLayer']


class SlabLayer(CacheLayerMixin):
    """One layer's keys and values in one preallocated buffer each, filled up to ``length``.

    ``keys`` / ``values`` are the whole buffers ``[B, kv_heads, T_max, head_dim]`` (as in
    transformers' `StaticLayer`); only ``[:length]`` along dim 2 is memory.
    """

    is_sliding = False
    is_compileable = False  # the length is a Python int

    def __init__(self) -> None:
        super().__init__()
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise RuntimeError('SlabLayer buffers are allocated by SinkWindowCache.begin_frame()')

    def allocate(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        """(Re)allocate both buffers (contents undefined) and empty the layer."""
        self.keys = torch.empty(shape, dtype=dtype, device=device)
        self.values = torch.empty(shape, dtype=dtype, device=device)
        self.dtype, self.device = dtype, device
        self.is_initialized = True
        self.length = 0

    def fits(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> bool:
        """Whether the buffers can hold ``shape`` (same B, heads, head_dim; at least T_max)."""
        if not self.is_initialized:
            return False
        k = self.keys
        return (k.dtype == dtype and k.device == torch.device(device) and k.shape[:2] == shape[:2]
                and k.shape[3] == shape[3] and k.shape[2] >= shape[2])

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``[B, kv_heads, n, head_dim]`` keys/values at ``length``; return views of
        ``[:length + n]`` (valid until the buffer is written again)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, end = self.length, self.length + key_states.shape[-2]
        if end > self.keys.shape[2]:
            raise RuntimeError(f'LLM memory buffer overflow: {end} tokens > {self.keys.shape[2]} '
                               'allocated (query or answer longer than reserved)')
        self.keys[:, :, start:end].copy_(key_states)
        self.values[:, :, start:end].copy_(value_states)
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return int(self.keys.shape[2]) if self.is_initialized else -1

    def reset(self) -> None:
        """Empty the layer, keeping its buffers (no zeroing: only ``[:length]`` is read)."""
        self.length = 0

    def copy_block(self, src: int, dst: int, n: int) -> None:
        """Copy tokens ``[src, src + n)`` over ``[dst, dst + n)`` (non-overlapping)."""
        self.keys[:, :, dst:dst + n].copy_(self.keys[:, :, src:src + n])
        self.values[:, :, dst:dst + n].copy_(self.values[:, :, src:src + n])


class SinkWindowCache(Cache):
    """LLM key/value memory: a head (sink) plus the first ``initial_frames`` and the last
    ``window_frames`` frame blocks, in place, for ``num_layers`` decoder layers.

    Episode protocol: `start_episode` (the head's keys/values), then per frame `begin_frame`,
    one model forward of the block with this cache, `commit_frame`. A query (and its greedy
    answer) runs on `query_cache()` and is dropped by the next `rewind` / `begin_frame` /
    `query_cache`. Frame bookkeeping (`frame_ids`, `num_frames`, `frames_seen`, `capacity`)
    matches `FrameKVCache`'s.
    """

    def __init__(
        self, num_layers: int, *, initial_frames: int = 8, window_frames: int = 48
    ) -> None:
        check_bounds(num_layers, initial_frames, window_frames)
        super().__init__(layers=[SlabLayer() for _ in range(num_layers)])
        self.initial_frames = initial_frames
        self.window_frames = window_frames
        self._head: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # until the 1st frame
        self.head_len = 0
        self.block_len = 0
        self._clear_frames()

    def _clear_frames(self) -> None:
        self.count = 0          # frame blocks held
        self.ring = 0           # oldest window slot (relative to the window) once full
        self.slot_ids: list[int] = []   # absolute frame index held by each slot
        self._seen = 0          # frames committed since `start_episode`
        self._staged = False

    # ---- figures -------------------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        """Frame blocks held at most."""
        return self.initial_frames + self.window_frames

    @property
    def num_frames(self) -> int:
        return self.count

    @property
    def frames_seen(self) -> int:
        return self._seen

    @property
    def allocated(self) -> bool:
        """Whether this episode's buffers hold the head (i.e. a frame has arrived)."""
        return self._head is None and self.layers[0].is_initialized

    @property
    def memory_len(self) -> int:
        """Tokens of memory: head plus held frame blocks."""
        return self.head_len + self.count * self.block_len

    @property
    def nbytes(self) -> int:
        """Bytes of the allocated buffers (plus the head tensors waiting for the first frame)."""
        total = sum(t.numel() * t.element_size() for kv in (self._head or []) for t in kv)
        for layer in self.layers:
            if layer.is_initialized:
                total += 2 * layer.keys.numel() * layer.keys.element_size()
        return total

    @property
    def held_bytes(self) -> int:
        """Bytes of the memory tokens (head + held blocks, keys and values, every layer)."""
        per_token = 0
        for i, layer in enumerate(self.layers):
            ref = self._head[i][0] if self._head is not None else layer.keys
            if ref is not None:
                per_token += 2 * ref.shape[0] * ref.shape[1] * ref.shape[3] * ref.element_size()
        return per_token * self.memory_len

    def frame_ids(self, layer: int = 0) -> list[int]:
        """Absolute indices (0-based per episode) of the held frames, oldest first (every layer
        holds the same frames; ``layer`` is accepted for `FrameKVCache` compatibility)."""
        if self.count < self.capacity or self.ring == 0:
            return list(self.slot_ids)
        sinks = self.slot_ids[: self.initial_frames]
        window = self.slot_ids[self.initial_frames:]
        return sinks + window[self.ring:] + window[: self.ring]

    # ---- episode -------------------------------------------------------------------------------
    def start_episode(self, head: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Drop every frame and take the new episode's head keys/values (one
        ``[B, kv_heads, head_len, head_dim]`` pair per layer); the buffers are kept for reuse
        and filled with the head on the first frame, when the block length is known."""
        if len(head) != len(self.layers):
            raise ValueError(f'head has {len(head)} layers, the cache {len(self.layers)}')
        self._head = head
        self.head_len = int(head[0][0].shape[2])
        self.block_len = 0
        self._clear_frames()
        for layer in self.layers:
            layer.reset()

    def _allocate(self, block_len: int, reserve: int) -> None:
        """Fit the buffers to this episode (reused when large enough) and write the head."""
        for layer, (hk, hv) in zip(self.layers, self._head):
            b, h, _, d = hk.shape
            shape = (b, h, self.head_len + (self.capacity + 1) * block_len + reserve, d)
            if not layer.fits(shape, hk.dtype, hk.device):
                layer.allocate(shape, hk.dtype, hk.device)
            layer.keys[:, :, : self.head_len].copy_(hk)
            layer.values[:, :, : self.head_len].copy_(hv)
        self.block_len = block_len
        self._head = None

    def begin_frame(self, block_len: int, reserve: int) -> None:
        """Point every layer at slot ``count`` for a ``block_len``-token frame block.

        Args:
            block_len: tokens per frame block (fixed for the episode).
            reserve: tokens kept free after the staging slot for a query and its answer
                (used when the buffers are allocated, on the episode's first frame).
        """
        if self._head is not None:
            if block_len < 1 or reserve < 0:
                raise ValueError('need block_len >= 1 and reserve >= 0, '
                                 f'got {block_len}, {reserve}')
            self._allocate(block_len, reserve)
        elif not self.allocated:
            raise RuntimeError('start_episode() must come before the first frame')
        elif block_len != self.block_len:
            raise ValueError(f'frame block of {block_len} tokens, this episode uses '
                             f'{self.block_len}; start a new episode')
        self.rewind()
        self._staged = True

    def commit_frame(self) -> None:
        """Keep the block just written at slot ``count``; when full, evict the oldest window
        block (its slot receives a copy of the staged block), then `rewind`."""
        end = self.head_len + (self.count + 1) * self.block_len
        if not self._staged or any(layer.length != end for layer in self.layers):
            raise RuntimeError('commit_frame() needs begin_frame() and one forward of exactly '
                               'one frame block')
        frame_id = self._seen
        self._seen += 1
        if self.count < self.capacity:  # the block already sits in its slot
            self.count += 1
            self.slot_ids.append(frame_id)
        else:
            slot = self.initial_frames + self.ring
            self.ring = (self.ring + 1) % self.window_frames
            self.slot_ids[slot] = frame_id
            staging = self.head_len + self.capacity * self.block_len
            for layer in self.layers:
                layer.copy_block(staging, self.head_len + slot * self.block_len, self.block_len)
        self.rewind()

    def rewind(self) -> None:
        """Drop whatever follows the held memory (a query and its answer, or a staged block)."""
        self._staged = False
        for layer in self.layers:
            layer.length = self.memory_len

    def query_cache(self) -> Cache:
        """The cache a query runs on: this one, rewound to the memory; before the episode's
        first frame (no buffers yet) a throwaway `DynamicCache` holding a copy of the head."""
        if self._head is None:
            self.rewind()
            return self
        from transformers import DynamicCache
        return DynamicCache(ddp_cache_data=self._head)
