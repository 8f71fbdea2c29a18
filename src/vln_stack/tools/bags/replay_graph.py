"""One replay of a bag through fresh nodes: start them, wait until they can hear the player,
play, capture the new decisions (:func:`replay_once`, :class:`ReplayGraph`)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .content import NS, BagContent
from .play import PlaybackStats, _qos_for, play, resolve_msg_type
from .record import BagRecorder
from .replay_input import GATE_TOPIC


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


def _string_data(raw: bytes) -> str:
    """std_msgs/String CDR -> str (little or big endian)."""
    little = raw[1] == 1
    n = int.from_bytes(raw[4:8], 'little' if little else 'big')
    return raw[8:8 + n - 1].decode('utf-8', 'replace')


def replay_once(bag: Path, content: BagContent, *, group: Any, specs: list[Any],
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
    ``python -m vln_stack.tools.bags.play`` (a new participant each replay); it is held at the
    start gate until its /clock publisher has been in the graph for ``settle_s``.
    """
    graph = ReplayGraph(bag, group, specs, gate_ns=gate_ns, capture_dir=capture_dir,
                        allow_nodes=allow_nodes, settle_s=settle_s)
    try:
        graph.start(play_topics if player_kind == 'inprocess' else None, timeout_s)
        t_play = time.monotonic()
        if player_kind == 'inprocess':
            graph.play_inprocess(rate, clock_hz)
        else:
            graph.play_cli(tag, play_topics, remaps, rate, clock_hz, start_offset_s)
        graph.wait_finished(t_play + timeout_s, timeout_s)
        wall = time.monotonic() - t_play
    finally:
        graph.stop()
    return graph.result(content, tag, wall, player_kind, verbose)


