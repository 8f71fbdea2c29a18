"""What the JanusVLN stack is made of, for the memory budget and the step benchmark: parameter
counts and config values read from modules built on the meta device (from a named preset or a
checkpoint's config.json, no weight read), prompt text-token counts and per-frame geometry."""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ['INSTRUCTION', 'Geometry', 'StackShape', 'TextTokens', 'frame_geometry',
           'preset_qwen_config', 'shape_from_checkpoint', 'shape_from_preset']

QWEN7B_IDS = dict(image_token_id=151655, video_token_id=151656,
                  vision_start_token_id=151652, vision_end_token_id=151653)
# a typical R2R-length instruction (~30 words) for the text-token counts
INSTRUCTION = ('Walk out of the bedroom and turn left into the hallway. Go past the bathroom and '
               'the framed picture, then enter the kitchen on your right and stop next to the '
               'white refrigerator.')


@dataclass(frozen=True)
class TextTokens:
    """Text tokens of the prompts (image tokens excluded) and how they were counted."""

    released_text: int  # released prompt with no image block
    stream_head: int  # streaming sink: system turn + instruction
    stream_query: int  # streaming per-step query
    stream_retry: int  # streaming retry query (the longer one sizes the query area)
    method: str


@dataclass(frozen=True)
class StackShape:
    """Parameter counts (from meta modules) and the config values the budget needs."""

    source: str
    aggregator_params: int
    aggregator_run_params: int  # patch embed, tokens, AA blocks 0..vggt_layer
    merger_params: int
    vision_params: int
    llm_text_params: int
    lm_head_params: int  # 0 when tied to the embedding
    vggt_depth: int
    vggt_layer: int  # resolved, 0-based
    vggt_heads: int
    vggt_head_dim: int
    vggt_dim: int
    vggt_patch: int
    vggt_special: int  # camera + register tokens per frame
    input_width: int
    merge_size: int
    vision_hidden: int
    vision_intermediate: int
    llm_layers: int
    llm_hidden: int
    llm_intermediate: int
    kv_heads: int
    head_dim: int
    kv_initial: int
    kv_window: int
    text: TextTokens


@dataclass(frozen=True)
class Geometry:
    """Per-frame sizes: VGGT input and tokens, Qwen crop and merged tokens."""

    frame_hw: tuple[int, int]
    vggt_hw: tuple[int, int]
    vggt_grid: tuple[int, int]
    vggt_tokens: int
    qwen_hw: tuple[int, int]
    qwen_patches: int
    merged_tokens: int


