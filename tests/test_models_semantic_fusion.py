"""Preprocessing sizes, Qwen patch order, 2x2 merge order, merger layout and fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vln_stack.models.fusion import (
    SpatialMerger,
    fuse_per_frame,
    fuse_released,
    merge_2x2,
    patch_tokens,
)
from vln_stack.models.presets import TINY_VISION
from vln_stack.models.semantic import SemanticEncoder, crop_for_qwen, preprocess_rgb, qwen_patchify


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_preprocess_sizes_match_janusvln():
    x = preprocess_rgb(_rgb(480, 640), 644)
    assert x.shape == (3, 490, 644)  # 34.500000000000004 rounds to 35 rows of 14 px
    q = crop_for_qwen(x)
    assert q.shape == (3, 476, 644)
    _, grid = qwen_patchify(q)
    assert grid.tolist() == [[1, 34, 46]] and 34 * 46 // 4 == 391
    assert preprocess_rgb(_rgb(240, 320), 224).shape == (3, 168, 224)
    assert preprocess_rgb(_rgb(640, 480), 644).shape == (
        3,
        644,
        644,
    )  # taller than wide: centre crop
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.allclose(x * 255, (x * 255).round(), atol=1e-4)  # uint8 levels, like PIL


def test_preprocess_no_resize_is_plain_scaling():
    rgb = _rgb(490, 644, seed=3)
    x = preprocess_rgb(rgb, 644)
    assert torch.equal(x, torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0)


def test_preprocess_resize_height_rule_and_constant_colour():
    rgb = np.zeros((96, 128, 3), dtype=np.uint8)
    rgb[...] = (10, 128, 250)
    x = preprocess_rgb(rgb, 64)
    assert x.shape == (3, 42, 64)  # round(96 * 64 / 128 / 14) = round(3.43) = 3 -> 42
    assert torch.equal(x[:, 5, 7] * 255, torch.tensor([10.0, 128.0, 250.0]))
    assert torch.equal(x, x[:, :1, :1].expand_as(x))


def _coordinate_image(gh: int, gw: int, p: int = 14) -> torch.Tensor:
    """[3, gh*p, gw*p]: channel 0 = patch row, 1 = patch col, 2 = pixel index inside the patch."""
    rows = torch.arange(gh).repeat_interleave(p)[:, None].expand(gh * p, gw * p)
    cols = torch.arange(gw).repeat_interleave(p)[None, :].expand(gh * p, gw * p)
    inner = (torch.arange(p)[:, None] * p + torch.arange(p)[None, :]).repeat(gh, gw)
    return torch.stack((rows, cols, inner)).float()


def test_qwen_patch_order_is_t_h2_w2_dy_dx_with_c_t_p_p_features():
    gh, gw = 4, 6
    img = _coordinate_image(gh, gw)
    pv, grid = qwen_patchify(img, mean=(0, 0, 0), std=(1, 1, 1))
    assert pv.shape == (gh * gw, 3 * 2 * 14 * 14) and grid.tolist() == [[1, gh, gw]]
    feat = pv.view(gh * gw, 3, 2, 14, 14)
    k = 0
    for h2 in range(gh // 2):
        for w2 in range(gw // 2):
            for dy in range(2):
                for dx in range(2):
                    assert torch.all(feat[k, 0] == 2 * h2 + dy) and torch.all(
                        feat[k, 1] == 2 * w2 + dx
                    )
                    assert torch.equal(feat[k, 2, 0].flatten(), torch.arange(196).float())
                    assert torch.equal(feat[k, :, 0], feat[k, :, 1])  # frame duplicated over T
                    k += 1


def test_merge_order_matches_qwen_merged_token_order():
    gh, gw = (
        5,
        7,
    )  # odd: VGGT grid is cropped to 4x6, like the Qwen image is cropped to 28 multiples
    coords = torch.tensor([[r, c] for r in range(gh) for c in range(gw)], dtype=torch.float32)
    merged, merged_hw = merge_2x2(coords, (gh, gw))
    assert merged_hw == (2, 3) and merged.shape == (2 * 3 * 4, 2)
    img = crop_for_qwen(_coordinate_image(gh, gw))
    pv, _ = qwen_patchify(img, mean=(0, 0, 0), std=(1, 1, 1))
    qwen_rc = pv.view(-1, 3, 2 * 14 * 14)[:, :2, 0]  # (row, col) of each processor patch
    assert torch.equal(merged, qwen_rc)
    # every 4 consecutive rows are one merged cell (row-major over cells)
    cell = merged.view(6, 4, 2)
    assert cell[4].tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]


def test_patch_tokens_drops_special_tokens():
    layer = torch.arange(5 + 6).float().view(1, 11, 1).expand(1, 11, 4)
    out = patch_tokens(layer, (2, 3))
    assert out.shape == (6, 4) and out[0, 0] == 5
    with pytest.raises(ValueError):
        patch_tokens(layer, (3, 3))


def test_merger_layout_released_shapes():
    with torch.device('meta'):
        merger = SpatialMerger(2048, 4096, 3584)
    shapes = {k: tuple(v.shape) for k, v in merger.state_dict().items()}
    assert shapes == {
        'ln_q.weight': (2048,),
        'mlp.0.weight': (4096, 8192),
        'mlp.0.bias': (4096,),
        'mlp.2.weight': (3584, 4096),
        'mlp.2.bias': (3584,),
    }
    assert sum(p.numel() for p in merger.parameters()) == 48_244_224  # CHECKPOINTS.md §2.3


def test_merger_math():
    torch.manual_seed(0)
    merger = SpatialMerger(6, 10, 5)
    with torch.no_grad():
        merger.ln_q.weight.uniform_(0.5, 1.5)
    x = torch.randn(8, 6)
    rms = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * merger.ln_q.weight
    h = rms.reshape(2, 24) @ merger.mlp[0].weight.T + merger.mlp[0].bias
    h = 0.5 * h * (1 + torch.erf(h / 2**0.5))  # exact GELU
    ref = h @ merger.mlp[2].weight.T + merger.mlp[2].bias
    assert torch.allclose(merger(x), ref, atol=1e-5)


def test_fusion_modes():
    s = [torch.full((3, 2), float(i)) for i in range(3)]
    g = torch.ones(3, 2)
    assert torch.equal(fuse_per_frame(s[1], g, 0.2), torch.full((3, 2), 1.2))
    out = fuse_released(s, g, lam=0.5)
    assert [float(o[0, 0]) for o in out] == [0.5, 1.5, 2.5]
    with pytest.raises(ValueError):
        fuse_per_frame(s[0], torch.ones(4, 2))


def test_semantic_encoder_tiny_shapes():
    enc = SemanticEncoder.from_config(TINY_VISION, seed=0)
    with torch.no_grad():
        tokens, hw = enc(preprocess_rgb(_rgb(240, 320), 224))
    assert hw == (6, 8) and tokens.shape == (48, TINY_VISION['out_hidden_size'])
    assert torch.isfinite(tokens).all()
