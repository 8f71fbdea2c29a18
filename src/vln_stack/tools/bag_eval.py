"""Evaluate the decision stack on recorded rosbag2 runs: closed replay and open loop.

    python -m vln_stack.tools.bag_eval replay BAG [--policy oracle] [--rate 4] [--repeat 2]
        [--episode-file F --episode-id ID] [--checkpoint DIR] [--out DIR]
    python -m vln_stack.tools.bag_eval openloop BAG [--policy janus --checkpoint DIR]
        [--every K] [--out DIR] [--instruction TEXT]

**replay**: the recorded camera (``camera/image_raw``, or the compressed topic, or ``vln/image``),
``camera/camera_info``, ``odom``, ``vln/instruction`` and ``vln/move_done`` are played with
/clock into fresh ``camera_ingest`` + ``decision`` processes (+ ``memory_encoder`` for janus).
No simulator and no controller run: the recorded ``vln/move_done`` reports close each move, so
the stack takes exactly one decision per recorded move, on the first frame stamped after it,
like it did live. The new ``vln/action`` sequence is captured (into ``replay_N/`` bags) and
compared step by step with the recorded one. The player is bag_play's playback core
(:func:`vln_stack.tools.bag_play.play`) in this process (default), or ``--player cli``:
``python -m vln_stack.tools.bag_play`` as a process.

What makes it deterministic: the decision loop only advances on a recorded ``move_done``; the
frames and odometry it sees are the recorded ones, on the recorded sim clock. The replay input
(``OUT/replay_input``, a rosbag2) takes out what was timing-sensitive in the recording:
(a) the base still settles for ~0.1 s after a move is reported done, so the oracle's pose
depends on exactly when it decides: ``--odom hold`` (default) sends, right after each move
report, the last pose logged before the recorded decision and holds it until the next report
(one pose per decision); (b) whether a frame stamped within a /clock step before a move report
counted as fresh depended on message order: ``--frames guarded`` (default) leaves frames stamped
in (report - guard, report] out (guard 0.15 s, or 1.5 replayed /clock steps).
And the replay graph is made to hear everything: nothing plays before every node has matched the
player's DDS participant (a reader drops what a writer sent before it matched; see
``_replay_once``); the ROS domain must be free of other nodes (a second /clock on it breaks every
sim-time node); /clock goes out at 25 Hz (``--clock-hz``): at 100 Hz the decision node (a
MultiThreadedExecutor, one mutually exclusive callback group: ``ros.common.run_node``) was
measured to starve its own sim-time timers for up to ~1 s wall and miss move reports (3 replays
of one bag: 53 / 13 / 7 % agreement; the same node under a SingleThreadedExecutor, or /clock at
25 Hz: 100 / 100 / 100 %).

Limits: (1) a decision must come before the next recorded ``move_done`` (a 1 s move leaves
1/R s wall at ``--rate`` R); a later one makes the loop ignore that report and the sequences
shift (the table shows it); (2) with janus the memory encoder encodes the frame each decision
is taken on (``memory_encoder.encode_on: decision``, the default), so its memory follows the
replayed decisions; (3) a replayed decision that differs from the recording cannot change what comes
next: later frames and poses are still the recorded ones (open loop in that sense).

**openloop**: no ROS graph. For each decision step of the bag (instruction, then the first frame
stamped after each recorded ``move_done``, with the odometry at the recorded decision time) a
policy backend decides directly (``core.policies.make_backend``; janus: the dual encoder from
the checkpoint folder encodes the frame first). Bags with no recorded decisions (a real robot's
camera recording) are evaluated every ``--every`` K-th frame and there is nothing to compare
with. Writes ``overlays/step_NNNN.jpg`` (frame, step, recorded vs new decision, memory
occupancy, latency) and ``summary.json``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

IMAGE_TOPICS = ('/camera/image_raw', '/camera/image_raw/compressed', '/vln/image',
                '/camera/color/image_raw/compressed', '/camera/color/image_raw')
INSTRUCTION_TOPICS = ('/vln/instruction', '/instruction')
NS = 1_000_000_000


# --- reading a bag (ROS-free: rosbags + its kilted typestore) -------------------------------------
@dataclass
class Frame:
    log_ns: int
    stamp_ns: int
    raw: bytes
    msgtype: str


@dataclass
class BagContent:
    path: Path
    start_ns: int
    end_ns: int
    topics: dict[str, tuple[str, int]]                  # name -> (type, count)
    custom: dict[str, str]
    image_topic: str = ''
    frames: list[Frame] = field(default_factory=list)
    instructions: list[tuple[int, str]] = field(default_factory=list)
    actions: list[tuple[int, str]] = field(default_factory=list)
    move_done: list[tuple[int, dict]] = field(default_factory=list)
    odom: list[tuple[int, Any]] = field(default_factory=list)    # (log ns, Pose2D)
    fused_info: list[tuple[int, dict]] = field(default_factory=list)

    @property
    def has_decisions(self) -> bool:
        return bool(self.actions) or bool(self.move_done)


def _typestore() -> Any:
    from .bag_record import _typestore as store  # noqa: PLC0415 - one cached typestore
    return store()


def read_custom_data(bag: Path) -> dict[str, str]:
    import yaml  # noqa: PLC0415

    meta = Path(bag) / 'metadata.yaml'
    if not meta.is_file():
        return {}
    info = (yaml.safe_load(meta.read_text()) or {}).get('rosbag2_bagfile_information', {})
    return {str(k): str(v) for k, v in (info.get('custom_data') or {}).items()}


def pick_image_topic(topics: dict[str, tuple[str, int]], wanted: str = '') -> str:
    if wanted:
        name = wanted if wanted.startswith('/') else '/' + wanted
        if name not in topics:
            raise ValueError(f'image topic {name} not in bag (has {sorted(topics)})')
        return name
    for name in IMAGE_TOPICS:
        if name in topics and topics[name][1] > 0:
            return name
    for name, (typ, count) in topics.items():
        if typ in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage') and count \
                and 'fused_tokens' not in name:
            return name
    return ''


def load_bag(bag: Path | str, *, image_topic: str = '', with_frames: bool = True) -> BagContent:
    """Everything the evaluation needs from a bag, in log-time order."""
    from rosbags.rosbag2 import Reader  # noqa: PLC0415

    from ..core.geometry import Pose2D, yaw_from_quaternion  # noqa: PLC0415

    store = _typestore()
    bag = Path(bag)
    with Reader(bag) as reader:
        topics: dict[str, tuple[str, int]] = {}
        for c in reader.connections:
            typ, n = topics.get(c.topic, (c.msgtype, 0))
            topics[c.topic] = (typ, n + c.msgcount)
        content = BagContent(bag, reader.start_time, reader.end_time, topics,
                             read_custom_data(bag))
        content.image_topic = pick_image_topic(topics, image_topic)
        wanted = {content.image_topic, *INSTRUCTION_TOPICS, '/vln/action', '/vln/move_done',
                  '/odom', '/vln/fused_tokens/info'}
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, t_ns, raw in reader.messages(connections=conns):
            topic = conn.topic
            if topic == content.image_topic:
                if with_frames:
                    msg = store.deserialize_cdr(raw, conn.msgtype)
                    stamp = int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)
                    content.frames.append(Frame(t_ns, stamp, bytes(raw), conn.msgtype))
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            if topic in INSTRUCTION_TOPICS:
                content.instructions.append((t_ns, str(msg.data)))
            elif topic == '/vln/action':
                content.actions.append((t_ns, str(msg.data).strip()))
            elif topic == '/vln/move_done':
                try:
                    rep = json.loads(msg.data)
                except ValueError:
                    rep = {'result': 'unreadable', 'raw': str(msg.data)}
                content.move_done.append((t_ns, rep))
            elif topic == '/odom':
                p, q = msg.pose.pose.position, msg.pose.pose.orientation
                content.odom.append((t_ns, Pose2D(float(p.x), float(p.y),
                                                  yaw_from_quaternion(q.x, q.y, q.z, q.w))))
            elif topic == '/vln/fused_tokens/info':
                try:
                    content.fused_info.append((t_ns, json.loads(msg.data)))
                except ValueError:
                    pass
    return content


def frame_rgb(frame: Frame) -> np.ndarray:
    """A recorded Image / CompressedImage -> HxWx3 uint8 RGB."""
    from ..ros.images import compressed_msg_to_rgb, image_msg_to_rgb  # noqa: PLC0415

    msg = _typestore().deserialize_cdr(frame.raw, frame.msgtype)
    if frame.msgtype.endswith('CompressedImage'):
        return compressed_msg_to_rgb(msg)
    return image_msg_to_rgb(msg)


# --- decision steps -------------------------------------------------------------------------------
@dataclass
class Step:
    index: int
    event: str                  # 'instruction' | 'move_done' | 'frame'
    event_ns: int               # log time of the event (the decision node's ``since``)
    instruction: str
    frame: int | None           # index into BagContent.frames
    pose: Any = None            # Pose2D or None
    recorded: str | None = None
    recorded_ns: int | None = None


def _last_before(items: list[tuple[int, Any]], t_ns: int) -> Any:
    """Value of the last (t, value) with t <= t_ns (items sorted), else None."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if items[mid][0] <= t_ns:
            lo = mid + 1
        else:
            hi = mid
    return items[lo - 1][1] if lo else None


