"""Config and layers of the VGGT aggregator (:mod:`vln_stack.models.vggt`): `VGGTConfig`, 2D RoPE,
LayerScale, Mlp, attention (with the cached streaming path), the pre-norm block and the DINOv2
patch embedding.

Module and parameter names match the released state dict (see :mod:`vln_stack.models.vggt`).
Shapes: B batch, N tokens, C channels, P tokens per frame, h x w patch grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .kv_cache import FrameKVCache


__all__ = ['Attention', 'Block', 'DinoPatchEmbed', 'LayerScale', 'Mlp', 'RoPE2D', 'VGGTConfig']


@dataclass(frozen=True)
class VGGTConfig:
    """Aggregator hyper-parameters; ``img_size // patch_size`` is the stored DINO pos-grid side."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24  # frame/global block pairs
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    dino_depth: int = 24
    dino_num_heads: int = 16
    rope_freq: float = 100.0
    init_values: float = 0.01  # LayerScale init of the AA blocks (random init only)
    dino_init_values: float = 1.0  # LayerScale init of the DINO blocks (random init only)
    init_std: float = 0.02  # std of random Linear / token init

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def patch_start_idx(self) -> int:
        """Index of the first patch token in a frame: camera (1) + registers."""
        return 1 + self.num_register_tokens