def frame_geometry(frame_hw: tuple[int, int], input_width: int, patch: int = 14,
                   merge: int = 2, special: int = 5) -> Geometry:
    """Sizes after JanusVLN preprocessing (same arithmetic as `semantic.preprocess_rgb`)."""
    h, w = int(frame_hw[0]), int(frame_hw[1])
    new_h = min(round(h * (input_width / w) / patch) * patch, input_width)
    grid = (new_h // patch, input_width // patch)
    unit = patch * merge
    qwen = (new_h // unit * unit, input_width // unit * unit)
    merged = (qwen[0] // unit) * (qwen[1] // unit)
    return Geometry((h, w), (new_h, input_width), grid, special + grid[0] * grid[1], qwen,
                    merged * merge * merge, merged)


def _count_tokens(tokenizer) -> TextTokens:
    from ...models.llm_memory import STREAM_HEAD_TEMPLATE, STREAM_QUERY, STREAM_RETRY_QUERY
    from ...models.llm_policy import build_prompt

    texts = (build_prompt(INSTRUCTION, 0), STREAM_HEAD_TEMPLATE.format(instruction=INSTRUCTION),
             STREAM_QUERY, STREAM_RETRY_QUERY)
    if tokenizer is not None:
        counts = [len(tokenizer(t, add_special_tokens=False)['input_ids']) for t in texts]
        return TextTokens(*counts, method='counted with the model tokenizer')

    def estimate(text: str) -> int:
        specials = re.findall(r'<\|[a-z_]+\|>', text)
        rest = re.sub(r'<\|[a-z_]+\|>', '', text)
        return len(specials) + math.ceil(len(rest) / 4)

    return TextTokens(*(estimate(t) for t in texts),
                      method='estimated (4 chars/token, 1 per special token; no Qwen tokenizer)')


def preset_qwen_config(name: str):
    """``(settings, vision dict, Qwen2_5_VLConfig, tokenizer or None)`` of a named preset.

    ``tiny`` gets the tiny BPE tokenizer and the vocabulary / ids `make_tiny_checkpoint` uses;
    ``janusvln-7b`` the Qwen2.5-VL-7B values (CHECKPOINTS.md §3.1) and no tokenizer.
    """
    from ...models.presets import ENCODER_PRESETS, QWEN7B_TEXT, TINY_TEXT, build_qwen_config

    if name not in ENCODER_PRESETS:
        raise ValueError(f'unknown preset {name!r}; known: {sorted(ENCODER_PRESETS)}')
    settings, vision = ENCODER_PRESETS[name]
    extra = {'lam': settings.lam, 'vggt_merger_hidden_dim': settings.merger_hidden_dim}
    if name != 'tiny':
        return settings, vision, build_qwen_config(QWEN7B_TEXT, vision, **QWEN7B_IDS,
                                                   extra=extra), None
    from ...models.tiny_checkpoint import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ('<|image_pad|>', '<|video_pad|>', '<|vision_start|>', '<|vision_end|>',
            '<|endoftext|>', '<|im_end|>')}
    text = dict(TINY_TEXT, vocab_size=(len(tok) + 63) // 64 * 64, bos_token_id=ids['<|endoftext|>'],
                eos_token_id=ids['<|im_end|>'], pad_token_id=ids['<|endoftext|>'])
    cfg = build_qwen_config(
        text, vision, image_token_id=ids['<|image_pad|>'], video_token_id=ids['<|video_pad|>'],
        vision_start_token_id=ids['<|vision_start|>'],
        vision_end_token_id=ids['<|vision_end|>'], extra=extra)
    return settings, vision, cfg, tok


def _nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _measure(source: str, settings, vision, qwen_cfg, tokenizer) -> StackShape:
    """Build every module on the meta device and read the counts and sizes."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ...models.dual_encoder import DualMemoryEncoder

    with torch.device('meta'):
        agg, merger, sem = DualMemoryEncoder.build_modules(settings, vision, random_init=False)
        llm = Qwen2_5_VLForConditionalGeneration(qwen_cfg)
    layer = settings.vggt_layer % agg.depth
    unused = sum(_nparams(blocks[i]) for blocks in (agg.frame_blocks, agg.global_blocks)
                 for i in range(layer + 1, agg.depth))
    text_model = llm.model.language_model
    text_ids = {id(p) for p in text_model.parameters()}
    head = sum(p.numel() for p in llm.lm_head.parameters() if id(p) not in text_ids)
    tcfg = qwen_cfg.get_text_config()
    vcfg = sem.visual.config
    return StackShape(
        source=source, aggregator_params=_nparams(agg),
        aggregator_run_params=_nparams(agg) - unused,
        merger_params=_nparams(merger), vision_params=_nparams(sem),
        llm_text_params=_nparams(text_model), lm_head_params=head,
        vggt_depth=agg.depth, vggt_layer=layer, vggt_heads=agg.cfg.num_heads,
        vggt_head_dim=agg.cfg.head_dim, vggt_dim=agg.cfg.embed_dim,
        vggt_patch=agg.cfg.patch_size, vggt_special=agg.patch_start_idx,
        input_width=settings.input_width, merge_size=int(vcfg.spatial_merge_size),
        vision_hidden=int(vcfg.hidden_size), vision_intermediate=int(vcfg.intermediate_size),
        llm_layers=int(tcfg.num_hidden_layers), llm_hidden=int(tcfg.hidden_size),
        llm_intermediate=int(tcfg.intermediate_size), kv_heads=int(tcfg.num_key_value_heads),
        head_dim=int(getattr(tcfg, 'head_dim', None)
                     or tcfg.hidden_size // tcfg.num_attention_heads),
        kv_initial=settings.kv_initial_frames, kv_window=settings.kv_window_frames,
        text=_count_tokens(tokenizer))


def shape_from_preset(name: str) -> StackShape:
    settings, vision, cfg, tok = preset_qwen_config(name)
    return _measure(f'preset {name}', settings, vision, cfg, tok)


def shape_from_checkpoint(folder: str | Path) -> StackShape:
    """From the folder's config.json (and its tokenizer, if it loads); no weight is read."""
    from transformers.models.qwen2_5_vl import Qwen2_5_VLConfig

    from ...models.checkpoint import JanusSettings, check_folder, read_config

    folder = check_folder(folder)
    cfg = read_config(folder)
    qwen_cfg = Qwen2_5_VLConfig(**cfg)
    tok = None
    if any((folder / name).is_file() for name in ('tokenizer.json', 'vocab.json')):
        from transformers import AutoTokenizer
        with contextlib.suppress(OSError, ValueError):
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if tok is not None and not tok('go', add_special_tokens=False)['input_ids']:
            tok = None  # an empty stand-in, not the model's tokenizer
    return _measure(f'checkpoint {folder}', JanusSettings.from_config(cfg),
                    qwen_cfg.vision_config, qwen_cfg, tok)
