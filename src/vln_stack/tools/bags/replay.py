"""Closed replay of a recorded rosbag2 through the real nodes.

    python -m vln_stack.tools.bags.eval replay BAG [--policy oracle] [--rate 4] [--repeat 2]
        [--episode-file F --episode-id ID] [--checkpoint DIR] [--out DIR]

The recorded camera (``camera/image_raw``, or the compressed topic, or ``vln/image``),
``camera/camera_info``, ``odom``, ``vln/instruction`` and ``vln/move_done`` are played with
/clock into fresh ``camera_ingest`` + ``decision`` processes (+ ``memory_encoder`` for janus).
No simulator and no controller run: the recorded ``vln/move_done`` reports close each move, so
the stack takes exactly one decision per recorded move, on the first frame stamped after it,
like it did live. The new ``vln/action`` sequence is captured (into ``replay_N/`` bags) and
compared step by step with the recorded one. The player is the bag player's playback core
(:func:`vln_stack.tools.bags.play.play`) in this process (default), or ``--player cli``:
``python -m vln_stack.tools.bags.play`` as a process.

What makes it deterministic: the decision loop only advances on a recorded ``move_done``; the
frames and odometry it sees are the recorded ones, on the recorded sim clock. The replay input
(``OUT/replay_input``, a rosbag2; :mod:`.replay_input`) takes out what was timing-sensitive in
the recording:
(a) the base still settles for ~0.1 s after a move is reported done, so the oracle's pose
depends on exactly when it decides: ``--odom hold`` (default) sends, right after each move
report, the last pose logged before the recorded decision and holds it until the next report
(one pose per decision); (b) whether a frame stamped within a /clock step before a move report
counted as fresh depended on message order: ``--frames guarded`` (default) leaves frames stamped
in (report - guard, report] out (guard 0.15 s, or 1.5 replayed /clock steps).
And the replay graph is made to hear everything: nothing plays before every node has matched the
player's DDS participant (a reader drops what a writer sent before it matched; see
:func:`.replay_graph.replay_once`); the ROS domain must be free of other nodes (a second /clock
on it breaks every sim-time node); /clock goes out at 25 Hz (``--clock-hz``): at 100 Hz the
decision node (a MultiThreadedExecutor, one mutually exclusive callback group:
``ros.common.run_node``) was measured to starve its own sim-time timers for up to ~1 s wall and
miss move reports (3 replays of one bag: 53 / 13 / 7 % agreement; the same node under a
SingleThreadedExecutor, or /clock at 25 Hz: 100 / 100 / 100 %).

Limits: (1) a decision must come before the next recorded ``move_done`` (a 1 s move leaves
1/R s wall at ``--rate`` R); a later one makes the loop ignore that report and the sequences
shift (the table shows it); (2) with janus the memory encoder encodes the frame each decision
is taken on (``memory_encoder.encode_on: decision``, the default), so its memory follows the
replayed decisions; (3) a replayed decision that differs from the recording cannot change what comes
next: later frames and poses are still the recorded ones (open loop in that sense).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .content import NS, BagContent, Frame, frame_rgb, load_bag, pick_image_topic
from .domains import DomainLease, default_domain_candidates, lease_domain
from .replay_graph import ReplayRun, replay_once
from .replay_input import GATE_TOPIC, odom_hold_windows, write_replay_bag
from .types import typestore


@dataclass
class _Plan:
    """What one bag's replays run: the nodes, their specs and the topics played."""
    policy: str
    image_topic: str
    include: list[str]
    play: list[str]
    specs: list[Any]
    remaps: list[str] = field(default_factory=list)


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
    replay, except ``allow_nodes`` (e.g. the caller's :class:`.domains.DomainLease` node). A
    replay that lost step with the recording (:func:`.replay_graph.replay_timing_fault`) is
    kept apart and repeated, up to ``retries`` extra attempts.
    Returns the summary (also written to summary.json).
    """
    bag = Path(bag)
    content = load_bag(bag, with_frames=False)
    plan = _plan(bag, content, policy=policy, episode_file=episode_file, episode_id=episode_id,
                 checkpoint=checkpoint, robot=robot, rate=rate)
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
    if guard_s is None:   # a replayed /clock step is rate / clock_hz s of sim time
        guard_s = max(0.15, 1.5 * rate / clock_hz)
    played, start_offset = _write_input(bag, content, play_bag, plan, frames=frames,
                                        guard_s=guard_s, odom=odom, hold_after_s=hold_after_s,
                                        gate_ns=gate_ns)
    group, own_group, lease, allow_nodes = _open_group(out, group, domain, allow_nodes)
    if verbose:
        print(f'[bag_eval] replay {bag} ({len(content.actions)} recorded decisions, '
              f'{len(content.move_done)} move reports) through {", ".join(plan.include)} '
              f'(policy {plan.policy}) at rate {rate:g}, from '
              f'+{(gate_ns - content.start_ns) / NS:.1f} s; frames '
              f'{frames}: {played.get(plan.image_topic, 0)} of '
              f'{content.topics[plan.image_topic][1]}; odometry {odom}', flush=True)
    once = dict(content=content, specs=plan.specs, play_topics=[*plan.play, GATE_TOPIC],
                remaps=plan.remaps, rate=rate, clock_hz=clock_hz, start_offset_s=start_offset,
                gate_ns=gate_ns, timeout_s=timeout_s, verbose=verbose, player_kind=player,
                settle_s=settle_s)
    runs, faulty = _run_replays(play_bag, out, once, group, own_group, lease, allow_nodes,
                                repeat=repeat, retries=retries)
    summary = _summary(bag, content, plan, runs, faulty, rate=rate, player=player,
                       frames=frames, frames_played=played.get(plan.image_topic, 0), odom=odom,
                       gate_ns=gate_ns, repeat=repeat)
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    if verbose:
        _report(summary, runs, faulty, repeat, out)
    summary['out'] = str(out)
    return summary


def _plan(bag: Path, content: BagContent, *, policy: str, episode_file: str, episode_id: str,
          checkpoint: str, robot: str, rate: float) -> _Plan:
    """The nodes to start (decision, + camera_ingest for raw camera topics, + memory_encoder
    for janus) and the topics to play; the arguments default to what the bag recorded."""
    from ...core.paths import config_dir  # noqa: PLC0415
    from ..runner.graph import sim_graph  # noqa: PLC0415

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
    include, overrides = _nodes_for(bag, image_topic, rate)
    first = _first_image_size(bag, image_topic) if image_topic else None
    if policy == 'janus':
        include.append('memory_encoder')
    play = [image_topic, '/vln/instruction', '/vln/move_done']
    # odometry only where a node takes it (the oracle): bag_play waits for a subscriber per topic
    for extra in ('/camera/camera_info', '/odom'):
        if extra in topics and topics[extra][1] > 0 and (extra != '/odom' or policy == 'oracle'):
            play.append(extra)
    if policy == 'oracle' and '/odom' not in play:
        raise ValueError(f'{bag} has no odom: the oracle cannot decide')
    specs = sim_graph(episode_file=Path(episode_file), episode_id=episode_id, robot=robot,
                      policy=policy, checkpoint_dir=checkpoint,
                      with_encoder=policy == 'janus', include=tuple(include),
                      image_size=first if first else (320, 240), overrides=overrides)
    return _Plan(policy, image_topic, include, play, specs)


def _write_input(bag: Path, content: BagContent, play_bag: Path, plan: _Plan, *, frames: str,
                 guard_s: float, odom: str, hold_after_s: float,
                 gate_ns: int) -> tuple[dict[str, int], float]:
    """Write the replay input bag; (per-topic counts written, start offset of the gate [s])."""
    from rosbags.rosbag2 import Reader  # noqa: PLC0415

    events = [t for t, _ in content.instructions] + [t for t, _ in content.move_done]
    hold = odom_hold_windows(content, hold_after_s) \
        if odom == 'hold' and '/odom' in plan.play else None
    played = write_replay_bag(bag, play_bag, plan.play, plan.image_topic, events, frames,
                              int(round(guard_s * NS)), hold=hold, gate_ns=gate_ns)
    with Reader(play_bag) as reader:
        start_offset = (gate_ns - reader.start_time) / NS   # bag_play starts at the gate
    return played, start_offset

def _nodes_for(bag: Path, image_topic: str,
               rate: float) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(nodes, parameter overrides) for the bag's camera topic."""
    include = ['decision']
    # The decision node's time limits are in sim time; played at ``rate`` R its (wall-clock)
    # latency counts R times over, so they are scaled by R: a node 0.3 s behind under CPU load
    # must not find every frame "older than 1 s" at R = 4.
    overrides: dict[str, dict[str, Any]] = {'decision': {
        'max_frame_age_s': float(max(1.0, rate)), 'frame_timeout_s': float(max(5.0, 5.0 * rate)),
        'move_timeout_s': float(max(30.0, 30.0 * rate))}}
    if image_topic == '/camera/image_raw':
        include.append('camera_ingest')
    elif image_topic == '/camera/image_raw/compressed':
        include.append('camera_ingest')
        overrides['camera_ingest'] = {'input_compressed': True}
    elif image_topic == '/vln/image':
        pass  # already the stack's frames: straight into the decision node
    else:
        raise ValueError(f'{bag} has no camera/image_raw[/compressed] or vln/image to replay')
    return include, overrides


def _open_group(out: Path, group: Any, domain: int | None, allow_nodes: tuple[str, ...]
                ) -> tuple[Any, bool, DomainLease | None, tuple[str, ...]]:
    """(group, whether it is our own, the domain lease, nodes allowed on the domain): ``group``,
    else a ProcessGroup of our own on ``domain``, else on a free domain leased for the run."""
    from ..runner.procs import ProcessGroup, ros_env  # noqa: PLC0415

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
    return group, own_group, lease, allow_nodes


def _run_replays(play_bag: Path, out: Path, once: dict[str, Any], group: Any, own_group: bool,
                 lease: DomainLease | None, allow_nodes: tuple[str, ...], *, repeat: int,
                 retries: int) -> tuple[list[ReplayRun], list[ReplayRun]]:
    """(valid runs, runs that lost step): replays until ``repeat`` are valid or the attempts
    run out; then our own group is stopped and the lease released."""
    runs: list[ReplayRun] = []
    faulty: list[ReplayRun] = []
    try:
        attempt = 0
        while len(runs) < max(1, repeat) and attempt < max(1, repeat) + max(0, retries):
            attempt += 1
            capture = out / f'replay_{attempt}'
            if capture.exists():
                raise FileExistsError(f'{capture} exists already')
            run = replay_once(play_bag, group=group, capture_dir=capture,
                              tag=f'replay_{attempt}', allow_nodes=allow_nodes, **once)
            (faulty if run.fault else runs).append(run)
    finally:
        if own_group:
            group.stop_all()
        if lease is not None:
            lease.release()
    return runs, faulty


def _summary(bag: Path, content: BagContent, plan: _Plan, runs: list[ReplayRun],
             faulty: list[ReplayRun], *, rate: float, player: str, frames: str,
             frames_played: int, odom: str, gate_ns: int, repeat: int) -> dict:
    recorded = [a for _, a in content.actions]
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
    return {
        'mode': 'replay', 'bag': str(bag), 'policy': plan.policy, 'rate': rate, 'player': player,
        'frames': frames, 'frames_played': frames_played,
        'frames_recorded': content.topics[plan.image_topic][1], 'odom': odom,
        'nodes': plan.include, 'played_topics': plan.play,
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
        'replays_identical': bool(runs) and all(r.actions == runs[0].actions for r in runs),
        'steps': table_rows,
    }


def _report(summary: dict, runs: list[ReplayRun], faulty: list[ReplayRun], repeat: int,
            out: Path) -> None:
    print(_replay_table(summary['steps'], len(runs)))
    for i, r in enumerate(runs):
        print(f'[bag_eval] replay {i + 1}: {len(r.actions)} decisions, agreement with the '
              f'recording {100 * summary["replays"][i]["agreement"]:.1f} %, {r.wall_s:.1f} s wall',
              flush=True)
    if len(runs) > 1:
        print(f'[bag_eval] replays identical: {summary["replays_identical"]}', flush=True)
    if faulty:
        print(f'[bag_eval] {len(faulty)} replay(s) lost step with the recording and were '
              'repeated (the stack was too slow at this rate): '
              + '; '.join(r.fault for r in faulty), flush=True)
    if len(runs) < max(1, repeat):
        print(f'[bag_eval] only {len(runs)} of {max(1, repeat)} replays kept step with the '
              'recording: lower --rate', flush=True)
    print(f'[bag_eval] wrote {out / "summary.json"}', flush=True)


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
            msg = typestore().deserialize_cdr(raw, conn.msgtype)
            return int(msg.width), int(msg.height)
    return None

