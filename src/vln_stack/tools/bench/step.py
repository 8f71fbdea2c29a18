"""Per-step latency of the JanusVLN stack, encoder to action, at each VGGT memory size.

One command measures p50 / p95 (ms) of:

* ``vggt step``: the VGGT aggregator (layers 0..vggt_layer) on one frame vs a memory of F frames;
* ``qwen vision step``: the Qwen2.5-VL vision tower on one frame (476x644 at real size);
* ``llm prefill``: the released 9-image prompt (8 history images + the current one);
* ``llm decode``: one greedy token on top of that prompt (per token);
* ``streaming step``: `StreamingJanusPolicy.step` with F frame blocks held (append, query, answer);
* ``decision step``: `DualMemoryEncoder.encode` of one 480x640 RGB frame (VGGT memory of F frames)
  + `JanusPolicy.decide` with the released prompt and fusion (ROS transport excluded).

F-dependent rows are measured at each ``--frames`` value: the memories are filled first and every
timed step runs on a copy, so each repeat sees exactly F frames. CUDA is synchronised around each
timed call; all runs under ``torch.inference_mode``. Answers decode exactly ``--new-tokens``
tokens (stop tokens disabled: random weights stop at random; a real action word is a few tokens
plus ``<|im_end|>``). Peak memory per row (CUDA): allocated before the step (weights, one memory)
plus the step's own peak, not the benchmark's copies. On CPU: 'n/a', and the process peak RSS.

Without ``--checkpoint`` the weights are random in the official layout, built directly on the
device in the target dtype (the LLM without its vision tower, as the decision node loads it),
with SDPA attention (flash-attention 2 for the LLM when ``flash_attn`` is importable). The
real-size preset has no tokenizer offline: the text is tokenized by the tiny BPE while the image
pad / vision start / end ids are the model config's, so the image part of the prompt (9 x 393 of
~3,700 tokens) is exact and the text part is within a few dozen tokens of the real one.

Goal: decision step p50 < 60 ms at F=48 on one H100.

Examples::

    python -m vln_stack.tools.bench.step --preset tiny --device cpu      # a few seconds
    python -m vln_stack.tools.bench.step --device cuda                   # 7B random weights
    python -m vln_stack.tools.bench.step --checkpoint models/janusvln --device cuda
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .stack_shape import INSTRUCTION, preset_qwen_config
from .step_timing import Row, Timer, log, make_row

__all__ = ['Row', 'StepConfig', 'StepResult', 'build_stack', 'format_result', 'main', 'run']

GOAL_MS, GOAL_FRAMES = 60.0, 48
MIB = float(2**20)


@dataclass
class StepConfig:
    preset: str = 'janusvln-7b'
    checkpoint: Path | None = None
    device: str = 'cuda'
    dtype: str = 'auto'
    frames: tuple[int, ...] = (8, 48)
    repeats: int = 0  # 0: 20 on CUDA, 5 on CPU
    warmup: int = -1  # -1: 3 on CUDA, 1 on CPU
    new_tokens: int = 4
    attn: str = 'auto'
    seed: int = 0


@dataclass
class StepResult:
    rows: list[Row]
    meta: dict
    goal: str


# ---- the stack ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _attn(cfg: StepConfig, device: torch.device, dtype: torch.dtype) -> str:
    if cfg.attn != 'auto':
        return cfg.attn
    flash = importlib.util.find_spec('flash_attn') is not None
    return 'flash_attention_2' if flash and device.type == 'cuda' and dtype != torch.float32 \
        else 'sdpa'


def build_stack(cfg: StepConfig, device: torch.device, dtype: torch.dtype, attn: str):
    """``(encoder, policy, note)``: from the checkpoint, or random weights built on ``device``."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from ...models.dual_encoder import DualMemoryEncoder
    from ...models.llm_policy import JanusPolicy

    if cfg.checkpoint is not None:
        enc = DualMemoryEncoder.from_folder(cfg.checkpoint, device=device, dtype=dtype)
        policy = JanusPolicy.from_folder(cfg.checkpoint, device=device, dtype=dtype)
        if attn != 'sdpa':
            policy.model.set_attn_implementation(attn)
        return enc, policy, f'weights and tokenizer of {cfg.checkpoint}'
    settings, vision, qcfg, tok = preset_qwen_config(cfg.preset)
    note = f'random weights, preset {cfg.preset}'
    if tok is None:
        from ...models.tiny_checkpoint import build_tiny_tokenizer

        tok = build_tiny_tokenizer()
        note += ('; text tokenized by the tiny BPE (no Qwen tokenizer offline), image pad / '
                 'vision start / end ids from the model config')
    with torch.device(device), _default_dtype(dtype):
        agg, merger, sem = DualMemoryEncoder.build_modules(settings, vision, seed=cfg.seed,
                                                           random_init=False)
        torch.manual_seed(cfg.seed)
        llm = Qwen2_5_VLForConditionalGeneration._from_config(qcfg, dtype=dtype,
                                                              attn_implementation=attn)
    llm.model.visual = None  # the decision node holds no vision tower
    if device.type == 'cuda':
        torch.cuda.empty_cache()
    enc = DualMemoryEncoder(agg, merger, sem, settings=settings, device=device, dtype=dtype)
    policy = JanusPolicy(llm, tok, grid_cols=settings.input_width // 28, lam=settings.lam)
    return enc, policy, note


# ---- measurements ------------------------------------------------------------------------------
def _fixed_rows(timer: Timer, enc, policy, image, grid, new_tokens: int) -> tuple[list[Row], int]:
    """Rows that do not depend on F: vision tower, released prefill, decode per token."""
    rows = [timer.measure('qwen vision step', None, lambda: enc.semantic(image))]
    width = policy.model.get_input_embeddings().weight.shape[1]
    tokens = [torch.randn(grid[0] * grid[1], width, device=image.device, dtype=policy.dtype)
              for _ in range(9)]
    ids = policy.prompt_ids(INSTRUCTION, [t.shape[0] for t in tokens])
    rows.append(timer.measure('llm prefill (released 9 images)', None,
                              lambda: policy.prefill(ids, tokens, [grid] * 9)))
    rows.append(_decode_row(timer, policy, ids, tokens, grid, max(1, new_tokens - 1)))
    return rows, int(ids.shape[1])


def _decode_row(timer: Timer, policy, ids, tokens, grid, steps: int) -> Row:
    """Per-token greedy decode after a (untimed) released prefill, as `JanusPolicy` decodes."""
    embed, device = policy.model.get_input_embeddings(), tokens[0].device
    times, peaks, box = [], [], {}
    for i in range(timer.warmup + timer.repeats):
        resident = timer.allocated()
        box['out'], pos = policy.prefill(ids, tokens, [grid] * len(tokens))
        for step in range(steps):
            token = torch.tensor([[int(box['out'].logits[0, -1].argmax())]], device=device)
            p = torch.full((3, 1, 1), pos + step, dtype=torch.long, device=device)
            cache = box['out'].past_key_values
            ms, extra = timer.once(lambda t=token, p=p, c=cache: box.update(out=policy.model(
                inputs_embeds=embed(t), position_ids=p, past_key_values=c, use_cache=True)))
            if i >= timer.warmup:
                times.append(ms)
                peaks.append(resident + extra)
        box.clear()
    return make_row('llm decode (per token)', None, times, max(peaks) if timer.cuda else None)


def _history(policy, grid, n: int = 8):
    """Past frames as the janus backend keeps them: semantic tokens on the host, model dtype."""
    from ...models.dual_encoder import FusedFrame

    width = policy.model.get_input_embeddings().weight.shape[1]
    out = []
    for _ in range(n):
        sem = torch.randn(grid[0] * grid[1], width).to(policy.dtype)
        out.append(FusedFrame(fused=sem, semantic=sem, spatial=None, grid_hw=grid, frame_index=0,
                              memory_frames=0, latency_ms=0.0))
    return out


def _encoder_rows(timer: Timer, enc, policy, images, rgb, grid, frames: int) -> list[Row]:
    """VGGT step and whole decision step with the encoder memory at ``frames`` frames."""
    snapshot, image, history = enc.cache, images[frames % len(images)], _history(policy, grid)
    box = {}

    def prepare():
        box['cache'] = copy.deepcopy(snapshot)
        enc.cache = box['cache']

    def cleanup():
        enc.cache = snapshot
        box.clear()

    def vggt():
        enc.aggregator.forward_frame(image[None], box['cache'], layers=[enc.layer_index])

    def decision():
        frame = enc.encode(rgb)
        policy.decide(INSTRUCTION, history, frame, fusion='released')

    return [timer.measure('vggt step (1 frame vs F)', frames, vggt, prepare=prepare,
                          cleanup=cleanup),
            timer.measure('decision step (encode + released)', frames, decision,
                          prepare=prepare, cleanup=cleanup)]


def _streaming_row(timer: Timer, stream, tokens, grid, frames: int) -> Row:
    """`StreamingJanusPolicy.step` with ``frames`` blocks held; each run on a copy of the memory."""
    snap = (stream.cache, stream.cursor, list(stream.held_at_append), stream.block_len)

    def restore(cache):
        stream.cache, stream.cursor, stream.block_len = cache, snap[1], snap[3]
        stream.held_at_append = list(snap[2])

    return timer.measure('streaming step (append + query + answer)', frames,
                         lambda: stream.step(tokens, grid),
                         prepare=lambda: restore(copy.deepcopy(snap[0])),
                         cleanup=lambda: restore(snap[0]))


# ---- driver ------------------------------------------------------------------------------------
def run(cfg: StepConfig) -> StepResult:
    from ...models.llm_memory import StreamingJanusPolicy
    from ...models.runtime import resolve_dtype

    device = torch.device(cfg.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('--device cuda asked for, but torch.cuda.is_available() is False')
    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.checkpoint is None and cfg.preset != 'tiny' and device.type == 'cpu' \
            and dtype == torch.float32:
        raise SystemExit('refusing to build the 7B stack in float32 on the CPU (~35 GiB); use '
                         '--device cuda, --dtype bfloat16 or --preset tiny')
    cuda = device.type == 'cuda'
    timer = Timer(device, cfg.repeats or (20 if cuda else 5),
                  cfg.warmup if cfg.warmup >= 0 else (3 if cuda else 1))
    attn = _attn(cfg, device, dtype)
    t0 = time.perf_counter()
    log(f'building the stack on {device} ({dtype}, LLM attention {attn}) ...')
    enc, policy, note = build_stack(cfg, device, dtype, attn)
    policy.max_new_tokens, policy.stop_ids = cfg.new_tokens, set()  # fixed-length answers
    log(f'built in {time.perf_counter() - t0:.1f} s')
    rng = np.random.default_rng(cfg.seed)  # habitat-size RGB frames
    rgbs = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(4)]
    images = [enc.preprocess(f).to(device, dtype) for f in rgbs]
    merged = (images[0].shape[1] // 28, images[0].shape[2] // 28)
    rows, prompt_len = _fixed_rows(timer, enc, policy, images[0], merged, cfg.new_tokens)
    stream = StreamingJanusPolicy(policy, retries=0)
    stream.reset(INSTRUCTION)
    width = policy.model.get_input_embeddings().weight.shape[1]
    block = torch.randn(merged[0] * merged[1], width, device=device, dtype=policy.dtype)
    enc.reset()
    filled = 0
    for f in sorted(set(cfg.frames)):
        log(f'filling the memories to {f} frames ...')
        while filled < f:
            enc.aggregator.forward_frame(images[filled % len(images)][None], enc.cache,
                                         layers=[enc.layer_index])
            stream.append_frame(block, merged)
            filled += 1
        rows += _encoder_rows(timer, enc, policy, images, rgbs[f % len(rgbs)], merged, f)
        rows.append(_streaming_row(timer, stream, block, merged, f))
    meta = _meta(cfg, device, dtype, attn, note, images[0], merged, prompt_len, timer)
    meta['wall_s'] = time.perf_counter() - t0
    return StepResult(rows, meta, goal_check(rows, meta, cfg))


def _meta(cfg, device, dtype, attn, note, image, merged, prompt_len, timer) -> dict:
    cuda = device.type == 'cuda'
    rss = None
    with contextlib.suppress(OSError), open('/proc/self/status') as fh:
        rss = next((int(ln.split()[1]) * 1024 for ln in fh if ln.startswith('VmHWM:')), None)
    return {
        'device': str(device), 'dtype': str(dtype).removeprefix('torch.'), 'attention': attn,
        'device_name': torch.cuda.get_device_name(device) if cuda else 'CPU',
        'weights': note, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'vggt_hw': list(image.shape[1:]), 'merged_grid': list(merged),
        'prompt_tokens': prompt_len, 'new_tokens': cfg.new_tokens, 'repeats': timer.repeats,
        'warmup': timer.warmup, 'peak_rss_bytes': rss,
        'cuda_max_allocated_bytes': torch.cuda.max_memory_allocated(device) if cuda else None,
    }


def goal_check(rows: list[Row], meta: dict, cfg: StepConfig) -> str:
    if not meta['device'].startswith('cuda'):
        return 'not a GPU run'
    row = next((r for r in rows if r.metric.startswith('decision') and r.frames == GOAL_FRAMES),
               None)
    if row is None:
        return f'not measured ({GOAL_FRAMES} not in --frames)'
    verdict = 'PASS' if row.p50_ms < GOAL_MS else 'FAIL'
    if 'H100' not in meta['device_name']:
        verdict += f' (indicative: {meta["device_name"]} is not an H100)'
    if cfg.checkpoint is None and cfg.preset == 'tiny':
        verdict += ' (indicative: tiny preset, not the real size)'
    return f'{verdict}: {row.p50_ms:.1f} ms'


def format_result(res: StepResult) -> str:
    m = res.meta
    out = [f'== step benchmark: {m["device_name"]} ({m["device"]}), {m["dtype"]}, LLM attention '
           f'{m["attention"]}, torch {m["torch"]}, {m["threads"]} threads ==',
           f'{m["weights"]}',
           f'VGGT input {m["vggt_hw"][0]}x{m["vggt_hw"][1]}, {m["merged_grid"][0]}x'
           f'{m["merged_grid"][1]} merged tokens/image, released prompt {m["prompt_tokens"]} '
           f'tokens, {m["new_tokens"]} new tokens per answer, {m["repeats"]} repeats after '
           f'{m["warmup"]} warm-up',
           f'  {"metric":42s} {"F":>4s} {"p50 ms":>9s} {"p95 ms":>9s} {"peak MiB":>9s}']
    for r in res.rows:
        peak = 'n/a' if r.peak_bytes is None else f'{r.peak_bytes / MIB:.0f}'
        out.append(f'  {r.metric:42s} {"-" if r.frames is None else r.frames:>4} '
                   f'{r.p50_ms:9.2f} {r.p95_ms:9.2f} {peak:>9s}')
    if m['cuda_max_allocated_bytes'] is not None:
        out.append(f'peak GPU memory: {max(r.peak_bytes for r in res.rows) / MIB:.0f} MiB in one '
                   f'step (weights + one memory + the step); torch.cuda.max_memory_allocated '
                   f'over the run {m["cuda_max_allocated_bytes"] / MIB:.0f} MiB (includes the '
                   'benchmark\'s copies of the memories)')
    else:
        rss = m['peak_rss_bytes']
        out.append('peak GPU memory: n/a (CPU run); process peak RSS '
                   + ('n/a' if rss is None else f'{rss / MIB:.0f} MiB'))
    out.append(f'goal: decision step p50 < {GOAL_MS:g} ms at F={GOAL_FRAMES} on one H100: '
               f'{res.goal}')
    return '\n'.join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bench.step',
                                 description=__doc__.split('\n\n')[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument('--checkpoint', type=Path, help='JanusVLN checkpoint folder')
    src.add_argument('--preset', choices=('janusvln-7b', 'tiny'), default='janusvln-7b')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--dtype', choices=('auto', 'float32', 'bfloat16', 'float16'),
                    default='auto', help='auto: bfloat16 on CUDA, float32 on CPU')
    ap.add_argument('--frames', type=int, nargs='+', default=[8, 48], help='memory sizes F')
    ap.add_argument('--repeats', type=int, default=0, help='timed runs (0: 20 CUDA, 5 CPU)')
    ap.add_argument('--warmup', type=int, default=-1, help='untimed runs (-1: 3 CUDA, 1 CPU)')
    ap.add_argument('--new-tokens', type=int, default=4, help='tokens per answer (>= 1)')
    ap.add_argument('--attn', choices=('auto', 'sdpa', 'flash_attention_2', 'eager'),
                    default='auto', help='LLM attention (auto: flash_attention_2 if importable)')
    ap.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--json', type=Path, help='also write the result as JSON here')
    args = ap.parse_args(argv)
    if args.new_tokens < 1 or args.repeats < 0 or min(args.frames) < 0:
        ap.error('--new-tokens must be >= 1, --repeats and --frames >= 0')
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = StepConfig(args.preset, args.checkpoint, args.device, args.dtype, tuple(args.frames),
                     args.repeats, args.warmup, args.new_tokens, args.attn, args.seed)
    with torch.inference_mode():
        res = run(cfg)
    print(format_result(res), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dataclasses.asdict(res), indent=1, default=str))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