def _first_frame_after(frames: list[Frame], stamp_ns: int) -> int | None:
    """Index of the first frame stamped strictly after ``stamp_ns`` (see ``--frames``)."""
    for i, fr in enumerate(frames):
        if fr.stamp_ns > stamp_ns:
            return i
    return None


def decision_steps(content: BagContent, *, every: int = 1, instruction: str = '') -> list[Step]:
    """The bag's decision steps.

    With recorded decisions: step 0 follows the instruction, step k the k-th succeeded
    ``move_done``; the frame is the first one stamped after that event (the decision node's
    rule), the pose the last odometry logged before the recorded decision (else before the
    frame), and the recorded decision the first ``vln/action`` logged after the event.
    Without: every ``every``-th frame is a step and nothing is recorded to compare with.
    """
    text0 = instruction or (content.instructions[0][1] if content.instructions else '')
    steps: list[Step] = []
    if content.has_decisions and (content.instructions or instruction):
        events: list[tuple[int, str, str]] = []
        for t, text in content.instructions:
            events.append((t, 'instruction', instruction or text))
        if not content.instructions:
            events.append((content.start_ns, 'instruction', text0))
        for t, rep in content.move_done:
            if rep.get('result') == 'succeeded':
                events.append((t, 'move_done', ''))
        events.sort(key=lambda e: e[0])
        current = text0
        for k, (t, kind, text) in enumerate(events):
            if kind == 'instruction':
                current = text
            t_next = events[k + 1][0] if k + 1 < len(events) else None
            rec = next(((ta, a) for ta, a in content.actions
                        if ta >= t and (t_next is None or ta < t_next)), None)
            if kind == 'move_done' and rec is None and t_next is None:
                # the recording ended before this decision (or the episode was over)
                if not any(ta >= t for ta, _ in content.actions):
                    continue
            fi = _first_frame_after(content.frames, t)
            t_pose = rec[0] if rec else (content.frames[fi].log_ns if fi is not None else t)
            steps.append(Step(len(steps), kind, t, current, fi,
                              _last_before(content.odom, t_pose),
                              rec[1] if rec else None, rec[0] if rec else None))
        return steps
    for i in range(0, len(content.frames), max(1, every)):
        fr = content.frames[i]
        steps.append(Step(len(steps), 'frame', fr.log_ns, text0, i,
                          _last_before(content.odom, fr.log_ns)))
    return steps


