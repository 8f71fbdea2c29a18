"""Tiny checkpoint folder -> DualMemoryEncoder / JanusPolicy (load, errors, streaming, policy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from import_rules import discover_modules, static_ros_imports
from vln_stack.models.dual_encoder import DualMemoryEncoder, FusedFrame
from vln_stack.models.llm_policy import (
    ACTIONS,
    CONTEXT_TEMPLATE,
    SYSTEM_PROMPT,
    JanusPolicy,
    build_prompt,
    parse_action,
    sample_history,
)
from vln_stack.models.tiny_checkpoint import main as tiny_main
from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint

INSTRUCTION = 'Walk past the sofa and stop at the kitchen door.'


@pytest.fixture(scope='module')
def tiny_folder(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=0)


@pytest.fixture(scope='module')
def policy(tiny_folder) -> JanusPolicy:
    return JanusPolicy.from_folder(tiny_folder)


def _frames(n: int, seed: int = 0, hw: tuple[int, int] = (240, 320)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def _write_encoder_folder(
    enc: DualMemoryEncoder,
    src: Path,
    dst: Path,
    *,
    visual_prefix: str = 'visual.',
    vln_stack: dict | None = None,
) -> Path:
    """A checkpoint folder holding ``enc``'s weights (config/tokenizer copied from ``src``)."""
    dst.mkdir(parents=True)
    cfg = json.loads((src / 'config.json').read_text())
    cfg['vln_stack'].update(vln_stack or {})
    (dst / 'config.json').write_text(json.dumps(cfg))
    state = {f'vggt.aggregator.{k}': v for k, v in enc.aggregator.state_dict().items()}
    state.update({f'merger.{k}': v for k, v in enc.merger.state_dict().items()})
    state.update({f'{visual_prefix}{k}': v for k, v in enc.semantic.visual.state_dict().items()})
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / 'model.safetensors'))
    return dst


