"""VGGT aggregator: checkpoint names/shapes (vggt-1b on meta) and streaming == causal recompute."""

from __future__ import annotations

import pytest
import torch

from vln_stack.models.vggt import (
    VGGT_PRESETS,
    VGGTAggregator,
    causal_frame_mask,
    sink_window_frame_mask,
)
from vln_stack.models.vggt_layers import RoPE2D

BLOCK_SUFFIXES = [
    'norm1.weight',
    'norm1.bias',
    'attn.qkv.weight',
    'attn.qkv.bias',
    'attn.proj.weight',
    'attn.proj.bias',
    'ls1.gamma',
    'norm2.weight',
    'norm2.bias',
    'mlp.fc1.weight',
    'mlp.fc1.bias',
    'mlp.fc2.weight',
    'mlp.fc2.bias',
    'ls2.gamma',
]
QK_SUFFIXES = ['attn.q_norm.weight', 'attn.q_norm.bias', 'attn.k_norm.weight', 'attn.k_norm.bias']


def _expected_1b_keys() -> set[str]:
    keys = {
        'camera_token',
        'register_token',
        'patch_embed.cls_token',
        'patch_embed.pos_embed',
        'patch_embed.register_tokens',
        'patch_embed.mask_token',
        'patch_embed.patch_embed.proj.weight',
        'patch_embed.patch_embed.proj.bias',
        'patch_embed.norm.weight',
        'patch_embed.norm.bias',
    }
    for i in range(24):
        keys |= {f'patch_embed.blocks.{i}.{s}' for s in BLOCK_SUFFIXES}
        for kind in ('frame_blocks', 'global_blocks'):
            keys |= {f'{kind}.{i}.{s}' for s in BLOCK_SUFFIXES + QK_SUFFIXES}
    return {f'aggregator.{k}' for k in keys}


def test_vggt_1b_state_dict_matches_checkpoint_layout():
    with torch.device('meta'):
        agg = VGGTAggregator(VGGT_PRESETS['vggt-1b'])
    sd = {f'aggregator.{k}': v for k, v in agg.state_dict().items()}
    assert len(sd) == 1210
    assert set(sd) == _expected_1b_keys()
    shapes = {
        'aggregator.camera_token': (1, 2, 1, 1024),
        'aggregator.register_token': (1, 2, 4, 1024),
        'aggregator.patch_embed.cls_token': (1, 1, 1024),
        'aggregator.patch_embed.pos_embed': (1, 1370, 1024),
        'aggregator.patch_embed.register_tokens': (1, 4, 1024),
        'aggregator.patch_embed.mask_token': (1, 1024),
        'aggregator.patch_embed.patch_embed.proj.weight': (1024, 3, 14, 14),
        'aggregator.patch_embed.blocks.23.mlp.fc1.weight': (4096, 1024),
        'aggregator.frame_blocks.0.attn.qkv.weight': (3072, 1024),
        'aggregator.frame_blocks.0.attn.qkv.bias': (3072,),
        'aggregator.global_blocks.23.attn.proj.weight': (1024, 1024),
        'aggregator.global_blocks.23.mlp.fc2.weight': (1024, 4096),
        'aggregator.global_blocks.5.attn.k_norm.weight': (64,),
        'aggregator.frame_blocks.5.ls2.gamma': (1024,),
    }
    for key, shape in shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert (
        sum(v.numel() for v in sd.values()) == 909_112_320
    )  # CHECKPOINTS.md §1.1 aggregator params
    assert agg.patch_start_idx == 5
    # non-persistent buffers are not part of the checkpoint
    assert not any('_resnet' in k for k in sd)


@pytest.fixture(scope='module')
def tiny() -> VGGTAggregator:
    return VGGTAggregator(VGGT_PRESETS['tiny']).init_random(0).eval()


@torch.no_grad()
def test_streaming_equals_block_causal_batch(tiny):
    images = torch.rand(1, 5, 3, 56, 70, generator=torch.Generator().manual_seed(1))
    batch = tiny(images)  # default: block-causal frames
    cache = tiny.new_cache()
    stream = [tiny.forward_frame(images[:, t], cache) for t in range(5)]
    assert len(batch) == tiny.depth and batch[0].shape == (1, 5, 5 + 4 * 5, 128)
    for layer in range(tiny.depth):
        got = torch.stack([s[layer] for s in stream], dim=1)
        assert torch.allclose(got, batch[layer], atol=1e-5, rtol=0), (
            (got - batch[layer]).abs().max()
        )
    # the check is discriminative: bidirectional VGGT gives different features for early frames
    full = tiny(images, causal=False)
    assert (full[-1][:, 0] - batch[-1][:, 0]).abs().max() > 1e-3
    # first-frame and other-frame camera/register variants differ: a wrong choice would show
    assert (tiny.camera_token[:, 0] - tiny.camera_token[:, 1]).abs().max() > 1e-3
    assert (tiny.register_token[:, 0] - tiny.register_token[:, 1]).abs().max() > 1e-3


@torch.no_grad()
def test_streaming_with_eviction_equals_sink_window_recompute(tiny):
    frames, initial, window = 9, 2, 3
    images = torch.rand(1, frames, 3, 42, 56, generator=torch.Generator().manual_seed(2))
    cache = tiny.new_cache(initial_frames=initial, window_frames=window)
    stream = []
    for t in range(frames):
        stream.append(tiny.forward_frame(images[:, t], cache)[-1])
        assert cache.num_frames == min(t + 1, initial + window)
    assert cache.frame_ids() == [0, 1, 6, 7, 8]
    got = torch.stack(stream, dim=1)
    ref = tiny(images, frame_mask=sink_window_frame_mask(frames, initial, window))[-1]
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()
    # and it differs from the unbounded causal run once frames were evicted
    causal = tiny(images)[-1]
    assert (got[:, -1] - causal[:, -1]).abs().max() > 1e-4


