"""Procedural worlds and instructions: determinism, landmark variety, valid reference paths and
instructions, MJCF / SDF of the generated worlds, train / val splits, one oracle episode."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from vln_stack.core.episodes import load_episodes
from vln_stack.sim import procgen
from vln_stack.sim.sdf import build_sdf
from vln_stack.sim.worlds import WORLDS, RobotBody, build_mjcf, get_world
from vln_stack.tools.eval import make_procedural as mp
from vln_stack.tools.eval.make_episodes import _line_free, occupancy

os.environ.setdefault('MUJOCO_GL', 'egl')
import mujoco  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NAMES = [procgen.world_name(style, seed) for style in procgen.STYLES for seed in (0, 1, 7)]


def _geometry(world) -> list:
    return [(p.kind, p.pos, p.size, p.rgba) for p in world.primitives]


def test_same_seed_same_world_and_episodes_other_seed_other_layout():
    for style in procgen.STYLES:
        a = procgen.procedural_indoor(3) if style == 'indoor' else procgen.procedural_farm(3)
        assert get_world(procgen.world_name(style, 3)) == a.world
        assert a.world.name == f'procedural/{style}/3'
        worlds = [get_world(procgen.world_name(style, s)) for s in range(4)]
        assert len({tuple(_geometry(w)) for w in worlds}) == 4, style
    name = procgen.world_name('indoor', 5)
    assert mp.layout_episodes(name, 3, seed=2) == mp.layout_episodes(name, 3, seed=2)
    assert mp.layout_episodes(name, 3, seed=2) != mp.layout_episodes(name, 3, seed=3)
    assert set(WORLDS) == {'indoor', 'farm', 'greenhouse'}
    for bad in ('procedural/indoor/x', 'procedural/moon/1', 'procedural/indoor'):
        with pytest.raises(ValueError):
            get_world(bad)


def test_landmark_kinds_are_varied_and_person_readable():
    kinds, pairs = set(), set()
    for seed in range(6):
        lay = procgen.layout(procgen.world_name('indoor', seed))
        assert len(lay.rooms) >= 4 and lay.doors          # >= 3 rooms plus the corridor
        nouns = []
        for name, phrase in lay.landmarks.items():
            colour, noun = re.fullmatch(r'the (\w+) ([a-z ]+)', phrase).groups()
            assert colour in procgen.COLOURS and name == f'{colour}_{noun.replace(" ", "_")}'
            lay.world.primitive(name)
            kinds.add(noun)
            pairs.add((colour, noun))
            nouns.append(noun)
        assert len(nouns) > len(set(nouns)), 'no distractor (same kind, other colour)'
        assert any(p.name.startswith('clutter_') for p in lay.world.primitives)
    assert len(kinds) >= 12 and len(pairs) >= 30, sorted(kinds)
    farm = procgen.layout(procgen.world_name('farm', 0))
    assert len(farm.landmarks) >= 5 and all(p.startswith('the ') for p in farm.landmarks.values())


@pytest.mark.parametrize('style', procgen.STYLES)
def test_reference_paths_are_free_and_instructions_name_the_goal_landmark(style):
    for seed in (0, 1, 2):
        world = procgen.world_name(style, seed)
        lay = procgen.layout(world)
        grid = occupancy(world, clearance_m=0.44)
        for ep in mp.layout_episodes(world, 4, seed=seed):
            pts = [tuple(p) for p in ep['reference_path']]
            assert pts[0] == (ep['start']['x'], ep['start']['y'])
            assert math.dist(pts[-1], ep['goal']) <= ep['success_radius_m']
            for p, q in zip(pts[:-1], pts[1:]):
                assert _line_free(grid, p, q), f'{ep["id"]}: segment {p}->{q} hits an obstacle'
            target = ep['landmarks'][0]
            assert ep['instruction'].endswith(lay.landmarks[target] + '.'), ep['instruction']
            for name in ep['landmarks']:
                assert lay.landmarks[name] in ep['instruction']
            near = min(lay.landmarks, key=lambda n: mp.lm_distance(lay, n, ep['goal']))
            assert near == target and mp.lm_distance(lay, target, ep['goal']) < 1.2


def test_instruction_templates_vary():
    eps = mp.make_split('train', 6, 4, seed=0)
    texts = ' '.join(e['instruction'] for e in eps)
    for phrase in ('through the do', 'turn ', 'past the ', 'stop ', 'crop rows'):
        assert phrase in texts.lower(), phrase
    assert len({e['instruction'].split(' the ')[0] for e in eps}) >= 5


@pytest.mark.parametrize('world', [NAMES[0], NAMES[3]])
def test_generated_worlds_build_mjcf_and_valid_sdf(world, tmp_path):
    body = RobotBody()
    w = get_world(world)
    model = mujoco.MjModel.from_xml_string(build_mjcf(world, body, w.spawn))
    assert model.ngeom == len(w.primitives) + 2                  # + ground and the robot base
    text = build_sdf(world, body)
    models = {m.get('name') for m in ET.fromstring(text).find('world').iter('model')}
    assert {p.name for p in w.primitives} <= models
    if shutil.which('ign') is None:
        pytest.fail('`ign sdf` is not available (see tests/test_worlds_gazebo.py)')
    path = tmp_path / 'world.sdf'
    path.write_text(text)
    proc = subprocess.run(['ign', 'sdf', '-k', str(path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and 'Valid' in proc.stdout + proc.stderr, proc.stderr[-800:]


def test_splits_use_disjoint_layout_seeds_and_load(tmp_path):
    assert mp.main(['--out', str(tmp_path), '--train-layouts', '4', '--val-layouts', '2',
                    '--episodes-per-layout', '2', '--seed', '0']) == 0
    train = load_episodes(tmp_path / 'train.yaml')
    val = load_episodes(tmp_path / 'val.yaml')
    assert len(train) == 8 and len(val) == 4
    train_worlds, val_worlds = {e.world for e in train}, {e.world for e in val}
    assert len(train_worlds) == 4 and len(val_worlds) == 2 and not train_worlds & val_worlds
    seeds = {int(w.rsplit('/', 1)[1]) for w in train_worlds}
    assert all(s in mp.TRAIN_SEEDS for s in seeds)
    assert all(int(w.rsplit('/', 1)[1]) in mp.VAL_SEEDS for w in val_worlds)
    assert len({e.episode_id for e in train + val}) == 12


def test_oracle_episode_on_a_procedural_world(tmp_path):
    """One short episode through the real node graph, wheeled robot, oracle policy."""
    eps = mp.layout_episodes(procgen.world_name('indoor', 1), 6, seed=0, min_path_m=2.0)
    ep = min(eps, key=lambda e: e['max_steps'])                   # the shortest path
    ep_file = tmp_path / 'episodes.yaml'
    mp.write_episodes(ep_file, [ep])
    out = tmp_path / 'run'
    proc = subprocess.run(
        [sys.executable, '-m', 'vln_stack.tools.runner.run_episode', '--episode-file',
         str(ep_file), '--episode-id', ep['id'], '--robot', 'agri', '--no-encoder',
         '--out', str(out), '--timeout-s', '120'],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['success'] == 1.0 and metrics['state'] == 'stopped', metrics
