"""ROS-free JanusVLN model core.

Streaming VGGT spatial memory, Qwen2.5-VL semantics, fusion and the LLM policy.

Names are imported lazily so ``import vln_stack.models`` stays cheap (transformers loads on first
use).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    'FrameKVCache': 'kv_cache',
    'VGGTAggregator': 'vggt',
    'VGGTConfig': 'vggt',
    'VGGT_PRESETS': 'vggt',
    'SemanticEncoder': 'semantic',
    'preprocess_rgb': 'semantic',
    'qwen_patchify': 'semantic',
    'SpatialMerger': 'fusion',
    'fuse_per_frame': 'fusion',
    'fuse_released': 'fusion',
    'merge_2x2': 'fusion',
    'DualMemoryEncoder': 'dual_encoder',
    'FusedFrame': 'dual_encoder',
    'JanusPolicy': 'llm_policy',
    'PolicyDecision': 'llm_policy',
    'ACTIONS': 'llm_policy',
    'parse_action': 'llm_policy',
    'sample_history': 'llm_policy',
    'JanusSettings': 'checkpoint',
    'make_tiny_checkpoint': 'tiny_checkpoint',
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(f'{__name__}.{module}'), name)