class RoPE2D(nn.Module):
    """2D rotary embedding: first half of head_dim rotated by the row, second half by the column.

    Each half (d = head_dim / 2) uses inv_freq_i = base^(-2i/d), i < d/2, with the rotate-half
    pairing (j <-> j + d/2) and cos/sin tiled twice.
    """

    _TABLE_ENTRIES = 8  # cos/sin tables kept (streaming reuses one positions tensor per size)

    def __init__(self, base: float = 100.0) -> None:
        super().__init__()
        self.base = base
        # (id(pos), dim, dtype) -> (pos, cos, sin). The entry holds `pos` itself, so its id
        # cannot be reused by another tensor while cached; positions must not be modified in
        # place after use (those of `VGGTAggregator.positions` never are).
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _table(
        self, pos: torch.Tensor, dim: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`_cos_sin`, computed once per positions tensor (same values, no per-call work)."""
        key = (id(pos), dim, dtype)
        hit = self._tables.get(key)
        if hit is not None and hit[0] is pos:
            return hit[1], hit[2]
        cos, sin = self._cos_sin(pos, dim, dtype)
        if len(self._tables) >= self._TABLE_ENTRIES:
            self._tables.pop(next(iter(self._tables)))
        self._tables[key] = (pos, cos, sin)
        return cos, sin

    def _cos_sin(
        self, pos: torch.Tensor, dim: int, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin ``[N, head_dim]`` for positions ``pos [N, 2]`` (row, col), computed in fp32."""
        half = dim // 2
        inv_freq = 1.0 / (
            self.base ** (torch.arange(0, half, 2, device=pos.device, dtype=torch.float32) / half)
        )
        parts_cos, parts_sin = [], []
        for axis in (0, 1):
            ang = pos[:, axis].to(torch.float32)[:, None] * inv_freq[None, :]
            ang = torch.cat((ang, ang), dim=-1)
            parts_cos.append(ang.cos())
            parts_sin.append(ang.sin())
        return torch.cat(parts_cos, dim=-1).to(dtype), torch.cat(parts_sin, dim=-1).to(dtype)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate ``x [..., N, head_dim]`` by ``pos [N, 2]`` (long, row/col)."""
        d = x.shape[-1]
        cos, sin = self._table(pos, d, x.dtype)
        x4 = x.unflatten(-1, (2, 2, d // 4))  # (axis, half, d/4)
        rotated = torch.stack((-x4[..., 1, :], x4[..., 0, :]), dim=-2).flatten(
            -3
        )  # rotate-half per axis
        return x * cos + rotated * sin


class LayerScale(nn.Module):
    """Per-channel multiplier ``gamma [C]``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention with fused qkv, optional per-head q/k LayerNorm and 2D RoPE."""

    def __init__(self, dim: int, num_heads: int, *, qk_norm: bool, rope: RoPE2D | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = rope

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [B, N, C]`` -> raw q, k, v, each ``[B, heads, N, head_dim]``."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def _qk(self, t: torch.Tensor, norm: nn.Module, pos: torch.Tensor | None) -> torch.Tensor:
        t = norm(t)
        if self.rope is not None and pos is not None:
            t = self.rope(t, pos)
        return t

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = o.shape
        return self.proj(o.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x [B, N, C]``, ``pos [N, 2]``, ``attn_mask [N, N]`` (True: attend) -> ``[B, N, C]``"""
        q, k, v = self._split(x)
        q = self._qk(q, self.q_norm, pos)
        k = self._qk(k, self.k_norm, pos)
        return self._out(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask))

    def forward_cached(
        self, x: torch.Tensor, pos: torch.Tensor, cache: FrameKVCache, layer: int
    ) -> torch.Tensor:
        """One new frame attending to the cached frames and itself; then stores its K/V.

        The new frame's keys/values are staged in ``cache`` (layer ``layer``) next to the held
        frames, one attention call runs over the held frames plus the new one in place, and only
        then is the frame committed (so at capacity it attends to ``capacity + 1`` frames and the
        eviction happens after, as in the released code).

        What is cached: keys AFTER k_norm and RoPE (cast to V's dtype, the dtype attention uses),
        and V as is. The released StreamVGGT / JanusVLN code caches the raw qkv keys and
        re-applies k_norm and RoPE to every cached key at every step. Both give the same
        attention: k_norm is a per-token LayerNorm over head_dim (it only depends on that token's
        raw key), and RoPE rotates each token by its 2D patch position, which is the same for
        every frame (CHECKPOINTS.md §1.4: no temporal index; the released code rotates the cached
        keys with the current frame's positions, which equal the positions they had when
        cached). So a cached frame's normalised + rotated key never changes and is computed once.
        The keys are presented in storage order (sinks, ring buffer, new frame) rather than
        chronologically; softmax attention is invariant to the order of the key/value pairs.

        Args:
            x: ``[B, P, C]`` tokens of the new frame; pos: ``[P, 2]`` (shared by every frame).
            cache: the memory; layer: this block's index in it.
        Returns:
            ``out [B, P, C]``.
        """
        q, k, v = self._split(x)
        q = self._qk(q, self.q_norm, pos)
        k = self._qk(k, self.k_norm, pos).to(v.dtype)  # computed once per frame, then cached
        k_all, v_all = cache.stage(layer, k.unsqueeze(2), v.unsqueeze(2))  # [B, H, F+1, P, D]
        # views of the contiguous slots [0, F]: flattening frames x tokens copies nothing
        o = F.scaled_dot_product_attention(q, k_all.flatten(2, 3), v_all.flatten(2, 3))
        cache.commit(layer)
        return self._out(o)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))`` then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        init_values: float,
        eps: float,
        qk_norm: bool,
        rope: RoPE2D | None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, rope=rope)
        self.ls1 = LayerScale(dim, init_values)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_values)

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), pos, attn_mask))
        return x + self.ls2(self.mlp(self.norm2(x)))

    def forward_cached(
        self, x: torch.Tensor, pos: torch.Tensor, cache: FrameKVCache, layer: int
    ) -> torch.Tensor:
        """See `Attention.forward_cached` (stores this frame's K/V); returns ``[B, P, C]``."""
        x = x + self.ls1(self.attn.forward_cached(self.norm1(x), pos, cache, layer))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _ConvPatch(nn.Module):
    """Non-overlapping patch projection ``[N, 3, H, W] -> [N, h*w, C]`` (row-major)."""

    def __init__(self, patch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoPatchEmbed(nn.Module):
    """DINOv2 ViT with registers, VGGT's patch embedding (only patch tokens leave it)."""

    def __init__(self, cfg: VGGTConfig) -> None:
        super().__init__()
        c = cfg.embed_dim
        grid = cfg.img_size // cfg.patch_size
        self.patch_size = cfg.patch_size
        self.num_register_tokens = cfg.num_register_tokens
        self.patch_embed = _ConvPatch(cfg.patch_size, c)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, c))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, c))
        self.mask_token = nn.Parameter(torch.zeros(1, c))  # unused at inference; in the checkpoint
        self.blocks = nn.ModuleList(
            [
                Block(
                    c,
                    cfg.dino_num_heads,
                    cfg.mlp_ratio,
                    init_values=cfg.dino_init_values,
                    eps=1e-6,
                    qk_norm=False,
                    rope=None,
                )
                for _ in range(cfg.dino_depth)
            ]
        )
        self.norm = nn.LayerNorm(c, eps=1e-6)

    def interpolate_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """Positional embedding ``[1, 1 + h*w, C]``: stored grid resized bicubic (antialias)."""
        n = self.pos_embed.shape[1] - 1
        side = int(round(math.sqrt(n)))
        if (h, w) == (side, side):
            return self.pos_embed
        c = self.pos_embed.shape[-1]
        grid = self.pos_embed[:, 1:].float().reshape(1, side, side, c).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(h, w), mode='bicubic', antialias=True, align_corners=False
        )
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, c)
        return torch.cat((self.pos_embed[:, :1].float(), grid), dim=1).to(self.pos_embed.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, H, W]`` (ImageNet-normalised) -> normalised patch tokens ``[N, h*w, C]``."""
        n, _, hh, ww = x.shape
        h, w = hh // self.patch_size, ww // self.patch_size
        tok = self.patch_embed(x)
        tok = torch.cat((self.cls_token.expand(n, -1, -1), tok), dim=1)
        tok = tok + self.interpolate_pos_embed(h, w)
        tok = torch.cat((tok[:, :1], self.register_tokens.expand(n, -1, -1), tok[:, 1:]), dim=1)
        for blk in self.blocks:
            tok = blk(tok)
        return self.norm(tok)[:, 1 + self.num_register_tokens :]