def test_masks():
    assert torch.equal(
        causal_frame_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    )
    m = sink_window_frame_mask(8, 1, 2)
    assert m[7].nonzero().flatten().tolist() == [0, 5, 6, 7]
    assert m[3].nonzero().flatten().tolist() == [0, 1, 2, 3]


@torch.no_grad()
def test_layers_subset_and_positions(tiny):
    image = torch.rand(1, 3, 28, 42)
    cache = tiny.new_cache()
    (out,) = tiny.forward_frame(image, cache, layers=[-2])
    assert out.shape == (1, 5 + 2 * 3, 2 * 64)
    full = tiny.forward_frame(image, tiny.new_cache())
    assert torch.allclose(out, full[0])
    pos = tiny.positions(2, 3, torch.device('cpu'))
    assert pos[:5].abs().sum() == 0
    assert pos[5:].tolist() == [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]
    with pytest.raises(ValueError, match='multiple of the patch size'):
        tiny.forward_frame(torch.rand(1, 3, 30, 42), tiny.new_cache())


def test_rope2d_rows_then_columns():
    rope = RoPE2D(100.0)
    x = torch.randn(1, 1, 2, 8)
    pos_row = torch.tensor([[0, 0], [3, 0]])
    out = rope(x, pos_row)
    assert torch.allclose(out[..., 4:], x[..., 4:])  # column half untouched when col = 0
    assert torch.allclose(out[..., 0, :], x[..., 0, :])  # (0, 0) is the identity
    # dims 0..3 with row 3: pairs (j, j+2), angle 3 * 100^(-2i/4)
    ang = 3 * torch.tensor([1.0, 0.1])
    x1, x2 = x[0, 0, 1, 0:2], x[0, 0, 1, 2:4]
    assert torch.allclose(out[0, 0, 1, 0:2], x1 * ang.cos() - x2 * ang.sin(), atol=1e-6)
    assert torch.allclose(out[0, 0, 1, 2:4], x2 * ang.cos() + x1 * ang.sin(), atol=1e-6)
    # relative: <R(p)q, R(p')k> depends only on p - p'
    q, k = torch.randn(8), torch.randn(8)

    def dot(pq, pk):
        a = rope(q.view(1, 1, 1, 8), torch.tensor([pq]))
        b = rope(k.view(1, 1, 1, 8), torch.tensor([pk]))
        return float((a * b).sum())

    assert dot([2, 5], [1, 1]) == pytest.approx(dot([4, 7], [3, 3]), abs=1e-5)


def test_pos_embed_interpolation(tiny):
    pe = tiny.patch_embed
    assert pe.interpolate_pos_embed(8, 8) is pe.pos_embed  # stored 8x8 grid used as is
    out = pe.interpolate_pos_embed(12, 16)
    assert out.shape == (1, 1 + 12 * 16, 64)
    assert torch.equal(out[:, 0], pe.pos_embed[:, 0])  # cls position not resized


def _released_stream_step(agg, image, memory, seen, initial, window):
    """Released StreamVGGT / JanusVLN cached step, as a reference: RAW keys cached, k_norm + RoPE
    re-applied to all of them each step, frames concatenated in time order, then trimmed to the
    first ``initial`` + last ``window`` frames (StartRecentKVCache)."""
    b = image.shape[0]
    patches, h, w = agg._embed(image)
    x = torch.cat((agg._special(0 if seen == 0 else 1, b), patches), dim=1)
    pos = agg.positions(h, w, x.device)
    outs = []
    for i in range(agg.depth):
        x = agg.frame_blocks[i](x, pos)
        frame_out = x
        blk, attn = agg.global_blocks[i], agg.global_blocks[i].attn
        q, k, v = attn._split(blk.norm1(x))
        q = attn._qk(q, attn.q_norm, pos)
        memory[i].append((k.unsqueeze(2), v.unsqueeze(2)))
        k_all = torch.cat([m[0] for m in memory[i]], dim=2)
        v_all = torch.cat([m[1] for m in memory[i]], dim=2)
        k_all = attn._qk(k_all, attn.k_norm, pos)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k_all.flatten(2, 3), v_all.flatten(2, 3)
        )
        x = x + blk.ls1(attn._out(o))
        x = x + blk.ls2(blk.mlp(blk.norm2(x)))
        if len(memory[i]) > initial + window:
            memory[i][:] = memory[i][:initial] + memory[i][-window:]
        outs.append(torch.cat((frame_out, x), dim=-1))
    return outs


@torch.no_grad()
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_processed_key_cache_equals_released_raw_key_recompute(tiny, dtype):
    """Caching K after k_norm + RoPE and attending in storage order == the released raw-key cache
    (re-normalised and re-rotated every step, time order), with eviction."""
    agg = tiny.to(dtype)
    try:
        frames, initial, window = 11, 2, 4
        gen = torch.Generator().manual_seed(5)
        images = torch.rand(2, frames, 3, 42, 56, generator=gen, dtype=dtype)
        cache = agg.new_cache(initial_frames=initial, window_frames=window)
        memory = [[] for _ in range(agg.depth)]
        tol = 1e-6 if dtype == torch.float32 else 1e-13
        for t in range(frames):
            got = agg.forward_frame(images[:, t], cache)
            ref = _released_stream_step(agg, images[:, t], memory, t, initial, window)
            for layer in range(agg.depth):
                err = (got[layer] - ref[layer]).abs().max().item()
                assert err <= tol, f'frame {t} layer {layer}: {err}'
        assert cache.frame_ids() == [0, 1, 7, 8, 9, 10]
    finally:
        agg.float()
