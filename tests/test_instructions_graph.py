"""Run-time instructions through the real node graph in the headless simulator:

- the zero-shot ``openai`` backend drives a whole episode against a local server that speaks the
  OpenAI chat protocol (its own process, scripted replies), then a malformed and a timed-out reply
  each end in a stopped robot and an ``error`` result, not a crash;
- an instruction is preempted mid-move by a new one, and the new one is cancelled mid-move.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CALIBRATION = REPO / 'config' / 'episodes' / 'calibration.yaml'   # open floor, goal 1 m ahead

PLAN = json.dumps([
    {'subtask': 'Move forward about one metre', 'start_condition': 'immediately',
     'end_condition': 'one metre travelled'},
    {'subtask': 'Stop', 'start_condition': 'one metre travelled', 'end_condition': 'stopped'},
])


def _step(action: str, state: str) -> str:
    return (f'<thought> the floor ahead is open </thought>\n<action> [{action}] </action>\n'
            f'<state> {state} </state>')


SCRIPT = [
    PLAN,
    _step('MOVE_FORWARD', 'Subtask NO.1 changes from pending to doing'),
    _step('MOVE_FORWARD', 'Subtask NO.1 keeps state of doing'),
    _step('MOVE_FORWARD', 'Subtask NO.1 keeps state of doing'),
    _step('MOVE_FORWARD', 'Subtask NO.1 changes from doing to done'),
    _step('MOVE_FORWARD', 'Subtask NO.2 changes from pending to doing'),   # executed: 1.25 m
    _step('STOP', 'Subtask NO.2 changes from doing to done'),
    # episode 2: malformed twice (one retry) -> STOP
    PLAN,
    'I think I should go forward.',
    '<action> [FORWARD] </action>',
    # episode 3: the server hangs past the client's timeout on every attempt -> STOP
    PLAN,
    {'delay_s': 3.0, 'text': _step('MOVE_FORWARD', 'Subtask NO.1 changes from pending to doing')},
]


class _Graph:
    def __init__(self, procs, node) -> None:
        from nav_msgs.msg import Odometry
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        from vln_stack.ros.convert import pose2d_from_odom
        self.node, self.procs = node, procs
        self.results: list[dict] = []
        self.status: dict = {}
        self.actions: list[str] = []
        self.odom: list = []
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(String, 'vln/result',
                                 lambda m: self.results.append(json.loads(m.data)), qos)
        node.create_subscription(String, 'vln/status',
                                 lambda m: self.status.update(json.loads(m.data)), 10)
        node.create_subscription(String, 'vln/action', lambda m: self.actions.append(m.data), 10)
        node.create_subscription(Odometry, 'odom', lambda m: self.odom.append(
            (time.monotonic(), pose2d_from_odom(m), m.twist.twist.linear.x)), 50)
        self.pub = node.create_publisher(String, 'vln/instruction', 10)

    def spin_until(self, cond, timeout_s: float) -> bool:
        import rclpy
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            rclpy.spin_once(self.node, timeout_sec=0.05)
            if cond():
                return True
        return False

    def wait_up(self) -> None:
        assert self.spin_until(lambda: self.status and self.odom and
                               self.pub.get_subscription_count() > 0, 90), \
            f'graph not up: dead={self.procs.dead()}'
        self.spin_until(lambda: False, 3.0)   # let every node match every other (loaded CI)

    def instruct(self, text: str) -> None:
        from std_msgs.msg import String
        self.pub.publish(String(data=text))

    def wait_result(self, n: int, timeout_s: float) -> dict:
        assert self.spin_until(lambda: len(self.results) >= n, timeout_s), (
            self.status, (self.procs.log_dir / 'decision.log').read_text()[-3000:])
        return self.results[n - 1]

    def still(self, seconds: float = 0.5) -> bool:
        recent = [o for o in self.odom if o[0] > time.monotonic() - seconds]
        return bool(recent) and all(abs(o[2]) < 0.02 for o in recent)


@pytest.fixture
def fake_server(tmp_path):
    script = tmp_path / 'script.json'
    script.write_text(json.dumps(SCRIPT))
    port_file, record = tmp_path / 'port', tmp_path / 'requests.jsonl'
    proc = subprocess.Popen([sys.executable, str(REPO / 'tests' / 'fake_openai_server.py'),
                             '--script', str(script), '--port-file', str(port_file),
                             '--record', str(record)], stdout=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < end, 'fake server did not start'
            time.sleep(0.05)
        yield f'http://127.0.0.1:{int(port_file.read_text())}/v1', record
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_openai_backend_drives_an_episode_and_bad_replies_stop_the_robot(
        procs, rclpy_node, fake_server, monkeypatch):
    from vln_stack.tools.runner.graph import sim_graph

    base_url, record = fake_server
    overrides = {'decision': {'openai_base_url': base_url, 'openai_timeout_s': 1.0,
                              'openai_max_retries': 1, 'max_steps': 20,
                              'decision_timeout_s': 20.0}}
    for spec in sim_graph(episode_file=CALIBRATION, robot='agri', policy='openai',
                          with_encoder=False, overrides=overrides):
        procs.start(spec)
    g = _Graph(procs, rclpy_node)
    g.wait_up()
    start = g.odom[-1][1]
    g.instruct('Move forward a little more than a metre and stop.')
    res = g.wait_result(1, 120)
    assert res['result'] == 'succeeded' and res['steps'] == 5, res
    assert res['actions'] == ['MOVE_FORWARD'] * 5 + ['STOP']
    end = g.odom[-1][1]
    assert abs(end.distance_to(start) - 1.25) < 0.08, (start, end)
    assert abs(res['distance_m'] - 1.25) < 0.1, res
    assert g.status['subgoal'] in ('Stop', '')
    # what the robot sent: the frame as a JPEG data URL and the subtask list, on every step
    chats = [json.loads(line) for line in record.read_text().splitlines()]
    steps = [c for c in chats if 'image_url' in json.dumps(c)]
    assert len(steps) == 6 and all('subtask' in json.dumps(c).lower() for c in steps)
    assert 'data:image/jpeg;base64,' in json.dumps(steps[0])

    # malformed twice -> STOP with the reason; the robot never moved
    p0 = g.odom[-1][1]
    g.instruct('Go to the door.')
    res = g.wait_result(2, 60)
    assert res['result'] == 'error' and res['steps'] == 0, res
    assert 'no valid action' in res['reason']
    assert g.actions[-1] == 'STOP' and g.odom[-1][1].distance_to(p0) < 0.02

    # the server hangs: the client times out (1 s, one retry) -> STOP, robot still
    g.instruct('Go to the window.')
    res = g.wait_result(3, 60)
    assert res['result'] == 'error' and res['steps'] == 0, res
    assert 'no reply within 1 s' in res['reason'], res
    assert g.spin_until(lambda: g.still(0.5), 5) and g.odom[-1][1].distance_to(p0) < 0.02
    assert not procs.dead(), procs.dead()


def test_instruction_preempted_mid_move_then_cancelled(procs, rclpy_node):
    from std_srvs.srv import Trigger

    from vln_stack.tools.runner.graph import sim_graph

    # 1 m moves so that the robot is mid-move when the instruction changes
    overrides = {'decision': {'forward_m': 1.0}, 'waypoint': {'forward_m': 1.0}}
    for spec in sim_graph(episode_file=CALIBRATION, robot='agri', with_encoder=False,
                          overrides=overrides):
        procs.start(spec)
    g = _Graph(procs, rclpy_node)
    g.wait_up()
    g.instruct('Move forward a little, turn around, and stop.')
    assert g.spin_until(lambda: g.odom[-1][2] > 0.15, 30), g.status
    g.instruct('Actually, go to the plant instead.')        # preempt mid-move
    first = g.wait_result(1, 10)
    assert first['result'] == 'preempted' and first['episode'] == 1, first
    assert g.spin_until(lambda: 'STOP' in g.actions, 2.0), g.actions
    assert g.spin_until(lambda: g.odom[-1][2] < 0.02, 3.0), 'did not stop on preemption'
    assert g.spin_until(lambda: g.status.get('episode') == 2 and g.odom[-1][2] > 0.15, 30), \
        g.status                                            # the new instruction's first move
    client = rclpy_node.create_client(Trigger, 'vln/cancel')
    assert client.wait_for_service(timeout_sec=5.0)
    fut = client.call_async(Trigger.Request())
    t_cancel = time.monotonic()
    assert g.spin_until(fut.done, 5.0) and fut.result().success, fut.result()
    second = g.wait_result(2, 5)
    assert second['result'] == 'canceled' and second['episode'] == 2, second
    # stopped quickly and stays stopped
    assert g.spin_until(lambda: g.odom[-1][2] < 0.02, 2.0)
    t_stop = time.monotonic() - t_cancel
    assert t_stop < 1.5, t_stop
    g.spin_until(lambda: False, 1.5)
    assert g.still(1.0)
    assert math.isfinite(second['distance_m']) and second['distance_m'] > 0.005   # it had started
