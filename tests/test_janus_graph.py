"""Integration: the memory encoder and the janus decision backend as real processes, with the
tiny random-weight checkpoint (made locally, nothing downloaded)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def tiny_checkpoint(tmp_path_factory) -> Path:
    from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=0)


def _spin_until(node, cond, timeout_s: float) -> bool:
    import rclpy
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.05)
        if cond():
            return True
    return False


def test_janus_graph_encodes_every_frame_and_fails_safe(procs, rclpy_node, tiny_checkpoint):
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from vln_stack.tools.graph import sim_graph

    for spec in sim_graph(episode_file=REPO / 'config' / 'episodes' / 'indoor.yaml',
                          policy='janus', checkpoint_dir=str(tiny_checkpoint)):
        procs.start(spec)
    got = {'tokens': [], 'info': [], 'images': {}, 'status': {}, 'actions': [], 'odom': None}
    rclpy_node.create_subscription(Image, 'vln/fused_tokens', got['tokens'].append, 10)
    rclpy_node.create_subscription(
        String, 'vln/fused_tokens/info', lambda m: got['info'].append(json.loads(m.data)), 10)
    rclpy_node.create_subscription(
        Image, 'vln/image', lambda m: got['images'].__setitem__(
            (m.header.stamp.sec, m.header.stamp.nanosec), m), 10)
    rclpy_node.create_subscription(
        String, 'vln/status', lambda m: got['status'].update(json.loads(m.data)), 10)
    rclpy_node.create_subscription(String, 'vln/action', lambda m: got['actions'].append(m.data), 10)
    rclpy_node.create_subscription(Odometry, 'odom', lambda m: got.__setitem__('odom', m), 10)
    assert _spin_until(rclpy_node, lambda: len(got['info']) >= 5 and got['status'], 90), \
        f'no fused tokens: dead={procs.dead()}'
    cfg = json.loads((tiny_checkpoint / 'config.json').read_text())
    width = cfg.get('text_config', cfg).get('hidden_size', cfg.get('hidden_size'))
    msg = got['tokens'][-1]
    info = got['info'][-1]
    # janus in its default `released` mode: semantic | spatial tokens, fused in the policy
    assert info['layout'] == 'split'
    assert msg.encoding == '32FC1' and msg.width == 2 * width
    gh, gw = info['grid_hw']
    assert msg.height == gh * gw == info['tokens']
    arr = np.frombuffer(bytes(msg.data), np.float32)
    assert arr.size == msg.height * msg.width and np.isfinite(arr).all() and arr.std() > 0
    # Token stamps are the camera frames' stamps, frame indices count up, memory is bounded.
    stamps = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in got['tokens']}
    assert stamps & set(got['images'])
    idx = [i['frame_index'] for i in got['info']]
    assert idx == sorted(idx) and idx[-1] >= 4
    assert all(0 < i['memory_frames'] <= 56 for i in got['info'])
    # Random weights cannot produce an action word: the decision must STOP and say why.
    start_pose = got['odom'].pose.pose.position
    n_info, last_index = len(got['info']), got['info'][-1]['frame_index']
    rclpy_node.create_publisher(String, 'vln/instruction', 10).publish(
        String(data='go to the green plant'))
    assert _spin_until(rclpy_node, lambda: got['status'].get('state') in ('stopped', 'failed')
                       and got['actions'], 60), got['status']
    assert got['actions'] and got['actions'][-1] == 'STOP', (
        got['status'], (procs.log_dir / 'decision.log').read_text()[-2000:])
    if got['status']['last_action'] == 'STOP' and got['status']['step'] == 0:
        assert 'not an action' in got['status']['reason'] or got['status']['reason']
    _spin_until(rclpy_node, lambda: False, 1.0)
    end = got['odom'].pose.pose.position
    if got['status']['step'] == 0:
        assert abs(end.x - start_pose.x) < 0.01 and abs(end.y - start_pose.y) < 0.01
    # The episode reset restarted frame numbering in the encoder.
    after = [i['frame_index'] for i in got['info'][n_info:]]
    assert after and min(after) < last_index, (last_index, after[:5])


def test_missing_checkpoint_is_a_clear_error_and_publishes_nothing(procs, rclpy_node, tmp_path):
    from sensor_msgs.msg import Image

    from vln_stack.tools.graph import sim_graph

    missing = tmp_path / 'no-such-checkpoint'
    specs = sim_graph(episode_file=REPO / 'config' / 'episodes' / 'indoor.yaml',
                      policy='janus', checkpoint_dir=str(missing),
                      include=('sim_bridge', 'camera_ingest', 'memory_encoder', 'decision'))
    for spec in specs:
        procs.start(spec)
    tokens = []
    rclpy_node.create_subscription(Image, 'vln/fused_tokens', tokens.append, 10)
    _spin_until(rclpy_node, lambda: 'decision' in procs.dead(), 60)
    _spin_until(rclpy_node, lambda: False, 3.0)
    assert not tokens
    logs = procs.log_dir
    enc_log = (logs / 'memory_encoder.log').read_text()
    assert str(missing) in enc_log and 'No fused tokens' in enc_log
    assert procs.dead().get('decision') == 1        # janus without weights refuses to start
    assert str(missing) in (logs / 'decision.log').read_text()
    assert 'memory_encoder' not in procs.dead()     # the encoder stays up, unconfigured
