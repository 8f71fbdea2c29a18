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

    python -m vln_stack.tools.bench.memory_budget                 # janusvln-7b, bf16 + fp32
    python -m vln_stack.tools.bench.memory_budget --preset tiny --dtype float32
    python -m vln_stack.tools.bench.memory_budget --checkpoint models/janusvln --json budget.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from .stack_shape import (Geometry, StackShape, frame_geometry, shape_from_checkpoint,
                          shape_from_preset)

__all__ = ['Budget', 'Line', 'compute_budget', 'format_budget', 'main']

BYTES = {'float32': 4, 'bfloat16': 2, 'float16': 2}
GIB = float(2**30)
NUM_IMAGES = 9  # released prompt: 8 sampled history frames + the current one
NEW_TOKENS = 24  # released max_new_tokens


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
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bench.memory_budget',
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
