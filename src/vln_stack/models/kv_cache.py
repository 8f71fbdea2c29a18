"""Bounded per-layer key/value memory whose unit is a FRAME (the VGGT spatial memory).

StreamVGGT / JanusVLN keep the global-attention keys and values of every frame seen so far and,
in evaluation, trim them to the first 8 frames (attention sinks) plus the most recent 48 frames.
`FrameKVCache` stores exactly that, but in preallocated buffers, so its memory never grows past
``initial_frames + window_frames + 1`` frames per layer:

* slots ``[0, initial_frames)`` hold the first frames ever appended (never evicted);
* slots ``[initial_frames, capacity)`` are a ring buffer over the most recent frames; when the
  cache is full, appending overwrites the oldest non-sink frame;
* slot ``capacity`` is a staging slot (see `stage`): the frame being processed is written to the
  first free slot, which is ``count`` while not full and the staging slot once full, so the held
  frames plus the new frame are always the contiguous slots ``[0, count]`` and attention reads
  them in place (no concatenation, no reordering). At `commit` a staged frame either stays where
  it is (not full) or is copied over the evicted frame (one frame copy per layer and step).

What is stored is up to the caller: `VGGTAggregator` stores keys AFTER k_norm and RoPE (the
released StreamVGGT / JanusVLN code stores them before and re-applies both every step; see
`vln_stack.models.vggt_layers.Attention.forward_cached` for why the two are equivalent) and raw
values.

Tensor layout (as in the released code): ``[B, heads, frames, tokens_per_frame, head_dim]``.
"""

from __future__ import annotations

import torch

__all__ = ['FrameKVCache', 'check_bounds']


def check_bounds(num_layers: int, initial_frames: int, window_frames: int) -> None:
    """ValueError unless a frame memory has layers, >= 0 sink frames and a window of >= 1."""
    if num_layers < 1:
        raise ValueError(f'num_layers must be >= 1, got {num_layers}')
    if initial_frames < 0 or window_frames < 1:
        raise ValueError('need initial_frames >= 0 and window_frames >= 1, '
                         f'got {initial_frames}, {window_frames}')


class _LayerStore:
    """Buffers and bookkeeping of one layer."""

    __slots__ = ('k', 'v', 'count', 'head', 'frame_ids', 'staged')

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None  # [B, H, capacity + 1, P, D]; last slot: staging
        self.v: torch.Tensor | None = None
        self.count = 0  # frames held
        self.staged = False  # a frame sits in slot `count` awaiting `commit`
        self.head = 0  # oldest window slot (relative to the window) once the window is full
        self.frame_ids: list[int] = []  # absolute frame index held by each slot


