"""The realised motion of each discrete action in the simulator (sim bridge + waypoint +
velocity controller + safety as processes), wheeled base (agri profile): forward 0.25 m within
3 cm, turns within 3 degrees. The walking Go2 (+-5 cm / +-5 deg) is in test_sim_robots.py."""
from __future__ import annotations

from vln_stack.tools.eval.action_report import measure_profile, summarise


def test_wheeled_base_actions_within_tolerance(ros_domain, tmp_path):
    rows = measure_profile('agri', forward_m=0.25, turn_deg=15.0, domain=ros_domain,
                           log_dir=tmp_path)
    summary = summarise(rows, 0.25, 15.0)
    summary['rows'] = [r.__dict__ for r in rows]   # shown if an assertion fails
    assert set(summary) == {'MOVE_FORWARD', 'TURN_LEFT', 'TURN_RIGHT', 'rows'}
    assert summary['MOVE_FORWARD']['max_abs_error'] <= 0.03, summary
    assert summary['MOVE_FORWARD']['max_lateral_m'] <= 0.03, summary
    assert summary['TURN_LEFT']['max_abs_error'] <= 3.0, summary
    assert summary['TURN_RIGHT']['max_abs_error'] <= 3.0, summary
    assert all(r.result == 'succeeded' for r in rows), summary
    # Left is counter-clockwise (REP-103): positive yaw.
    assert summary['TURN_LEFT']['mean'] > 0 > summary['TURN_RIGHT']['mean']
