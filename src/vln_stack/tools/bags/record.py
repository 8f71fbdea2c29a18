"""Record ROS 2 topics into a rosbag2 folder (MCAP, metadata v9) without ros2 bag.

Every topic is subscribed *raw*: the CDR bytes that arrive go into the bag unchanged, so nothing
is deserialised on the way. The log time of a message is its receive time on the recorder node's
clock; with ``--use-sim-time`` that is the simulator's /clock, so a replay keeps sim timing.

    python -m vln_stack.tools.bags.record OUT_DIR [--topics camera/image_raw odom ...]
        [--duration S] [--use-sim-time] [--max-image-rate HZ] [--keep-after-event N]
        [--no-compress] [--ros-args ...]

Image topics are large (a 320x240 rgb8 frame is 230 KB, 10 Hz of it 2.3 MB/s). With
``--max-image-rate HZ`` images are thinned to HZ (by log time) *except* the first
``--keep-after-event`` frames (default 2) received after every ``vln/instruction`` or
``vln/move_done`` message: those are the frames the decision node decides on (one decision per
executed move, on the first frame stamped after the move ended), so a thinned bag still replays
the same decisions. MCAP chunks are zstd-compressed unless ``--no-compress``.

In-process API (what ``run_episode --record DIR`` uses)::

    rec = BagRecorder(out_dir, use_sim_time=True, max_image_rate_hz=2.0)
    rec.start()            # its own node, spun in a background thread (rclpy.init if needed)
    ...
    stats = rec.stop()     # closes the bag (metadata.yaml is written on close)

Types of the stack's topics are known up front, so they are subscribed at once (no message is
lost to discovery); any other topic is subscribed as soon as a publisher appears in the graph.
Limits: a recorder killed with SIGKILL leaves an MCAP without its summary and no metadata.yaml.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .types import IMAGE_TYPES, known_type, msg_class, typestore

DEFAULT_TOPICS = (
    'camera/image_raw', 'camera/camera_info', 'odom', 'cmd_vel', 'vln/instruction',
    'vln/action', 'vln/status', 'vln/move_done', 'vln/goal', 'vln/fused_tokens/info',
    'diagnostics',
)
# Sensor streams are subscribed best-effort (that matches reliable and best-effort publishers);
# the rest reliable, unless a publisher already in the graph offers only best-effort.
SENSOR_TYPES = IMAGE_TYPES + ('sensor_msgs/msg/CameraInfo', 'nav_msgs/msg/Odometry',
                              'rosgraph_msgs/msg/Clock')
EVENT_TOPICS = ('vln/instruction', 'vln/move_done')


class ImageThinner:
    """Keep at most ``max_rate_hz`` images per topic, plus the first ``keep_after_event`` images
    after each event (instruction / move done). ROS-free.

    Rate: frames take slots on a fixed schedule (slot k+1 = slot k + period, never earlier than
    half a period after the frame that took slot k); a frame up to ``tolerance`` of a period
    early still takes its slot, so log-time jitter (receive time on a coarse /clock) does not
    lower the rate. Frames kept for an event do not move the schedule.
    """

    def __init__(self, max_rate_hz: float = 0.0, keep_after_event: int = 2, *,
                 tolerance: float = 0.15) -> None:
        self.period_ns = int(round(1e9 / max_rate_hz)) if max_rate_hz > 0 else 0
        self.keep_after_event = max(0, int(keep_after_event))
        self.tolerance = tolerance
        self._next: dict[str, int] = {}
        self._owed: dict[str, int] = {}

    def event(self) -> None:
        for topic in self._owed:
            self._owed[topic] = self.keep_after_event

    def keep(self, topic: str, t_ns: int) -> bool:
        self._owed.setdefault(topic, 0)
        if self.period_ns <= 0:
            return True
        nxt = self._next.get(topic)
        if nxt is None or t_ns >= nxt - self.tolerance * self.period_ns or t_ns < nxt - 2 * \
                self.period_ns:  # first frame, its slot, or time went back (sim reset)
            base = nxt if nxt is not None and abs(t_ns - nxt) < self.period_ns else t_ns
            self._next[topic] = max(base + self.period_ns, t_ns + self.period_ns // 2)
            if self._owed[topic] > 0:
                self._owed[topic] -= 1
            return True
        if self._owed[topic] > 0:
            self._owed[topic] -= 1
            return True
        return False


@dataclass
class RecordStats:
    path: str = ''
    counts: dict[str, int] = field(default_factory=dict)
    thinned: dict[str, int] = field(default_factory=dict)
    before_clock: int = 0            # dropped: use_sim_time and no /clock received yet
    bytes_written: int = 0
    wall_s: float = 0.0
    types: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        per = ', '.join(f'{t}: {n}' + (f' (-{self.thinned[t]} thinned)' if self.thinned.get(t)
                                         else '') for t, n in self.counts.items())
        return (f'{sum(self.counts.values())} msgs, {self.bytes_written / 2**20:.2f} MiB of CDR '
                f'in {self.wall_s:.1f} s -> {self.path}; {per}'
                + (f'; {self.before_clock} dropped before /clock' if self.before_clock else ''))


class BagRecorder:
    """Raw-CDR topic recorder writing an MCAP rosbag2 (metadata v9) with rosbags.

    topics: relative or absolute names; types from :data:`.types.KNOWN_TYPES`, else from discovery.
    use_sim_time: log times on /clock (messages before the first /clock are dropped).
    max_image_rate_hz / keep_after_event: image thinning, see :class:`ImageThinner`.
    listeners: ``f(topic, log_time_ns, raw_cdr)`` called for every written message (in the
        recorder's thread; keep them short).
    custom_data: strings stored in metadata.yaml ``custom_data`` (e.g. episode file and id).
    domain_id: record on this ROS domain through a private rclpy context (independent of the
        process's global one); None: the global context (initialised here if needed).
    """

    def __init__(self, out_dir: Path | str, topics: tuple[str, ...] | list[str] = DEFAULT_TOPICS,
                 *, use_sim_time: bool = False, max_image_rate_hz: float = 0.0,
                 keep_after_event: int = 2, compress: bool = True, node_name: str = '',
                 qos_depth: int = 100, custom_data: dict[str, str] | None = None,
                 listeners: list[Callable[[str, int, bytes], None]] | None = None,
                 domain_id: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.topics = list(dict.fromkeys(topics))
        self.use_sim_time = use_sim_time
        self.thinner = ImageThinner(max_image_rate_hz, keep_after_event)
        self.compress = compress
        self.node_name = node_name or 'bag_record'
        self.qos_depth = qos_depth
        self.custom_data = dict(custom_data or {})
        self.listeners = list(listeners or [])
        self.stats = RecordStats(path=str(self.out_dir))
        self.node: Any = None
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._pending: list[str] = []     # resolved names still waiting for a type
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor: Any = None
        self._owns_rclpy = False
        self.domain_id = domain_id
        self.context: Any = None
        self._t0 = 0.0
        self._closed = False

    # --- life cycle ---------------------------------------------------------------------------
    def start(self, *, spin: bool = True) -> 'BagRecorder':
        """Open the bag, create the node and its subscriptions, spin it in a thread.

        ``spin=False``: the caller spins ``self.node`` (then call :meth:`poll_discovery` now and
        then for topics of unknown type)."""
        import rclpy  # noqa: PLC0415
        from rclpy.executors import SingleThreadedExecutor  # noqa: PLC0415
        from rclpy.node import Node  # noqa: PLC0415
        from rclpy.parameter import Parameter  # noqa: PLC0415
        from rosbags.rosbag2 import (  # noqa: PLC0415
            CompressionFormat, CompressionMode, StoragePlugin, Writer)

        if self.domain_id is not None:
            from rclpy.context import Context  # noqa: PLC0415
            self.context = Context()
            rclpy.init(context=self.context, domain_id=int(self.domain_id))
            self._owns_rclpy = True
        elif not rclpy.ok():
            rclpy.init()
            self._owns_rclpy = True
        writer = Writer(self.out_dir, version=9, storage_plugin=StoragePlugin.MCAP)
        if self.compress:
            writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        for key, value in self.custom_data.items():
            writer.set_custom_data(key, str(value))
        writer.open()
        self._writer = writer
        self.node = Node(self.node_name, context=self.context, parameter_overrides=[
            Parameter('use_sim_time', value=bool(self.use_sim_time))])
        self._t0 = time.monotonic()
        for topic in self.topics:
            name = self.node.resolve_topic_name(topic)
            typ = known_type(name)
            if typ is None:
                self._pending.append(name)
            else:
                self._subscribe(name, typ)
        self.poll_discovery()
        if spin:
            self._executor = SingleThreadedExecutor(context=self.context)
            self._executor.add_node(self.node)
            self._thread = threading.Thread(target=self._spin, name='bag_record', daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        import rclpy  # noqa: PLC0415
        from rclpy.executors import ExternalShutdownException  # noqa: PLC0415

        next_poll = time.monotonic() + 0.5
        while not self._stop.is_set() and rclpy.ok(context=self.context):
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except (ExternalShutdownException, KeyboardInterrupt):
                break
            except Exception:  # noqa: BLE001 - context torn down under us while stopping
                if self._stop.is_set() or not rclpy.ok(context=self.context):
                    break
                raise
            if self._pending and time.monotonic() >= next_poll:
                next_poll = time.monotonic() + 0.5
                self.poll_discovery()

    def stop(self) -> RecordStats:
        """Stop spinning, close the bag (writes metadata.yaml), destroy the node."""
        import rclpy  # noqa: PLC0415

        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            if self._writer is not None and not self._closed:
                self._writer.close()
                self._closed = True
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self._executor = None
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
        if self._owns_rclpy:
            rclpy.try_shutdown(context=self.context)
            self._owns_rclpy = False
        self.stats.wall_s = time.monotonic() - self._t0
        return self.stats

    def __enter__(self) -> 'BagRecorder':
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- subscriptions ------------------------------------------------------------------------
    def poll_discovery(self) -> None:
        """Subscribe pending topics whose type a publisher in the graph now announces."""
        if not self._pending or self.node is None:
            return
        graph = dict(self.node.get_topic_names_and_types())
        for name in list(self._pending):
            types = graph.get(name)
            if types:
                self._pending.remove(name)
                self._subscribe(name, types[0])

    def _qos_for(self, name: str, typ: str) -> Any:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: PLC0415

        reliable = typ not in SENSOR_TYPES
        infos = self.node.get_publishers_info_by_topic(name)
        if infos and any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                         for i in infos):
            reliable = False
        depth = 10 if typ in IMAGE_TYPES else self.qos_depth
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                          reliability=(ReliabilityPolicy.RELIABLE if reliable
                                       else ReliabilityPolicy.BEST_EFFORT))

    def _subscribe(self, name: str, typ: str) -> None:
        try:
            cls = msg_class(typ)
        except (ImportError, AttributeError, ValueError) as exc:
            self.node.get_logger().error(f'not recording {name}: type {typ} unavailable ({exc})')
            return
        store = typestore()
        if typ not in store.fielddefs:
            self.node.get_logger().error(f'not recording {name}: type {typ} is not in the '
                                         'rosbags ros2_kilted typestore (no definition to store)')
            return
        with self._lock:
            self._conns[name] = self._writer.add_connection(name, typ, typestore=store)
            self.stats.counts[name] = 0
            self.stats.types[name] = typ
        is_image = typ in IMAGE_TYPES
        is_event = any(name.strip('/') == e or name.endswith('/' + e) for e in EVENT_TOPICS)
        self.node.create_subscription(
            cls, name, lambda raw, n=name, im=is_image, ev=is_event: self._on_raw(n, raw, im, ev),
            self._qos_for(name, typ), raw=True)

    def _on_raw(self, name: str, raw: bytes, is_image: bool, is_event: bool) -> None:
        t_ns = self.node.get_clock().now().nanoseconds
        if t_ns <= 0:
            self.stats.before_clock += 1
            return
        with self._lock:
            if self._closed:
                return
            if is_event:
                self.thinner.event()
            if is_image and not self.thinner.keep(name, t_ns):
                self.stats.thinned[name] = self.stats.thinned.get(name, 0) + 1
                return
            self._writer.write(self._conns[name], t_ns, raw)
            self.stats.counts[name] += 1
            self.stats.bytes_written += len(raw)
        for fn in self.listeners:
            fn(name, t_ns, raw)

    # --- helpers ------------------------------------------------------------------------------
    def count(self, topic: str) -> int:
        name = topic if topic.startswith('/') else '/' + topic
        return self.stats.counts.get(name, 0)

    def wait_for_publishers(self, topics: list[str], timeout_s: float) -> list[str]:
        """Wait until every topic has a publisher in the graph; returns those still lacking."""
        deadline = time.monotonic() + timeout_s
        while True:
            lacking = [t for t in topics if self.node.count_publishers(
                self.node.resolve_topic_name(t)) == 0]
            if not lacking or time.monotonic() >= deadline:
                return lacking
            time.sleep(0.05)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog='python -m vln_stack.tools.bags.record',
                                 description='Record ROS 2 topics into an MCAP rosbag2 (v9).')
    ap.add_argument('out', type=Path, help='output bag folder (must not exist)')
    ap.add_argument('--topics', nargs='+', default=list(DEFAULT_TOPICS), metavar='TOPIC',
                    help='topics to record (default: the stack\'s; add /clock if wanted)')
    ap.add_argument('--duration', type=float, default=0.0, metavar='S',
                    help='stop after S wall seconds (0 = until Ctrl-C)')
    ap.add_argument('--use-sim-time', action='store_true',
                    help='log times from /clock (record the simulator with this)')
    ap.add_argument('--max-image-rate', type=float, default=0.0, metavar='HZ',
                    help='thin image topics to HZ (0 = every frame); decision frames are kept')
    ap.add_argument('--keep-after-event', type=int, default=2, metavar='N',
                    help='images always kept after each instruction / move_done')
    ap.add_argument('--no-compress', action='store_true', help='no zstd chunk compression')
    ap.add_argument('--custom', action='append', default=[], metavar='KEY=VALUE',
                    help='store KEY=VALUE in metadata custom_data (repeatable)')
    return ap


def main(argv: list[str] | None = None) -> int:
    from ..runner.procs import split_ros_args
    argv, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    if args.out.exists():
        print(f'[bag_record] {args.out} exists already, not overwriting', flush=True)
        return 2
    custom = {}
    for item in args.custom:
        key, sep, value = item.partition('=')
        if not sep or not key:
            print(f'[bag_record] --custom {item!r} is not KEY=VALUE', flush=True)
            return 2
        custom[key] = value

    import rclpy  # noqa: PLC0415

    rclpy.init(args=['bag_record', *ros_args])
    rec = BagRecorder(args.out, args.topics, use_sim_time=args.use_sim_time,
                      max_image_rate_hz=args.max_image_rate,
                      keep_after_event=args.keep_after_event, compress=not args.no_compress,
                      custom_data=custom)
    try:
        rec.start()
        print(f'[bag_record] recording {", ".join(rec.topics)} -> {args.out}'
              + (' (sim time)' if args.use_sim_time else ''), flush=True)
        deadline = time.monotonic() + args.duration if args.duration > 0 else float('inf')
        while rclpy.ok() and time.monotonic() < deadline:
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    finally:
        stats = rec.stop()
        rclpy.try_shutdown()
    print(f'[bag_record] done: {stats.summary()}', flush=True)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
