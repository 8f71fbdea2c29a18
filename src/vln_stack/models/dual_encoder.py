"""JanusVLN dual implicit memory: per frame, semantic (Qwen ViT) + spatial (streaming VGGT) tokens.

``encode(rgb)`` runs once per new camera frame:

1. JanusVLN preprocessing -> ``[3, H', W']`` in [0, 1] (`semantic.preprocess_rgb`).
2. Spatial: VGGT aggregator on that frame with the episode's bounded `FrameKVCache` (8 sink + 48
   recent frames); layer ``vggt_layer`` patch tokens -> 2x2 merge -> `SpatialMerger` -> ``[N, D]``.
3. Semantic: the Qwen2.5-VL vision tower on the top-left 28-multiple crop -> ``[N, D]``.
4. ``fused = semantic + lam * spatial`` (per-frame fusion; see `fusion.fuse_released` for the
   released variant where the current frame's spatial tokens are added to every prompt image).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig

from .checkpoint import (
    VISUAL_PREFIXES,
    JanusSettings,
    check_folder,
    load_exact,
    read_config,
    read_tensors,
    strip_prefix,
    visual_state,
)
from .fusion import SpatialMerger, fuse_per_frame, merge_2x2, patch_tokens
from .kv_cache import FrameKVCache
from .semantic import SemanticEncoder, preprocess_rgb
from .vggt import VGGT_PRESETS, VGGTAggregator

__all__ = ['DualMemoryEncoder', 'FusedFrame']


@dataclass
class FusedFrame:
    """Encoder output for one frame (tensors float32 on the encoder's ``output_device``).

    Attributes:
        fused: ``[N, D]`` tokens that replace this frame's ``<|image_pad|>`` embeddings.
        semantic: ``[N, D]`` Qwen vision-tower tokens.
        spatial: ``[N, D]`` merger-projected VGGT tokens.
        grid_hw: merged token grid (rows, cols), ``rows * cols == N``.
        frame_index: 0-based index of this frame in the episode.
        memory_frames: frames held by the VGGT memory after this frame (bounded).
        latency_ms: wall time of ``encode``.
    """

    fused: torch.Tensor
    semantic: torch.Tensor
    spatial: torch.Tensor
    grid_hw: tuple[int, int]
    frame_index: int
    memory_frames: int
    latency_ms: float


def _to_keeping_rope_fp32(module: torch.nn.Module, device: torch.device,
                          dtype: torch.dtype) -> torch.nn.Module:
    """``module.to(device, dtype)`` except RoPE ``inv_freq`` buffers, which stay float32 (as in
    a transformers model loaded in bf16: they are computed in fp32 and never cast)."""
    keep = {name: buf.detach().clone() for name, buf in module.named_buffers()
            if name.rsplit('.', 1)[-1] in ('inv_freq', 'original_inv_freq')
            and buf.dtype == torch.float32}
    module = module.to(device, dtype)
    for name, buf in keep.items():
        owner, attr = (module.get_submodule(name.rsplit('.', 1)[0]) if '.' in name else module,
                       name.rsplit('.', 1)[-1])
        setattr(owner, attr, buf.to(device))
    return module


class DualMemoryEncoder:
    """Streaming dual encoder; call `reset` at every episode start and `encode` per frame."""

    def __init__(
        self,
        aggregator: VGGTAggregator,
        merger: SpatialMerger,
        semantic: SemanticEncoder,
        *,
        settings: JanusSettings,
        device: str | torch.device = 'cpu',
        dtype: torch.dtype = torch.float32,
        output_device: str | torch.device = 'cpu',
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.output_device = torch.device(output_device)
        self.aggregator = aggregator.to(self.device, dtype).eval()
        self.merger = merger.to(self.device, dtype).eval()
        self.semantic = _to_keeping_rope_fp32(semantic, self.device, dtype).eval()
        self.layer_index = settings.vggt_layer % aggregator.depth
        self.cache = aggregator.new_cache(
            initial_frames=settings.kv_initial_frames, window_frames=settings.kv_window_frames
        )
        self._clock = clock
        self._frames = 0
        self._frame_hw: tuple[int, int] | None = None
        if semantic.out_dim != merger.mlp[2].out_features:
            raise ValueError(
                f'semantic width {semantic.out_dim} != merger output {merger.mlp[2].out_features}'
            )

    # ---- construction --------------------------------------------------------------------------
    @staticmethod
    def build_modules(
        settings: JanusSettings, vision_config, *, seed: int = 0, random_init: bool = True
    ) -> tuple[VGGTAggregator, SpatialMerger, SemanticEncoder]:
        """Aggregator, merger and Qwen vision tower for ``settings``.

        Works under ``torch.device('meta')``. ``vision_config`` is a `Qwen2_5_VLVisionConfig` or
        its dict; ``random_init=False`` skips the deterministic re-initialisation of the
        aggregator (slow at real size; pointless before loading weights).
        """
        if settings.vggt_preset not in VGGT_PRESETS:
            raise ValueError(
                f'unknown vggt preset {settings.vggt_preset!r}; known: {sorted(VGGT_PRESETS)}'
            )
        vcfg = VGGT_PRESETS[settings.vggt_preset]
        with torch.random.fork_rng(devices=[]):  # seeded without touching the global RNG
            torch.manual_seed(seed)
            aggregator = VGGTAggregator(vcfg)
            if random_init:
                aggregator.init_random(seed)
            merger = SpatialMerger(
                2 * vcfg.embed_dim, settings.merger_hidden_dim, settings.llm_width
            )
            semantic = SemanticEncoder.from_config(vision_config, seed=seed)
        return aggregator, merger, semantic

    @classmethod
    def from_preset(
        cls, name: str = 'tiny', *, seed: int = 0, device: str | torch.device = 'cpu', **kwargs
    ) -> DualMemoryEncoder:
        """Random weights at a named size (``tiny`` for CPU tests, ``janusvln-7b`` real size)."""
        from .presets import ENCODER_PRESETS

        if name not in ENCODER_PRESETS:
            raise ValueError(f'unknown encoder preset {name!r}; known: {sorted(ENCODER_PRESETS)}')
        settings, vision = ENCODER_PRESETS[name]
        return cls(
            *cls.build_modules(settings, vision, seed=seed),
            settings=settings,
            device=device,
            **kwargs,
        )

    @classmethod
    def from_folder(
        cls,
        path: str | Path,
        device: str | torch.device = 'cpu',
        *,
        dtype: torch.dtype = torch.float32,
        **kwargs,
    ) -> DualMemoryEncoder:
        """Load ``vggt.aggregator.*``, ``merger.*`` and the Qwen vision tower from a folder.

        Raises:
            FileNotFoundError: the folder, its config.json or its weights are missing (names the
                path).
            ValueError: the weights do not match the architecture the config describes (lists
                keys).
        """
        folder = check_folder(path)
        cfg = read_config(folder)
        settings = JanusSettings.from_config(cfg)
        if 'vision_config' not in cfg:
            raise ValueError(
                f'{folder / "config.json"} has no vision_config (not a qwen2_5_vl config)'
            )
        # through the full config class, which tolerates legacy fields (in_chans, ...)
        vision_config = Qwen2_5_VLConfig(**cfg).vision_config
        aggregator, merger, semantic = cls.build_modules(
            settings, vision_config, random_init=False
        )
        state = read_tensors(folder, ('vggt.aggregator.', 'merger.') + VISUAL_PREFIXES)
        load_exact(
            aggregator,
            strip_prefix(state, 'vggt.aggregator.'),
            what='VGGT aggregator (vggt.aggregator.*)',
            source=folder,
        )
        load_exact(
            merger, strip_prefix(state, 'merger.'), what='spatial merger (merger.*)', source=folder
        )
        load_exact(
            semantic.visual,
            visual_state(state),
            what='Qwen vision tower (visual.*)',
            source=folder,
        )
        return cls(
            aggregator, merger, semantic, settings=settings, device=device, dtype=dtype, **kwargs
        )

    # ---- streaming -----------------------------------------------------------------------------
    @property
    def frames_seen(self) -> int:
        """Frames encoded since the last reset."""
        return self._frames

    @property
    def memory(self) -> FrameKVCache:
        """The VGGT spatial memory (global-attention K/V per frame)."""
        return self.cache

    def reset(self) -> None:
        """Forget the episode: empty the VGGT memory and restart frame numbering."""
        self.cache.reset()
        self._frames = 0
        self._frame_hw = None

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """``[H, W, 3]`` uint8 -> ``[3, H', W']`` in [0, 1] at ``settings.input_width``."""
        return preprocess_rgb(
            rgb, self.settings.input_width, patch_size=self.aggregator.cfg.patch_size
        )

    @torch.inference_mode()
    def encode(self, rgb: np.ndarray) -> FusedFrame:
        """Encode the next frame of the episode.

        Args:
            rgb: ``[H, W, 3]`` uint8 RGB; the size must stay constant within an episode.
        Returns:
            `FusedFrame` with ``[N, D]`` tensors, ``N = (H'//28) * (W'//28)``.
        """
        t0 = self._clock()
        image = self.preprocess(rgb).to(self.device, self.dtype)
        hw = (image.shape[1], image.shape[2])
        if self._frame_hw is None:
            self._frame_hw = hw
        elif hw != self._frame_hw:
            raise ValueError(
                f'frame size changed within an episode ({self._frame_hw} -> {hw}); call reset()'
            )
        patch = self.aggregator.cfg.patch_size
        grid = (hw[0] // patch, hw[1] // patch)
        layer_out = self.aggregator.forward_frame(
            image[None], self.cache, layers=[self.layer_index]
        )[0]
        tokens = patch_tokens(layer_out, grid, self.aggregator.patch_start_idx)
        merged, merged_hw = merge_2x2(tokens, grid)
        spatial = self.merger(merged)
        semantic, sem_hw = self.semantic(image)
        if sem_hw != merged_hw:
            raise RuntimeError(f'semantic grid {sem_hw} != spatial grid {merged_hw}')
        out = self.output_device
        semantic = semantic.to(out, torch.float32)
        spatial = spatial.to(out, torch.float32)
        fused = fuse_per_frame(semantic, spatial, self.settings.lam)
        index = self._frames
        self._frames += 1
        return FusedFrame(
            fused=fused,
            semantic=semantic,
            spatial=spatial,
            grid_hw=merged_hw,
            frame_index=index,
            memory_frames=self.cache.num_frames,
            latency_ms=(self._clock() - t0) * 1000.0,
        )
