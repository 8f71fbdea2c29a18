"""Evaluation: hand-computed metrics, the episode generator, and a short closed-loop eval run."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vln_stack.core.episodes import load_episodes
from vln_stack.core.metrics import dtw, episode_metrics, ndtw

REPO = Path(__file__).resolve().parents[1]


def test_ndtw_hand_computed():
    q = [(0.0, 0.0), (1.0, 0.0)]
    r = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]
    # warping path (0,0) (1,1) (1,2): costs 0 + 0 + 1
    assert dtw(q, r) == pytest.approx(1.0)
    assert ndtw(q, r, threshold_m=1.0) == pytest.approx(math.exp(-1.0 / 3.0))
    assert ndtw(q, r, threshold_m=3.0) == pytest.approx(math.exp(-1.0 / 9.0))
    # a parallel path 1 m to the side: every matched pair costs 1
    side = [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)]
    assert dtw(side, r) == pytest.approx(3.0)
    m = episode_metrics(side, r, (2.0, 0.0), success_radius_m=3.0, steps=8, ndtw_spacing_m=1.0)
    assert m.ndtw == pytest.approx(math.exp(-3.0 / 9.0))
    assert m.ne_m == pytest.approx(1.0) and m.success == 1.0 and m.spl == pytest.approx(1.0)


def test_generator_makes_valid_free_reproducible_episodes():
    from vln_stack.tools.eval.make_episodes import _line_free, make_episodes, occupancy
    a = make_episodes('indoor', 3, seed=3)
    b = make_episodes('indoor', 3, seed=3)
    assert a == b
    grid = occupancy('indoor', clearance_m=0.44)
    for ep in a:
        pts = [tuple(p) for p in ep['reference_path']]
        assert pts[0] == (ep['start']['x'], ep['start']['y']) and pts[-1] == tuple(ep['goal'])
        length = sum(math.dist(p, q) for p, q in zip(pts[:-1], pts[1:]))
        assert length >= 4.0
        for p, q in zip(pts[:-1], pts[1:]):
            assert _line_free(grid, p, q), f'{ep["id"]}: segment {p}->{q} hits an obstacle'
        assert ep['instruction'].endswith('stop next to it.')


def test_heldout_set_is_committed_and_valid():
    eps = load_episodes(REPO / 'config' / 'episodes' / 'heldout.yaml')
    assert len(eps) >= 8 and len({e.episode_id for e in eps}) == len(eps)
    assert {e.world for e in eps} >= {'indoor', 'farm'}


def test_short_eval_oracle_beats_random(tmp_path):
    out = tmp_path / 'eval'
    proc = subprocess.run(
        [sys.executable, '-m', 'vln_stack.tools.eval.evaluate', '--ids', 'heldout_indoor_002',
         'heldout_indoor_005', '--policies', 'oracle', 'random', '--out', str(out),
         '--robot', 'agri',   # wheeled: the oracle's upper bound without a gait's sway
         '--timeout-s', '240'], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())
    oracle, rand = res['summary']['oracle'], res['summary']['random']
    assert oracle['success'] == 1.0 and oracle['errors'] == 0
    assert rand['success'] < oracle['success'] or rand['ne_m'] > oracle['ne_m']
    assert rand['spl'] < oracle['spl']
    report = (out / 'report.md').read_text()
    assert '| oracle |' in report and '| random |' in report and '.png)' in report
    assert '[########################] 4/4' in proc.stdout
