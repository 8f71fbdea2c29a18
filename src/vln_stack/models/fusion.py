"""Spatial merger (VGGT features -> LLM width) and the JanusVLN semantic/spatial fusion.

CHECKPOINTS.md §2.4: take one aggregator layer (released: index 22 of 24), patch tokens only, crop
the patch grid to even sides (top-left), group 2x2 cells in the Qwen2.5-VL merged-token order, then
``ln_q`` RMSNorm(2C) per token -> concat 4 -> Linear(8C -> hidden) -> GELU (exact) -> Linear(-> D).
Parameter names match the checkpoint's ``merger.*`` keys: ``ln_q.weight``, ``mlp.0.*``,
``mlp.2.*``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    'RMSNorm',
    'SpatialMerger',
    'fuse_per_frame',
    'fuse_released',
    'merge_2x2',
    'patch_tokens',
]


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back (Qwen2 style); parameter ``weight [dim]``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def patch_tokens(
    layer_out: torch.Tensor, grid_hw: tuple[int, int], patch_start_idx: int = 5
) -> torch.Tensor:
    """Drop camera/register tokens of one frame's layer output.

    Args:
        layer_out: ``[P, 2C]`` or ``[1, P, 2C]`` with ``P = patch_start_idx + h*w``.
    Returns:
        ``[h*w, 2C]`` patch tokens, row-major.
    """
    if layer_out.dim() == 3:
        if layer_out.shape[0] != 1:
            raise ValueError('patch_tokens expects a single frame')
        layer_out = layer_out[0]
    h, w = grid_hw
    tokens = layer_out[patch_start_idx:]
    if tokens.shape[0] != h * w:
        raise ValueError(f'{tokens.shape[0]} patch tokens do not fill a {h}x{w} grid')
    return tokens


def merge_2x2(
    tokens: torch.Tensor, grid_hw: tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Order patch tokens like Qwen2.5-VL's merger input: (h/2, w/2, dy, dx).

    Args:
        tokens: ``[h*w, C]`` row-major patch tokens.
    Returns:
        ``[(h//2)*(w//2)*4, C]`` (the last odd row/column dropped; every 4 consecutive rows form
        one merged cell, row-major over cells and over (dy, dx) inside a cell) and the merged grid
        ``(h//2, w//2)``.
    """
    h, w = grid_hw
    h2, w2 = h // 2, w // 2
    c = tokens.shape[-1]
    grid = tokens.reshape(h, w, c)[: h2 * 2, : w2 * 2]
    grid = grid.reshape(h2, 2, w2, 2, c).permute(0, 2, 1, 3, 4)
    return grid.reshape(h2 * w2 * 4, c), (h2, w2)


class SpatialMerger(nn.Module):
    """JanusVLN ``merger``: RMSNorm(2C), 2x2 concat, Linear(8C, hidden), GELU, Linear(hidden, D).

    Args:
        in_dim: per-patch width 2C (2048 for VGGT-1B).
        hidden_dim: 4096 released (``vggt_merger_hidden_dim`` default).
        out_dim: LLM width D (3584 for Qwen2.5-VL-7B).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, merge_size: int = 2) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.unit = merge_size * merge_size
        self.ln_q = RMSNorm(in_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim * self.unit, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim)
        )

    def forward(self, merged_order_tokens: torch.Tensor) -> torch.Tensor:
        """``[N*4, 2C]`` tokens in `merge_2x2` order -> ``[N, D]``."""
        x = self.ln_q(merged_order_tokens).reshape(-1, self.in_dim * self.unit)
        return self.mlp(x)


def fuse_per_frame(
    semantic: torch.Tensor, spatial: torch.Tensor, lam: float = 0.2
) -> torch.Tensor:
    """``F = S + lam * MLP(G)`` for one frame; both ``[N, D]``."""
    if semantic.shape != spatial.shape:
        raise ValueError(
            f'semantic {tuple(semantic.shape)} and spatial {tuple(spatial.shape)} differ'
        )
    return semantic + lam * spatial.to(semantic.dtype)


def fuse_released(
    semantics: Sequence[torch.Tensor], current_spatial: torch.Tensor, lam: float = 0.2
) -> list[torch.Tensor]:
    """Released JanusVLN fusion: the CURRENT frame's spatial tokens are added to every image.

    Args:
        semantics: per prompt image (history oldest -> newest, then current) ``[N, D]``.
        current_spatial: ``[N, D]`` merger output of the current frame.
    Returns:
        ``[S_i + lam * current_spatial for each image]``.
    """
    return [fuse_per_frame(s, current_spatial, lam) for s in semantics]
