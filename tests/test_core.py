"""Unit tests of the ROS-free core: actions, waypoints, control, oracle, metrics, decision loop."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from import_rules import (ROS_FREE_PACKAGES, discover_modules, imported_after,
                          static_ros_imports, upward_imports)
from vln_stack.core.actions import Action, MoveSpec
from vln_stack.core.controller import ControlLimits, MoveTracker
from vln_stack.core.decision import DecisionLoop, LoopConfig
from vln_stack.core.episodes import find_episode, load_episodes
from vln_stack.core.geometry import Pose2D, wrap_angle
from vln_stack.core.metrics import densify, episode_metrics, ndtw
from vln_stack.core.oracle import OraclePolicy
from vln_stack.core.profiles import PROFILE_NAMES, load_profile
from vln_stack.core.waypoint import goal_for_action

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / 'config'


def test_action_parse_is_exact():
    assert Action.parse('MOVE_FORWARD') is Action.MOVE_FORWARD
    for bad in ('move forward', 'FORWARD', '', 'STOP.'):
        with pytest.raises(ValueError):
            Action.parse(bad)


def test_move_spec_rejects_nonsense():
    with pytest.raises(ValueError):
        MoveSpec(forward_m=0.0)
    with pytest.raises(ValueError):
        MoveSpec(turn_deg=400)


@pytest.mark.parametrize('yaw', [0.0, 1.0, -2.5])
def test_forward_goal_follows_heading(yaw):
    g = goal_for_action(Action.MOVE_FORWARD, Pose2D(1.0, 2.0, yaw), MoveSpec(0.25, 30))
    assert g.target.x == pytest.approx(1.0 + 0.25 * math.cos(yaw))
    assert g.target.y == pytest.approx(2.0 + 0.25 * math.sin(yaw))
    assert g.target.yaw == pytest.approx(yaw)


def test_turns_follow_rep103():
    p = Pose2D(0, 0, math.radians(170))
    left = goal_for_action(Action.TURN_LEFT, p, MoveSpec(0.25, 15)).target
    right = goal_for_action(Action.TURN_RIGHT, p, MoveSpec(0.25, 15)).target
    assert math.degrees(wrap_angle(left.yaw - p.yaw)) == pytest.approx(15)   # CCW = left
    assert math.degrees(wrap_angle(right.yaw - p.yaw)) == pytest.approx(-15)
    assert -math.pi <= left.yaw < math.pi
    with pytest.raises(ValueError):
        goal_for_action(Action.MOVE_FORWARD, Pose2D(float('nan'), 0, 0), MoveSpec())


def _simulate(tracker: MoveTracker, pose: Pose2D, dt: float = 0.02, steps: int = 2000):
    """Integrate the commanded twist with a first-order lag (a crude base) until done."""
    v = w = 0.0
    cmds = []
    for i in range(steps):
        out = tracker.step(pose, i * dt)
        cmds.append(out)
        if out.done:
            return pose, out, cmds
        v += (out.linear_x - v) * 0.5
        w += (out.angular_z - w) * 0.5
        yaw = pose.yaw + w * dt
        pose = Pose2D(pose.x + v * math.cos(yaw) * dt, pose.y + v * math.sin(yaw) * dt,
                      wrap_angle(yaw))
    raise AssertionError('tracker never finished')


@pytest.mark.parametrize('action', [Action.MOVE_FORWARD, Action.TURN_LEFT, Action.TURN_RIGHT])
def test_tracker_reaches_goal_within_limits(action):
    lim = ControlLimits(max_linear_mps=0.4, max_angular_rps=0.8, max_linear_accel_mps2=0.8,
                        max_angular_accel_rps2=1.5)
    start = Pose2D(2.0, -1.0, 0.7)
    goal = goal_for_action(action, start, MoveSpec(0.25, 30))
    end, out, cmds = _simulate(MoveTracker(goal, lim, 0.0), start)
    assert out.result == 'succeeded'
    assert end.distance_to(goal.target) < 0.02
    assert abs(wrap_angle(end.yaw - goal.target.yaw)) < math.radians(2)
    assert max(abs(c.linear_x) for c in cmds) <= lim.max_linear_mps + 1e-9
    assert max(abs(c.angular_z) for c in cmds) <= lim.max_angular_rps + 1e-9
    lin = [c.linear_x for c in cmds[:-1]]   # the final zero is a stop, not a ramp
    assert max(abs(b - a) for a, b in zip(lin, lin[1:])) <= lim.max_linear_accel_mps2 * 0.02 + 1e-9


def test_tracker_fails_safe():
    lim = ControlLimits()
    goal = goal_for_action(Action.MOVE_FORWARD, Pose2D(), MoveSpec())
    tr = MoveTracker(goal, lim, 0.0, timeout_s=1.0)
    out = tr.step(Pose2D(float('nan'), 0, 0), 0.1)
    assert out.done and out.result == 'aborted' and out.linear_x == 0.0
    out = tr.step(Pose2D(), 5.0)      # never moved: timeout
    assert out.done and out.result == 'aborted' and 'not finished' in out.reason


def test_oracle_reaches_goal_on_reference_path():
    ep = find_episode(CFG / 'episodes' / 'indoor.yaml', 'indoor_blue_sofa')
    spec = MoveSpec(0.25, 30)
    oracle, pose = OraclePolicy(ep.reference_path, spec), ep.start
    traj = [(pose.x, pose.y)]
    for _ in range(ep.max_steps):
        act = oracle.decide(pose)
        if act is Action.STOP:
            break
        pose = goal_for_action(act, pose, spec).target
        traj.append((pose.x, pose.y))
    else:
        raise AssertionError('oracle never stopped')
    m = episode_metrics(traj, ep.reference_path, ep.goal, ep.success_radius_m, len(traj) - 1)
    assert m.success == 1.0 and m.ne_m < 0.2 and m.spl > 0.9 and m.ndtw > 0.8


def test_metrics_known_values():
    ref = [(0.0, 0.0), (4.0, 0.0)]
    perfect = episode_metrics(ref, ref, (4.0, 0.0), 1.0, steps=16)
    assert perfect.success == 1 and perfect.spl == pytest.approx(1.0)
    assert perfect.ndtw == pytest.approx(1.0)
    # Went past the goal and came back: oracle success but not success.
    past = episode_metrics([(0, 0), (4, 0), (4, 3)], ref, (4.0, 0.0), 1.0, steps=28)
    assert past.oracle_success == 1 and past.success == 0 and past.spl == 0
    assert past.ne_m == pytest.approx(3.0)
    # A detour halves SPL.
    detour = episode_metrics([(0, 0), (0, 2), (4, 2), (4, 0)], ref, (4.0, 0.0), 1.0, steps=32)
    assert detour.success == 1 and detour.spl == pytest.approx(0.5)
    assert 0 < ndtw(densify([(0, 0), (0, 2), (4, 2), (4, 0)], 0.25), densify(ref, 0.25), 1.0) < 0.5
    with pytest.raises(ValueError):
        episode_metrics([(float('nan'), 0)], ref, (4, 0), 1.0, 0)


def test_decision_loop_one_decision_per_move_on_fresh_frames():
    loop = DecisionLoop(LoopConfig(max_steps=3, move_timeout_s=5, frame_timeout_s=2,
                                   max_frame_age_s=0.5))
    assert loop.start('go to the plant', now_s=10.0) == []
    assert not loop.frame_ready(9.9, now_s=10.1)        # taken before the instruction
    assert loop.frame_ready(10.05, now_s=10.1)
    assert loop.on_decision(Action.MOVE_FORWARD, 10.2) == [Action.MOVE_FORWARD]
    assert not loop.frame_ready(10.3, now_s=10.4)       # moving: no new decision
    assert loop.on_move_done('succeeded', '', 11.0) == []
    assert not loop.frame_ready(10.9, now_s=11.1)       # frame from during the move
    assert not loop.frame_ready(11.0, now_s=11.6)       # fresh but stale by now
    assert loop.frame_ready(11.05, now_s=11.2)
    loop.on_decision(Action.TURN_LEFT, 11.3)
    loop.on_move_done('succeeded', '', 12.0)
    assert loop.frame_ready(12.1, 12.2)
    loop.on_decision(Action.MOVE_FORWARD, 12.3)
    assert loop.on_move_done('succeeded', '', 13.0) == [Action.STOP]   # max_steps
    assert loop.s.state == 'stopped' and loop.s.step == 3
    assert loop.s.actions == ['MOVE_FORWARD', 'TURN_LEFT', 'MOVE_FORWARD', 'STOP']


def test_decision_loop_failures_end_in_stop():
    loop = DecisionLoop(LoopConfig(frame_timeout_s=2, move_timeout_s=5))
    loop.start('x', 0.0)
    assert loop.tick(1.0) == []
    assert loop.tick(2.5) == [Action.STOP] and loop.s.state == 'failed'
    loop.start('x', 10.0)
    loop.frame_ready(10.0, 10.0)
    loop.on_decision(Action.MOVE_FORWARD, 10.0)
    assert loop.tick(16.0) == [Action.STOP]                          # move never reported
    loop.start('x', 20.0)
    loop.frame_ready(20.0, 20.0)
    loop.on_decision(Action.MOVE_FORWARD, 20.0)
    assert loop.on_move_done('aborted', 'odometry stale', 21.0) == [Action.STOP]
    assert 'odometry stale' in loop.s.reason
    # cancel and preempt while moving both stop the robot first
    loop.start('x', 30.0)
    loop.frame_ready(30.0, 30.0)
    loop.on_decision(Action.TURN_LEFT, 30.0)
    assert loop.start('new instruction', 30.5) == [Action.STOP]
    assert loop.s.episode == 5 and loop.s.state == 'waiting_frame'
    assert loop.cancel(31.0) == [Action.STOP] and loop.s.state == 'canceled'
    assert loop.cancel(31.5) == []
    with pytest.raises(ValueError):
        loop.start('   ', 32.0)


def test_episode_files_are_valid_and_errors_are_clear(tmp_path):
    for f in ('indoor.yaml', 'farm.yaml', 'calibration.yaml'):
        eps = load_episodes(CFG / 'episodes' / f)
        assert eps and all(e.reference_length_m > 0 for e in eps)
    bad = tmp_path / 'bad.yaml'
    bad.write_text('world: indoor\nepisodes:\n  - id: x\n    instruction: hi\n')
    with pytest.raises(ValueError, match='malformed episode'):
        load_episodes(bad)
    with pytest.raises(FileNotFoundError, match='nope.yaml'):
        load_episodes(tmp_path / 'nope.yaml')
    with pytest.raises(KeyError, match='have:'):
        find_episode(CFG / 'episodes' / 'indoor.yaml', 'missing')


def test_robot_profiles():
    for name in PROFILE_NAMES:
        prof = load_profile(name, CFG)
        params = prof.node_params()
        assert params['velocity_controller']['max_linear_mps'] > 0
        assert params['sim_bridge']['camera_height_m'] > 0
        assert 'cmd_vel' in prof.robot_remaps()
    assert load_profile('agri', CFG).camera['height_m'] == pytest.approx(0.38)
    stretch = load_profile('stretch3', CFG)
    assert stretch.remaps['cmd_vel'] == '/stretch/cmd_vel'
    assert stretch.node_params()['velocity_controller']['mode_service'] == \
        '/switch_to_navigation_mode'
    with pytest.raises(FileNotFoundError, match='robots/unicycle.yaml'):
        load_profile('unicycle', CFG)


def test_ros_free_packages_never_import_ros():
    modules = discover_modules(*ROS_FREE_PACKAGES)
    assert {'vln_stack.core.policies', 'vln_stack.models.janus_backend',
            'vln_stack.zero_shot.client', 'vln_stack.camera.sources',
            'vln_stack.sim.planar_sim', 'vln_stack.backends'} <= set(modules)
    assert static_ros_imports(modules) == []          # anywhere in a file, functions included
    # and loaded: all but the model modules (torch/transformers, 20 s here; their files are
    # checked above), and picking a backend by name must not load torch or a camera SDK either
    light = [m for m in modules if not m.startswith('vln_stack.models.')]
    assert imported_after(light + ['vln_stack.models.janus_backend'],
                          unwanted=('torch', 'transformers', 'pyrealsense2')) == []


def test_profiles_find_the_config_folder_through_core_paths():
    from vln_stack.core.paths import config_dir

    assert config_dir() == CFG
    assert load_profile('go2') == load_profile('go2', CFG)


def test_core_imports_nothing_above_it():
    assert upward_imports('vln_stack.core') == []
    assert len(discover_modules('vln_stack.core')) > 10


def test_import_rules_see_relative_lazy_and_dynamic_imports(tmp_path, monkeypatch):
    import import_rules

    pkg = tmp_path / 'vln_stack' / 'core'
    pkg.mkdir(parents=True)
    (tmp_path / 'vln_stack' / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('from . import geometry\n')
    (pkg / 'geometry.py').write_text('import math\n')
    (pkg / 'bad.py').write_text(
        'from .geometry import x\n'
        'def f():\n'
        '    from ..models.llm_policy import JanusPolicy\n'
        '    import rclpy.node\n'
        '    from sensor_msgs.msg import Image\n'
        'def g():\n'
        '    import importlib\n'
        "    return importlib.import_module('vln_stack.tools.procs')\n")
    monkeypatch.setattr(import_rules, 'SRC', tmp_path)
    assert discover_modules('vln_stack.core') == ['vln_stack.core', 'vln_stack.core.bad',
                                                  'vln_stack.core.geometry']
    assert upward_imports('vln_stack.core') == [
        'vln_stack.core.bad:3 imports vln_stack.models.llm_policy',
        'vln_stack.core.bad:8 imports vln_stack.tools.procs']
    assert static_ros_imports(['vln_stack.core.bad']) == [
        'vln_stack.core.bad:4 imports rclpy.node', 'vln_stack.core.bad:5 imports sensor_msgs.msg']


def test_backend_registry_is_one_table_filled_by_the_plug_ins():
    from vln_stack import backends
    from vln_stack.core import policies
    from vln_stack.models.janus_backend import JanusBackend
    from vln_stack.zero_shot.backend import OpenAIBackend

    assert backends.BACKENDS is policies.BACKENDS
    assert backends.make_backend is policies.make_backend
    assert policies.BACKENDS['oracle'] is policies.OracleBackend
    assert policies.BACKENDS['random'] is policies.RandomBackend
    assert policies.BACKENDS['janus'] is JanusBackend
    assert policies.BACKENDS['openai'] is OpenAIBackend
    with pytest.raises(ValueError, match=r"unknown policy 'nope' \(have: \['janus', 'openai', "
                                         r"'oracle', 'random'\]\)"):
        backends.make_backend('nope')
    with pytest.raises(ValueError, match="'random' is already registered"):
        policies.register_backend('random')(type('Other', (policies.PolicyBackend,), {}))

    @policies.register_backend('test-constant')
    class Constant(policies.PolicyBackend):
        def decide(self, obs):
            return policies.Decision(Action.TURN_LEFT, 'constant')
    try:
        assert policies.register_backend('test-constant')(Constant) is Constant   # idempotent
        backend = backends.make_backend('test-constant')
        assert backend.decide(policies.Observation('x')).action is Action.TURN_LEFT
        assert backends.make_backend('random', seed=3).decide(
            policies.Observation('x')).raw == 'random'
    finally:
        del policies.BACKENDS['test-constant']


def test_loop_chunk_runs_without_new_decisions_and_ends_with_a_result():
    loop = DecisionLoop(LoopConfig(max_steps=10))
    loop.start('x', 0.0)
    assert loop.frame_ready(0.0, 0.1)
    out = loop.on_decision(Action.MOVE_FORWARD, 0.2,
                           more=[Action.TURN_LEFT, Action.STOP, Action.MOVE_FORWARD])
    assert out == [Action.MOVE_FORWARD] and loop.s.queued == ['TURN_LEFT', 'STOP']
    assert loop.on_move_done('succeeded', '', 1.0) == [Action.TURN_LEFT]   # no frame needed
    assert not loop.frame_ready(1.0, 1.1)
    assert loop.on_move_done('succeeded', '', 2.0) == [Action.STOP]
    assert (loop.s.state, loop.s.result, loop.s.step) == ('stopped', 'succeeded', 2)
    loop.start('y', 3.0)
    loop.frame_ready(3.0, 3.0)
    loop.on_decision(Action.MOVE_FORWARD, 3.0)
    assert loop.cancel(3.5) == [Action.STOP] and loop.s.result == 'canceled'


def test_loop_drops_a_slow_decision_and_ignores_its_late_answer():
    loop = DecisionLoop(LoopConfig(decision_timeout_s=2.0, max_dropped=2, frame_timeout_s=5.0))
    loop.start('x', 0.0)
    assert loop.frame_ready(0.0, 0.0)
    seq = loop.s.decision_seq
    assert loop.tick(1.0) == [] and loop.s.state == 'deciding'
    assert loop.tick(2.5) == [] and loop.s.state == 'waiting_frame'     # dropped, robot holds
    assert 'dropped' in loop.s.reason
    assert loop.on_decision(Action.MOVE_FORWARD, 2.6, seq=seq) == []    # the late answer
    assert not loop.frame_ready(2.4, 2.6)                               # older than the drop
    assert loop.frame_ready(2.7, 2.8)
    assert loop.on_decision(Action.TURN_LEFT, 2.9, seq=seq) == []       # still the old id
    assert loop.on_decision(Action.TURN_LEFT, 2.9, seq=loop.s.decision_seq) == [Action.TURN_LEFT]
    loop.on_move_done('succeeded', '', 4.0)
    loop.frame_ready(4.0, 4.0)
    assert loop.tick(6.5) == [] and loop.s.dropped == 1
    loop.frame_ready(6.6, 6.6)
    assert loop.tick(9.0) == [Action.STOP]                              # 2nd drop in a row
    assert loop.s.state == 'failed' and loop.s.result == 'error' and '2 decisions' in loop.s.reason


def test_loop_refused_move_holds_and_asks_again():
    loop = DecisionLoop(LoopConfig(max_steps=3))
    loop.start('x', 0.0)
    loop.frame_ready(0.0, 0.0)
    loop.on_decision(Action.MOVE_FORWARD, 0.1, more=[Action.MOVE_FORWARD])
    assert loop.on_move_done('refused', 'obstacle 0.31 m ahead', 0.2) == []
    assert loop.s.state == 'waiting_frame' and loop.s.queued == [] and loop.s.refused == 1
    assert 'obstacle' in loop.s.reason and loop.s.last_executed == ''
    loop.frame_ready(0.3, 0.3)
    loop.on_decision(Action.TURN_LEFT, 0.4)
    loop.on_move_done('succeeded', '', 1.0)
    loop.frame_ready(1.0, 1.0)
    loop.on_decision(Action.MOVE_FORWARD, 1.1)
    assert loop.on_move_done('succeeded', '', 2.0) == [Action.STOP]
    assert loop.s.result == 'step_limit'


def test_loop_ends_after_max_refused_in_a_row_and_a_success_resets_the_count():
    loop = DecisionLoop(LoopConfig(max_steps=100, max_refused=3))
    loop.start('x', 0.0)
    t = 0.0

    def decide(action, result):
        nonlocal t
        loop.frame_ready(t, t)
        loop.on_decision(action, t + 0.01)
        t += 1.0
        return loop.on_move_done(result, 'obstacle 0.22 m ahead' if result == 'refused' else '',
                                 t)

    for _ in range(2):
        assert decide(Action.MOVE_FORWARD, 'refused') == []
    assert decide(Action.TURN_LEFT, 'succeeded') == [] and loop.s.refused_in_row == 0
    for _ in range(2):
        assert decide(Action.MOVE_FORWARD, 'refused') == []
    assert loop.active
    assert decide(Action.MOVE_FORWARD, 'refused') == [Action.STOP]      # 3rd in a row
    assert loop.s.result == 'error' and loop.s.refused == 5
    assert '3 moves in a row' in loop.s.reason and 'obstacle 0.22 m' in loop.s.reason


def test_oracle_does_not_undo_an_overshooting_turn():
    """A base that turns 34 deg for a 30 deg command jumps across the +-16 deg forward window; the
    oracle goes forward instead of turning back and forth (seen on the walking Go2)."""
    spec = MoveSpec(forward_m=0.25, turn_deg=30.0)
    oracle = OraclePolicy([(0.0, 0.0), (0.0, 10.0)], spec)      # target straight along +y (90 deg)
    pose = Pose2D(0.0, 0.0, math.radians(90 - 17.0))
    assert oracle.decide(pose) is Action.TURN_LEFT
    pose = Pose2D(0.0, 0.0, math.radians(90 + 17.0))             # over-turned by 4 deg
    assert oracle.decide(pose) is Action.MOVE_FORWARD             # not TURN_RIGHT straight back
    fresh = OraclePolicy([(0.0, 0.0), (0.0, 10.0)], spec)
    assert fresh.decide(pose) is Action.TURN_RIGHT                # without a turn just made
    turned = OraclePolicy([(0.0, 0.0), (0.0, 10.0)], spec)
    assert turned.decide(Pose2D(0.0, 0.0, math.radians(90 - 17.0))) is Action.TURN_LEFT
    # an error larger than a whole turn the other way is still corrected
    assert turned.decide(Pose2D(0.0, 0.0, math.radians(90 + 40.0))) is Action.TURN_RIGHT


def test_no_import_cycle_anywhere_in_the_package():
    """Module-level graph of every import in src/ (inside functions too): no strongly connected
    component larger than one module."""
    from import_rules import discover_modules, imports_of

    modules = set(discover_modules('vln_stack'))
    graph = {m: {name for _, name in imports_of(m)
                 if name in modules and name != m and not m.startswith(name + '.')}
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f'import cycles: {cycles}'