# --- open loop ------------------------------------------------------------------------------------
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
    info = _last_before(content.fused_info, frame.log_ns)
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
    from ..core.actions import MoveSpec  # noqa: PLC0415
    from ..core.policies import Observation, make_backend  # noqa: PLC0415

    def say(text: str) -> None:
        if verbose:
            print(text, flush=True)

    t_start = time.monotonic()
    content = load_bag(bag, image_topic=image_topic)
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
    steps = decision_steps(content, every=every, instruction=instruction)
    if max_steps > 0:
        steps = steps[:max_steps]
    if not steps:
        raise ValueError(f'no decision steps in {content.path}: no instruction + frames')
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix='bag_eval_'))
    out.mkdir(parents=True, exist_ok=True)
    encoder = None
    if policy == 'janus':
        import torch  # noqa: PLC0415

        from ..models.dual_encoder import DualMemoryEncoder  # noqa: PLC0415
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        encoder = DualMemoryEncoder.from_folder(checkpoint, device=device)
    backend = make_backend(policy, episode_file=episode_file, episode_id=episode_id,
                           checkpoint_dir=checkpoint, device=device,
                           spec=MoveSpec(*_decision_move_size()), seed=seed)
    say(f'[bag_eval] open loop, policy {policy}, {len(steps)} steps from {content.path} '
        f'({content.image_topic or "no camera"}, {len(content.frames)} frames'
        + (f', {len(content.actions)} recorded decisions)' if content.has_decisions
           else ', no recorded decisions: nothing to compare against)'))
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
        frame = content.frames[st.frame] if st.frame is not None else None
        t0 = time.perf_counter()
        tokens, memory = None, _memory_text(content, frame)
        if encoder is not None and frame is not None:
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
        if frame is not None:
            path = out / 'overlays' / f'step_{st.index:04d}.jpg'
            color = ((200, 200, 200) if match is None else (0, 200, 0) if match else (0, 0, 255))
            rec_text = st.recorded if st.recorded is not None else '- (no recorded decision)'
            draw_overlay(frame_rgb(frame), [
                (f'step {st.index}  {st.event}  t+{res.t_s:.2f} s  policy {policy}',
                 (255, 255, 255)),
                (f'recorded: {rec_text}   new: {new}' + ('' if dec.valid else ' (invalid->STOP)'),
                 color),
                (f'memory: {memory}   latency {latency:.1f} ms', (255, 255, 0))], path)
            res.overlay = str(path)
        results.append(res)
    compared = [r for r in results if r.match is not None]
    agree = sum(bool(r.match) for r in compared)
    summary = {
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
        'wall_s': round(time.monotonic() - t_start, 2),
        'steps_detail': [asdict(r) for r in results],
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    say(format_table([(r.step, r.t_s, r.recorded, r.new, r.match) for r in results]))
    if compared:
        say(f'[bag_eval] open loop agreement {agree}/{len(compared)} '
            f'= {100.0 * agree / len(compared):.1f} %')
    else:
        say(f'[bag_eval] {summary["note"]}')
    say(f'[bag_eval] wrote {len(results)} overlays and {out / "summary.json"}')
    summary['out'] = str(out)
    return summary


def _decision_move_size() -> tuple[float, float]:
    """(forward_m, turn_deg) the decision node runs with: config/params.yaml's ``decision``."""
    import yaml  # noqa: PLC0415

    from .procs import config_dir  # noqa: PLC0415

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
@dataclass
class ReplayRun:
    actions: list[str]
    action_times_s: list[float]     # bag time relative to the bag start
    final_state: str
    bag: str                        # the captured outputs (vln/action, vln/status, ...)
    wall_s: float
    play_log: str = ''
    fault: str = ""                 # why the run is not a valid replay ("" = valid)


def replay_timing_fault(action_times_ns: list[int], final_state: str, n_recorded: int,
                        move_done_ns: list[int]) -> str:
    """Why a replay lost step with the recording, or '' if it kept it. ROS-free.

    Decision k must be out before the k-th recorded move report arrives: the decision loop
    only takes a report while a move is under way, so a later decision means that report was
    dropped and every later step is off by one. A run that ends waiting for a frame or a policy
    with fewer decisions than recorded stalled. Either is the replayed stack being too slow at
    this rate (or stalling), not a different decision.
    """
    for k, t in enumerate(action_times_ns):
        if k < len(move_done_ns) and t >= move_done_ns[k]:
            return (f'decision {k} came {(t - move_done_ns[k]) / NS:.2f} s (sim) after move report '
                    f'{k}, which the decision loop therefore dropped')
    if final_state in ('waiting_frame', 'deciding', 'idle', '') and \
            len(action_times_ns) < n_recorded:
        return (f'the decision node stalled: {len(action_times_ns)} of {n_recorded} decisions, '
                f'still {final_state or "silent"} at the end')
    return ''


class DomainLease:
    """Holds a ROS domain that no other node used when it was taken: a node named
    ``bag_eval_lease_<pid>_<domain>`` stays on it until :meth:`release`, so other scanners (another
    engineer's run of the same tests) see it taken, also in the gaps between our graphs."""

    def __init__(self, domain: int, context: Any, node: Any) -> None:
        self.domain = domain
        self.context = context
        self.node = node
        self.node_name = node.get_name()

    def release(self) -> None:
        import rclpy  # noqa: PLC0415
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
            rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> 'DomainLease':
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_domain(candidates: list[int], *, settle_s: float = 2.0) -> DomainLease | None:
    """Take the first ROS domain of ``candidates`` on which no other node is seen within
    ``settle_s`` (all candidates are probed at once, each through its own rclpy context), and
    check it again once taken (two scanners racing for it: the later one moves on)."""
    import rclpy  # noqa: PLC0415
    from rclpy.context import Context  # noqa: PLC0415
    from rclpy.node import Node  # noqa: PLC0415

    probes: dict[int, tuple[Any, Any]] = {}
    chosen = None
    try:
        for d in dict.fromkeys(int(c) for c in candidates):
            ctx = Context()
            rclpy.init(context=ctx, domain_id=d)
            probes[d] = (ctx, Node(f'bag_eval_lease_{os.getpid()}_{d}', context=ctx))
        time.sleep(settle_s)
        for d, (_ctx, node) in probes.items():
            name = node.get_name()
            if [n for n in node.get_node_names() if n != name]:
                continue
            time.sleep(0.5)  # a racing scanner that took it meanwhile shows up now
            if not [n for n in node.get_node_names() if n != name]:
                chosen = d
                break
        return DomainLease(chosen, *probes[chosen]) if chosen is not None else None
    finally:
        for d, (ctx, node) in probes.items():
            if d != chosen:
                node.destroy_node()
                rclpy.try_shutdown(context=ctx)


def default_domain_candidates() -> list[int]:
    """Domains nobody else's formula reaches: run_episode / evaluate use 1 + pid % 100 (evaluate
    sweeps 1..100 over its episodes) and the tests 40 + pid % 40. 101 and 215..232 are the
    domains whose DDS ports stay out of Linux's ephemeral port range; the order is rotated by
    the PID so that two runs started together rarely race for the same one."""
    pool = [101, *range(215, 233)]
    k = os.getpid() % len(pool)
    return pool[k:] + pool[:k]


def _foreign_nodes(node: Any, ours: set[str]) -> list[str]:
    """Nodes on the domain that this replay did not start."""
    return sorted(n for n in node.get_node_names() if n not in ours)


def _wait_lifecycle_active(node: Any, target: str, deadline: float,
                           dead: Any, tick: Any = None) -> None:
    """Wait until lifecycle node ``target`` reports ``active`` (its get_state service); the
    memory encoder loads its weights in configure, which takes a while on a CPU."""
    from lifecycle_msgs.srv import GetState  # noqa: PLC0415

    client = node.create_client(GetState, f'/{target}/get_state')
    try:
        while True:
            if client.service_is_ready():
                fut = client.call_async(GetState.Request())
                t_ask = time.monotonic()
                while not fut.done() and time.monotonic() - t_ask < 2.0:
                    time.sleep(0.05)
                if fut.done() and fut.result() is not None and \
                        fut.result().current_state.label == 'active':
                    return
            died = dead()
            if died:
                raise RuntimeError(f'node(s) exited while starting: {died}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'{target} not active in time (still loading its weights?)')
            if tick is not None:
                tick()
            time.sleep(0.2)
    finally:
        node.destroy_client(client)


def _ping_node(node: Any, target: str, deadline: float, dead: Any, tick: Any = None) -> None:
    """Call ``/<target>/get_parameters`` until it answers (no side effects on the node)."""
    from rcl_interfaces.srv import GetParameters  # noqa: PLC0415

    client = node.create_client(GetParameters, f'/{target}/get_parameters')
    try:
        while True:
            if client.service_is_ready():
                fut = client.call_async(GetParameters.Request(names=['use_sim_time']))
                t_ask = time.monotonic()
                while not fut.done() and time.monotonic() - t_ask < 1.0:
                    time.sleep(0.02)
                if fut.done() and fut.result() is not None:
                    return
            if dead():
                raise RuntimeError(f'node(s) exited while starting: {dead()}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'{target} does not answer a service call from this process '
                                   '(DDS discovery incomplete)')
            if tick is not None:
                tick()
            time.sleep(0.1)
    finally:
        node.destroy_client(client)


def _start_cli(group: Any, name: str, argv: list[str]) -> subprocess.Popen:
    """Start a plain CLI in ``group`` (a ProcessGroup) so that it is stopped with it."""
    if group.log_dir is not None:
        group.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(group.log_dir / f'{name}.log', 'w')  # noqa: SIM115 - closed by ProcessGroup
        group._logs.append(log)  # noqa: SLF001
        proc = subprocess.Popen([sys.executable, *argv], env=group.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    else:
        proc = subprocess.Popen([sys.executable, *argv], env=group.env, start_new_session=True)
    group.procs[name] = proc
    return proc


def _replay_once(bag: Path, content: BagContent, *, group: Any, specs: list[Any],
                 play_topics: list[str], remaps: list[str], rate: float, clock_hz: float,
                 start_offset_s: float, gate_ns: int, capture_dir: Path, timeout_s: float,
                 tag: str, verbose: bool, allow_nodes: tuple[str, ...] = (),
                 player_kind: str = 'inprocess', settle_s: float = 2.0) -> ReplayRun:
    """Start the nodes, wait until they can hear the player, play ``bag``, capture decisions.

    Why the waiting matters: a DDS reader drops what a writer sends before the reader has
    matched it, and a participant that misses another's first discovery announcements only
    hears of it at the next periodic one (seconds later, more under CPU load). So nothing is
    played before (a) every played topic's publisher has its subscriber, (b) every node has
    answered a parameter-service call from this process (so it has matched this participant's
    endpoints, not only the other way round), and (c) the nodes have been up together for
    ``settle_s``. With ``player_kind='cli'`` the player is
    ``python -m vln_stack.tools.bag_play`` (a new participant each replay); it is held at the
    start gate until its /clock publisher has been in the graph for ``settle_s``.
    """
    from rosgraph_msgs.msg import Clock  # noqa: PLC0415

    from .bag_play import PlaybackStats, play, resolve_msg_type  # noqa: PLC0415
    from .bag_record import BagRecorder  # noqa: PLC0415

    actions: list[tuple[int, str]] = []
    status: dict = {}

    def listen(topic: str, t_ns: int, raw: bytes) -> None:
        if topic == '/vln/action':
            actions.append((t_ns, _string_data(raw)))
        elif topic == '/vln/status':
            try:
                status.update(json.loads(_string_data(raw)))
            except ValueError:
                pass

    started = [s.name for s in specs]
    rec = BagRecorder(capture_dir, ['vln/action', 'vln/status', 'vln/episode_reset',
                                    'vln/fused_tokens/info'],
                      use_sim_time=True, node_name=f'bag_eval_capture_{os.getpid()}',
                      listeners=[listen], custom_data={'replay_of': str(bag)},
                      domain_id=int(group.env['ROS_DOMAIN_ID']))
    ours = {*started, rec.node_name, 'bag_play', *allow_nodes}
    foreign: set[str] = set()
    player = None
    play_thread = None
    stop_play = threading.Event()
    stats = PlaybackStats()

    def dead() -> dict[str, int]:
        return {n: rc for n, rc in group.dead().items() if n in started}

    try:
        for spec in specs:
            group.start(spec)
        rec.start()
        node = rec.node
        # /clock held at the playback start until playing: sim-time timers (the encoder's
        # lifecycle autostart, the decision heartbeat) only run once a /clock has arrived, and
        # the player's /clock starts from this value, so time never goes back.
        clock_pub = node.create_publisher(Clock, '/clock', 10)

        def clock_to(t_ns: int) -> None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(max(0, t_ns), NS)
            clock_pub.publish(msg)

        def preroll() -> None:
            clock_to(gate_ns)

        def wait(cond: Any, what: str, limit_s: float) -> None:
            deadline = time.monotonic() + limit_s
            while not cond():
                preroll()
                if dead():
                    raise RuntimeError(f'node(s) exited while starting: {dead()}; logs in '
                                       f'{group.log_dir}')
                if time.monotonic() > deadline:
                    raise RuntimeError(f'replay graph not ready: {what} (after {limit_s:g} s)')
                time.sleep(0.1)

        pubs: dict[str, Any] = {}
        if player_kind == 'inprocess':
            from rosbags.rosbag2 import Reader  # noqa: PLC0415

            from .bag_play import _qos_for  # noqa: PLC0415
            with Reader(bag) as reader:
                for conn in reader.connections:
                    if conn.topic in play_topics and conn.topic != GATE_TOPIC and \
                            conn.topic not in pubs:
                        pubs[conn.topic] = node.create_publisher(
                            resolve_msg_type(conn.msgtype), conn.topic, _qos_for(conn, 10))
        need = ['vln/action', 'vln/status']
        if 'camera_ingest' in started:
            need.append('vln/image')
        if 'memory_encoder' in started:
            need.append('vln/fused_tokens')
        wait(lambda: not rec.wait_for_publishers(need, 0.0), f'publishers of {need}',
             min(120.0, timeout_s))
        t_up = time.monotonic()
        for name in ('memory_encoder', 'decision'):   # both load their models in configure
            if name in started:
                _wait_lifecycle_active(node, name, time.monotonic() + 180.0, dead, preroll)
        if pubs:
            wait(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()),
                 'a subscriber on every played topic', 60.0)
        for name in started:   # a service round trip: the node's participant has matched ours
            _ping_node(node, name, time.monotonic() + 60.0, dead, preroll)
        wait(lambda: time.monotonic() - t_up >= settle_s, 'settle', settle_s + 5.0)
        foreign.update(_foreign_nodes(node, ours))
        if foreign:
            raise RuntimeError(
                f'ROS domain {group.env["ROS_DOMAIN_ID"]} is in use by other nodes '
                f'{sorted(foreign)}: their /clock, odom or move reports would mix into the '
                'replay; use another domain')
        t_play = time.monotonic()
        if player_kind == 'inprocess':
            def passes() -> Iterator[tuple[str, int, bytes]]:
                from rosbags.rosbag2 import Reader  # noqa: PLC0415
                with Reader(bag) as reader:
                    conns = [c for c in reader.connections if c.topic in pubs]
                    for conn, t_ns, raw in reader.messages(connections=conns, start=gate_ns):
                        yield conn.topic, t_ns, raw

            def run_play() -> None:
                result = play(passes, start_ns=gate_ns, rate=rate,
                              publish=lambda topic, raw: pubs[topic].publish(bytes(raw)),
                              now=time.monotonic, sleep=time.sleep, publish_clock=clock_to,
                              clock_period_s=1.0 / clock_hz,
                              ok=lambda: not stop_play.is_set())
                stats.__dict__.update(result.__dict__)

            play_thread = threading.Thread(target=run_play, name='bag_eval_play', daemon=True)
            play_thread.start()
        else:
            argv = ['-m', 'vln_stack.tools.bag_play', str(bag), '--rate', f'{rate:g}',
                    '--clock', f'{clock_hz:g}', '--topics', *play_topics,
                    '--start-offset', f'{start_offset_s:.9f}', '--wait-subscribers', '60',
                    '--progress-period', '0']
            for r in remaps:
                argv += ['--remap', r]
            player = _start_cli(group, f'bag_play_{tag}', argv)
            # bag_play waits for a subscriber on every topic it plays, the gate included: the
            # gate opens once its /clock publisher has been in the graph for ``settle_s``.
            wait(lambda: any(i.node_name == 'bag_play'
                             for i in node.get_publishers_info_by_topic('/clock'))
                 or player.poll() is not None, "bag_play's /clock publisher", 60.0)
            if player.poll() is not None:
                raise RuntimeError(f'bag_play exited ({player.returncode}) before playing; '
                                   f'see {group.log_dir}')
            t_seen = time.monotonic()
            wait(lambda: time.monotonic() - t_seen >= settle_s, 'settle', settle_s + 5.0)
            from std_msgs.msg import Empty  # noqa: PLC0415
            node.create_subscription(Empty, GATE_TOPIC, lambda _m: None, 10)

        def playing() -> bool:
            if player is not None:
                return player.poll() is None
            return play_thread is not None and play_thread.is_alive()

        deadline = t_play + timeout_s
        done_at = None
        next_check = time.monotonic() + 1.0
        while True:
            time.sleep(0.05)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                foreign.update(_foreign_nodes(node, ours))
            finished = status.get('episode', 0) >= 1 and status.get('state') in (
                'stopped', 'failed', 'canceled')
            if finished and done_at is None:
                done_at = time.monotonic() + 0.3   # the last action / status to arrive
            if not playing() and done_at is None:
                done_at = time.monotonic() + 1.0   # bag over: leave the stack a moment
            if done_at is not None and time.monotonic() >= done_at:
                break
            if dead():
                raise RuntimeError(f'node(s) exited during the replay: {dead()}; logs in '
                                   f'{group.log_dir}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'replay not finished within {timeout_s} s')
        wall = time.monotonic() - t_play
    finally:
        stop_play.set()
        if play_thread is not None:
            play_thread.join(timeout=5.0)
        if player is not None and player.poll() is None:
            player.send_signal(signal.SIGINT)
            try:
                player.wait(timeout=5)
            except subprocess.TimeoutExpired:
                player.kill()
                player.wait(timeout=5)
        if rec.node is not None:
            rec.stop()
        for name in started:
            group.stop(name)
    play_log = ''
    if group.log_dir is not None and (group.log_dir / f'bag_play_{tag}.log').is_file():
        play_log = (group.log_dir / f'bag_play_{tag}.log').read_text()
    elif player_kind == 'inprocess':
        play_log = (f'in-process player: {stats.published} msgs, max lag '
                    f'{stats.max_lag_s * 1e3:.1f} ms, {stats.stopped_by}')
    if foreign:
        raise RuntimeError(f'other nodes {sorted(foreign)} joined ROS domain '
                           f'{group.env["ROS_DOMAIN_ID"]} during the replay: results not usable')
    if verbose:
        print(f'[bag_eval] {tag}: {len(actions)} decisions in {wall:.1f} s '
              f'(final state {status.get("state")}; {play_log.strip().splitlines()[-1]})',
              flush=True)
    final_state = str(status.get('state', ''))
    fault = replay_timing_fault([t for t, _ in actions], final_state, len(content.actions),
                                [t for t, _ in content.move_done])
    if fault and verbose:
        print(f'[bag_eval] {tag} is not a valid replay: {fault}', flush=True)
    return ReplayRun([a for _, a in actions], [(t - content.start_ns) / NS for t, _ in actions],
                     final_state, str(capture_dir), wall, play_log, fault)


FRAME_MODES = ('guarded', 'decision', 'all')
# One message at the playback start, in the replay input only. bag_play waits for a subscriber
# on every topic it plays; the replay subscribes this one only once every node can hear
# bag_play's /clock, so nothing is played to a node whose sim clock is not running yet.
GATE_TOPIC = '/bag_eval/start_gate'


def select_replay_frames(stamps_ns: list[int], events_ns: list[int], mode: str,
                         guard_ns: int) -> list[bool]:
    """Which recorded frames (by header stamp, in order) go into the replay.

    all: every frame. decision: only the first frame stamped strictly after each event
    (instruction / move report) -- one frame per decision, so the encoder memory is the same in
    every replay. guarded (default): every frame except those stamped in (event - guard, event]:
    whether such a frame counted as fresh live depended on which of the two messages the decision
    node saw first within one /clock tick, and in a replay on the replayed /clock's resolution.
    """
    if mode not in FRAME_MODES:
        raise ValueError(f'frames mode must be one of {FRAME_MODES}, got {mode!r}')
    if mode == 'all':
        return [True] * len(stamps_ns)
    events = sorted(events_ns)
    if mode == 'decision':
        keep = [False] * len(stamps_ns)
        for te in events:
            for i, s in enumerate(stamps_ns):
                if s > te:
                    keep[i] = True
                    break
        return keep
    return [not any(te - guard_ns < s <= te for te in events) for s in stamps_ns]


def _cdr_stamp_ns(raw: bytes) -> int:
    """header.stamp of a CDR message that starts with a std_msgs/Header."""
    order = 'little' if raw[1] == 1 else 'big'
    return (int.from_bytes(raw[4:8], order, signed=True) * NS
            + int.from_bytes(raw[8:12], order))


def odom_hold_windows(content: BagContent,
                      hold_after_s: float = math.inf) -> list[tuple[int, int, int]]:
    """(event, window end, recorded decision) log times of every recorded decision step.

    In the replay input the odometry logged in [event, window end] is replaced by one copy of
    the last odometry logged at or before the recorded decision, sent right after the event
    (the move report). By default a window lasts until the next event, so the replayed
    odometry is piecewise constant: one pose per decision, the one the live decision node had
    when it decided. Why: the base still settles for ~0.1 s after a move is reported done, and
    a replayed decision comes a little earlier or later than the live one (it depends on the
    replay rate and the CPU), so with the raw odometry an oracle near a threshold flips
    between runs. The oracle is the only consumer of odometry in the replayed graph (no
    controller runs), so holding it between decisions changes nothing else.
    """
    steps = [st for st in decision_steps(content) if st.recorded_ns is not None]
    events = sorted([t for t, _ in content.instructions] + [t for t, _ in content.move_done])
    out = []
    for st in steps:
        nxt = next((t for t in events if t > st.event_ns), None)
        end = content.end_ns if math.isinf(hold_after_s) else \
            st.recorded_ns + int(hold_after_s * NS)
        if nxt is not None:
            end = min(end, nxt - 1)
        out.append((st.event_ns, end, st.recorded_ns))
    return out


def write_replay_bag(src: Path, dst: Path, topics: list[str], image_topic: str,
                     events_ns: list[int], mode: str, guard_ns: int, *,
                     odom_topic: str = '/odom',
                     hold: list[tuple[int, int, int]] | None = None,
                     gate_ns: int | None = None) -> dict[str, int]:
    """Copy ``topics`` of ``src`` into ``dst`` (raw CDR, same log times); frames selected by
    :func:`select_replay_frames`, odometry held per :func:`odom_hold_windows` windows when
    ``hold`` is given, and with ``gate_ns`` one std_msgs/Empty on :data:`GATE_TOPIC` then (the
    replay's start gate, see ``_replay_once``). Returns the per-topic counts written."""
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: PLC0415

    counts: dict[str, int] = {}
    hold = sorted(hold or [])
    with Reader(src) as reader:
        conns = [c for c in reader.connections if c.topic in topics]
        stamps: list[int] = []
        odom: list[tuple[int, bytes]] = []
        first = [c for c in conns if c.topic in (image_topic, odom_topic)]
        for conn, t_ns, raw in reader.messages(connections=first):
            if conn.topic == image_topic:
                stamps.append(_cdr_stamp_ns(raw))
            elif hold:
                odom.append((t_ns, bytes(raw)))
        keep = iter(select_replay_frames(stamps, events_ns, mode, guard_ns))
        held: dict[int, bytes] = {}     # event log time -> odometry to send then
        for te, _end, ta in hold:
            raw = _last_before(odom, ta)
            if raw is not None:
                held[te] = raw
        with Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            out = {}
            for c in conns:
                if c.topic not in out:
                    out[c.topic] = writer.add_connection(c.topic, c.msgtype,
                                                         msgdef=c.msgdef.data, rihs01=c.digest)
                    counts[c.topic] = 0
            if gate_ns is not None:
                store = _typestore()
                gate = writer.add_connection(GATE_TOPIC, 'std_msgs/msg/Empty', typestore=store)
                writer.write(gate, gate_ns, bytes(store.serialize_cdr(
                    store.types['std_msgs/msg/Empty'](structure_needs_at_least_one_member=0),
                    'std_msgs/msg/Empty')))
                counts[GATE_TOPIC] = 1
            for conn, t_ns, raw in reader.messages(connections=conns):
                topic = conn.topic
                if topic == image_topic and not next(keep):
                    continue
                if topic == odom_topic and hold and any(te <= t_ns <= end
                                                        for te, end, _ in hold):
                    continue
                writer.write(out[topic], t_ns, raw)
                counts[topic] += 1
                if t_ns in held and odom_topic in out and topic != odom_topic and \
                        topic != image_topic:   # right after the move report / instruction
                    writer.write(out[odom_topic], t_ns, held.pop(t_ns))
                    counts[odom_topic] += 1
    return counts


def _string_data(raw: bytes) -> str:
    """std_msgs/String CDR -> str (little or big endian)."""
    little = raw[1] == 1
    n = int.from_bytes(raw[4:8], 'little' if little else 'big')
    return raw[8:8 + n - 1].decode('utf-8', 'replace')


def replay(bag: Path | str, *, policy: str = '', episode_file: str = '', episode_id: str = '',
           checkpoint: str = '', robot: str = '', rate: float = 1.0, repeat: int = 1,
           clock_hz: float = 25.0, lead_in_s: float = 1.0, frames: str = 'guarded',
           guard_s: float | None = None, odom: str = 'hold', hold_after_s: float = math.inf,
           out_dir: Path | str | None = None,
           group: Any = None, domain: int | None = None, timeout_s: float = 300.0,
           allow_nodes: tuple[str, ...] = (), player: str = 'inprocess',
           settle_s: float = 2.0, retries: int = 2, verbose: bool = True) -> dict:
    """Replay ``bag`` through fresh camera_ingest + decision nodes ``repeat`` times.

    ``group``: a ProcessGroup to start the nodes in (its env sets the ROS domain; rclpy in this
    process, if already initialised, must be on the same domain); else one is made on
    ``domain`` (default: a free one, leased for the run). Other nodes on the domain abort the
    replay, except ``allow_nodes`` (e.g. the caller's :class:`DomainLease` node). A replay that
    lost step with the recording (:func:`replay_timing_fault`) is kept apart and repeated, up to
    ``retries`` extra attempts.
    Returns the summary (also written to summary.json).
    """
    from .graph import sim_graph  # noqa: PLC0415
    from .procs import ProcessGroup, config_dir, ros_env  # noqa: PLC0415

    bag = Path(bag)
    content = load_bag(bag, with_frames=False)
    custom = content.custom
    policy = policy or custom.get('policy', '') or 'oracle'
    episode_file = episode_file or custom.get('episode_file', '')
    episode_id = episode_id or custom.get('episode_id', '')
    robot = robot or custom.get('robot', '') or 'go2'
    checkpoint = checkpoint or (custom.get('checkpoint', '') if policy == 'janus' else '')
    if policy == 'oracle' and not episode_file:
        raise ValueError('policy oracle needs --episode-file (the bag records none)')
    if not episode_file:  # the decision node wants one only for the oracle
        episode_file = str(config_dir() / 'episodes' / 'indoor.yaml')
    if not content.instructions:
        raise ValueError(f'{bag} has no vln/instruction: nothing starts an episode')
    if not content.move_done:
        raise ValueError(f'{bag} has no vln/move_done: replay needs the recorded move reports')
    topics = content.topics
    image_topic = pick_image_topic(topics)
    include = ['decision']
    remaps: list[str] = []
    # The decision node's time limits are in sim time; played at ``rate`` R its (wall-clock)
    # latency counts R times over, so they are scaled by R: a node 0.3 s behind under CPU load
    # must not find every frame "older than 1 s" at R = 4.
    overrides: dict[str, dict[str, Any]] = {'decision': {
        'max_frame_age_s': float(max(1.0, rate)), 'frame_timeout_s': float(max(5.0, 5.0 * rate)),
        'move_timeout_s': float(max(30.0, 30.0 * rate))}}
    first = _first_image_size(bag, image_topic) if image_topic else None
    if image_topic == '/camera/image_raw':
        include.append('camera_ingest')
    elif image_topic == '/camera/image_raw/compressed':
        include.append('camera_ingest')
        overrides['camera_ingest'] = {'input_compressed': True}
    elif image_topic == '/vln/image':
        pass  # already the stack's frames: straight into the decision node
    else:
        raise ValueError(f'{bag} has no camera/image_raw[/compressed] or vln/image to replay')
    if policy == 'janus':
        include.append('memory_encoder')
    play = [image_topic, '/vln/instruction', '/vln/move_done']
    # odometry only where a node takes it (the oracle): bag_play waits for a subscriber per topic
    for extra in ('/camera/camera_info', '/odom'):
        if extra in topics and topics[extra][1] > 0 and (extra != '/odom' or policy == 'oracle'):
            play.append(extra)
    if policy == 'oracle' and '/odom' not in play:
        raise ValueError(f'{bag} has no odom: the oracle cannot decide')
    image_size = first if first else (320, 240)
    specs = sim_graph(episode_file=Path(episode_file), episode_id=episode_id, robot=robot,
                      policy=policy, checkpoint_dir=checkpoint,
                      with_encoder=policy == 'janus', include=tuple(include),
                      image_size=image_size, overrides=overrides)
    first_instr = content.instructions[0][0]
    gate_ns = max(content.start_ns, first_instr - int(round(lead_in_s * NS)))
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix='bag_replay_'))
    out.mkdir(parents=True, exist_ok=True)
    play_bag = out / 'replay_input'
    if play_bag.exists():
        raise FileExistsError(f'{play_bag} exists already')
    if odom not in ('hold', 'all'):
        raise ValueError(f"odom mode must be 'hold' or 'all', got {odom!r}")
    if player not in ('inprocess', 'cli'):
        raise ValueError(f"player must be 'inprocess' or 'cli', got {player!r}")
    recorded = [a for _, a in content.actions]
    events = [t for t, _ in content.instructions] + [t for t, _ in content.move_done]
    hold = odom_hold_windows(content, hold_after_s) \
        if odom == 'hold' and '/odom' in play else None
    if guard_s is None:   # a replayed /clock step is rate / clock_hz s of sim time
        guard_s = max(0.15, 1.5 * rate / clock_hz)
    played = write_replay_bag(bag, play_bag, play, image_topic, events, frames,
                              int(round(guard_s * NS)), hold=hold, gate_ns=gate_ns)
    from rosbags.rosbag2 import Reader  # noqa: PLC0415
    with Reader(play_bag) as reader:
        start_offset = (gate_ns - reader.start_time) / NS   # bag_play starts at the gate
    own_group = group is None
    lease = None
    if own_group:
        if domain is None:
            lease = lease_domain(default_domain_candidates())
            if lease is None:
                raise RuntimeError('no free ROS domain among '
                                   f'{default_domain_candidates()}: give --domain-id')
            domain = lease.domain
            allow_nodes = (*allow_nodes, lease.node_name)
        group = ProcessGroup(ros_env(domain), log_dir=out / 'logs')
    if verbose:
        print(f'[bag_eval] replay {bag} ({len(recorded)} recorded decisions, '
              f'{len(content.move_done)} move reports) through {", ".join(include)} '
              f'(policy {policy}) at rate {rate:g}, from '
              f'+{(gate_ns - content.start_ns) / NS:.1f} s; frames '
              f'{frames}: {played.get(image_topic, 0)} of {topics[image_topic][1]}; '
              f'odometry {odom}', flush=True)
    runs: list[ReplayRun] = []
    faulty: list[ReplayRun] = []
    try:
        attempt = 0
        while len(runs) < max(1, repeat) and attempt < max(1, repeat) + max(0, retries):
            attempt += 1
            capture = out / f'replay_{attempt}'
            if capture.exists():
                raise FileExistsError(f'{capture} exists already')
            run = _replay_once(play_bag, content, group=group, specs=specs,
                               play_topics=[*play, GATE_TOPIC], remaps=remaps,
                               rate=rate, clock_hz=clock_hz, start_offset_s=start_offset,
                               gate_ns=gate_ns, capture_dir=capture,
                               timeout_s=timeout_s, tag=f'replay_{attempt}',
                               verbose=verbose, allow_nodes=allow_nodes,
                               player_kind=player, settle_s=settle_s)
            (faulty if run.fault else runs).append(run)
    finally:
        if own_group:
            group.stop_all()
        if lease is not None:
            lease.release()
    rec_times = [(t - content.start_ns) / NS for t, _ in content.actions]
    table_rows = []
    n = max([len(recorded)] + [len(r.actions) for r in runs])
    for i in range(n):
        rec_a = recorded[i] if i < len(recorded) else None
        new = [r.actions[i] if i < len(r.actions) else None for r in runs]
        table_rows.append({'step': i, 't_recorded_s': rec_times[i] if i < len(rec_times) else None,
                           'recorded': rec_a, 'replays': new,
                           'match': all(a == rec_a for a in new)})
    agreements = [sum(1 for i in range(n) if i < len(r.actions) and i < len(recorded)
                      and r.actions[i] == recorded[i]) / n if n else 1.0 for r in runs]
    identical = bool(runs) and all(r.actions == runs[0].actions for r in runs)
    summary = {
        'mode': 'replay', 'bag': str(bag), 'policy': policy, 'rate': rate, 'player': player,
        'frames': frames, 'frames_played': played.get(image_topic, 0),
        'frames_recorded': topics[image_topic][1], 'odom': odom,
        'nodes': include, 'played_topics': play,
        'start_s': round((gate_ns - content.start_ns) / NS, 3),
        'recorded_actions': recorded,
        'replays': [{'actions': r.actions, 'final_state': r.final_state,
                     'wall_s': round(r.wall_s, 2), 'capture_bag': r.bag,
                     'agreement': agreements[i]}
                    for i, r in enumerate(runs)],
        'replays_requested': max(1, repeat),
        'invalid_replays': [{'actions': r.actions, 'final_state': r.final_state,
                             'capture_bag': r.bag, 'fault': r.fault} for r in faulty],
        'agreement': min(agreements) if agreements else 0.0,
        'replays_identical': identical,
        'steps': table_rows,
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    if verbose:
        print(_replay_table(table_rows, len(runs)))
        for i, r in enumerate(runs):
            print(f'[bag_eval] replay {i + 1}: {len(r.actions)} decisions, agreement with the '
                  f'recording {100 * agreements[i]:.1f} %, {r.wall_s:.1f} s wall', flush=True)
        if len(runs) > 1:
            print(f'[bag_eval] replays identical: {identical}', flush=True)
        if faulty:
            print(f'[bag_eval] {len(faulty)} replay(s) lost step with the recording and were '
                  'repeated (the stack was too slow at this rate): '
                  + '; '.join(r.fault for r in faulty), flush=True)
        if len(runs) < max(1, repeat):
            print(f'[bag_eval] only {len(runs)} of {max(1, repeat)} replays kept step with the '
                  'recording: lower --rate', flush=True)
        print(f'[bag_eval] wrote {out / "summary.json"}', flush=True)
    summary['out'] = str(out)
    return summary


def _replay_table(rows: list[dict], n_runs: int) -> str:
    heads = ''.join(f' {"replay " + str(k + 1):13s}' for k in range(n_runs))
    lines = [f'{"step":>4}  {"t[s]":>7}  {"recorded":13s}{heads} match']
    for r in rows:
        t = f'{r["t_recorded_s"]:7.2f}' if r['t_recorded_s'] is not None else '      -'
        cols = ''.join(f' {a or "-":13s}' for a in r['replays'])
        lines.append(f'{r["step"]:4d}  {t}  {r["recorded"] or "-":13s}{cols} '
                     f'{"yes" if r["match"] else "NO"}')
    return '\n'.join(lines)


def _first_image_size(bag: Path, topic: str) -> tuple[int, int] | None:
    from rosbags.rosbag2 import Reader  # noqa: PLC0415

    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, _, raw in reader.messages(connections=conns):
            if conn.msgtype.endswith('CompressedImage'):
                h, w = frame_rgb(Frame(0, 0, bytes(raw), conn.msgtype)).shape[:2]
                return int(w), int(h)
            msg = _typestore().deserialize_cdr(raw, conn.msgtype)
            return int(msg.width), int(msg.height)
    return None


# --- CLI ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bag_eval',
                                 description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='mode', required=True)
    for mode in ('replay', 'openloop'):
        p = sub.add_parser(mode)
        p.add_argument('bag', type=Path, help='rosbag2 folder')
        p.add_argument('--policy', default='', choices=['', 'oracle', 'janus', 'random'],
                       help='default: the one recorded in the bag, else oracle')
        p.add_argument('--episode-file', default='', help='oracle: episode YAML (default: bag)')
        p.add_argument('--episode-id', default='')
        p.add_argument('--checkpoint', default='', help='janus: checkpoint folder')
        p.add_argument('--out', default='', help='output folder (default: a temp folder)')
    rp = sub.choices['replay']
    rp.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
    rp.add_argument('--repeat', type=int, default=1, help='replays (to check determinism)')
    rp.add_argument('--retries', type=int, default=2,
                    help='extra attempts for replays that lost step with the recording (a '
                         'decision later than the next move report: the stack was too slow)')
    rp.add_argument('--clock-hz', type=float, default=25.0,
                    help='/clock messages per wall second (more starves the decision node\'s '
                         'timers, see the module notes)')
    rp.add_argument('--frames', default='guarded', choices=FRAME_MODES,
                    help='frames replayed: all; guarded = all but those stamped just before a '
                         'move report (ambiguous freshness); decision = one per decision')
    rp.add_argument('--guard-s', type=float, default=None,
                    help='guard window of --frames guarded (default: max(0.15, 1.5 * rate / '
                         'clock-hz) s, one replayed /clock step and a half)')
    rp.add_argument('--odom', default='hold', choices=['hold', 'all'],
                    help='hold: from each move report until the next one the replay sees the '
                         'pose the live decision had (deterministic); all: as recorded')
    rp.add_argument('--robot', default='', help='robot profile (default: the bag\'s)')
    rp.add_argument('--player', default='inprocess', choices=['inprocess', 'cli'],
                    help='inprocess: bag_play\'s playback core in this process, on a DDS '
                         'participant that is up before the nodes; cli: python -m '
                         'vln_stack.tools.bag_play (a new participant per replay, held at a '
                         'start gate for --settle-s)')
    rp.add_argument('--settle-s', type=float, default=2.0,
                    help='seconds the graph is left to finish DDS discovery before playing')
    rp.add_argument('--timeout-s', type=float, default=300.0)
    rp.add_argument('--domain-id', type=int, default=-1,
                    help='ROS domain of the replay graph (-1: a free one of 101, 215..232)')
    op = sub.choices['openloop']
    op.add_argument('--every', type=int, default=1,
                    help='bags without recorded decisions: decide on every K-th frame')
    op.add_argument('--instruction', default='', help='override the recorded instruction')
    op.add_argument('--image-topic', default='', help='camera topic (default: auto)')
    op.add_argument('--max-steps', type=int, default=0)
    op.add_argument('--encode-all', action='store_true',
                    help='janus: every frame enters the encoder memory, not only decision frames')
    op.add_argument('--device', default='cpu')
    op.add_argument('--torch-threads', type=int, default=1,
                    help='torch CPU threads (0 = torch default; more than the free cores is slow)')
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.mode == 'replay':
            summary = replay(args.bag, policy=args.policy, episode_file=args.episode_file,
                             episode_id=args.episode_id, checkpoint=args.checkpoint,
                             robot=args.robot, rate=args.rate, repeat=args.repeat,
                             clock_hz=args.clock_hz, frames=args.frames,
                             guard_s=args.guard_s, odom=args.odom, out_dir=args.out or None,
                             player=args.player, settle_s=args.settle_s,
                             retries=args.retries,
                             domain=args.domain_id if args.domain_id >= 0 else None,
                             timeout_s=args.timeout_s)
            ok = summary['replays_identical'] and \
                len(summary['replays']) == summary['replays_requested']
            return 0 if ok else 1
        openloop(args.bag, policy=args.policy, episode_file=args.episode_file,
                 episode_id=args.episode_id, checkpoint=args.checkpoint,
                 out_dir=args.out or None, every=args.every, instruction=args.instruction,
                 image_topic=args.image_topic, max_steps=args.max_steps,
                 encode_all=args.encode_all, device=args.device,
                 torch_threads=args.torch_threads)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TimeoutError) as exc:
        print(f'[bag_eval] error: {exc}', file=sys.stderr)
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
