"""Open-loop evaluation of a recorded rosbag2: no ROS graph.

    python -m vln_stack.tools.bags.eval openloop BAG [--policy janus --checkpoint DIR]
        [--every K] [--out DIR] [--instruction TEXT]

For each decision step of the bag (instruction, then the first frame
stamped after each recorded ``move_done``, with the odometry at the recorded decision time) a
policy backend decides directly (``core.policies.make_backend``; janus: the dual encoder from
the checkpoint folder encodes the frame first). Bags with no recorded decisions (a real robot's
camera recording) are evaluated every ``--every`` K-th frame and there is nothing to compare
with. Writes ``overlays/step_NNNN.jpg`` (frame, step, recorded vs new decision, memory
occupancy, latency) and ``summary.json``.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .content import NS, BagContent, Frame, Step, decision_steps, frame_rgb, last_before, load_bag


@dataclass
class StepResult:
    step: int
    event: str
    t_s: float                  # event time relative to the bag start
    frame_stamp_s: float | None
    recorded: str | None
    new: str
    valid: bool
    raw: str
    match: bool | None
    latency_ms: float
    memory: str
    pose: list[float] | None
    overlay: str = ''


def _memory_text(content: BagContent, frame: Frame | None) -> str:
    """Recorded encoder memory occupancy at the frame (from vln/fused_tokens/info)."""
    if frame is None or not content.fused_info:
        return 'n/a (no encoder ran; the oracle keeps none)'
    info = last_before(content.fused_info, frame.log_ns)
    if not info:
        return 'n/a (no encoder output yet)'
    return f"rec. encoder {info.get('memory_frames', '?')} frames"


def draw_overlay(rgb: np.ndarray, lines: list[tuple[str, tuple[int, int, int]]],
                 path: Path, *, min_width: int = 640) -> None:
    """Frame scaled to ``min_width`` with a text band on top; written as JPEG."""
    import cv2  # noqa: PLC0415

    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    h, w = bgr.shape[:2]
    if w < min_width:
        scale = min_width / w
        bgr = cv2.resize(bgr, (min_width, int(round(h * scale))), interpolation=cv2.INTER_NEAREST)
    band = np.zeros((22 * len(lines) + 10, bgr.shape[1], 3), np.uint8)
    for i, (text, color) in enumerate(lines):
        cv2.putText(band, text, (8, 22 * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.55, color, 1,
                    cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([band, bgr]), [int(cv2.IMWRITE_JPEG_QUALITY), 85])


def openloop(bag: Path | str, *, policy: str = '', episode_file: str = '', episode_id: str = '',
             checkpoint: str = '', out_dir: Path | str | None = None, every: int = 1,
             instruction: str = '', image_topic: str = '', max_steps: int = 0,
             encode_all: bool = False, device: str = 'cpu', torch_threads: int = 1,
             seed: int = 0, verbose: bool = True) -> dict:
    """Run a policy backend on each decision step of ``bag``; write overlays + summary.json."""
    from ...core.actions import MoveSpec  # noqa: PLC0415
    from ...backends import make_backend  # noqa: PLC0415

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    t_start = time.monotonic()
    content = load_bag(bag, image_topic=image_topic)
    policy, episode_file, episode_id, checkpoint = _openloop_inputs(
        content, policy, episode_file, episode_id, checkpoint)
    steps = decision_steps(content, every=every, instruction=instruction)
    if max_steps > 0:
        steps = steps[:max_steps]
    if not steps:
        raise ValueError(f'no decision steps in {content.path}: no instruction + frames')
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix='bag_eval_'))
    out.mkdir(parents=True, exist_ok=True)
    encoder = _load_encoder(checkpoint, device, torch_threads) if policy == 'janus' else None
    backend = make_backend(policy, episode_file=episode_file, episode_id=episode_id,
                           checkpoint_dir=checkpoint, device=device,
                           spec=MoveSpec(*_decision_move_size()), seed=seed)
    say(f'[bag_eval] open loop, policy {policy}, {len(steps)} steps from {content.path} '
        f'({content.image_topic or "no camera"}, {len(content.frames)} frames'
        + (f', {len(content.actions)} recorded decisions)' if content.has_decisions
           else ', no recorded decisions: nothing to compare against)'))
    results = _run_steps(content, steps, backend, encoder, encode_all=encode_all, out=out,
                         policy=policy)
    summary = _openloop_summary(content, results, policy, checkpoint, time.monotonic() - t_start)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    say(format_table([(r.step, r.t_s, r.recorded, r.new, r.match) for r in results]))
    if summary['compared']:
        say(f'[bag_eval] open loop agreement {summary["agree"]}/{summary["compared"]} '
            f'= {100.0 * summary["agree"] / summary["compared"]:.1f} %')
    else:
        say(f'[bag_eval] {summary["note"]}')
    say(f'[bag_eval] wrote {len(results)} overlays and {out / "summary.json"}')
    summary['out'] = str(out)
    return summary


def _openloop_inputs(content: BagContent, policy: str, episode_file: str, episode_id: str,
                     checkpoint: str) -> tuple[str, str, str, str]:
    """(policy, episode_file, episode_id, checkpoint): the arguments, else what the bag recorded."""
    policy = policy or content.custom.get('policy', '') or 'oracle'
    if policy == 'oracle':
        episode_file = episode_file or content.custom.get('episode_file', '')
        episode_id = episode_id or content.custom.get('episode_id', '')
        if not content.odom:
            raise ValueError('policy oracle needs odometry in the bag (it follows the reference '
                             f'path from the pose); {content.path} has none: use janus')
    checkpoint = checkpoint or (content.custom.get('checkpoint', '') if policy == 'janus' else '')
    if not content.frames and policy == 'janus':
        raise ValueError(f'no camera frames in {content.path} (topics {sorted(content.topics)})')
    return policy, episode_file, episode_id, checkpoint


def _load_encoder(checkpoint: str, device: str, torch_threads: int) -> Any:
    import torch  # noqa: PLC0415

    from ...models.dual_encoder import DualMemoryEncoder  # noqa: PLC0415
    if torch_threads > 0:
        torch.set_num_threads(torch_threads)
    return DualMemoryEncoder.from_folder(checkpoint, device=device)


def _run_steps(content: BagContent, steps: list[Step], backend: Any, encoder: Any, *,
               encode_all: bool, out: Path, policy: str) -> list[StepResult]:
    """Decide on every step (the backend and encoder reset on each new instruction)."""
    results: list[StepResult] = []
    encoded_upto = -1
    current_instr = None
    for st in steps:
        if st.instruction != current_instr:
            current_instr = st.instruction
            backend.reset(st.instruction)
            if encoder is not None:
                encoder.reset()
                encoded_upto = -1
        res, latency, encoded_upto = _decide_step(content, st, backend, encoder, encoded_upto,
                                                  encode_all)
        if st.frame is not None:
            res.overlay = _step_overlay(content.frames[st.frame], st, res, latency, out, policy)
        results.append(res)
    return results


def _decide_step(content: BagContent, st: Step, backend: Any, encoder: Any, encoded_upto: int,
                 encode_all: bool) -> tuple[StepResult, float, int]:
    """One decision (encoding its frame first with janus); (result, latency ms, last frame
    encoded)."""
    from ...backends import Observation  # noqa: PLC0415

    frame = content.frames[st.frame] if st.frame is not None else None
    t0 = time.perf_counter()
    tokens, memory = None, _memory_text(content, frame)
    if encoder is not None and frame is not None:
        import torch  # noqa: PLC0415

        # encode_all: every frame up to the decision frame enters the memory, as the live
        # encoder would if it kept up; else only decision frames do.
        todo = range(encoded_upto + 1, st.frame + 1) if encode_all else [st.frame]
        enc_out = None
        for i in todo:
            enc_out = encoder.encode(frame_rgb(content.frames[i]))
        encoded_upto = st.frame
        # semantic | spatial side by side (the encoder's `split` layout): the backend fuses
        tokens = torch.cat([enc_out.semantic, enc_out.spatial], dim=1)
        held = (f'LLM memory {backend.stream.frames.num_frames} frames'
                if backend.stream is not None else f'history {len(backend.history)}')
        memory = (f'encoder {encoder.cache.num_frames}/{encoder.cache.capacity} frames, '
                  f'{held}')
    obs = Observation(st.instruction, st.pose, tokens,
                      frame.stamp_ns / NS if frame is not None else st.event_ns / NS)
    dec = backend.decide(obs)
    latency = (time.perf_counter() - t0) * 1e3
    new = dec.action.value
    match = None if st.recorded is None else (new == st.recorded)
    res = StepResult(st.index, st.event, (st.event_ns - content.start_ns) / NS,
                     frame.stamp_ns / NS if frame is not None else None, st.recorded, new,
                     dec.valid, dec.raw[:80], match, round(latency, 2), memory,
                     [round(st.pose.x, 4), round(st.pose.y, 4), round(st.pose.yaw, 5)]
                     if st.pose is not None else None)
    return res, latency, encoded_upto


def _step_overlay(frame: Frame, st: Step, res: StepResult, latency: float, out: Path,
                  policy: str) -> str:
    path = out / 'overlays' / f'step_{st.index:04d}.jpg'
    match = res.match
    color = ((200, 200, 200) if match is None else (0, 200, 0) if match else (0, 0, 255))
    rec_text = st.recorded if st.recorded is not None else '- (no recorded decision)'
    draw_overlay(frame_rgb(frame), [
        (f'step {st.index}  {st.event}  t+{res.t_s:.2f} s  policy {policy}',
         (255, 255, 255)),
        (f'recorded: {rec_text}   new: {res.new}' + ('' if res.valid else ' (invalid->STOP)'),
         color),
        (f'memory: {res.memory}   latency {latency:.1f} ms', (255, 255, 0))], path)
    return str(path)


def _openloop_summary(content: BagContent, results: list[StepResult], policy: str,
                      checkpoint: str, wall_s: float) -> dict:
    compared = [r for r in results if r.match is not None]
    agree = sum(bool(r.match) for r in compared)
    return {
        'mode': 'openloop', 'bag': str(content.path), 'policy': policy,
        'checkpoint': checkpoint, 'image_topic': content.image_topic,
        'frames_in_bag': len(content.frames), 'steps': len(results),
        'recorded_decisions': len(content.actions),
        'compared': len(compared), 'agree': agree,
        'agreement': (agree / len(compared)) if compared else None,
        'note': ('' if compared else 'the bag has no recorded decisions (vln/action): '
                 'nothing to compare against; decisions and overlays only'),
        'new_actions': [r.new for r in results],
        'recorded_actions': [a for _, a in content.actions],
        'wall_s': round(wall_s, 2),
        'steps_detail': [asdict(r) for r in results],
    }


def _decision_move_size() -> tuple[float, float]:
    """(forward_m, turn_deg) the decision node runs with: config/params.yaml's ``decision``."""
    import yaml  # noqa: PLC0415

    from ...core.paths import config_dir  # noqa: PLC0415

    params = yaml.safe_load((config_dir() / 'params.yaml').read_text()) or {}
    dec = (params.get('decision') or {}).get('ros__parameters') or {}
    return float(dec.get('forward_m', 0.25)), float(dec.get('turn_deg', 30.0))


def format_table(rows: list[tuple[int, float, str | None, str | None, bool | None]],
                 headers: tuple[str, str] = ('recorded', 'new')) -> str:
    lines = [f'{"step":>4}  {"t[s]":>7}  {headers[0]:13s} {headers[1]:13s} match']
    for step, t_s, rec, new, match in rows:
        mark = '-' if match is None else ('yes' if match else 'NO')
        lines.append(f'{step:4d}  {t_s:7.2f}  {rec or "-":13s} {new or "-":13s} {mark}')
    return '\n'.join(lines)


# --- replay through the real nodes ----------------------------------------------------------------
