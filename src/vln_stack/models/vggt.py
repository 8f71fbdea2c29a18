"""VGGT aggregator (alternating frame / global attention over a DINOv2 patch embedding), streaming.

An independent implementation of the architecture described in /work/shared/CHECKPOINTS.md §1,
with parameter names that match the released state dict (``aggregator.*`` without the prefix), so
the VGGT-1B / JanusVLN weights load with ``load_state_dict``. Only the aggregator is built:
JanusVLN uses no VGGT head at inference. The layers (RoPE, attention, blocks, the DINOv2 patch
embedding) are in :mod:`vln_stack.models.vggt_layers`; this module holds the configuration, the
frame masks and the aggregator.

Shapes used below: B batch, S frames, H x W image (multiples of the patch size), h = H / patch and
w = W / patch the patch grid, P = 1 + num_register_tokens + h * w tokens per frame, C = embed_dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .kv_cache import FrameKVCache
from .vggt_layers import Block, DinoPatchEmbed, RoPE2D, VGGTConfig

__all__ = [
    'VGGT_PRESETS',
    'VGGTConfig',
    'VGGTAggregator',
    'causal_frame_mask',
    'sink_window_frame_mask',
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


VGGT_PRESETS: dict[str, VGGTConfig] = {
    # facebook/VGGT-1B aggregator: DINOv2 ViT-L/14 + 4 registers, 24 AA pairs.
    'vggt-1b': VGGTConfig(),
    # CPU test size: same structure, pos grid 8x8 (always interpolated), LayerScale 1 so attention
    # matters in tests.
    'tiny': VGGTConfig(
        img_size=112,
        embed_dim=64,
        depth=2,
        num_heads=4,
        dino_depth=1,
        dino_num_heads=4,
        init_values=1.0,
    ),
}


def causal_frame_mask(num_frames: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Block-causal frame mask ``[S, S]`` (bool, True = may attend): frame t sees frames <= t."""
    return torch.ones(num_frames, num_frames, dtype=torch.bool, device=device).tril()


