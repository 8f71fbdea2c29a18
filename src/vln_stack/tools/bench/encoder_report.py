"""Encoder benchmark targets (the issue's three) and the text report."""

from __future__ import annotations

from .encoder_setup import MB, SOURCE_HW

# ---- targets -----------------------------------------------------------------------------------
def _row(rows: list[dict], n: int) -> dict | None:
    return next((r for r in rows if r['history_frames'] == n), None)


def evaluate_targets(spatial: list[dict], long: dict | None) -> list[dict]:
    targets = []
    r8, r48 = _row(spatial, 8), _row(spatial, 48)
    t = {'name': 'stream cost N=48 <= 2x cost N=8', 'threshold': 2.0}
    if r8 and r48:
        t['value'] = r48['stream_ms'] / r8['stream_ms']
        t['status'] = 'PASS' if t['value'] <= 2.0 else 'FAIL'
        t['value_min'] = r48['stream_ms_min'] / r8['stream_ms_min']
        t['detail'] = (
            f'{r48["stream_ms"]:.2f} ms / {r8["stream_ms"]:.2f} ms = {t["value"]:.2f}x '
            f'(medians; from the minima {t["value_min"]:.2f}x)'
        )
    else:
        t.update(value=None, status='SKIP', detail='needs 8 and 48 in --frames')
    targets.append(t)

    r32 = _row(spatial, 32)
    t = {'name': 'N=32: memory >= 10x faster than full recompute', 'threshold': 10.0}
    if r32 and r32.get('speedup') is not None:
        t['value'] = r32['speedup']
        t['status'] = 'PASS' if t['value'] >= 10.0 else 'FAIL'
        t['detail'] = (
            f'{r32["full_ms"]:.2f} ms / {r32["stream_ms"]:.2f} ms = {t["value"]:.1f}x'
        )
    else:
        t.update(value=None, status='SKIP', detail='needs 32 in --frames (and a full run)')
    targets.append(t)

    t = {'name': 'peak memory flat (within 5%) from frame 56 to frame 500', 'threshold': 0.05}
    cps = (long or {}).get('checkpoints') or []
    cap = (long or {}).get('capacity_frames', 56)
    cps = [c for c in cps if c['frame'] >= cap]
    if len(cps) >= 2:
        first, last_frame = cps[0], cps[-1]['frame']
        if first['frame'] != 56 or last_frame != 500:
            t['name'] = (
                f'peak memory flat (within 5%) from frame {first["frame"]} to frame {last_frame}'
            )
        cache_const = len({c['cache_bytes'] for c in cps}) == 1
        peaks = [c['window_peak_bytes'] for c in cps]
        if any(p is None for p in peaks):
            peaks = [c['rss_bytes'] for c in cps]
        if any(p is None for p in peaks):
            t.update(value=None, status='SKIP', detail='no peak-memory counter on this host')
        else:
            dev = max(abs(p / peaks[0] - 1.0) for p in peaks)
            t['value'] = dev
            t['status'] = 'PASS' if cache_const and dev <= 0.05 else 'FAIL'
            t['detail'] = (
                f'cache bytes {"constant" if cache_const else "CHANGED"} '
                f'({cps[0]["cache_bytes"] / MB:.2f} MB); window peak max deviation from frame '
                f'{first["frame"]}: {100 * dev:.2f}% '
                f'({min(peaks) / MB:.1f}..{max(peaks) / MB:.1f} MB)'
            )
    else:
        t.update(
            value=None, status='SKIP', detail=f'needs --long-run >= {cap + 1} for two marks'
        )
    targets.append(t)
    return targets


# ---- report ------------------------------------------------------------------------------------
def _mb(value: int | None, width: int = 9) -> str:
    return f'{"-":>{width}}' if value is None else f'{value / MB:{width}.2f}'


def _ms(value: float | None, width: int = 10) -> str:
    return f'{"-":>{width}}' if value is None else f'{value:{width}.2f}'


