"""A released-style JanusVLN config.json builds the real-size encoder with checkpoint shapes."""

from __future__ import annotations

import torch
from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig

from vln_stack.models.checkpoint import JanusSettings
from vln_stack.models.dual_encoder import DualMemoryEncoder

# Flat Qwen2.5-VL-7B style config as JanusVLN saves it (no vln_stack block; legacy vision fields).
RELEASED_CONFIG = {
    'architectures': ['Qwen2_5_VLForConditionalGenerationForJanusVLN'],
    'model_type': 'qwen2_5_vl',
    'hidden_size': 3584,
    'intermediate_size': 18944,
    'num_hidden_layers': 28,
    'num_attention_heads': 28,
    'num_key_value_heads': 4,
    'rms_norm_eps': 1e-6,
    'rope_theta': 1e6,
    'vocab_size': 152064,
    'rope_scaling': {'type': 'mrope', 'mrope_section': [16, 24, 24]},
    'image_token_id': 151655,
    'video_token_id': 151656,
    'vision_start_token_id': 151652,
    'vision_end_token_id': 151653,
    'lam': 0.2,
    'reference_frame': 'first',
    'torch_dtype': 'bfloat16',
    'vision_config': {
        'depth': 32,
        'hidden_act': 'silu',
        'hidden_size': 1280,
        'intermediate_size': 3420,
        'num_heads': 16,
        'in_chans': 3,
        'out_hidden_size': 3584,
        'patch_size': 14,
        'spatial_merge_size': 2,
        'spatial_patch_size': 14,
        'window_size': 112,
        'fullatt_block_indexes': [7, 15, 23, 31],
        'tokens_per_second': 2,
        'temporal_patch_size': 2,
    },
}


def test_released_config_defaults():
    s = JanusSettings.from_config(RELEASED_CONFIG)
    assert (s.vggt_preset, s.input_width, s.vggt_layer, s.lam) == ('vggt-1b', 644, -2, 0.2)
    assert (s.merger_hidden_dim, s.llm_width, s.kv_initial_frames, s.kv_window_frames) == (
        4096,
        3584,
        8,
        48,
    )


def test_released_encoder_skeleton_matches_checkpoint_shapes():
    settings = JanusSettings.from_config(RELEASED_CONFIG)
    vision = Qwen2_5_VLConfig(**RELEASED_CONFIG).vision_config
    with torch.device('meta'):
        agg, merger, semantic = DualMemoryEncoder.build_modules(
            settings, vision, random_init=False
        )
    n = lambda m: sum(p.numel() for p in m.state_dict().values())  # noqa: E731
    assert len(agg.state_dict()) == 1210 and n(agg) == 909_112_320
    assert n(merger) == 48_244_224  # CHECKPOINTS.md §2.3 "merger"
    vis = semantic.visual.state_dict()
    assert n(semantic.visual) == 676_550_144  # CHECKPOINTS.md §2.3 "visual"
    assert tuple(vis['patch_embed.proj.weight'].shape) == (1280, 3, 2, 14, 14)
    assert tuple(vis['blocks.31.attn.qkv.weight'].shape) == (3840, 1280)
    assert tuple(vis['merger.mlp.2.weight'].shape) == (3584, 5120)
    assert settings.vggt_layer % agg.depth == 22
