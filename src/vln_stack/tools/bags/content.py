"""What the bag evaluation reads from a rosbag2 (ROS-free: rosbags + its kilted typestore):
frames, instructions, recorded decisions, move reports, odometry, and the decision steps."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .types import typestore

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

    from ...core.geometry import Pose2D, yaw_from_quaternion  # noqa: PLC0415

    store = typestore()
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
    from ...ros.images import compressed_msg_to_rgb, image_msg_to_rgb  # noqa: PLC0415

    msg = typestore().deserialize_cdr(frame.raw, frame.msgtype)
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


def last_before(items: list[tuple[int, Any]], t_ns: int) -> Any:
    """Value of the last (t, value) with t <= t_ns (items sorted), else None."""
    lo, hi = 0, len(items)
    while lo < hi:
        mid = (lo + hi) // 2
        if items[mid][0] <= t_ns:
            lo = mid + 1
        else:
            hi = mid
    return items[lo - 1][1] if lo else None


def first_frame_after(frames: list[Frame], stamp_ns: int) -> int | None:
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
            fi = first_frame_after(content.frames, t)
            t_pose = rec[0] if rec else (content.frames[fi].log_ns if fi is not None else t)
            steps.append(Step(len(steps), kind, t, current, fi,
                              last_before(content.odom, t_pose),
                              rec[1] if rec else None, rec[0] if rec else None))
        return steps
    for i in range(0, len(content.frames), max(1, every)):
        fr = content.frames[i]
        steps.append(Step(len(steps), 'frame', fr.log_ns, text0, i,
                          last_before(content.odom, fr.log_ns)))
    return steps