class ReplayGraph:
    """The nodes of one replay, the capture recorder (whose node also publishes the held /clock
    and, in process, the played topics) and the player: :func:`replay_once`'s steps."""

    def __init__(self, bag: Path, group: Any, specs: list[Any], *, gate_ns: int,
                 capture_dir: Path, allow_nodes: tuple[str, ...], settle_s: float) -> None:
        self.bag, self.group, self.specs = bag, group, specs
        self.gate_ns, self.capture_dir, self.settle_s = gate_ns, capture_dir, settle_s
        self.started = [s.name for s in specs]
        self.actions: list[tuple[int, str]] = []
        self.status: dict = {}
        self.rec = BagRecorder(capture_dir, ['vln/action', 'vln/status', 'vln/episode_reset',
                                             'vln/fused_tokens/info'],
                               use_sim_time=True, node_name=f'bag_eval_capture_{os.getpid()}',
                               listeners=[self._listen], custom_data={'replay_of': str(bag)},
                               domain_id=int(group.env['ROS_DOMAIN_ID']))
        self.ours = {*self.started, self.rec.node_name, 'bag_play', *allow_nodes}
        self.foreign: set[str] = set()
        self.node: Any = None
        self.clock_pub: Any = None
        self.clock_type: Any = None
        self.pubs: dict[str, Any] = {}
        self.player: subprocess.Popen | None = None
        self.play_thread: threading.Thread | None = None
        self.stop_play = threading.Event()
        self.stats = PlaybackStats()

    def _listen(self, topic: str, t_ns: int, raw: bytes) -> None:
        if topic == '/vln/action':
            self.actions.append((t_ns, _string_data(raw)))
        elif topic == '/vln/status':
            try:
                self.status.update(json.loads(_string_data(raw)))
            except ValueError:
                pass

    def dead(self) -> dict[str, int]:
        return {n: rc for n, rc in self.group.dead().items() if n in self.started}

    def clock_to(self, t_ns: int) -> None:
        msg = self.clock_type()
        msg.clock.sec, msg.clock.nanosec = divmod(max(0, t_ns), NS)
        self.clock_pub.publish(msg)

    def preroll(self) -> None:
        self.clock_to(self.gate_ns)

    def wait(self, cond: Any, what: str, limit_s: float) -> None:
        deadline = time.monotonic() + limit_s
        while not cond():
            self.preroll()
            if self.dead():
                raise RuntimeError(f'node(s) exited while starting: {self.dead()}; logs in '
                                   f'{self.group.log_dir}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'replay graph not ready: {what} (after {limit_s:g} s)')
            time.sleep(0.1)

    def start(self, inprocess_topics: list[str] | None, timeout_s: float) -> None:
        """Start the nodes and the recorder; return once the graph can hear the player."""
        from rosgraph_msgs.msg import Clock  # noqa: PLC0415

        for spec in self.specs:
            self.group.start(spec)
        self.rec.start()
        self.node = self.rec.node
        # /clock held at the playback start until playing: sim-time timers (the encoder's
        # lifecycle autostart, the decision heartbeat) only run once a /clock has arrived, and
        # the player's /clock starts from this value, so time never goes back.
        self.clock_type = Clock
        self.clock_pub = self.node.create_publisher(Clock, '/clock', 10)
        if inprocess_topics is not None:
            self._create_publishers(inprocess_topics)
        self._wait_ready(timeout_s)

    def _create_publishers(self, play_topics: list[str]) -> None:
        from rosbags.rosbag2 import Reader  # noqa: PLC0415

        with Reader(self.bag) as reader:
            for conn in reader.connections:
                if conn.topic in play_topics and conn.topic != GATE_TOPIC and \
                        conn.topic not in self.pubs:
                    self.pubs[conn.topic] = self.node.create_publisher(
                        resolve_msg_type(conn.msgtype), conn.topic, _qos_for(conn, 10))

    def _wait_ready(self, timeout_s: float) -> None:
        node, started = self.node, self.started
        need = ['vln/action', 'vln/status']
        if 'camera_ingest' in started:
            need.append('vln/image')
        if 'memory_encoder' in started:
            need.append('vln/fused_tokens')
        self.wait(lambda: not self.rec.wait_for_publishers(need, 0.0), f'publishers of {need}',
                  min(120.0, timeout_s))
        t_up = time.monotonic()
        for name in ('memory_encoder', 'decision'):   # both load their models in configure
            if name in started:
                _wait_lifecycle_active(node, name, time.monotonic() + 180.0, self.dead,
                                       self.preroll)
        if self.pubs:
            self.wait(lambda: all(p.get_subscription_count() > 0 for p in self.pubs.values()),
                      'a subscriber on every played topic', 60.0)
        for name in started:   # a service round trip: the node's participant has matched ours
            _ping_node(node, name, time.monotonic() + 60.0, self.dead, self.preroll)
        self.wait(lambda: time.monotonic() - t_up >= self.settle_s, 'settle', self.settle_s + 5.0)
        self.foreign.update(_foreign_nodes(node, self.ours))
        if self.foreign:
            raise RuntimeError(
                f'ROS domain {self.group.env["ROS_DOMAIN_ID"]} is in use by other nodes '
                f'{sorted(self.foreign)}: their /clock, odom or move reports would mix into the '
                'replay; use another domain')

    def play_inprocess(self, rate: float, clock_hz: float) -> None:
        """bag_play's playback core in a thread of this process, on the recorder's node."""
        bag, gate_ns, pubs = self.bag, self.gate_ns, self.pubs

        def passes() -> Iterator[tuple[str, int, bytes]]:
            from rosbags.rosbag2 import Reader  # noqa: PLC0415
            with Reader(bag) as reader:
                conns = [c for c in reader.connections if c.topic in pubs]
                for conn, t_ns, raw in reader.messages(connections=conns, start=gate_ns):
                    yield conn.topic, t_ns, raw

        def run_play() -> None:
            result = play(passes, start_ns=gate_ns, rate=rate,
                          publish=lambda topic, raw: pubs[topic].publish(bytes(raw)),
                          now=time.monotonic, sleep=time.sleep, publish_clock=self.clock_to,
                          clock_period_s=1.0 / clock_hz,
                          ok=lambda: not self.stop_play.is_set())
            self.stats.__dict__.update(result.__dict__)

        self.play_thread = threading.Thread(target=run_play, name='bag_eval_play', daemon=True)
        self.play_thread.start()

    def play_cli(self, tag: str, play_topics: list[str], remaps: list[str], rate: float,
                 clock_hz: float, start_offset_s: float) -> None:
        """``python -m vln_stack.tools.bags.play`` as a process, held at the start gate."""
        argv = ['-m', 'vln_stack.tools.bags.play', str(self.bag), '--rate', f'{rate:g}',
                '--clock', f'{clock_hz:g}', '--topics', *play_topics,
                '--start-offset', f'{start_offset_s:.9f}', '--wait-subscribers', '60',
                '--progress-period', '0']
        for r in remaps:
            argv += ['--remap', r]
        player = self.player = _start_cli(self.group, f'bag_play_{tag}', argv)
        # bag_play waits for a subscriber on every topic it plays, the gate included: the
        # gate opens once its /clock publisher has been in the graph for ``settle_s``.
        self.wait(lambda: any(i.node_name == 'bag_play'
                              for i in self.node.get_publishers_info_by_topic('/clock'))
                  or player.poll() is not None, "bag_play's /clock publisher", 60.0)
        if player.poll() is not None:
            raise RuntimeError(f'bag_play exited ({player.returncode}) before playing; '
                               f'see {self.group.log_dir}')
        t_seen = time.monotonic()
        self.wait(lambda: time.monotonic() - t_seen >= self.settle_s, 'settle',
                  self.settle_s + 5.0)
        from std_msgs.msg import Empty  # noqa: PLC0415
        self.node.create_subscription(Empty, GATE_TOPIC, lambda _m: None, 10)

    def playing(self) -> bool:
        if self.player is not None:
            return self.player.poll() is None
        return self.play_thread is not None and self.play_thread.is_alive()

    def wait_finished(self, deadline: float, timeout_s: float) -> None:
        """Until the episode is over or the bag is played (and a moment for the last messages)."""
        done_at = None
        next_check = time.monotonic() + 1.0
        while True:
            time.sleep(0.05)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + 1.0
                self.foreign.update(_foreign_nodes(self.node, self.ours))
            finished = self.status.get('episode', 0) >= 1 and self.status.get('state') in (
                'stopped', 'failed', 'canceled')
            if finished and done_at is None:
                done_at = time.monotonic() + 0.3   # the last action / status to arrive
            if not self.playing() and done_at is None:
                done_at = time.monotonic() + 1.0   # bag over: leave the stack a moment
            if done_at is not None and time.monotonic() >= done_at:
                break
            if self.dead():
                raise RuntimeError(f'node(s) exited during the replay: {self.dead()}; logs in '
                                   f'{self.group.log_dir}')
            if time.monotonic() > deadline:
                raise TimeoutError(f'replay not finished within {timeout_s} s')

    def stop(self) -> None:
        self.stop_play.set()
        if self.play_thread is not None:
            self.play_thread.join(timeout=5.0)
        player = self.player
        if player is not None and player.poll() is None:
            player.send_signal(signal.SIGINT)
            try:
                player.wait(timeout=5)
            except subprocess.TimeoutExpired:
                player.kill()
                player.wait(timeout=5)
        if self.rec.node is not None:
            self.rec.stop()
        for name in self.started:
            self.group.stop(name)

    def result(self, content: BagContent, tag: str, wall: float, player_kind: str,
               verbose: bool) -> ReplayRun:
        group, status, actions = self.group, self.status, self.actions
        play_log = ''
        if group.log_dir is not None and (group.log_dir / f'bag_play_{tag}.log').is_file():
            play_log = (group.log_dir / f'bag_play_{tag}.log').read_text()
        elif player_kind == 'inprocess':
            play_log = (f'in-process player: {self.stats.published} msgs, max lag '
                        f'{self.stats.max_lag_s * 1e3:.1f} ms, {self.stats.stopped_by}')
        if self.foreign:
            raise RuntimeError(f'other nodes {sorted(self.foreign)} joined ROS domain '
                               f'{group.env["ROS_DOMAIN_ID"]} during the replay: results not '
                               'usable')
        if verbose:
            print(f'[bag_eval] {tag}: {len(actions)} decisions in {wall:.1f} s '
                  f'(final state {status.get("state")}; {play_log.strip().splitlines()[-1]})',
                  flush=True)
        final_state = str(status.get('state', ''))
        fault = replay_timing_fault([t for t, _ in actions], final_state, len(content.actions),
                                    [t for t, _ in content.move_done])
        if fault and verbose:
            print(f'[bag_eval] {tag} is not a valid replay: {fault}', flush=True)
        return ReplayRun([a for _, a in actions],
                         [(t - content.start_ns) / NS for t, _ in actions],
                         final_state, str(self.capture_dir), wall, play_log, fault)
