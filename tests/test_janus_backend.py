"""The decision node's `janus` backend in its two memory modes (ROS-free)."""

from __future__ import annotations

import torch
import pytest

from vln_stack.backends import Observation, make_backend
from vln_stack.core.actions import Action
from vln_stack.models.llm_policy import sample_history
from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint

from test_models_encoder_policy import _force_answer  # the bigram answer forcer

INSTRUCTION = 'Go past the table and stop at the door.'
D = 128            # tiny LLM width
GRID = (6, 8)      # tiny checkpoint: 224 px wide input -> 8 merged columns


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny-janus', seed=2)


def _split(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(GRID[0] * GRID[1], 2 * D, generator=g)


def test_released_mode_keeps_every_frame_and_fuses_as_released(folder):
    backend = make_backend('janus', checkpoint_dir=str(folder), janus_mode='released')
    backend.reset(INSTRUCTION)
    frames = [_split(i) for i in range(14)]
    for f in frames[:-1]:
        backend.decide(Observation(INSTRUCTION, tokens=f))
    assert len(backend.history) == 13                      # the whole episode, as released
    got = backend.decide(Observation(INSTRUCTION, tokens=frames[-1]))
    # the same step by hand: 8 history images sampled over all 13, current spatial added to all
    pol = backend.policy
    idx = sample_history(13, 8)
    assert idx[0] == 0 and len(idx) == 8
    cur = frames[-1]
    imgs = [f[:, :D].half().float() for f in frames[:-1]]
    items = [imgs[i] + pol.lam * cur[:, D:] for i in idx] + [cur[:, :D] + pol.lam * cur[:, D:]]
    ids = pol.prompt_ids(INSTRUCTION, [GRID[0] * GRID[1]] * 9)
    text = pol._generate(ids, items, [GRID] * 9)
    assert got.raw == text and got.valid is False and got.action is Action.STOP
    assert 'not an action word' in got.reason
    # per-frame fused tokens ([N, D]) are accepted too, and a wrong width is a clear error
    backend.reset(INSTRUCTION)
    assert backend.decide(Observation(INSTRUCTION, tokens=frames[0][:, :D])).action is Action.STOP
    with pytest.raises(ValueError, match='fused'):
        backend.decide(Observation(INSTRUCTION, tokens=torch.randn(48, 100)))


def test_streaming_mode_returns_a_chunk_and_stays_bounded(folder):
    backend = make_backend('janus', checkpoint_dir=str(folder), janus_mode='streaming',
                           janus_initial_frames=2, janus_window_frames=3, janus_max_actions=4)
    _force_answer(backend.policy, 'TURN_LEFT,STOP')   # tokens must be unique
    backend.reset(INSTRUCTION)
    for i in range(8):
        dec = backend.decide(Observation(INSTRUCTION, tokens=_split(i)))
        assert dec.valid and dec.action is Action.TURN_LEFT
        assert dec.more == [Action.STOP]
    assert backend.stream.frames.frame_ids(0) == [0, 1, 5, 6, 7]
    backend.reset('another instruction')
    assert backend.stream.frames.num_frames == 0


def test_streaming_mode_retries_once_then_stops(folder):
    backend = make_backend('janus', checkpoint_dir=str(folder), janus_mode='streaming',
                           janus_retries=1)
    _force_answer(backend.policy, 'forward')
    backend.reset(INSTRUCTION)
    dec = backend.decide(Observation(INSTRUCTION, tokens=_split(0)))
    assert dec.action is Action.STOP and not dec.valid
    assert dec.raw.count('|') == 1 and 'unparsable' in dec.reason     # two answers, then STOP


def test_bad_mode_and_missing_checkpoint_are_clear_errors(folder, tmp_path):
    with pytest.raises(ValueError, match='janus_mode'):
        make_backend('janus', checkpoint_dir=str(folder), janus_mode='fast')
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nope')):
        make_backend('janus', checkpoint_dir=str(tmp_path / 'nope'))