# ---- checkpoint folder ------------------------------------------------------------------------
def test_tiny_folder_layout(tiny_folder):
    names = {p.name for p in tiny_folder.iterdir()}
    assert {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'} <= names
    cfg = json.loads((tiny_folder / 'config.json').read_text())
    assert cfg['model_type'] == 'qwen2_5_vl' and cfg['lam'] == 0.2
    assert cfg['vln_stack']['vggt_preset'] == 'tiny' and cfg['vln_stack']['input_width'] == 224
    keys = load_file(str(tiny_folder / 'model.safetensors')).keys()
    prefixes = {k.split('.')[0] for k in keys}
    assert prefixes == {
        'visual',
        'model',
        'lm_head',
        'vggt',
        'merger',
    }  # save_pretrained layout + ours
    assert sum(k.startswith('vggt.aggregator.') for k in keys) == 10 + 14 + 2 * 2 * 18
    assert {k for k in keys if k.startswith('merger.')} == {
        'merger.ln_q.weight',
        'merger.mlp.0.weight',
        'merger.mlp.0.bias',
        'merger.mlp.2.weight',
        'merger.mlp.2.bias',
    }


def test_cli_prints_what_it_wrote(tmp_path, capsys):
    assert tiny_main(['--out', str(tmp_path / 'cli'), '--seed', '1']) == 0
    out = capsys.readouterr().out
    assert str((tmp_path / 'cli').resolve()) in out
    for name in ('config.json', 'model.safetensors', 'tokenizer.json'):
        assert name in out


# ---- encoder ----------------------------------------------------------------------------------
def test_encoder_from_folder_round_trip_is_identical(tiny_folder, tmp_path):
    ref = DualMemoryEncoder.from_preset('tiny', seed=5)
    frames = _frames(3, seed=1)
    expected = [ref.encode(f) for f in frames]
    for prefix in (
        'visual.',
        'model.visual.',
    ):  # saved layout and transformers>=4.52 runtime layout
        folder = _write_encoder_folder(
            ref, tiny_folder, tmp_path / prefix.replace('.', '_'), visual_prefix=prefix
        )
        enc = DualMemoryEncoder.from_folder(folder)
        for frame, exp in zip(frames, expected, strict=True):
            got = enc.encode(frame)
            assert torch.equal(got.fused, exp.fused)
            assert torch.equal(got.semantic, exp.semantic) and torch.equal(
                got.spatial, exp.spatial
            )
    # a differently seeded encoder gives different tokens (the equality above is not vacuous)
    other = DualMemoryEncoder.from_preset('tiny', seed=6).encode(frames[0])
    assert (other.fused - expected[0].fused).abs().max() > 1e-3


def test_encoder_streams_with_bounded_memory(tiny_folder, tmp_path):
    ref = DualMemoryEncoder.from_folder(tiny_folder)
    folder = _write_encoder_folder(
        ref,
        tiny_folder,
        tmp_path / 'small',
        vln_stack={'kv_initial_frames': 1, 'kv_window_frames': 2},
    )
    enc = DualMemoryEncoder.from_folder(folder)
    frames = _frames(6, seed=2)
    outs = [enc.encode(f) for f in frames]
    assert [o.memory_frames for o in outs] == [1, 2, 3, 3, 3, 3]
    assert [o.frame_index for o in outs] == list(range(6))
    assert enc.memory.frame_ids() == [0, 4, 5]
    o = outs[-1]
    assert isinstance(o, FusedFrame) and o.grid_hw == (6, 8)
    assert o.fused.shape == o.semantic.shape == o.spatial.shape == (48, 128)
    assert o.fused.dtype == torch.float32 and o.latency_ms > 0
    assert torch.allclose(o.fused, o.semantic + 0.2 * o.spatial)
    # the spatial memory matters: the same frame encodes differently after history
    fresh = DualMemoryEncoder.from_folder(folder).encode(frames[-1])
    assert torch.equal(fresh.semantic, o.semantic)
    assert (fresh.spatial - o.spatial).abs().max() > 1e-4
    enc.reset()
    again = enc.encode(frames[-1])
    assert (
        again.frame_index == 0
        and again.memory_frames == 1
        and torch.equal(again.fused, fresh.fused)
    )
    with pytest.raises(ValueError, match='frame size changed'):
        enc.encode(_frames(1, hw=(300, 320))[0])


@torch.no_grad()
def test_encoder_spatial_path_equals_batch_reference(tiny_folder):
    """Layer -2 of a causal batch run -> patch tokens -> 2x2 merge -> merger == streaming."""
    from vln_stack.models.fusion import merge_2x2, patch_tokens

    enc = DualMemoryEncoder.from_folder(tiny_folder)
    assert enc.layer_index == enc.aggregator.depth - 2
    frames = _frames(3, seed=4)
    outs = [enc.encode(f) for f in frames]
    images = torch.stack([enc.preprocess(f) for f in frames])[None]  # [1, 3, 3, 168, 224]
    layer = enc.aggregator(images)[enc.aggregator.depth - 2]
    for t, out in enumerate(outs):
        merged, hw = merge_2x2(patch_tokens(layer[:, t], (12, 16)), (12, 16))
        assert hw == out.grid_hw
        assert torch.allclose(enc.merger(merged), out.spatial, atol=1e-5)
        sem, _ = enc.semantic(images[0, t])
        assert torch.allclose(sem, out.semantic, atol=1e-6)


def test_missing_folder_names_the_path(tmp_path):
    missing = tmp_path / 'no-such-model'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DualMemoryEncoder.from_folder(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        JanusPolicy.from_folder(missing)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match='config.json'):
        DualMemoryEncoder.from_folder(empty)


def test_state_dict_mismatch_lists_keys(tiny_folder, tmp_path):
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_folder, bad)
    state = load_file(str(bad / 'model.safetensors'))
    del state['vggt.aggregator.camera_token']
    state['vggt.aggregator.bogus_extra'] = torch.zeros(1)
    save_file(state, str(bad / 'model.safetensors'))
    with pytest.raises(ValueError) as err:
        DualMemoryEncoder.from_folder(bad)
    msg = str(err.value)
    assert (
        'camera_token' in msg and 'bogus_extra' in msg and 'missing' in msg and 'unexpected' in msg
    )

    state = load_file(str(tiny_folder / 'model.safetensors'))
    state['merger.mlp.0.weight'] = torch.zeros(7, 7)
    save_file(state, str(bad / 'model.safetensors'))
    with pytest.raises(ValueError, match=r'mlp\.0\.weight.*\[7, 7\]'):
        DualMemoryEncoder.from_folder(bad)


def test_policy_weight_mismatch_lists_keys(tiny_folder, tmp_path):
    bad = tmp_path / 'bad-llm'
    shutil.copytree(tiny_folder, bad)
    state = load_file(str(bad / 'model.safetensors'))
    del state['model.layers.0.mlp.up_proj.weight']
    save_file(state, str(bad / 'model.safetensors'))
    with pytest.raises(ValueError, match=r'missing.*layers\.0\.mlp\.up_proj\.weight'):
        JanusPolicy.from_folder(bad)
    state['model.layers.0.mlp.up_proj.weight'] = torch.zeros(3, 3)
    save_file(state, str(bad / 'model.safetensors'))
    with pytest.raises(ValueError, match=r'shape mismatch.*up_proj'):
        JanusPolicy.from_folder(bad)


