"""Unit tests of the motion decisions moved out of the nodes into the ROS-free core: the goal that
carries its action (waypoint -> controller hand-off), the forward-move refusal, the episode result
of an invalid decision, the shared robot limits and watchdog, one clearance-ahead computation and
the quaternion -> yaw conversion."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from vln_stack.core.actions import Action, MoveSpec
from vln_stack.core.candidates import (CandidateConfig, Footprint, candidates_from_points,
                                       corridor_clearance)
from vln_stack.core.controller import ControlLimits, MoveTracker
from vln_stack.core.decision import DecisionLoop, LoopConfig
from vln_stack.core.geometry import Pose2D, quaternion_from_yaw, wrap_angle, yaw_from_quaternion
from vln_stack.core.limits import LIMIT_FIELDS, RobotLimits
from vln_stack.core.safety import SafetyConfig, SafetyMonitor
from vln_stack.core.watchdog import Watchdog
from vln_stack.core.waypoint import (GOAL, REFUSED, REJECTED, Handoff, MoveGoal,
                                     forward_refusal, goal_for_action, goal_for_target,
                                     move_spec_from)

SPEC = MoveSpec(0.25, 30.0)


# --- the goal carries its action ----------------------------------------------------------------
@pytest.mark.parametrize('action', list(Action))
def test_handoff_round_trip_keeps_the_action_and_the_goal(action):
    goal = goal_for_action(action, Pose2D(1.0, -2.0, 0.7), SPEC)
    msg = Handoff.for_goal(goal, (12, 345), 'map')
    back = Handoff.from_json(msg.to_json())
    assert back == msg and back.frame_id == 'map'
    assert back.result == GOAL and back.goal.action is action and back.stamp == (12, 345)
    assert back.goal.target == goal.target and back.goal.start == goal.start


def test_refusals_and_rejections_carry_no_goal_and_report_like_before():
    ref = Handoff.from_json(Handoff('MOVE_FORWARD', REFUSED, reason='obstacle').to_json())
    assert ref.goal is None
    assert ref.report() == {'action': 'MOVE_FORWARD', 'result': 'refused', 'reason': 'obstacle'}
    rej = Handoff.from_json(Handoff('jump', REJECTED, reason='not an action').to_json())
    assert rej.report()['result'] == 'rejected' and rej.report()['action'] == 'jump'
    with pytest.raises(ValueError):
        Handoff('MOVE_FORWARD', GOAL)              # a goal hand-off without a goal
    with pytest.raises(ValueError):
        Handoff('MOVE_FORWARD', REFUSED, goal_for_action(Action.MOVE_FORWARD, Pose2D(), SPEC))
    for bad in ('', '{}', '[1]', json.dumps({'action': 'X', 'result': 'maybe'}),
                json.dumps({'action': 'NOPE', 'result': 'goal',
                            'goal': {'action': 'NOPE', 'start': [0, 0, 0],
                                     'target': [0, 0, 0]}})):
        with pytest.raises(ValueError):
            Handoff.from_json(bad)


def test_a_turn_stays_a_turn_when_the_base_crept_away():
    """The old controller re-inferred the action from the pose: a walking base that crept 3 cm
    after a TURN_LEFT was taken turned it into a 3 cm forward move. The action now travels with
    the goal, and the tracker rebases the rotation on the current position."""
    start = Pose2D(0.0, 0.0, 0.0)
    goal = goal_for_action(Action.TURN_LEFT, start, SPEC)
    crept = Pose2D(0.03, 0.0, 0.01)
    assert goal_for_target(crept, goal.target, 0.01).action is Action.MOVE_FORWARD   # old way
    rebased = goal.rebased(crept)
    assert rebased.action is Action.TURN_LEFT
    assert (rebased.target.x, rebased.target.y) == (crept.x, crept.y)
    assert rebased.target.yaw == goal.target.yaw
    tr = MoveTracker(rebased, ControlLimits(), 0.0)
    assert tr.is_turn and not tr.is_hold


def test_rebased_forward_move_heads_for_the_same_target():
    goal = goal_for_action(Action.MOVE_FORWARD, Pose2D(0.0, 0.0, 0.0), SPEC)
    moved = Pose2D(0.004, 0.003, 0.02)
    rebased = goal.rebased(moved)
    assert rebased.action is Action.MOVE_FORWARD and rebased.target == goal.target
    assert rebased.start.x == moved.x and rebased.start.y == moved.y
    assert rebased.start.yaw == pytest.approx(math.atan2(-0.003, 0.25 - 0.004))


def test_bare_goal_pose_is_read_as_before():
    """A vln/goal from outside the stack (no action): the former controller rule, now in core."""
    here = Pose2D(1.0, 1.0, 0.5)
    fwd = goal_for_target(here, Pose2D(1.0 + 0.5 * math.cos(0.5), 1.0 + 0.5 * math.sin(0.5), 0.5),
                          0.01)
    assert fwd.action is Action.MOVE_FORWARD and fwd.start.yaw == pytest.approx(0.5)
    left = goal_for_target(here, Pose2D(1.005, 1.0, 1.0), 0.01)
    assert left.action is Action.TURN_LEFT and left.target == Pose2D(1.0, 1.0, 1.0)
    assert goal_for_target(here, Pose2D(1.0, 1.0, 0.0), 0.01).action is Action.TURN_RIGHT
    assert goal_for_target(here, Pose2D(1.0, 1.0, 0.5), 0.01).action is Action.STOP
    # the "close enough to be a rotation" radius follows the position tolerance (>= 2 cm)
    assert goal_for_target(here, Pose2D(1.03, 1.0, 0.5), 0.02).action is Action.STOP
    assert goal_for_target(here, Pose2D(1.03, 1.0, 0.5), 0.01).action is Action.MOVE_FORWARD


# --- forward-move refusal -----------------------------------------------------------------------
def test_forward_refusal_inside_the_margin():
    why = forward_refusal(SPEC, 0.3, 0.50, 0.1, 1.0)        # would end 0.25 m from it
    assert 'obstacle 0.50 m ahead' in why and 'margin 0.30 m' in why and 'end 0.25 m' in why
    assert forward_refusal(SPEC, 0.3, 0.55, 0.1, 1.0) == ''  # ends exactly on the margin
    assert forward_refusal(SPEC, 0.3, 3.0, 0.1, 1.0) == ''


def test_forward_refusal_without_a_check():
    assert forward_refusal(SPEC, 0.3, 0.1, None, 1.0) == ''   # no depth camera at all
    assert forward_refusal(SPEC, 0.0, 0.1, 0.1, 1.0) == ''    # margin 0 = off
    assert forward_refusal(SPEC, 0.3, None, 0.1, 1.0) == ''   # heading ahead unknown


def test_forward_refusal_on_stale_depth():
    why = forward_refusal(SPEC, 0.3, 3.0, 1.5, 1.0)
    assert why == 'depth is 1.5 s old: the way ahead cannot be checked'


def test_move_spec_from_model_config(tmp_path):
    assert move_spec_from(0.25, 30.0) == MoveSpec(0.25, 30.0)
    (tmp_path / 'config.json').write_text(json.dumps({'vln_stack': {'turn_deg': 15.0}}))
    assert move_spec_from(0.25, 30.0, str(tmp_path)) == MoveSpec(0.25, 15.0)
    with pytest.raises(FileNotFoundError):
        move_spec_from(0.25, 30.0, str(tmp_path / 'missing.json'))


def test_move_size_defaults_are_defined_once():
    from vln_stack.nodes.waypoint_node import WaypointConfig
    assert (WaypointConfig.forward_m, WaypointConfig.turn_deg) == \
        (MoveSpec().forward_m, MoveSpec().turn_deg)


# --- result of an invalid decision --------------------------------------------------------------
def _deciding() -> DecisionLoop:
    loop = DecisionLoop(LoopConfig())
    loop.start('go', 0.0)
    assert loop.frame_ready(0.1, 0.2)
    return loop


def test_invalid_decision_ends_the_episode_as_an_error():
    loop = _deciding()
    assert loop.on_decision(Action.STOP, 0.3, valid=False,
                            reason="unparsable answer 'hm'") == [Action.STOP]
    assert not loop.active
    assert loop.s.result == 'error' and loop.s.reason == "no valid action: unparsable answer 'hm'"
    assert loop.s.actions == ['STOP']


def test_valid_stop_still_succeeds_and_late_invalid_answers_change_nothing():
    loop = _deciding()
    assert loop.on_decision(Action.STOP, 0.3) == [Action.STOP]
    assert loop.s.result == 'succeeded'
    loop = _deciding()
    seq = loop.s.decision_seq
    assert loop.on_decision(Action.STOP, 0.3, seq=seq + 1, valid=False, reason='x') == []
    assert loop.active and loop.s.result == ''


# --- one robot-limits type ----------------------------------------------------------------------
def test_controller_and_safety_read_the_same_limits_type():
    lim = RobotLimits(0.3, 0.7, 0.5, 0.9)
    ctl = ControlLimits(**lim.limit_kwargs(), position_tolerance_m=0.02)
    saf = SafetyConfig(**lim.limit_kwargs())
    assert isinstance(ctl, RobotLimits) and isinstance(saf, RobotLimits)
    assert RobotLimits.of(ctl) == RobotLimits.of(saf) == lim
    assert lim.braking_distance_m(0.3) == pytest.approx(0.09)


def test_node_configs_declare_the_limits_once():
    from vln_stack.nodes.controller_node import ControllerConfig
    from vln_stack.nodes.safety_node import SafetyNodeConfig
    for cls in (ControllerConfig, SafetyNodeConfig):
        assert issubclass(cls, RobotLimits)
        names = [f.name for f in dataclasses.fields(cls)]
        assert all(names.count(n) == 1 for n in LIMIT_FIELDS), cls
    assert RobotLimits.of(ControllerConfig()) == RobotLimits.of(SafetyNodeConfig())


@pytest.mark.parametrize('bad', [0.0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize('name', LIMIT_FIELDS)
def test_limits_must_be_positive(name, bad):
    for cls in (RobotLimits, ControlLimits, SafetyConfig):
        with pytest.raises(ValueError):
            cls(**{name: bad})


# --- one watchdog -------------------------------------------------------------------------------
def test_watchdog_deadlines():
    wd = Watchdog({'odom': 0.5, 'status': 0.0})
    assert wd.age('odom', 3.0) == math.inf
    assert wd.expired(3.0) == {'odom': math.inf}              # 0 = not watched
    wd.heard('odom', 3.0)
    assert wd.expired(3.5) == {} and not wd.overdue('odom', 3.5)
    assert wd.expired(3.51) == {'odom': pytest.approx(0.51)}
    wd.heard('other', 1.0)                                     # heard, never overdue
    assert wd.age('other', 2.0) == 1.0 and not wd.overdue('other', 100.0)


def test_safety_monitor_stops_come_from_the_shared_watchdog():
    cfg = SafetyConfig(odom_timeout_s=0.3, camera_timeout_s=0.0, status_timeout_s=0.3,
                       encoder_timeout_s=0.0, obstacle_check=False)
    mon = SafetyMonitor(cfg)
    assert mon.watchdog.deadlines == {'odom': 0.3, 'camera': 0.0, 'status': 0.3, 'encoder': 0.0}
    mon.heard('odom', 10.0)
    mon.heard('status', 10.0)
    assert mon.stops(10.25) == {}
    stops = mon.stops(10.35)
    assert set(stops) == {'odom', 'status'} and 'silent for 0.35 s' in stops['odom'].what


# --- one clearance-ahead computation ------------------------------------------------------------
def test_refusal_and_safety_stop_read_the_same_clearance_ahead():
    rng = np.random.default_rng(3)
    pts = rng.uniform(-3.0, 3.0, size=(400, 2))
    fp, cfg = Footprint(0.6, 0.3), CandidateConfig(max_range_m=10.0)
    cands = candidates_from_points(pts, fp, cfg)
    ahead = corridor_clearance(pts, fp, cfg.lateral_margin_m)
    assert cands[0].free_m == pytest.approx(ahead)
    for cand in cands:
        assert cand.free_m == pytest.approx(
            min(corridor_clearance(pts, fp, cfg.lateral_margin_m, cand.heading_rad), 10.0))


# --- quaternion -> yaw --------------------------------------------------------------------------
@pytest.mark.parametrize('yaw', [0.0, 0.3, -1.2, 3.0, -3.1])
def test_yaw_round_trip(yaw):
    assert wrap_angle(yaw_from_quaternion(*quaternion_from_yaw(yaw)) - yaw) == pytest.approx(0.0)


def test_yaw_of_tilted_and_unnormalised_quaternions():
    from transforms3d.euler import euler2quat
    w, x, y, z = euler2quat(0.1, -0.2, 0.8, 'sxyz')     # roll, pitch, yaw
    assert yaw_from_quaternion(x, y, z, w) == pytest.approx(0.8)
    assert yaw_from_quaternion(2 * x, 2 * y, 2 * z, 2 * w) == pytest.approx(0.8)
    assert math.isnan(yaw_from_quaternion(0.0, 0.0, math.nan, 1.0))
    assert not Pose2D(0.0, 0.0, yaw_from_quaternion(0.0, math.inf, 0.0, 1.0)).is_finite()


def test_move_goal_dict_round_trip():
    g = MoveGoal(Action.TURN_RIGHT, Pose2D(1, 2, 3), Pose2D(1, 2, 2.5))
    assert MoveGoal.from_dict(json.loads(json.dumps(g.as_dict()))) == g
