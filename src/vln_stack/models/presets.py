"""Named model sizes: the tiny CPU test preset and the released JanusVLN (Qwen2.5-VL-7B) values.

The 7B values are from CHECKPOINTS.md §3.1; never rely on the default ``Qwen2_5_VLConfig()``
(a 72B-style text tower with vision hidden 3584).
"""

from __future__ import annotations

import copy

from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig

from .checkpoint import JanusSettings

__all__ = [
    'ENCODER_PRESETS',
    'QWEN7B_TEXT',
    'QWEN7B_VISION',
    'TINY_SETTINGS',
    'TINY_TEXT',
    'TINY_VISION',
    'build_qwen_config',
]

TINY_VISION: dict = dict(
    depth=2,
    hidden_size=64,
    intermediate_size=128,
    num_heads=4,
    out_hidden_size=128,
    fullatt_block_indexes=[1],
    window_size=112,
    tokens_per_second=2,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    in_channels=3,
    hidden_act='silu',
)
TINY_TEXT: dict = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    hidden_act='silu',
    rope_parameters={
        'rope_type': 'default',
        'mrope_section': [4, 6, 6],
        'rope_theta': 1_000_000.0,
    },
    use_sliding_window=False,
    tie_word_embeddings=False,
)
TINY_SETTINGS = JanusSettings(
    vggt_preset='tiny',
    input_width=224,
    vggt_layer=-2,
    lam=0.2,
    merger_hidden_dim=128,
    llm_width=TINY_TEXT['hidden_size'],
)

QWEN7B_VISION: dict = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    fullatt_block_indexes=[7, 15, 23, 31],
    window_size=112,
    tokens_per_second=2,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    in_channels=3,
    hidden_act='silu',
)
QWEN7B_TEXT: dict = dict(
    vocab_size=152064,
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=128000,
    rms_norm_eps=1e-6,
    hidden_act='silu',
    sliding_window=32768,
    use_sliding_window=False,
    max_window_layers=28,
    rope_parameters={
        'rope_type': 'default',
        'mrope_section': [16, 24, 24],
        'rope_theta': 1_000_000.0,
    },
    bos_token_id=151643,
    eos_token_id=151645,
    tie_word_embeddings=False,
)

# name -> (settings, Qwen vision config) for DualMemoryEncoder.from_preset
ENCODER_PRESETS: dict[str, tuple[JanusSettings, dict]] = {
    'tiny': (TINY_SETTINGS, TINY_VISION),
    'janusvln-7b': (JanusSettings(), QWEN7B_VISION),
}


def build_qwen_config(
    text: dict,
    vision: dict,
    *,
    image_token_id: int,
    video_token_id: int,
    vision_start_token_id: int,
    vision_end_token_id: int,
    extra: dict | None = None,
) -> Qwen2_5_VLConfig:
    """An explicit `Qwen2_5_VLConfig` (SDPA attention) plus extra top-level fields (``lam``...)."""
    cfg = Qwen2_5_VLConfig(
        text_config=copy.deepcopy(text),
        vision_config=copy.deepcopy(vision),
        image_token_id=image_token_id,
        video_token_id=video_token_id,
        vision_start_token_id=vision_start_token_id,
        vision_end_token_id=vision_end_token_id,
        tie_word_embeddings=bool(text.get('tie_word_embeddings', False)),
        attn_implementation='sdpa',
    )
    for key, value in (extra or {}).items():
        setattr(cfg, key, value)
    return cfg
