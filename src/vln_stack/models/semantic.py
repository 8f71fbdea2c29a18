"""Semantic branch: JanusVLN image preprocessing + the stock Qwen2.5-VL vision tower.

Preprocessing is the released JanusVLN loader (CHECKPOINTS.md §1.5, §2.4 step 7, §3.2): Pillow
resizes the 8-bit RGB frame with ``Image.Resampling.BICUBIC`` to the target width (644 for the
released model) and a height of ``round(H * W_t / W / 14) * 14`` (Python round), the result becomes
float32 in [0, 1] (uint8 / 255, as torchvision's ToTensor), and a frame taller than the target is
centre-cropped to it. Pillow's bicubic is not torch's ``interpolate(bicubic, antialias=True)``: on
real frames those differ by up to 7/255, which moves the model's output, so Pillow is used. That
tensor feeds VGGT; the Qwen tower gets the same tensor cropped top-left to multiples of 28,
CLIP-normalised and flattened into patches in the Qwen2-VL processor order.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers.models.qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionConfig,
)

__all__ = [
    'CLIP_MEAN',
    'CLIP_STD',
    'SemanticEncoder',
    'crop_for_qwen',
    'preprocess_rgb',
    'qwen_patchify',
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess_rgb(rgb: np.ndarray, target_width: int, *, patch_size: int = 14) -> torch.Tensor:
    """JanusVLN / VGGT "crop"-mode loader on one frame, with Pillow's bicubic resize.

    Args:
        rgb: ``[H, W, 3]`` uint8 RGB.
        target_width: output width (644 released, 518 upstream VGGT).
    Returns:
        ``[3, H', W']`` float32 in [0, 1], ``W' = target_width``,
        ``H' = min(round(H * W' / W / patch) * patch, target_width)`` (centre crop when taller).
    Raises:
        ValueError: not an ``HxWx3`` uint8 image, or so flat that the resized height is 0.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an HxWx3 RGB image, got shape {rgb.shape}')
    if rgb.dtype != np.uint8:
        raise ValueError(f'expected uint8 RGB, got {rgb.dtype}')
    height, width = rgb.shape[:2]
    new_w = int(target_width)
    new_h = round(height * (new_w / width) / patch_size) * patch_size  # Python round, as released
    if new_h < patch_size:
        raise ValueError(f'a {width}x{height} frame resized to width {new_w} has no {patch_size} px '
                         'row left')
    image = Image.fromarray(np.ascontiguousarray(rgb))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).to(torch.float32) / 255.0
    if new_h > target_width:
        top = (new_h - target_width) // 2
        x = x[:, top : top + target_width]
    return x


def crop_for_qwen(image: torch.Tensor, factor: int = 28) -> torch.Tensor:
    """Top-left crop of ``image [3, H, W]`` to multiples of ``factor`` (patch 14 x merge 2)."""
    h = image.shape[-2] // factor * factor
    w = image.shape[-1] // factor * factor
    if h == 0 or w == 0:
        raise ValueError(f'image {tuple(image.shape)} is smaller than one {factor}x{factor} cell')
    return image[..., :h, :w]


def qwen_patchify(
    image: torch.Tensor,
    *,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
    mean=CLIP_MEAN,
    std=CLIP_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-normalise and flatten one image like the Qwen2-VL image processor.

    Args:
        image: ``[3, H, W]`` in [0, 1], H and W multiples of ``patch_size * merge_size``.
    Returns:
        ``pixel_values [gh*gw, 3*T*p*p]`` ordered (t, h/2, w/2, dy, dx) with per-patch features in
        (C, T, p, p) order (the frame duplicated over T), and
        ``image_grid_thw [1, 3] = (1, gh, gw)``.
    """
    c, hh, ww = image.shape
    unit = patch_size * merge_size
    if hh % unit or ww % unit:
        raise ValueError(f'image {hh}x{ww} is not a multiple of {unit}; crop_for_qwen() first')
    m = torch.tensor(mean, dtype=image.dtype, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=image.dtype, device=image.device).view(3, 1, 1)
    x = (image - m) / s
    gh, gw = hh // patch_size, ww // patch_size
    x = x.reshape(
        c, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size, patch_size
    )
    x = x.permute(1, 4, 2, 5, 0, 3, 6)  # (h/2, w/2, dy, dx, C, py, px)
    x = x.unsqueeze(5).expand(-1, -1, -1, -1, -1, temporal_patch_size, -1, -1)
    pixel_values = x.reshape(gh * gw, c * temporal_patch_size * patch_size * patch_size)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=image.device)
    return pixel_values, grid


class SemanticEncoder(nn.Module):
    """The Qwen2.5-VL vision tower (transformers class, used as is) on one preprocessed frame."""

    def __init__(self, visual: Qwen2_5_VisionTransformerPretrainedModel) -> None:
        super().__init__()
        self.visual = visual
        cfg = visual.config
        self.patch_size = int(cfg.patch_size)
        self.merge_size = int(cfg.spatial_merge_size)
        self.temporal_patch_size = int(cfg.temporal_patch_size)

    @classmethod
    def from_config(
        cls, vision_config: Qwen2_5_VLVisionConfig | dict, *, seed: int = 0
    ) -> SemanticEncoder:
        """Random-weight tower (weights are loaded later by the caller)."""
        if isinstance(vision_config, dict):
            vision_config = Qwen2_5_VLVisionConfig(**vision_config)
        else:
            vision_config = copy.deepcopy(vision_config)
        vision_config._attn_implementation = 'sdpa'
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(Qwen2_5_VisionTransformerPretrainedModel(vision_config).eval())

    @property
    def out_dim(self) -> int:
        return int(self.visual.config.out_hidden_size)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """``image [3, H, W]`` in [0, 1] (any size) -> tokens ``[H/28 * W/28, out_hidden]``, grid.

        The grid is the merged (rows, cols) = (H // 28, W // 28) after the top-left crop.
        """
        image = crop_for_qwen(image, self.patch_size * self.merge_size)
        pixel_values, grid = qwen_patchify(
            image,
            patch_size=self.patch_size,
            merge_size=self.merge_size,
            temporal_patch_size=self.temporal_patch_size,
        )
        param = next(self.visual.parameters())
        out = self.visual(
            pixel_values.to(param.device, param.dtype), grid_thw=grid.to(param.device)
        )
        merged_hw = (int(grid[0, 1]) // self.merge_size, int(grid[0, 2]) // self.merge_size)
        return out.pooler_output, merged_hw
