"""tools.bench.stack_shape and memory_budget: meta-device counts equal real modules; state sizes
equal real caches."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint
from vln_stack.tools.bench import memory_budget as mb
from vln_stack.tools.bench import stack_shape as ss


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=0)


def _bytes(*modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def _line(budget, prefix: str):
    return next(ln for ln in budget.lines if ln.name.startswith(prefix))


def test_tiny_budget_equals_instantiated_modules_and_caches(tiny_folder):
    from vln_stack.models.dual_encoder import DualMemoryEncoder
    from vln_stack.models.llm_memory import StreamingJanusPolicy
    from vln_stack.models.llm_policy import JanusPolicy

    torch.set_num_threads(1)
    shape = ss.shape_from_checkpoint(tiny_folder)
    # the preset builds the same model as the tiny checkpoint folder
    assert dataclasses.replace(ss.shape_from_preset('tiny'), source='') == \
        dataclasses.replace(shape, source='')
    budget = mb.compute_budget(shape, 'float32', frame_hw=(480, 640))

    enc = DualMemoryEncoder.from_folder(tiny_folder)
    policy = JanusPolicy.from_folder(tiny_folder)
    assert budget.node_gpu['memory_encoder']['released'] - _line(budget, 'VGGT memory').released \
        == _bytes(enc.aggregator, enc.merger, enc.semantic)
    lm = policy.model
    assert _line(budget, 'LLM text model').released == _bytes(lm.model.language_model)
    assert _line(budget, 'lm_head').released == _bytes(lm.lm_head)
    assert budget.node_gpu['decision']['released'] - _line(budget, 'LLM K/V').released \
        == _bytes(lm)  # the decision node holds no vision tower

    # VGGT memory: a real FrameKVCache filled with 57 frames by the real aggregator
    rng = np.random.default_rng(0)
    cache = enc.aggregator.new_cache()
    with torch.inference_mode():
        for _ in range(57):
            rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            enc.aggregator.forward_frame(enc.preprocess(rgb)[None], cache,
                                         layers=[enc.layer_index])
    assert cache.num_frames == 56
    assert cache.nbytes == _line(budget, 'VGGT memory').released > 0

    # streaming LLM memory: the buffers of a real StreamingJanusPolicy after 57 frame blocks
    g = budget.geometry
    stream = StreamingJanusPolicy(policy, retries=0)
    stream.reset(ss.INSTRUCTION)
    width = lm.get_input_embeddings().weight.shape[1]
    grid = (g.qwen_hw[0] // 28, g.qwen_hw[1] // 28)
    for _ in range(57):
        stream.append_frame(torch.randn(g.merged_tokens, width), grid)
    assert stream.memory_bytes == _line(budget, 'LLM K/V').streaming
    # released: the prompt the policy builds, plus the 24 generated tokens
    ids = policy.prompt_ids(ss.INSTRUCTION, [g.merged_tokens] * mb.NUM_IMAGES)
    per_tok = 2 * shape.llm_layers * shape.kv_heads * shape.head_dim * 4
    assert (ids.shape[1] + mb.NEW_TOKENS) * per_tok == _line(budget, 'LLM K/V').released


def test_bf16_is_half_of_fp32_and_geometry_matches_preprocessing():
    from vln_stack.models.semantic import preprocess_rgb

    shape = ss.shape_from_preset('tiny')
    full = mb.compute_budget(shape, 'float32')
    half = mb.compute_budget(shape, 'bfloat16')
    for a, b in zip(full.lines, half.lines, strict=True):  # history too: kept at the model dtype
        assert (b.released * 2, b.streaming * 2) == (a.released, a.streaming), a.name
    for mode in ('released', 'streaming'):
        assert half.stack_gpu[mode] * 2 == full.stack_gpu[mode]
        assert half.host[mode] * 2 == full.host[mode]
    for hw, width in (((480, 640), 644), ((480, 640), 224), ((720, 1280), 644), ((900, 600), 518)):
        g = ss.frame_geometry(hw, width)
        img = preprocess_rgb(np.zeros((*hw, 3), dtype=np.uint8), width)
        assert g.vggt_hw == tuple(img.shape[1:]), (hw, width)
        assert g.vggt_tokens == 5 + (img.shape[1] // 14) * (img.shape[2] // 14)
        assert g.merged_tokens == (img.shape[1] // 28) * (img.shape[2] // 28)


def test_real_size_table_and_vggt_memory(capsys, tmp_path):
    out = tmp_path / 'budget.json'
    assert mb.main(['--preset', 'janusvln-7b', '--dtype', 'bfloat16', '--json', str(out)]) == 0
    text = capsys.readouterr().out
    for word in ('memory_encoder', 'decision', 'VGGT memory K/V', 'LLM K/V', 'STACK',
                 'vs a 24 GiB GPU', 'activations'):
        assert word in text, word
    shape = ss.shape_from_preset('janusvln-7b')
    # CHECKPOINTS.md §1.1, §2.3 (meta-device probe of the released classes)
    assert shape.aggregator_params == 909_112_320
    assert (shape.merger_params, shape.vision_params) == (48_244_224, 676_550_144)
    assert (shape.llm_text_params, shape.lm_head_params) == (7_070_619_136, 544_997_376)
    assert shape.aggregator_run_params < shape.aggregator_params
    b = mb.compute_budget(shape, 'bfloat16', frame_hw=(480, 640))
    g = b.geometry
    assert (g.vggt_hw, g.vggt_tokens, g.qwen_hw, g.merged_tokens) == \
        ((490, 644), 1615, (476, 644), 391)
    vggt = _line(b, 'VGGT memory').released
    # 57 slots (8 + 48 + 1 staging) x 23 layers written (0..22) x K,V x 16 x 1615 x 64 x 2 B
    assert vggt == 57 * 23 * 2 * 16 * 1615 * 64 * 2 == 8_672_317_440
    # CHECKPOINTS.md: ~8.9 GB for 24 layers x 56 frames
    assert 0.95 < vggt / (2 * 24 * 16 * 56 * 1615 * 64 * 2) < 1.0
    # streaming LLM memory: (sink + 57 x 393 + query area) tok x 28 layers x K,V x 4 x 128 x 2 B
    reserve = max(shape.text.stream_query, shape.text.stream_retry) + 24
    llm = _line(b, 'LLM K/V').streaming
    assert llm == (shape.text.stream_head + 57 * 393 + reserve) * 2 * 28 * 4 * 128 * 2
    assert out.is_file() and '"budgets"' in out.read_text()
