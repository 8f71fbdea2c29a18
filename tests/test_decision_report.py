"""The decision node's reports, built in the core from the loop state and the episode figures."""
from __future__ import annotations

from vln_stack.core.actions import Action
from vln_stack.core.decision import DecisionLoop, LoopConfig
from vln_stack.core.decision_report import (ERROR, OK, WARN, EpisodeFigures, diagnostics_report,
                                            refused_result, result_report, status_report)


def test_status_and_result_carry_the_loop_state_and_the_figures():
    loop = DecisionLoop(LoopConfig())
    fig = EpisodeFigures(policy='janus', loaded=True)
    loop.start('go to the door', 1.0)
    assert loop.frame_ready(1.1, 1.2)
    loop.on_decision(Action.MOVE_FORWARD, 1.3)
    fig.distance_m, fig.decisions, fig.history_frames, fig.encode_ms = 0.2512, 1, 0, 41.23456
    st = status_report(loop.s, fig, 2.0)
    assert (st['state'], st['episode'], st['last_action'], st['decisions']) == (
        'moving', 1, 'MOVE_FORWARD', 1)
    assert st['distance_m'] == 0.251 and st['encode_ms'] == 41.235 and st['loaded']
    loop.on_move_done('succeeded', '', 2.5)
    assert loop.frame_ready(2.6, 2.7)
    loop.on_decision(Action.STOP, 2.8)
    res = result_report(loop.s, fig, 3.0)
    assert (res['result'], res['steps'], res['actions']) == (
        'succeeded', 1, ['MOVE_FORWARD', 'STOP'])
    fig.new_episode()
    assert (fig.distance_m, fig.decisions, fig.error) == (0.0, 0, '') and fig.policy == 'janus'


def test_diagnostics_level_follows_load_and_errors():
    s = DecisionLoop(LoopConfig()).s
    assert diagnostics_report(s, EpisodeFigures(policy='oracle'))[0] == WARN
    fig = EpisodeFigures(policy='oracle', loaded=True)
    assert diagnostics_report(s, fig)[:2] == (OK, 'idle')
    fig.error = 'policy failed: the janus decision step ran out of memory ' + 'x' * 600
    level, message, values = diagnostics_report(s, fig)
    assert level == ERROR and message.startswith('policy failed') and len(message) == 400
    assert all(isinstance(v, str) for v in values.values())
    refused = refused_result('go', 'the policy is not loaded', fig, 1.0)
    assert refused['result'] == 'error' and refused['episode'] == 0