# ---- policy -----------------------------------------------------------------------------------
def test_parse_action_exact_match_only():
    for a in ACTIONS:
        assert parse_action(a) == (a, True)
    for garbage in (' STOP', 'MOVE_FORWARD\n', 'turn_left', '', 'TURN_LEFT TURN_LEFT', 'xyz'):
        assert parse_action(garbage) == ('STOP', False)


def test_sample_history_linspace():
    assert sample_history(0) == []
    assert sample_history(8) == list(range(8))
    assert sample_history(20) == [0, 2, 5, 7, 10, 12, 15, 17]  # int(linspace(0, 20, 9))[:-1]
    for h in range(9, 200, 7):
        idx = sample_history(h)
        assert len(idx) == 8 and idx[0] == 0 and idx == sorted(set(idx)) and idx[-1] < h


def test_prompt_is_the_released_evaluation_prompt(policy):
    text = build_prompt('go up the stairs', 2)
    assert text == (
        f'<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n'
        '<|vision_start|><|image_pad|><|vision_end|><|vision_start|><|image_pad|><|vision_end|>'
        'These images are your historical observations and your current observation.\n'
        ' Your task is to go up the stairs \n You should take one of the following actions:\n'
        ' MOVE_FORWARD\n TURN_LEFT\n TURN_RIGHT\n STOP.<|im_end|>\n<|im_start|>assistant\n'
    )
    assert SYSTEM_PROMPT.startswith(
        'You are a visual language navigation model, and your should go'
    )
    assert CONTEXT_TEMPLATE.count('{instruction}') == 1
    ids = policy.prompt_ids('go up the stairs', [3, 2])
    expanded = text.replace('<|image_pad|>', '<|image_pad|>' * 3, 1)
    head, tail = expanded.rsplit('<|image_pad|><|vision_end|>These', 1)
    expanded = head + '<|image_pad|>' * 2 + '<|vision_end|>These' + tail
    assert ids[0].tolist() == policy.tokenizer(expanded, add_special_tokens=False)['input_ids']


def test_decide_end_to_end_random_model_is_invalid_stop(tiny_folder, policy):
    enc = DualMemoryEncoder.from_folder(tiny_folder)
    frames = [enc.encode(f) for f in _frames(11, seed=3)]
    decision = policy.decide(INSTRUCTION, frames[:-1], frames[-1])
    assert decision.action in ACTIONS and decision.latency_ms > 0
    assert decision.valid == (decision.raw_text in ACTIONS)
    assert decision.action == (decision.raw_text if decision.valid else 'STOP')
    assert not decision.valid and decision.action == 'STOP'  # random weights emit garbage


def test_decide_matches_the_library_forward_path(policy):
    """Our explicit positions + cached greedy decode == the model's own mm path without cache."""
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    torch.manual_seed(0)
    images = [torch.randn(48, 128) for _ in range(3)]
    decision = policy.decide(INSTRUCTION, images[:2], images[2], grid_hw=(6, 8))
    ids = policy.prompt_ids(INSTRUCTION, [48] * 3)
    grid = torch.tensor([[1, 12, 16]] * 3)
    mm = {'image': BaseModelOutputWithPooling(pooler_output=tuple(images))}
    with torch.no_grad():
        ours, _ = policy.prefill(ids, images, [(6, 8)] * 3)
        theirs = policy.model(
            input_ids=ids,
            mm_token_type_ids=(ids == policy.image_token_id).int(),
            image_grid_thw=grid,
            mm_encoder_outputs=mm,
        ).logits
    assert torch.allclose(ours.logits[0, -1], theirs[0, -1], atol=1e-5)
    new = []
    with torch.no_grad():
        for _ in range(policy.max_new_tokens):
            logits = policy.model(
                input_ids=ids,
                mm_token_type_ids=(ids == policy.image_token_id).int(),
                image_grid_thw=grid,
                mm_encoder_outputs=mm,
                use_cache=False,
            ).logits
            token = int(logits[0, -1].argmax())
            if token in policy.stop_ids:
                break
            new.append(token)
            ids = torch.cat((ids, torch.tensor([[token]])), dim=1)
    assert decision.raw_text == policy.tokenizer.decode(new, skip_special_tokens=True)
    assert len(new) > 0


