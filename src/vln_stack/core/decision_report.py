"""What the decision node reports: feedback (``vln/status``), results (``vln/result``) and its
diagnostics level, as plain dicts built from the loop state and the episode's figures (ROS-free).
"""
from __future__ import annotations

from dataclasses import dataclass

from .decision import LoopState

__all__ = ['EpisodeFigures', 'diagnostics_report', 'refused_result', 'result_report',
           'status_report']

OK, WARN, ERROR = 0, 1, 2   # diagnostic_msgs/DiagnosticStatus levels


@dataclass
class EpisodeFigures:
    """The node-side figures of the running episode (the loop state holds the rest)."""

    policy: str = ''
    loaded: bool = False              # the policy is configured
    error: str = ''                   # the last policy failure ('' = none)
    distance_m: float = 0.0           # odometry travelled while the episode ran
    subgoal: str = ''
    decisions: int = 0                # decisions taken in this episode
    history_frames: int = 0           # past frames the model saw at the last decision
    decision_ms: float = 0.0          # the last decision's latency
    encode_ms: float = 0.0            # janus: request -> fused tokens round trip

    def new_episode(self) -> None:
        self.error = ''
        self.distance_m, self.subgoal, self.decisions, self.history_frames = 0.0, '', 0, 0


def status_report(s: LoopState, f: EpisodeFigures, stamp: float) -> dict:
    """``vln/status``: the feedback, also the robot side's heartbeat."""
    return {
        'state': s.state, 'instruction': s.instruction, 'episode': s.episode, 'step': s.step,
        'last_action': s.last_action, 'last_executed': s.last_executed, 'queued': s.queued,
        'subgoal': f.subgoal, 'distance_m': round(f.distance_m, 3), 'result': s.result,
        'decision_ms': round(f.decision_ms, 3), 'reason': s.reason, 'decisions': f.decisions,
        'history_frames': f.history_frames, 'encode_ms': round(f.encode_ms, 3),
        'loaded': f.loaded, 'error': f.error, 'policy': f.policy, 'stamp': stamp}


def result_report(s: LoopState, f: EpisodeFigures, stamp: float) -> dict:
    """``vln/result``: how an episode ended."""
    return {'episode': s.episode, 'instruction': s.instruction, 'result': s.result,
            'reason': s.reason, 'steps': s.step, 'distance_m': round(f.distance_m, 3),
            'refused': s.refused, 'actions': s.actions, 'policy': f.policy, 'stamp': stamp}


def refused_result(instruction: str, why: str, f: EpisodeFigures, stamp: float) -> dict:
    """``vln/result`` for an instruction refused before any episode started (episode 0)."""
    return {'episode': 0, 'instruction': instruction, 'result': 'error', 'reason': why,
            'steps': 0, 'distance_m': 0.0, 'policy': f.policy, 'stamp': stamp}


def diagnostics_report(s: LoopState, f: EpisodeFigures) -> tuple[int, str, dict[str, str]]:
    """(level, message, values) of the node's diagnostic status."""
    if f.error:
        level, message = ERROR, f.error[:400]
    elif not f.loaded:
        level, message = WARN, 'policy not loaded (not configured)'
    else:
        level, message = OK, s.state
    values = {'policy': f.policy, 'state': s.state, 'episode': str(s.episode),
              'step': str(s.step), 'decision_ms': f'{f.decision_ms:.1f}',
              'encode_ms': f'{f.encode_ms:.1f}'}
    return level, message, values
