"""Integration: the memory encoder and the janus decision backend as real processes, with tiny
checkpoints made locally (nothing downloaded): one memory step per decision, episode resets that
race a decision, a model worker that runs out of memory, a missing checkpoint."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from janus_checkpoints import forced_checkpoint

REPO = Path(__file__).resolve().parents[1]
EPISODES = REPO / 'config' / 'episodes' / 'indoor.yaml'


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory) -> Path:
    from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=0)


@pytest.fixture(scope='module')
def forward_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint with an LLM that always answers MOVE_FORWARD."""
    return forced_checkpoint(tiny_checkpoint, tmp_path_factory.mktemp('fwd') / 'fwd',
                             'MOVE_FORWARD')


def _spin_until(node, cond, timeout_s: float) -> bool:
    import rclpy
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if cond():
            return True
    return False


class Watch:
    """The probe's view of the janus graph: encoder output, requests, status, results, odom."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.node = node
        self.tokens, self.info, self.requests, self.results, self.statuses = [], [], [], [], []
        self.heartbeats, self.diag, self.safety, self.images = [], {}, {}, 0
        self.status: dict = {}
        self.odom = None
        sub = node.create_subscription
        sub(Image, 'vln/fused_tokens', self.tokens.append, 10)
        sub(String, 'vln/fused_tokens/info', lambda m: self.info.append(json.loads(m.data)), 50)
        sub(String, 'vln/encode_request', lambda m: self._request(json.loads(m.data)), 50)
        sub(String, 'vln/result', lambda m: self.results.append(json.loads(m.data)), 10)
        sub(String, 'vln/status', lambda m: self._status(json.loads(m.data)), 50)
        sub(String, 'vln/encoder/heartbeat', lambda m: self.heartbeats.append(time.monotonic()), 10)
        sub(String, 'vln/safety', lambda m: self.safety.update(json.loads(m.data)), 10)
        sub(DiagnosticArray, 'diagnostics', self._diag, 10)
        sub(Image, 'vln/image', lambda m: setattr(self, 'images', self.images + 1), 10)
        sub(Odometry, 'odom', lambda m: setattr(self, 'odom', m.pose.pose.position), 10)
        self.instruction = node.create_publisher(String, 'vln/instruction', 10)
        self.on_request = None

    def _request(self, req: dict) -> None:
        self.requests.append(req)
        if self.on_request is not None:
            self.on_request(req)

    def _status(self, st: dict) -> None:
        self.status = st
        self.statuses.append(st)

    def _diag(self, arr) -> None:
        for st in arr.status:
            self.diag[st.name] = (int.from_bytes(st.level, 'little')
                                  if isinstance(st.level, bytes) else int(st.level), st.message)

    def say(self, text: str) -> None:
        from std_msgs.msg import String
        self.instruction.publish(String(data=text))

    def spin_until(self, cond, timeout_s: float) -> bool:
        return _spin_until(self.node, cond, timeout_s)


def _start(procs, checkpoint: Path, **overrides) -> None:
    from vln_stack.tools.runner.graph import sim_graph
    for spec in sim_graph(episode_file=EPISODES, policy='janus', checkpoint_dir=str(checkpoint),
                          overrides=overrides):
        procs.start(spec)


def _up(w: Watch, procs) -> None:
    assert w.spin_until(lambda: w.status.get('loaded') and w.heartbeats and w.odom is not None
                        and w.images > 3 and w.instruction.get_subscription_count(), 120), \
        f'graph not up: dead={procs.dead()} status={w.status}'


def _log(procs, name: str) -> str:
    return (procs.log_dir / f'{name}.log').read_text()


def test_one_memory_step_per_decision_and_resets_that_race_a_decision(
        procs, rclpy_node, forward_checkpoint):
    _start(procs, forward_checkpoint, decision={'max_steps': 4})
    w = Watch(rclpy_node)
    _up(w, procs)
    # Camera frames flow, but nothing is encoded before a decision asks for it.
    w.spin_until(lambda: False, 1.5)
    assert not w.info and not w.tokens
    w.say('walk forward')
    assert w.spin_until(lambda: w.results, 90), (w.status, _log(procs, 'decision')[-2000:])
    res = w.results[-1]
    assert res['result'] == 'step_limit', res
    decisions = [s for s in w.statuses if s['episode'] == 1]
    n = max(s['decisions'] for s in decisions)
    assert n == 4
    # exactly one encoded frame per decision: the requested one, in order, memory growing by one
    ep1 = [i for i in w.info if i['episode'].endswith('-1')]
    assert len(ep1) == n == len({(r['sec'], r['nanosec']) for r in w.requests}), (ep1, w.requests)
    assert [i['frame_index'] for i in ep1] == list(range(n))
    assert [i['memory_frames'] for i in ep1] == list(range(1, n + 1))
    req_stamps = [r['sec'] + r['nanosec'] * 1e-9 for r in w.requests]
    assert all(min(abs(i['stamp'] - s) for s in req_stamps) < 1e-6 for i in ep1)
    assert [s['history_frames'] for s in decisions if s['decisions'] >= 1][-1] == n - 1
    encode_ms = [s['encode_ms'] for s in decisions if s['encode_ms'] > 0]
    assert encode_ms, 'the decision node did not time the encoder round trip'
    print(f'encode round trip per decision (tiny, CPU): {np.median(encode_ms):.1f} ms median')
    cfg = json.loads((forward_checkpoint / 'config.json').read_text())
    width = cfg.get('text_config', cfg)['hidden_size']
    tok = w.tokens[-1]   # released mode: semantic | spatial, fused in the policy
    assert tok.encoding == '32FC1' and tok.width == 2 * width
    assert tok.height == ep1[-1]['tokens'] == np.prod(ep1[-1]['grid_hw'])
    arr = np.frombuffer(bytes(tok.data), np.float32)
    assert np.isfinite(arr).all() and arr.std() > 0

    # Race: a new instruction lands while episode 2's second decision is being encoded/decided.
    n_res, n_info = len(w.results), len(w.info)
    seen: list = []

    def preempt(req: dict) -> None:
        if req['episode'].endswith('-2'):
            seen.append(req)
            if len(seen) == 2:
                w.say('walk forward again')
    w.on_request = preempt
    w.say('walk forward')
    assert w.spin_until(lambda: len(w.results) >= n_res + 2, 120), (w.results, w.status)
    assert [r['result'] for r in w.results[n_res:n_res + 2]] == ['preempted', 'step_limit']
    ep3 = [i for i in w.info[n_info:] if i['episode'].endswith('-3')]
    assert [i['frame_index'] for i in ep3] == list(range(len(ep3))) and len(ep3) == 4
    first = [s for s in w.statuses if s['episode'] == 3 and s['decisions'] == 1]
    assert first and all(s['history_frames'] == 0 for s in first), first[:2]
    assert not procs.dead()


def _episode_that_fails(procs, rclpy_node, checkpoint, **overrides):
    """Start the graph, give an instruction, wait for its (error) result; the robot never moved."""
    _start(procs, checkpoint, **overrides)
    w = Watch(rclpy_node)
    _up(w, procs)
    start = (w.odom.x, w.odom.y)
    w.say('walk forward')
    assert w.spin_until(lambda: w.results, 60), (w.status, _log(procs, 'decision')[-1500:])
    w.spin_until(lambda: False, 1.0)
    assert abs(w.odom.x - start[0]) < 0.01 and abs(w.odom.y - start[1]) < 0.01
    assert not procs.dead()
    return w, w.results[-1]


def test_encoder_out_of_memory_holds_the_robot_and_says_why(
        procs, rclpy_node, forward_checkpoint):
    # A window this long cannot be allocated anywhere: the first encode runs out of memory.
    w, res = _episode_that_fails(procs, rclpy_node, forward_checkpoint,
                                 memory_encoder={'window_frames': 200_000_000_000},
                                 decision={'frame_timeout_s': 4.0})
    assert res['result'] == 'error' and 'memory encoder' in res['reason'], res
    assert w.spin_until(lambda: w.diag.get('vln_stack: memory_encoder', (0,))[0] == 2, 5), w.diag
    log = _log(procs, 'memory_encoder')
    assert 'ran out of memory' in log and 'asked for' in log and 'To do' in log, log[-1500:]
    beat = w.heartbeats[-1]
    w.spin_until(lambda: False, 1.0)
    assert w.heartbeats[-1] == beat, 'the encoder heartbeat went on after the failure'
    assert any(r['key'] == 'encoder' for r in w.safety.get('reasons', [])), w.safety


def test_decision_out_of_memory_ends_the_episode_stopped_and_says_why(
        procs, rclpy_node, forward_checkpoint):
    # The streaming LLM memory is allocated at the first frame: this window cannot be.
    w, res = _episode_that_fails(procs, rclpy_node, forward_checkpoint,
                                 decision={'janus_mode': 'streaming',
                                           'janus_window_frames': 200_000_000_000})
    assert res['result'] == 'error' and 'policy error' in res['reason'], res
    assert w.spin_until(lambda: w.diag.get('vln_stack: decision', (0,))[0] == 2, 5), w.diag
    assert 'ran out of memory' in w.diag['vln_stack: decision'][1]
    assert w.spin_until(lambda: 'asked for' in _log(procs, 'decision'), 5)


def test_missing_checkpoint_is_a_clear_error_and_publishes_nothing(procs, rclpy_node, tmp_path):
    from vln_stack.tools.runner.graph import sim_graph

    missing = tmp_path / 'no-such-checkpoint'
    specs = sim_graph(episode_file=EPISODES, policy='janus', checkpoint_dir=str(missing),
                      include=('sim_bridge', 'camera_ingest', 'memory_encoder', 'decision'))
    for spec in specs:
        procs.start(spec)
    w = Watch(rclpy_node)
    assert w.spin_until(lambda: w.status.get('error'), 60), procs.dead()
    assert str(missing) in w.status['error'] and not w.status['loaded']
    w.say('go to the green plant')
    assert w.spin_until(lambda: w.results, 10)
    assert w.results[-1]['result'] == 'error' and str(missing) in w.results[-1]['reason']
    w.spin_until(lambda: False, 1.0)
    assert not w.tokens and not w.heartbeats
    assert w.spin_until(lambda: 'No fused tokens' in _log(procs, 'memory_encoder'), 10)
    assert str(missing) in _log(procs, 'memory_encoder')
    assert str(missing) in _log(procs, 'decision')
    assert not procs.dead()     # both stay up, unconfigured, and say why
