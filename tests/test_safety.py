"""Fault injection through real processes: the safety node alone (fed by this test's own
publishers) and the simulator graph (a node killed mid-move, a forward move toward a wall).

The scenarios live in vln_stack.tools.eval.safety_faults, which tools.eval.safety_report runs to
print the same measurements.
"""
from __future__ import annotations

from vln_stack.tools.eval.safety_faults import run_kill, run_standalone, run_wall


def _check(results):
    for r in results:
        print(f'{r.fault}: zero twist after {r.zero_after_s}, past deadline '
              f'{r.beyond_deadline_s}, base still after {r.still_after_s}: {r.detail}')
    bad = [r for r in results if not r.ok]
    assert not bad, bad


def test_watchdogs_stop_within_deadline_plus_0_2_s(ros_domain, tmp_path):
    """Camera frozen, NaN odometry, decision heartbeat lost, encoder info lost."""
    results = run_standalone(('camera_freeze', 'odom_nan', 'heartbeat_loss', 'encoder_loss'),
                             domain=ros_domain, log_dir=tmp_path)
    _check(results)
    log = (tmp_path / 'safety.log').read_text()
    assert 'STOP: camera frames silent' in log and 'To do:' in log
    assert 'STOP: odometry is not finite' in log
    assert 'decision heartbeat (vln/status) silent' in log


def test_limits_estop_cancel_obstacle_and_shutdown(ros_domain, tmp_path):
    """Oversized and NaN commands, scan obstacle ahead, latched e-stop (topic + service), STOP on
    vln/action, and SIGTERM: the last twist the node sends is zero."""
    results = run_standalone(('oversized', 'obstacle_scan', 'estop', 'cancel', 'sigterm'),
                             domain=ros_domain, log_dir=tmp_path)
    _check(results)
    log = (tmp_path / 'safety.log').read_text()
    assert 'e-stop engaged' in log and 'e-stop released' in log
    assert 'clamped' in log and 'obstacle 0.10 m ahead' in log


def test_killing_the_decision_node_zeroes_cmd_vel_within_0_5_s(ros_domain, tmp_path):
    result = run_kill('decision', domain=ros_domain, log_dir=tmp_path)
    _check([result])
    assert result.zero_after_s <= 0.5 and result.still_after_s <= 0.6


def test_forward_move_toward_a_wall_inside_the_margin_is_refused(ros_domain, tmp_path):
    result = run_wall(domain=ros_domain, log_dir=tmp_path, robot='go2', clear_ahead_m=0.3)
    _check([result])
    report = result.extra['report']
    assert report['result'] == 'refused' and report['action'] == 'MOVE_FORWARD'
    assert report['reason'].startswith('obstacle 0.3') and '(margin 0.25 m)' in report['reason']
    assert result.extra['moved_m'] < 0.01
    assert 'safety node blocks forward motion' in result.extra['safety_stop_report']['reason']