def format_report(result: dict) -> str:
    meta = result['setup']
    lines = [
        '',
        f'== Encoder memory benchmark: preset {meta["preset"]} on {meta["device_name"]} '
        f'({meta["dtype"]}{", autocast" if meta["autocast"] else ""}) ==',
        f'frames {meta["image_hw"][0]}x{meta["image_hw"][1]} px (from {SOURCE_HW[1]}x'
        f'{SOURCE_HW[0]} RGB, width {meta["width"]}), {meta["tokens_per_frame"]} tokens/frame, '
        f'memory bounds {meta["kv_initial"]} sink + {meta["kv_window"]} recent frames, '
        f'{meta["repeats"]} repeats (median), {meta["threads"]} threads, torch {meta["torch"]}',
        f'memory: {meta["memory_method"]}',
        '',
        'Spatial encoder (VGGT aggregator, all layers): add frame N+1',
        '  stream = memory holds min(N, cap) frames; full = block-causal recompute of N+1 frames',
        '  peak = transient working memory of the call (+ cache bytes for stream)',
        f'  {"N":>4} {"mem fr":>6} {"stream ms":>10} {"(min)":>7} {"full ms":>10} {"speedup":>8} '
        f'{"cache MB":>9} {"stream pk":>9} {"full pk":>9}',
    ]
    for r in result['spatial']:
        sp = '-' if r['speedup'] is None else f'{r["speedup"]:.1f}x'
        full = _ms(r['full_ms']) if r.get('full_error') is None else f'{r["full_error"]:>10}'
        lines.append(
            f'  {r["history_frames"]:>4} {r["memory_frames"]:>6} {_ms(r["stream_ms"])} '
            f'{_ms(r["stream_ms_min"], 7)} {full} '
            f'{sp:>8} {_mb(r["cache_bytes"])} {_mb(r["stream_peak_bytes"])} '
            f'{_mb(r["full_peak_bytes"])}'
        )
    if result.get('dual'):
        lines += _dual_lines(result)
    long = result.get('long_run')
    if long:
        lines += _long_run_lines(long, meta)
    lines += ['', 'Targets (spatial encoder, cached global-attention K/V memory):']
    for t in result['targets']:
        lines.append(f'  [{t["status"]}] {t["name"]}: {t["detail"]}')
    lines.append(f'\nwall time {result["wall_s"]:.1f} s; JSON: {result.get("json_path", "-")}')
    return '\n'.join(lines)


def _dual_lines(result: dict) -> list[str]:
    dual_meta = result['dual_meta']
    lines = [
        '',
        f'Dual encoder (DualMemoryEncoder.encode, preset {dual_meta["preset"]}: preprocess + '
        f'VGGT to layer {dual_meta["vggt_layer"]} with memory + merger + Qwen vision tower '
        f'+ fusion)',
        f'  {"N":>4} {"mem fr":>6} {"encode ms":>10} {"vs N=min":>9} {"cache MB":>9} '
        f'{"step pk":>9}',
    ]
    base = result['dual'][0]['encode_ms']
    for r in result['dual']:
        lines.append(
            f'  {r["history_frames"]:>4} {r["memory_frames"]:>6} {_ms(r["encode_ms"])} '
            f'{r["encode_ms"] / base:8.2f}x {_mb(r["cache_bytes"])} '
            f'{_mb(r["step_peak_bytes"])}'
        )
    return lines


def _long_run_lines(long: dict, meta: dict) -> list[str]:
    peak_name = 'alloc pk' if meta['device'].startswith('cuda') else 'RSS pk'
    lines = [
        '',
        f'Long run: {long["frames"]} frames streamed through the memory '
        f'(capacity {long["capacity_frames"]} frames)',
        f'  {"frame":>6} {"mem fr":>6} {"cache MB":>9} {"RSS MB":>9} {peak_name:>9}'
        + ('  (alloc pk: CUDA peak allocated in the window)' if peak_name == 'alloc pk'
           else '  (RSS pk: peak RSS since the previous mark)'),
    ]
    for c in long['checkpoints']:
        lines.append(
            f'  {c["frame"]:>6} {c["memory_frames"]:>6} {_mb(c["cache_bytes"])} '
            f'{_mb(c["rss_bytes"])} {_mb(c["window_peak_bytes"])}'
        )
    lines.append(f'  {"frames":>11} {"p50 ms":>9} {"p95 ms":>9} {"max ms":>9}')
    for w in long['windows']:
        span = f'{w["frames"][0]}-{w["frames"][1]}'
        lines.append(
            f'  {span:>11} {w["p50_ms"]:9.2f} {w["p95_ms"]:9.2f} {w["max_ms"]:9.2f}'
        )
    return lines