class FrameKVCache:
    """Keeps the first ``initial_frames`` frames plus the last ``window_frames`` frames, per layer.

    Args:
        num_layers: number of attention layers that store K/V (VGGT: the global blocks, 24).
        initial_frames: attention-sink frames kept forever (released value 8).
        window_frames: most recent frames kept (released value 48).
    """

    def __init__(
        self, num_layers: int, *, initial_frames: int = 8, window_frames: int = 48
    ) -> None:
        check_bounds(num_layers, initial_frames, window_frames)
        self.num_layers = num_layers
        self.initial_frames = initial_frames
        self.window_frames = window_frames
        self._layers = [_LayerStore() for _ in range(num_layers)]
        self._appended = [0] * num_layers  # frames ever appended, per layer

    @property
    def capacity(self) -> int:
        """Maximum number of frames held per layer."""
        return self.initial_frames + self.window_frames

    @property
    def num_frames(self) -> int:
        """Frames currently held by layer 0 (every layer receives one append per frame)."""
        return self._layers[0].count

    @property
    def frames_seen(self) -> int:
        """Frames ever appended to layer 0 since the last reset (not bounded)."""
        return self._appended[0]

    @property
    def nbytes(self) -> int:
        """Bytes allocated by all K/V buffers (fixed once every layer holds its first frame).

        Each layer's buffers hold ``capacity + 1`` frames: the held frames plus the staging slot.
        """
        total = 0
        for store in self._layers:
            if store.k is not None:
                total += store.k.numel() * store.k.element_size() * 2
        return total

    def reset(self) -> None:
        """Drop every frame and free the buffers (call at the start of each episode)."""
        self._layers = [_LayerStore() for _ in range(self.num_layers)]
        self._appended = [0] * self.num_layers

    def frame_ids(self, layer: int = 0) -> list[int]:
        """Absolute indices (0-based since reset) of the frames held by ``layer``, oldest first."""
        store = self._layers[layer]
        return [store.frame_ids[i] for i in self._order(store)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store one frame's keys/values for ``layer`` (`stage` then `commit`).

        Args:
            k, v: ``[B, heads, 1, P, head_dim]`` (frame on dim 2); later frames must keep B,
                heads, P, head_dim, dtype and device.
        """
        self.stage(layer, k, v)
        self.commit(layer)

    def stage(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write a new frame next to the held ones, without evicting anything yet.

        The frame goes to slot ``count`` (a free slot, or the staging slot when full). Staging
        again before `commit` replaces the staged frame. `get`, `num_frames` and `frame_ids` do
        not see a staged frame until `commit`.

        Args:
            k, v: as in `append`.
        Returns:
            ``(k, v)`` views ``[B, heads, count + 1, P, head_dim]`` of the held frames (storage
            order, see ``get(ordered=False)``) followed by the staged frame: what a new frame
            attends to in the released semantics (every cached frame plus itself). Valid until
            the next `commit`/`append`/`reset` of this layer.
        """
        if k.dim() != 5 or k.shape[2] != 1 or k.shape != v.shape:
            raise ValueError(
                f'expected k, v of shape [B, H, 1, P, D], got {tuple(k.shape)}, {tuple(v.shape)}'
            )
        store = self._layers[layer]
        if store.k is None:
            b, h, _, p, d = k.shape
            store.k = k.new_empty((b, h, self.capacity + 1, p, d))
            store.v = v.new_empty((b, h, self.capacity + 1, p, d))
        elif store.k.shape[:2] != k.shape[:2] or store.k.shape[3:] != k.shape[3:]:
            raise ValueError(
                f'frame shape changed within an episode: cache holds {tuple(store.k.shape)}, '
                f'got {tuple(k.shape)}; call reset() first'
            )
        n = store.count
        store.k[:, :, n] = k[:, :, 0]
        store.v[:, :, n] = v[:, :, 0]
        store.staged = True
        return store.k[:, :, : n + 1], store.v[:, :, : n + 1]

    def commit(self, layer: int) -> None:
        """Make the staged frame of ``layer`` a held frame; when full, evict the oldest window
        frame (its slot receives the staged frame; sink slots are never written)."""
        store = self._layers[layer]
        if not store.staged:
            raise RuntimeError(f'layer {layer}: commit() without a staged frame')
        store.staged = False
        frame_id = self._appended[layer]
        self._appended[layer] += 1
        if store.count < self.capacity:  # the staged frame already sits in its slot
            store.count += 1
            store.frame_ids.append(frame_id)
            return
        slot = self.initial_frames + store.head  # full: overwrite the oldest window frame
        store.head = (store.head + 1) % self.window_frames
        store.frame_ids[slot] = frame_id
        store.k[:, :, slot] = store.k[:, :, self.capacity]
        store.v[:, :, slot] = store.v[:, :, self.capacity]

    def get(self, layer: int, *, ordered: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Keys and values held by ``layer``, or None when empty.

        Args:
            ordered: True returns frames oldest first (a copy once the window has wrapped); False
                returns the slots as stored (a view, no copy), enough for attention, which is
                invariant to the order of key frames (every frame shares the same 2D positions).
        Returns:
            ``(k, v)``, each ``[B, heads, F, P, head_dim]`` with ``F = num_frames``. Views of the
            internal buffers are read-only and valid until the next ``append``/``reset``.
        """
        store = self._layers[layer]
        if store.count == 0:
            return None
        if store.head == 0 or not ordered:
            return store.k[:, :, : store.count], store.v[:, :, : store.count]
        order = torch.tensor(self._order(store), device=store.k.device)
        return store.k.index_select(2, order), store.v.index_select(2, order)

    def _order(self, store: _LayerStore) -> list[int]:
        """Slot indices in temporal order."""
        if store.head == 0:
            return list(range(store.count))
        sinks = list(range(self.initial_frames))
        window = [
            self.initial_frames + (store.head + i) % self.window_frames
            for i in range(self.window_frames)
        ]
        return sinks + window