def test_plain_tensor_grid_is_recovered_from_the_folder_width(policy, caplog):
    assert policy.grid_cols == 224 // 28
    torch.manual_seed(1)
    images = [torch.randn(48, 128) for _ in range(3)]
    explicit = policy.decide(INSTRUCTION, images[:2], images[2], grid_hw=(6, 8))
    inferred = policy.decide(INSTRUCTION, images[:2], images[2])
    assert inferred.raw_text == explicit.raw_text
    odd = [torch.randn(7, 128) for _ in range(2)]  # 7 tokens: no grid with 8 columns
    decision = policy.decide(INSTRUCTION, odd[:1], odd[1])
    assert decision.action in ACTIONS
    assert 'merged grid of the image tokens unknown' in caplog.text


def test_released_fusion_adds_current_spatial_to_every_image(tiny_folder, policy):
    enc = DualMemoryEncoder.from_folder(tiny_folder)
    frames = [enc.encode(f) for f in _frames(4, seed=5)]
    released = policy.decide(INSTRUCTION, frames[:-1], frames[-1], fusion='released')
    manual = [f.semantic + 0.2 * frames[-1].spatial for f in frames]
    ids = policy.prompt_ids(INSTRUCTION, [48] * 4)
    with torch.no_grad():
        ours, _ = policy.prefill(ids, manual, [(6, 8)] * 4)
        per_frame, _ = policy.prefill(ids, [f.fused for f in frames], [(6, 8)] * 4)
    assert released.raw_text == policy.decide(INSTRUCTION, manual[:-1], manual[-1]).raw_text
    assert (ours.logits - per_frame.logits).abs().max() > 1e-4  # the two modes really differ
    with pytest.raises(ValueError, match='FusedFrame'):
        policy.decide(INSTRUCTION, [f.fused for f in frames[:-1]], frames[-1], fusion='released')


def _force_answer(policy: JanusPolicy, answer: str) -> None:
    """Make the LLM a bigram machine: residual = token embedding, lm_head maps token -> next."""
    model = policy.model
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.get_input_embeddings().weight
        normed = emb / emb.pow(2).mean(-1, keepdim=True).sqrt()
        model.lm_head.weight.zero_()
        last_prompt = policy.prompt_ids('x', [1])[0, -1].item()
        chain = [last_prompt] + policy.tokenizer(answer, add_special_tokens=False)['input_ids']
        chain.append(policy.tokenizer.convert_tokens_to_ids('<|im_end|>'))
        assert len(set(chain)) == len(chain)
        for prev, nxt in zip(chain[:-1], chain[1:], strict=True):
            model.lm_head.weight[nxt] += 10 * normed[prev] / model.model.language_model.norm.weight


def test_decide_returns_valid_action_when_the_model_answers_one(tiny_folder):
    policy = JanusPolicy.from_folder(tiny_folder)
    _force_answer(policy, 'TURN_LEFT')
    images = [torch.randn(48, 128) for _ in range(12)]
    decision = policy.decide(INSTRUCTION, images[:-1], images[-1], grid_hw=(6, 8))
    assert (decision.action, decision.valid, decision.raw_text) == ('TURN_LEFT', True, 'TURN_LEFT')


def test_models_never_import_rclpy():
    modules = discover_modules('vln_stack.models')
    assert 'vln_stack.models.llm_policy' in modules
    assert static_ros_imports(modules) == []


def test_the_decision_llm_loads_without_a_vision_tower(tiny_folder):
    from transformers import Qwen2_5_VLForConditionalGeneration

    policy = JanusPolicy.from_folder(tiny_folder)
    names = [n for n, _ in policy.model.named_parameters()]
    assert names and not any('visual' in n for n in names)
    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_folder, local_files_only=True,
                                                              attn_implementation='sdpa')
    assert full.model.visual is not None
    assert sum(p.numel() for p in full.parameters()) > sum(
        p.numel() for p in policy.model.parameters()) + sum(
        p.numel() for p in full.model.visual.parameters()) - 1
    ids = torch.randint(0, 400, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(policy.model(input_ids=ids).logits, full(input_ids=ids).logits)


def test_encoder_in_bfloat16_keeps_rope_frequencies_in_float32(tiny_folder):
    enc = DualMemoryEncoder.from_folder(tiny_folder, dtype=torch.bfloat16)
    assert next(enc.semantic.parameters()).dtype is torch.bfloat16
    freqs = {n: b for n, b in enc.semantic.named_buffers() if n.endswith('inv_freq')}
    assert freqs and all(b.dtype is torch.float32 for b in freqs.values())
    ref = DualMemoryEncoder.from_folder(tiny_folder)
    for name, buf in freqs.items():
        assert torch.equal(buf, dict(ref.semantic.named_buffers())[name])