def sink_window_frame_mask(
    num_frames: int,
    initial_frames: int,
    window_frames: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Frame mask ``[S, S]`` equal to streaming with a `FrameKVCache(initial, window)`.

    Frame t attends to itself and the frames held in the cache before it was appended:
    ``j <= t and (j < initial_frames or j >= t - window_frames)``.
    """
    t = torch.arange(num_frames, device=device)[:, None]
    j = torch.arange(num_frames, device=device)[None, :]
    return (j <= t) & ((j < initial_frames) | (j >= t - window_frames))


class VGGTAggregator(nn.Module):
    """VGGT aggregator with block-causal global attention (StreamVGGT / JanusVLN variant).

    Inputs are RGB in [0, 1]; ImageNet normalisation happens inside. Output layer i is
    ``frame_blocks[i] output ‖ global_blocks[i] output`` on the channel dim (2C channels).
    """

    def __init__(self, cfg: VGGTConfig = VGGT_PRESETS['vggt-1b']) -> None:
        super().__init__()
        self.cfg = cfg
        c, r = cfg.embed_dim, cfg.num_register_tokens
        self.patch_embed = DinoPatchEmbed(cfg)
        rope = RoPE2D(cfg.rope_freq)
        self.rope = rope
        block_args = dict(init_values=cfg.init_values, eps=1e-5, qk_norm=True, rope=rope)
        self.frame_blocks = nn.ModuleList(
            [Block(c, cfg.num_heads, cfg.mlp_ratio, **block_args) for _ in range(cfg.depth)]
        )
        self.global_blocks = nn.ModuleList(
            [Block(c, cfg.num_heads, cfg.mlp_ratio, **block_args) for _ in range(cfg.depth)]
        )
        # index 0: first frame of a sequence, index 1: every other frame
        self.camera_token = nn.Parameter(torch.zeros(1, 2, 1, c))
        self.register_token = nn.Parameter(torch.zeros(1, 2, r, c))
        self.register_buffer(
            '_resnet_mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            '_resnet_std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False
        )
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    @property
    def depth(self) -> int:
        return self.cfg.depth

    @property
    def patch_start_idx(self) -> int:
        return self.cfg.patch_start_idx

    def init_random(self, seed: int = 0) -> VGGTAggregator:
        """Deterministic random init (tiny preset, tests): weights and tokens ~ N(0, init_std)."""
        gen = torch.Generator().manual_seed(seed)
        std = self.cfg.init_std
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith('gamma'):
                    continue
                if name.endswith('bias') or (p.dim() == 1 and 'norm' in name):
                    p.copy_(torch.ones_like(p) if name.endswith('weight') else torch.zeros_like(p))
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self

    # ---- helpers -------------------------------------------------------------------------------
    def positions(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """RoPE positions ``[P, 2]`` (row, col): specials at (0, 0), patch (r, c) at (r+1, c+1)."""
        key = (h, w, str(device))
        pos = self._pos_cache.get(key)
        if pos is None:
            rr, cc = torch.meshgrid(
                torch.arange(h, device=device), torch.arange(w, device=device), indexing='ij'
            )
            patch = torch.stack((rr.reshape(-1), cc.reshape(-1)), dim=-1) + 1
            special = torch.zeros(self.patch_start_idx, 2, dtype=patch.dtype, device=device)
            pos = torch.cat((special, patch), dim=0)
            self._pos_cache[key] = pos
        return pos

    def _embed(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``images [N, 3, H, W]`` in [0, 1] -> patch tokens ``[N, h*w, C]``, h, w."""
        _, _, hh, ww = images.shape
        p = self.cfg.patch_size
        if hh % p or ww % p:
            raise ValueError(f'image size {hh}x{ww} is not a multiple of the patch size {p}')
        x = (images - self._resnet_mean.to(images.dtype)) / self._resnet_std.to(images.dtype)
        return self.patch_embed(x.to(self.camera_token.dtype)), hh // p, ww // p

    def _special(self, index: int, n: int) -> torch.Tensor:
        """Camera + register tokens ``[n, 1 + R, C]`` of variant ``index`` (0 first, 1 others)."""
        return torch.cat(
            (self.camera_token[:, index], self.register_token[:, index]), dim=1
        ).expand(n, -1, -1)

    # ---- batch (non-cached) ---------------------------------------------------------------------
    def forward(
        self, images: torch.Tensor, *, frame_mask: torch.Tensor | None = None, causal: bool = True
    ) -> list[torch.Tensor]:
        """Non-cached run over a whole sequence.

        Args:
            images: ``[B, S, 3, H, W]`` RGB in [0, 1].
            frame_mask: optional ``[S, S]`` bool (True = frame t may attend to frame j) for the
                global blocks; overrides ``causal``.
            causal: block-causal frames (JanusVLN / StreamVGGT) if True, bidirectional (upstream
                VGGT) if False.
        Returns:
            ``depth`` tensors ``[B, S, P, 2C]``.
        """
        b, s = images.shape[:2]
        patches, h, w = self._embed(images.flatten(0, 1))
        special = torch.cat(
            (
                self._special(0, b).unsqueeze(1),
                self._special(1, b).unsqueeze(1).expand(-1, s - 1, -1, -1),
            ),
            dim=1,
        ).flatten(0, 1)
        x = torch.cat((special, patches), dim=1)  # [B*S, P, C]
        n_tok, c = x.shape[1], x.shape[2]
        pos = self.positions(h, w, x.device)
        if frame_mask is None and causal:
            frame_mask = causal_frame_mask(s, x.device)
        tok_mask = None
        if frame_mask is not None:
            tok_mask = (
                frame_mask.to(x.device).repeat_interleave(n_tok, 0).repeat_interleave(n_tok, 1)
            )
        pos_global = pos.repeat(s, 1)
        outputs = []
        for fblk, gblk in zip(self.frame_blocks, self.global_blocks, strict=True):
            x = fblk(x, pos)
            frame_out = x.view(b, s, n_tok, c)
            x = gblk(x.reshape(b, s * n_tok, c), pos_global, tok_mask)
            outputs.append(torch.cat((frame_out, x.view(b, s, n_tok, c)), dim=-1))
            x = x.reshape(b * s, n_tok, c)
        return outputs

    # ---- streaming -----------------------------------------------------------------------------
    def forward_frame(
        self, image: torch.Tensor, cache: FrameKVCache, *, layers: Sequence[int] | None = None
    ) -> list[torch.Tensor]:
        """Process ONE new frame against the cached global-attention memory, then store its K/V.

        Args:
            image: ``[B, 3, H, W]`` RGB in [0, 1]; H, W constant within an episode.
            cache: `FrameKVCache` with ``num_layers == depth``; the global blocks' K (after
                k_norm and RoPE; the released code caches them before, see
                `Attention.forward_cached`) and V are stored per layer, after attending (so the
                new frame sees every cached frame plus itself; eviction happens afterwards).
            layers: which layer outputs to return (default all). Blocks after ``max(layers)`` are
                skipped and their cache entries are not written, so use the same ``layers`` for a
                whole episode.
        Returns:
            one ``[B, P, 2C]`` tensor per requested layer (frame ‖ global channels).
        """
        if cache.num_layers != self.depth:
            raise ValueError(
                f'cache has {cache.num_layers} layers, aggregator depth is {self.depth}'
            )
        wanted = (
            list(range(self.depth)) if layers is None else [int(i) % self.depth for i in layers]
        )
        last = max(wanted)
        b = image.shape[0]
        patches, h, w = self._embed(image)
        variant = 0 if cache.frames_seen == 0 else 1
        x = torch.cat((self._special(variant, b), patches), dim=1)  # [B, P, C]
        pos = self.positions(h, w, x.device)
        outputs: dict[int, torch.Tensor] = {}
        for i in range(last + 1):
            x = self.frame_blocks[i](x, pos)
            frame_out = x
            x = self.global_blocks[i].forward_cached(x, pos, cache, i)
            if i in wanted:
                outputs[i] = torch.cat((frame_out, x), dim=-1)
        return [outputs[i] for i in wanted]

    def new_cache(self, *, initial_frames: int = 8, window_frames: int = 48) -> FrameKVCache:
        """An empty `FrameKVCache` for this aggregator (released: 8 sink + 48 recent frames)."""
        return FrameKVCache(self.depth, initial_frames=initial_frames, window_frames=window_frames)
