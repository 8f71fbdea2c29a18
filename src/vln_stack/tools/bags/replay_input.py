"""The replay input: a copy of the recorded bag without what was timing-sensitive in it
(frames of ambiguous freshness, odometry that settles after a move report) plus a start gate."""
from __future__ import annotations

import math
from pathlib import Path

from .content import NS, BagContent, decision_steps, last_before
from .types import typestore

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
            raw = last_before(odom, ta)
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
                store = typestore()
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
