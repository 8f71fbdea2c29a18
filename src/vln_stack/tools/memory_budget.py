"""Memory budget of the JanusVLN stack, per node and dtype: weights, key/value state, 24 GB fit.

Nothing is loaded or allocated: the modules are built on the ``meta`` device (from a preset, or
from a checkpoint folder's config.json) and their parameters counted (``sum(p.numel())``); the
state sizes follow from the same configs and the frame geometry. Per dtype it prints:

* ``memory_encoder`` node: VGGT aggregator (all layers are loaded; only layers 0..vggt_layer run),
  spatial merger, Qwen2.5-VL vision tower, and the VGGT global-attention memory (`FrameKVCache`:
  (8 sink + 48 window + 1 staging) slots x layers written (0..vggt_layer) x K,V x heads x
  tokens/frame x head_dim);
* ``decision`` node: the Qwen2.5-VL text model + lm_head (no vision tower: image tokens come
  from the encoder), and the LLM key/value memory of both janus modes: ``released`` (no
  cross-step LLM cache: the transient K/V of one 9-image prompt plus the 24 generated tokens; the
  node also keeps one ``[N, D]`` semantic tensor per executed step, at the model dtype, in host
  RAM) and ``streaming`` (`SinkWindowCache` buffers, allocated once per episode: instruction sink
  + (8 + 48 + 1 staging) frame blocks + room for the longest query and 24 answer tokens);
* totals per node and for the stack against a GPU (default 24 GiB), a rough activation estimate
  for the largest single step (formula printed), and the VGGT window that would fit.

Text-token counts come from the checkpoint's tokenizer when it has one, else from an estimate
(4 characters per token, 1 per special token) on the released prompt strings.

Examples::

    python -m vln_stack.tools.memory_budget                           # janusvln-7b, bf16 + fp32
    python -m vln_stack.tools.memory_budget --preset tiny --dtype float32
    python -m vln_stack.tools.memory_budget --checkpoint models/janusvln --json budget.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    'Budget', 'Geometry', 'Line', 'StackShape', 'TextTokens', 'compute_budget', 'format_budget',
    'frame_geometry', 'main', 'preset_qwen_config', 'shape_from_checkpoint', 'shape_from_preset',
]

BYTES = {'float32': 4, 'bfloat16': 2, 'float16': 2}
GIB = float(2**30)
NUM_IMAGES = 9  # released prompt: 8 sampled history frames + the current one
NEW_TOKENS = 24  # released max_new_tokens
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


@dataclass(frozen=True)
class Line:
    """One table row; bytes per janus mode (equal for weights)."""

    node: str
    name: str
    params: int | None
    released: int
    streaming: int
    where: str  # 'gpu' | 'host'
    note: str = ''


@dataclass
class Budget:
    dtype: str
    bytes_per_param: int
    geometry: Geometry
    gpu_bytes: int
    lines: list[Line]
    node_gpu: dict[str, dict[str, int]]  # node -> mode -> bytes
    stack_gpu: dict[str, int]  # mode -> bytes
    host: dict[str, int]  # mode -> bytes (history tokens)
    activations: dict[str, int]  # mode -> rough bytes, encoder + decision step
    vggt_slot_bytes: int
    max_window: dict[str, int]  # mode -> largest VGGT window fitting (with activations)


# ---- shapes ------------------------------------------------------------------------------------
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
    from ..models.llm_memory import STREAM_HEAD_TEMPLATE, STREAM_QUERY, STREAM_RETRY_QUERY
    from ..models.llm_policy import build_prompt

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
    from ..models.presets import ENCODER_PRESETS, QWEN7B_TEXT, TINY_TEXT, build_qwen_config

    if name not in ENCODER_PRESETS:
        raise ValueError(f'unknown preset {name!r}; known: {sorted(ENCODER_PRESETS)}')
    settings, vision = ENCODER_PRESETS[name]
    extra = {'lam': settings.lam, 'vggt_merger_hidden_dim': settings.merger_hidden_dim}
    if name != 'tiny':
        return settings, vision, build_qwen_config(QWEN7B_TEXT, vision, **QWEN7B_IDS,
                                                   extra=extra), None
    from ..models.tiny_checkpoint import build_tiny_tokenizer

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

    from ..models.dual_encoder import DualMemoryEncoder

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

    from ..models.checkpoint import JanusSettings, check_folder, read_config

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


# ---- budget ------------------------------------------------------------------------------------
def _activations(s: StackShape, g: Geometry, nb: int, released_len: int) -> dict[str, int]:
    """Rough peak working memory of the largest step of each node, summed (see `format_budget`)."""
    vggt = g.vggt_tokens * (3 + 4 + 4) * s.vggt_dim * nb  # qkv, MLP hidden, ~4 residual copies
    vision = g.qwen_patches * (3 * s.vision_hidden + 2 * s.vision_intermediate
                               + 4 * s.vision_hidden) * nb
    per_tok = (3 * s.llm_intermediate + 6 * s.llm_hidden) * nb  # gate, up, act*up; ~6 x hidden
    block = g.merged_tokens + 2
    return {'released': max(vggt, vision) + released_len * per_tok,
            'streaming': max(vggt, vision) + max(block, s.text.stream_query) * per_tok}


def compute_budget(s: StackShape, dtype: str, *, frame_hw: tuple[int, int] = (480, 640),
                   steps: int = 400, gpu_gib: float = 24.0) -> Budget:
    """The budget of ``s`` at ``dtype`` (a `BYTES` key); a pure function of its inputs."""
    nb = BYTES[dtype]
    g = frame_geometry(frame_hw, s.input_width, s.vggt_patch, s.merge_size, s.vggt_special)
    written = s.vggt_layer + 1
    slots = s.kv_initial + s.kv_window + 1
    slot = written * 2 * s.vggt_heads * g.vggt_tokens * s.vggt_head_dim * nb
    per_tok = 2 * s.llm_layers * s.kv_heads * s.head_dim * nb
    block = g.merged_tokens + 2
    released_len = s.text.released_text + NUM_IMAGES * block + NEW_TOKENS
    reserve = max(s.text.stream_query, s.text.stream_retry) + NEW_TOKENS
    held = s.text.stream_head + slots * block + reserve
    history = steps * g.merged_tokens * s.llm_hidden * nb
    w = lambda n: n * nb  # noqa: E731
    enc, dec = 'memory_encoder', 'decision'
    lines = [
        Line(enc, f'VGGT aggregator ({s.vggt_depth} layers loaded)', s.aggregator_params,
             w(s.aggregator_params), w(s.aggregator_params), 'gpu',
             f'layers 0..{s.vggt_layer} run: {s.aggregator_run_params:,} params '
             f'({w(s.aggregator_run_params) / 2**20:,.0f} MiB); later layers loaded, never run'),
        Line(enc, 'spatial merger', s.merger_params, w(s.merger_params), w(s.merger_params), 'gpu'),
        Line(enc, 'Qwen vision tower', s.vision_params, w(s.vision_params), w(s.vision_params),
             'gpu'),
        Line(enc, 'VGGT memory K/V (FrameKVCache)', None, slots * slot, slots * slot, 'gpu',
             f'{slots} slots ({s.kv_initial}+{s.kv_window}+1 staging) x {written} layers x 2 x '
             f'{s.vggt_heads} heads x {g.vggt_tokens} tok x {s.vggt_head_dim} x {nb} B'),
        Line(dec, 'LLM text model', s.llm_text_params, w(s.llm_text_params),
             w(s.llm_text_params), 'gpu'),
        Line(dec, 'lm_head', s.lm_head_params, w(s.lm_head_params), w(s.lm_head_params), 'gpu',
             '' if s.lm_head_params else 'tied to the embedding'),
        Line(dec, 'LLM K/V', None, released_len * per_tok, held * per_tok, 'gpu',
             f'released: transient {released_len:,} tok ({s.text.released_text} text + '
             f'{NUM_IMAGES}x{block} + {NEW_TOKENS} new); streaming: buffers of {held:,} tok '
             f'(sink {s.text.stream_head} + {slots}x{block} + query/answer {reserve}); '
             f'{per_tok:,} B/tok'),
        Line(dec, 'history tokens (host RAM)', None, history, 0, 'host',
             f'released keeps {steps} steps x {g.merged_tokens} x {s.llm_hidden} x {nb} B; '
             'streaming keeps none'),
    ]
    return _totals(s, g, dtype, nb, lines, gpu_gib, slot, released_len)


def _totals(s, g, dtype, nb, lines, gpu_gib, slot, released_len) -> Budget:
    modes = ('released', 'streaming')
    gpu = int(gpu_gib * GIB)
    nodes = {n: {m: sum(getattr(ln, m) for ln in lines if ln.node == n and ln.where == 'gpu')
                 for m in modes} for n in ('memory_encoder', 'decision')}
    stack = {m: sum(nodes[n][m] for n in nodes) for m in modes}
    host = {m: sum(getattr(ln, m) for ln in lines if ln.where == 'host') for m in modes}
    act = _activations(s, g, nb, released_len)
    vggt_kv = next(ln.released for ln in lines if ln.name.startswith('VGGT memory'))
    max_window = {m: (gpu - (stack[m] - vggt_kv) - act[m]) // slot - s.kv_initial - 1
                  for m in modes}
    return Budget(dtype, nb, g, gpu, lines, nodes, stack, host, act, slot, max_window)


# ---- report ------------------------------------------------------------------------------------
def _fit(total: int, gpu: int) -> str:
    spare = gpu - total
    word = 'FITS, spare' if spare >= 0 else 'DOES NOT FIT, short by'
    return f'{total / GIB:6.2f} GiB -> {word} {abs(spare) / GIB:.2f} GiB'


def format_budget(b: Budget, s: StackShape) -> str:
    g = b.geometry
    unit, div = ('GiB', GIB) if b.stack_gpu['released'] >= GIB else ('MiB', 2.0**20)
    num = lambda n: f'{n / div:9.2f}'  # noqa: E731
    out = [
        f'== memory budget: {s.source}, {b.dtype} ({b.bytes_per_param} B/param) ==',
        f'frame {g.frame_hw[0]}x{g.frame_hw[1]} -> VGGT {g.vggt_hw[0]}x{g.vggt_hw[1]}, grid '
        f'{g.vggt_grid[0]}x{g.vggt_grid[1]}, {g.vggt_tokens} tok/frame; Qwen {g.qwen_hw[0]}x'
        f'{g.qwen_hw[1]} -> {g.merged_tokens} merged tok/image; vggt_layer {s.vggt_layer} of '
        f'0..{s.vggt_depth - 1}; text tokens {s.text.method}',
        f'  {"item":36s} {"params":>15s} {"released":>9s} {"streaming":>9s}  ({unit})',
    ]
    for node in ('memory_encoder', 'decision'):
        out.append(f'{node}')
        for ln in (x for x in b.lines if x.node == node):
            params = f'{ln.params:,}' if ln.params is not None else ''
            where = ' [host]' if ln.where == 'host' else ''
            out.append(f'  {ln.name + where:36s} {params:>15s} {num(ln.released)} '
                       f'{num(ln.streaming)}')
            if ln.note:
                out.append(f'      ({ln.note})')
        out.append(f'  {"= node total on the GPU":36s} {"":>15s} '
                   f'{num(b.node_gpu[node]["released"])} {num(b.node_gpu[node]["streaming"])}')
    out.append(f'  {"= STACK on the GPU":36s} {"":>15s} {num(b.stack_gpu["released"])} '
               f'{num(b.stack_gpu["streaming"])}')
    cap = b.gpu_bytes / GIB
    for m in ('released', 'streaming'):
        out.append(f'{m:9s} vs a {cap:g} GiB GPU: weights + state '
                   f'{_fit(b.stack_gpu[m], b.gpu_bytes)}'
                   f'; + activations ~{b.activations[m] / GIB:.2f} GiB: '
                   f'{_fit(b.stack_gpu[m] + b.activations[m], b.gpu_bytes)}'
                   f'; host RAM {b.host[m] / GIB:.2f} GiB')
    for m in ('released', 'streaming'):
        w = b.max_window[m]
        fit = (f'{w} frames' if w >= 1 else 'none (does not fit even without VGGT memory)')
        out.append(f'{m:9s}: largest VGGT window that fits (with activations; 1 slot = '
                   f'{b.vggt_slot_bytes / 2**20:.1f} MiB): {fit} (released window {s.kv_window})')
    out += [
        'not included: CUDA context per process (~0.3-0.6 GiB each, 2 node processes), allocator '
        'fragmentation and cuBLAS workspaces; a card sold as "24 GB" exposes 22.5-24 GiB.',
        'activations (rough, largest step per node, both nodes summed): encoder = max(VGGT step: '
        'P x 11C, vision: patches x (7h + 2I)); released = L x (3I + 6D) (MLP gate/up/product + '
        'hidden copies, prompt L tokens); streaming = one frame block (the largest forward; the '
        'memory is attended in place) x (3I + 6D). '
        'Assumes fused SDPA kernels (flash / memory-efficient); the math kernel would add '
        f'heads x Lq x Lk scores (VGGT at capacity: {s.vggt_heads} x {g.vggt_tokens} x '
        f'{(s.kv_initial + s.kv_window + 1) * g.vggt_tokens:,} x {b.bytes_per_param} B).',
    ]
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.memory_budget',
                                 description=__doc__.split('\n\n')[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument('--checkpoint', type=Path, help='JanusVLN folder (only config.json is read)')
    src.add_argument('--preset', choices=('janusvln-7b', 'tiny'), default='janusvln-7b')
    ap.add_argument('--dtype', nargs='+', choices=sorted(BYTES), default=['bfloat16', 'float32'])
    ap.add_argument('--frame-hw', nargs=2, type=int, default=[480, 640], metavar=('H', 'W'))
    ap.add_argument('--steps', type=int, default=400, help='executed steps (history kept)')
    ap.add_argument('--gpu-gib', type=float, default=24.0, help='GPU memory to fit (GiB)')
    ap.add_argument('--json', type=Path, help='also write the budgets as JSON here')
    args = ap.parse_args(argv)
    shape = (shape_from_checkpoint(args.checkpoint) if args.checkpoint
             else shape_from_preset(args.preset))
    budgets = [compute_budget(shape, d, frame_hw=tuple(args.frame_hw), steps=args.steps,
                              gpu_gib=args.gpu_gib) for d in args.dtype]
    print('\n\n'.join(format_budget(b, shape) for b in budgets))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({'shape': dataclasses.asdict(shape),
                                         'budgets': [dataclasses.asdict(b) for b in budgets]},
                                        indent=1))
        print(f'\nwrote {args.json}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
