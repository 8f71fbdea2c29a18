"""Play a rosbag2 folder (MCAP or sqlite3) into a live ROS graph, without ros2 bag.

Every selected topic's raw CDR bytes go straight into an rclpy publisher of the recorded type
(``sensor_msgs/msg/CompressedImage`` -> ``sensor_msgs.msg.CompressedImage``), so nothing is
deserialised. Timing follows the bag's log times scaled by ``--rate``.

    python -m vln_stack.tools.bags.play BAG_DIR [--rate 2.0] [--topics /a /b]
        [--remap /a:=/camera/image_raw/compressed ...] [--loop] [--start-offset 10.0]
        [--clock [HZ]] [--duration 30.0] [--wait-subscribers 5.0] [--qos-depth 10]
        [--progress-period 1.0] [--ros-args ...]

The timing core (:class:`PlaybackClock`, :func:`play`) takes injected ``now``/``sleep``/publish
callables and is tested without ROS; rclpy and rosbags are imported in :func:`main` only.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

BagMessage = tuple[str, int, bytes]  # (topic as recorded, log time ns, raw CDR)


@dataclass(frozen=True)
class PlaybackClock:
    """Maps bag log time (ns) <-> monotonic wall time (s) for one pass played at ``rate``."""

    rate: float
    bag_start_ns: int
    wall_start_s: float

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f'rate must be > 0, got {self.rate}')

    def due_s(self, bag_ns: int) -> float:
        """Wall time at which a message logged at ``bag_ns`` is published."""
        return self.wall_start_s + (bag_ns - self.bag_start_ns) * 1e-9 / self.rate

    def bag_now_ns(self, wall_s: float) -> int:
        """Bag time that corresponds to wall time ``wall_s`` (what /clock says)."""
        return self.bag_start_ns + int(round((wall_s - self.wall_start_s) * self.rate * 1e9))


@dataclass
class PlaybackStats:
    published: int = 0
    per_topic: dict[str, int] = field(default_factory=dict)
    passes: int = 0
    clock_msgs: int = 0
    max_lag_s: float = 0.0
    stopped_by: str = ''  # 'end' | 'duration' | 'shutdown'


def parse_remaps(items: Iterable[str]) -> dict[str, str]:
    """['old:=new', ...] -> {old: new}; names given without a leading slash get one."""
    out: dict[str, str] = {}
    for item in items:
        if ':=' not in item:
            raise ValueError(f'remap {item!r} is not of the form old:=new')
        old, new = (s.strip() for s in item.split(':=', 1))
        if not old or not new:
            raise ValueError(f'remap {item!r} has an empty side')
        out[_absolute(old)] = _absolute(new)
    return out


def _absolute(name: str) -> str:
    return name if name.startswith('/') else '/' + name


def select_topics(available: Iterable[str], wanted: Iterable[str] | None) -> list[str]:
    """Topics to play: all if ``wanted`` is empty, else those asked for (ValueError if absent)."""
    avail = list(dict.fromkeys(available))
    if not wanted:
        return avail
    chosen = [_absolute(t) for t in wanted]
    missing = [t for t in chosen if t not in avail]
    if missing:
        raise ValueError(f'topics not in bag: {missing} (bag has {avail})')
    return chosen


def resolve_msg_type(type_name: str) -> type:
    """'pkg/msg/Name' (or 'pkg/Name') -> the generated Python class; ImportError if absent."""
    parts = type_name.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise ImportError(f'malformed message type name {type_name!r}')
    pkg, kind, name = parts
    module = importlib.import_module(f'{pkg}.{kind}')
    try:
        return getattr(module, name)
    except AttributeError:
        raise ImportError(f'{pkg}.{kind} has no {name}') from None


class _Pacer:
    """The timing state of one `play` call: the deadline, the /clock and progress schedules."""

    def __init__(self, stats: PlaybackStats, *, now: Callable[[], float],
                 sleep: Callable[[float], None], ok: Callable[[], bool], max_duration_s: float,
                 publish_clock: Callable[[int], None] | None, clock_period_s: float,
                 progress: Callable[[PlaybackStats, int], None] | None,
                 progress_period_s: float, max_sleep_s: float) -> None:
        self.stats, self.now, self.sleep, self.ok = stats, now, sleep, ok
        self.publish_clock, self.clock_period_s = publish_clock, clock_period_s
        self.progress, self.progress_period_s = progress, progress_period_s
        self.max_sleep_s = max_sleep_s
        t_begin = now()
        self.deadline = t_begin + max_duration_s if max_duration_s > 0 else float('inf')
        self.next_clock = t_begin
        self.next_progress = t_begin + progress_period_s

    def tick(self, clock: PlaybackClock) -> None:
        t = self.now()
        if self.publish_clock is not None and t >= self.next_clock:
            self.publish_clock(clock.bag_now_ns(t))
            self.stats.clock_msgs += 1
            self.next_clock = max(self.next_clock + self.clock_period_s, t)
        if self.progress is not None and t >= self.next_progress:
            self.progress(self.stats, clock.bag_now_ns(t))
            self.next_progress = max(self.next_progress + self.progress_period_s, t)

    def wait_until(self, clock: PlaybackClock, due: float) -> bool:
        """Sleep (publishing /clock) until ``due``; False when stopped or out of time."""
        while True:
            self.tick(clock)
            t = self.now()
            if not self.ok():
                self.stats.stopped_by = 'shutdown'
                return False
            if t >= self.deadline:
                self.stats.stopped_by = 'duration'
                return False
            if t >= due:
                return True
            step = min(due, self.deadline,
                       self.next_clock if self.publish_clock else due) - t
            self.sleep(max(0.0, min(step, self.max_sleep_s)))


def play(passes: Callable[[], Iterator[BagMessage]], *, start_ns: int, rate: float,
         publish: Callable[[str, bytes], None], now: Callable[[], float],
         sleep: Callable[[float], None], loop: bool = False, max_duration_s: float = 0.0,
         publish_clock: Callable[[int], None] | None = None, clock_period_s: float = 0.025,
         ok: Callable[[], bool] = lambda: True,
         progress: Callable[[PlaybackStats, int], None] | None = None,
         progress_period_s: float = 1.0, max_sleep_s: float = 0.05) -> PlaybackStats:
    """Publish messages at their bag time scaled by ``rate``; ROS-free, clock injected.

    passes: returns a fresh iterator of (topic, log time ns, raw) per pass, in time order,
        starting at ``start_ns`` (the bag time mapped to the start of each pass).
    max_duration_s: wall-time bound over all passes (0 = none). ``ok() == False`` stops early.
    publish_clock: called with the bag time (ns) every ``clock_period_s`` while playing.
    progress: called with (stats, current bag time ns) every ``progress_period_s``.
    """
    stats = PlaybackStats()
    pace = _Pacer(stats, now=now, sleep=sleep, ok=ok, max_duration_s=max_duration_s,
                  publish_clock=publish_clock, clock_period_s=clock_period_s,
                  progress=progress, progress_period_s=progress_period_s,
                  max_sleep_s=max_sleep_s)
    while True:
        stats.passes += 1
        clock = PlaybackClock(rate, start_ns, now())
        for topic, t_ns, raw in passes():
            due = clock.due_s(t_ns)
            if not pace.wait_until(clock, due):
                return stats
            publish(topic, raw)
            stats.published += 1
            stats.per_topic[topic] = stats.per_topic.get(topic, 0) + 1
            stats.max_lag_s = max(stats.max_lag_s, now() - due)
        if not loop:
            stats.stopped_by = 'end'
            return stats
        if not ok() or now() >= pace.deadline:
            stats.stopped_by = 'shutdown' if not ok() else 'duration'
            return stats
        if stats.published == 0 and stats.passes > 1:
            stats.stopped_by = 'end'  # nothing to loop over
            return stats


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bags.play',
                                 description='Play a rosbag2 (MCAP/sqlite3) into ROS 2 topics.')
    ap.add_argument('bag', type=Path, help='rosbag2 folder (with metadata.yaml)')
    ap.add_argument('--rate', type=float, default=1.0, help='playback speed factor (> 0)')
    ap.add_argument('--topics', nargs='+', default=[], metavar='TOPIC',
                    help='play only these recorded topics (default: all)')
    ap.add_argument('--remap', action='append', default=[], metavar='OLD:=NEW',
                    help='publish recorded topic OLD on NEW (repeatable)')
    ap.add_argument('--loop', action='store_true', help='replay from the start when done')
    ap.add_argument('--start-offset', type=float, default=0.0, metavar='S',
                    help='start S seconds into the bag')
    ap.add_argument('--clock', type=float, nargs='?', const=40.0, default=None, metavar='HZ',
                    help='publish /clock from bag time (default 40 Hz when given)')
    ap.add_argument('--duration', type=float, default=0.0, metavar='S',
                    help='stop after S wall seconds (0 = no bound)')
    ap.add_argument('--wait-subscribers', type=float, default=0.0, metavar='S',
                    help='before playing, wait up to S s until every topic has a subscriber')
    ap.add_argument('--qos-depth', type=int, default=10, help='publisher history depth')
    ap.add_argument('--progress-period', type=float, default=1.0, metavar='S',
                    help='print progress every S wall seconds (0 = only at the end)')
    return ap


def _qos_for(conn: Any, depth: int) -> Any:
    """Publisher QoS: reliable/volatile, unless every recorded offer was transient-local."""
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: PLC0415
    from rosbags.interfaces import QosDurability  # noqa: PLC0415

    offers = list(getattr(conn.ext, 'offered_qos_profiles', []) or [])
    latched = bool(offers) and all(q.durability == QosDurability.TRANSIENT_LOCAL for q in offers)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=(DurabilityPolicy.TRANSIENT_LOCAL if latched
                                  else DurabilityPolicy.VOLATILE))


def _log(text: str) -> None:
    print(f'[bag_play] {text}', flush=True)


def main(argv: list[str] | None = None) -> int:
    from ..runner.procs import split_ros_args
    argv, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if not args.rate > 0:
        _log(f'--rate must be > 0, got {args.rate}')
        return 2
    try:
        remaps = parse_remaps(args.remap)
    except ValueError as exc:
        _log(str(exc))
        return 2

    import rclpy  # noqa: PLC0415 - keep --help and the timing core free of ROS
    from rclpy.node import Node  # noqa: PLC0415
    from rosbags.rosbag2 import Reader  # noqa: PLC0415

    with Reader(args.bag) as reader:
        by_topic: dict[str, list[Any]] = {}
        for conn in reader.connections:
            by_topic.setdefault(conn.topic, []).append(conn)
        try:
            topics = select_topics(by_topic, args.topics)
        except ValueError as exc:
            _log(str(exc))
            return 2
        rclpy.init(args=['bag_play', *ros_args])
        node = Node('bag_play')
        try:
            return _run(args, reader, node, by_topic, topics, remaps)
        except KeyboardInterrupt:
            return 0
        finally:
            node.destroy_node()
            rclpy.try_shutdown()


def _run(args: argparse.Namespace, reader: Any, node: Any, by_topic: dict[str, list[Any]],
         topics: list[str], remaps: dict[str, str]) -> int:
    import rclpy  # noqa: PLC0415

    pubs, conns = _make_publishers(node, by_topic, topics, remaps, args.qos_depth)
    if not pubs:
        _log('nothing to play')
        return 1

    clock_pub = None
    if args.clock is not None:
        from rosgraph_msgs.msg import Clock  # noqa: PLC0415
        clock_pub = node.create_publisher(Clock, '/clock', 10)

    if args.wait_subscribers > 0:
        _wait_subscribers(pubs, args.wait_subscribers)

    start_ns = reader.start_time + int(round(args.start_offset * 1e9))
    end_ns = reader.end_time
    span_s = max(1e-9, (end_ns - start_ns) * 1e-9)

    def passes() -> Iterator[BagMessage]:
        for conn, t_ns, raw in reader.messages(connections=conns, start=start_ns):
            yield conn.topic, t_ns, raw

    def publish(topic: str, raw: bytes) -> None:
        pubs[topic].publish(bytes(raw))

    def publish_clock(bag_ns: int) -> None:
        from rosgraph_msgs.msg import Clock  # noqa: PLC0415
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(max(0, bag_ns), 1_000_000_000)
        clock_pub.publish(msg)

    def progress(stats: PlaybackStats, bag_ns: int) -> None:
        done = min(1.0, max(0.0, (bag_ns - start_ns) * 1e-9 / span_s))
        _log(f'pass {stats.passes}: {(bag_ns - start_ns) * 1e-9:7.2f}/{span_s:.2f} s bag time '
             f'({done:4.0%}), {stats.published} msgs published')

    _log(f'playing {args.bag} from +{args.start_offset:g} s at rate {args.rate:g}'
         + (' (loop)' if args.loop else '') + (f', /clock {args.clock:g} Hz' if clock_pub else ''))
    t0 = time.monotonic()
    stats = play(passes, start_ns=start_ns, rate=args.rate, publish=publish,
                 now=time.monotonic, sleep=time.sleep, loop=args.loop,
                 max_duration_s=args.duration,
                 publish_clock=publish_clock if clock_pub is not None else None,
                 clock_period_s=1.0 / args.clock if args.clock else 0.025,
                 ok=rclpy.ok, progress=progress if args.progress_period > 0 else None,
                 progress_period_s=args.progress_period or 1.0)
    per_topic = ', '.join(f'{t}: {n}' for t, n in stats.per_topic.items())
    _log(f'done ({stats.stopped_by}): {stats.published} msgs in {time.monotonic() - t0:.2f} s, '
         f'{stats.passes} pass(es), max lag {stats.max_lag_s * 1e3:.1f} ms; {per_topic}')
    return 0


def _make_publishers(node: Any, by_topic: dict[str, list[Any]], topics: list[str],
                     remaps: dict[str, str], qos_depth: int) -> tuple[dict[str, Any], list[Any]]:
    """({recorded topic: publisher}, connections to read) for the topics that can be played."""
    pubs: dict[str, Any] = {}
    conns = []
    for topic in topics:
        conn = by_topic[topic][0]
        if conn.ext.serialization_format != 'cdr':
            _log(f'skip {topic}: serialization {conn.ext.serialization_format!r} is not cdr')
            continue
        try:
            msg_cls = resolve_msg_type(conn.msgtype)
        except ImportError as exc:
            _log(f'skip {topic}: type {conn.msgtype} not available ({exc})')
            continue
        out = remaps.get(topic, topic)
        pubs[topic] = node.create_publisher(msg_cls, out, _qos_for(conn, qos_depth))
        conns.extend(by_topic[topic])
        _log(f'{topic} [{conn.msgtype}, {sum(c.msgcount for c in by_topic[topic])} msgs]'
             + (f' -> {out}' if out != topic else ''))
    return pubs, conns


def _wait_subscribers(pubs: dict[str, Any], wait_s: float) -> None:
    """Up to ``wait_s`` for a subscriber on every publisher (then play anyway)."""
    import rclpy  # noqa: PLC0415

    limit = time.monotonic() + wait_s
    while rclpy.ok() and time.monotonic() < limit:
        if all(p.get_subscription_count() > 0 for p in pubs.values()):
            break
        time.sleep(0.05)
    lacking = [p.topic_name for p in pubs.values() if p.get_subscription_count() == 0]
    if lacking:
        _log(f'no subscriber after {wait_s:g} s on {lacking}; playing anyway')
    else:
        time.sleep(1.0)  # the subscribers' side of the match may lag the publishers' (loaded CI)


if __name__ == '__main__':
    raise SystemExit(main())
