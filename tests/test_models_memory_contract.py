"""The streaming spatial memory's contract, beyond tests/test_models_vggt.py and _kv_cache.py.

* exactness in fp64: streaming == recompute under the block-causal mask (no eviction) and under the
  sink+window mask (with eviction) to ~1e-12, and != plain causal once eviction has started;
* bounds over a long stream through the aggregator: memory length min(t+1, initial+window) at
  every step, sink frames' cached K/V bitwise unchanged, buffers never reallocated or grown;
* a checkpoint folder in the released JanusVLN layout (sharded safetensors + index, bf16, legacy
  ``visual.*``/``model.*`` keys, unused ``vggt.depth_head``/``vggt.point_head`` keys, JanusVLN
  config fields) loads through the same loaders; mismatches name the keys / the shard.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vln_stack.models.dual_encoder import DualMemoryEncoder
from vln_stack.models.llm_policy import JanusPolicy
from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint
from vln_stack.models.vggt import (
    VGGT_PRESETS,
    VGGTAggregator,
    causal_frame_mask,
    sink_window_frame_mask,
)


@pytest.fixture(scope='module')
def tiny64() -> VGGTAggregator:
    return VGGTAggregator(VGGT_PRESETS['tiny']).init_random(3).double().eval()


# ---- exactness ---------------------------------------------------------------------------------
@torch.no_grad()
def test_streaming_equals_masked_recompute_in_fp64(tiny64):
    frames, initial, window = 9, 2, 3
    gen = torch.Generator().manual_seed(7)
    images = torch.rand(1, frames, 3, 28, 42, generator=gen, dtype=torch.float64)

    # no eviction: memory large enough for every frame -> block-causal recompute
    cache = tiny64.new_cache(initial_frames=8, window_frames=48)
    stream = [tiny64.forward_frame(images[:, t], cache) for t in range(frames)]
    causal = tiny64(images, frame_mask=causal_frame_mask(frames))
    assert causal[0].dtype == torch.float64
    for layer in range(tiny64.depth):
        got = torch.stack([s[layer] for s in stream], dim=1)
        err = (got - causal[layer]).abs().max().item()
        assert err < 1e-12, f'layer {layer}: {err}'

    # with eviction: equals the sink+window mask recompute, frame by frame
    cache = tiny64.new_cache(initial_frames=initial, window_frames=window)
    stream = [tiny64.forward_frame(images[:, t], cache) for t in range(frames)]
    masked = tiny64(images, frame_mask=sink_window_frame_mask(frames, initial, window))
    for layer in range(tiny64.depth):
        got = torch.stack([s[layer] for s in stream], dim=1)
        err = (got - masked[layer]).abs().max().item()
        assert err < 1e-12, f'layer {layer}: {err}'
    # ... and from plain causal attention exactly from the first frame that lost a frame
    # (t > initial + window); before that the two masks are identical
    last = [s[-1] for s in stream]
    for t in range(frames):
        diff = (last[t] - causal[-1][:, t]).abs().max().item()
        if t <= initial + window:
            assert diff < 1e-12, f'frame {t} should not see an eviction yet ({diff})'
        else:
            assert diff > 1e-6, f'frame {t} attends to evicted frames? ({diff})'


# ---- bounds over a long stream -----------------------------------------------------------------
@torch.no_grad()
def test_memory_bounds_over_1000_frames():
    agg = VGGTAggregator(VGGT_PRESETS['tiny']).init_random(0).eval()
    initial, window, total = 2, 3, 1000
    cache = agg.new_cache(initial_frames=initial, window_frames=window)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 14, 14, generator=gen)  # one patch: 6 tokens per frame
    sinks: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    nbytes = ptrs = None
    for t in range(total):
        agg.forward_frame(images[t % 8][None], cache)
        held = min(t + 1, initial + window)
        assert cache.num_frames == held, f'step {t}'
        expected_ids = list(range(held)) if t < initial + window else (
            list(range(initial)) + list(range(t - window + 1, t + 1))
        )
        assert cache.frame_ids() == expected_ids, f'step {t}'
        if t == 0:
            nbytes = cache.nbytes
            ptrs = [cache.get(i, ordered=False)[0].data_ptr() for i in range(agg.depth)]
        assert cache.nbytes == nbytes, f'memory grew at step {t}'
        if t % 50 == 0 or t == total - 1:  # storage never reallocated
            assert [cache.get(i, ordered=False)[0].data_ptr() for i in range(agg.depth)] == ptrs
        if t == initial - 1:
            sinks = [
                tuple(x[:, :, :initial].clone() for x in cache.get(i)) for i in range(agg.depth)
            ]
        elif sinks is not None:
            for i in range(agg.depth):
                k, v = cache.get(i)
                assert torch.equal(k[:, :, :initial], sinks[i][0]), f'sink K changed, step {t}'
                assert torch.equal(v[:, :, :initial], sinks[i][1]), f'sink V changed, step {t}'
    assert cache.frames_seen == total
    # 2 layers x (K, V) x (5 frames + 1 staging slot) x [1, 4 heads, 6 tokens, 16]
    assert nbytes == agg.depth * 2 * (initial + window + 1) * 4 * 6 * 16 * 4


# ---- released checkpoint layout ----------------------------------------------------------------
@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=0)


def _write_released_layout(src: Path, dst: Path, *, edit=None, shards: int = 3) -> Path:
    """``src`` re-saved like the released JanusVLN folder: bf16 shards + index, unused VGGT heads,
    the flat JanusVLN config fields (the tiny sizes need the vln_stack block to be kept)."""
    dst.mkdir(parents=True)
    for name in ('tokenizer.json', 'tokenizer_config.json', 'generation_config.json'):
        if (src / name).exists():
            shutil.copy(src / name, dst / name)
    cfg = json.loads((src / 'config.json').read_text())
    cfg.update(
        architectures=['Qwen2_5_VLForConditionalGenerationForJanusVLN'],
        reference_frame='first',
        torch_dtype='bfloat16',
    )
    (dst / 'config.json').write_text(json.dumps(cfg))
    state = load_file(str(src / 'model.safetensors'))
    gen = torch.Generator().manual_seed(1)
    for head in ('depth_head', 'point_head'):  # stored in the release, unused at inference
        state[f'vggt.{head}.norm.weight'] = torch.ones(128)
        state[f'vggt.{head}.projects.0.weight'] = torch.randn(32, 128, 1, 1, generator=gen)
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}
    if edit is not None:
        edit(state)
    names = [f'model-{i + 1:05d}-of-{shards:05d}.safetensors' for i in range(shards)]
    weight_map = {key: names[i % shards] for i, key in enumerate(sorted(state))}
    for name in names:
        part = {k: state[k] for k, n in weight_map.items() if n == name}
        save_file(part, str(dst / name), metadata={'format': 'pt'})
    total = sum(v.numel() * v.element_size() for v in state.values())
    index = {'metadata': {'total_size': total}, 'weight_map': weight_map}
    (dst / 'model.safetensors.index.json').write_text(json.dumps(index, indent=2))
    return dst


def _round_to_bf16(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p.to(torch.bfloat16).to(p.dtype))


def test_released_layout_loads_through_the_same_loaders(tiny_folder, tmp_path):
    folder = _write_released_layout(tiny_folder, tmp_path / 'released')
    assert not (folder / 'model.safetensors').exists()
    weight_map = json.loads((folder / 'model.safetensors.index.json').read_text())['weight_map']
    assert len(set(weight_map.values())) == 3
    for prefix in ('vggt.aggregator.', 'merger.', 'visual.', 'model.layers.'):
        shards = {n for k, n in weight_map.items() if k.startswith(prefix)}
        assert len(shards) > 1, prefix  # each module is read across shards

    enc = DualMemoryEncoder.from_folder(folder)
    ref = DualMemoryEncoder.from_folder(tiny_folder)
    for module in (ref.aggregator, ref.merger, ref.semantic):
        _round_to_bf16(module)  # the released weights are bf16
    for got, exp in (
        (enc.aggregator, ref.aggregator),
        (enc.merger, ref.merger),
        (enc.semantic.visual, ref.semantic.visual),
    ):
        got_sd, exp_sd = got.state_dict(), exp.state_dict()
        assert got_sd.keys() == exp_sd.keys()
        for key in exp_sd:
            assert torch.equal(got_sd[key], exp_sd[key]), key
    rng = np.random.default_rng(0)
    for _ in range(3):
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        a, b = enc.encode(frame), ref.encode(frame)
        assert torch.equal(a.fused, b.fused)
    assert enc.memory.num_frames == 3

    policy = JanusPolicy.from_folder(folder)
    state = load_file(str(tiny_folder / 'model.safetensors'))
    lm_head = policy.model.lm_head.weight
    assert torch.equal(lm_head, state['lm_head.weight'].to(torch.bfloat16).to(lm_head.dtype))


def test_released_layout_mismatch_names_keys_and_shards(tiny_folder, tmp_path):
    def rename_k_norm(state):
        key = 'vggt.aggregator.global_blocks.1.attn.k_norm.weight'
        state['vggt.aggregator.global_blocks.1.attn.k_norm.scale'] = state.pop(key)

    bad = _write_released_layout(tiny_folder, tmp_path / 'bad', edit=rename_k_norm)
    with pytest.raises(ValueError) as err:
        DualMemoryEncoder.from_folder(bad)
    msg = str(err.value)
    assert 'VGGT aggregator' in msg and str(bad) in msg
    assert 'missing' in msg and 'global_blocks.1.attn.k_norm.weight' in msg
    assert 'unexpected' in msg and 'global_blocks.1.attn.k_norm.scale' in msg

    def drop_visual_block(state):
        state.pop('visual.blocks.1.mlp.up_proj.weight')

    bad = _write_released_layout(tiny_folder, tmp_path / 'bad-visual', edit=drop_visual_block)
    with pytest.raises(ValueError, match=r'Qwen vision tower.*missing.*blocks\.1\.mlp\.up_proj'):
        DualMemoryEncoder.from_folder(bad)

    ok = _write_released_layout(tiny_folder, tmp_path / 'lost-shard')
    (ok / 'model-00002-of-00003.safetensors').unlink()
    with pytest.raises(FileNotFoundError, match='model-00002-of-00003.safetensors'):
        DualMemoryEncoder.from_folder(ok)


# ---- the benchmark tool (smoke; timings are not asserted) -------------------------------------
def test_encoder_benchmark_smoke(tmp_path, capsys):
    from vln_stack.tools.bench.encoder import main as bench_main

    out = tmp_path / 'bench.json'
    args = ['--frames', '8,32,48', '--long-run', '120', '--repeats', '1', '--width', '56']
    assert bench_main([*args, '--json', str(out)]) == 0
    report = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [r['history_frames'] for r in result['spatial']] == [8, 32, 48]
    assert [r['memory_frames'] for r in result['spatial']] == [8, 32, 48]
    assert all(r['speedup'] > 0 and r['cache_bytes'] > 0 for r in result['spatial'])
    assert [r['history_frames'] for r in result['dual']] == [8, 32, 48]
    marks = result['long_run']['checkpoints']
    assert [c['frame'] for c in marks] == [56, 100, 120]
    assert {c['memory_frames'] for c in marks} == {56}
    assert len({c['cache_bytes'] for c in marks}) == 1
    assert len(result['long_run']['latency_ms']) == 120
    statuses = {t['name'].split(':')[0]: t['status'] for t in result['targets']}
    assert all(s in ('PASS', 'FAIL') for s in statuses.values()), statuses
    assert 'Targets' in report and 'Long run' in report
