"""The policy worker: resets and decisions in order on one thread, stale decisions skipped; the
decision loop's encode requests; model-error messages and dtype choice (ROS-free)."""
from __future__ import annotations

import threading

import pytest
import torch

from vln_stack.backends import Decision, Observation, make_backend
from vln_stack.core.actions import Action
from vln_stack.core.decision import DecisionLoop, LoopConfig
from vln_stack.core.policy_worker import PolicyWorker, StaleDecision
from vln_stack.models.runtime import describe_model_error, is_out_of_memory, resolve_dtype


class SlowHistoryBackend:
    """Remembers every frame it decided on in its episode history, like janus released mode;
    ``decide`` blocks until ``release`` is set."""

    def __init__(self) -> None:
        self.history: list[str] = []
        self.instruction = ''
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls: list[str] = []

    def reset(self, instruction: str) -> None:
        self.calls.append(f'reset {instruction}')
        self.history = []
        self.instruction = instruction

    def decide(self, frame: str) -> Decision:
        self.calls.append(f'decide {frame}')
        self.entered.set()
        assert self.release.wait(5.0)
        self.history.append(frame)
        return Decision(Action.MOVE_FORWARD, history_frames=len(self.history) - 1)


def test_a_reset_waits_for_the_decision_in_flight_and_stale_decisions_never_run():
    backend = SlowHistoryBackend()
    worker = PolicyWorker(backend)
    try:
        worker.reset(1, 'first').result(5)
        running = worker.decide(1, lambda: backend.decide('old frame'))
        assert backend.entered.wait(5)            # the old episode's decision is mid-way ...
        reset = worker.reset(2, 'second')          # ... when the new instruction arrives
        queued_old = worker.decide(1, lambda: backend.decide('queued old frame'))
        new = worker.decide(2, lambda: backend.decide('new frame'))
        assert not reset.done()
        backend.release.set()
        assert running.result(5).action is Action.MOVE_FORWARD
        reset.result(5)
        with pytest.raises(StaleDecision):
            queued_old.result(5)
        assert new.result(5).history_frames == 0   # nothing of episode 1 leaked into episode 2
        assert backend.history == ['new frame'] and backend.instruction == 'second'
        assert backend.calls == ['reset first', 'decide old frame', 'reset second',
                                 'decide new frame']
    finally:
        backend.release.set()
        worker.shutdown()


def test_a_failed_reset_is_reported_and_its_episode_does_not_decide():
    class Broken(SlowHistoryBackend):
        def reset(self, instruction: str) -> None:
            raise ConnectionError('zero-shot server unreachable')

    backend = Broken()
    worker = PolicyWorker(backend)
    try:
        fut = worker.reset(1, 'go')
        assert isinstance(fut.exception(5), ConnectionError)
        with pytest.raises(StaleDecision):
            worker.decide(1, lambda: backend.decide('frame')).result(5)
        assert backend.calls == []
    finally:
        worker.shutdown()


def test_the_loop_asks_the_encoder_once_per_wait_and_again_after_the_retry_time():
    loop = DecisionLoop(LoopConfig(max_frame_age_s=1.0, encode_retry_s=2.0))
    assert not loop.wants_encoding(10.0, 10.0)          # idle: nothing to decide
    loop.start('go', 10.0)
    assert not loop.wants_encoding(9.9, 10.1)           # stamped before the instruction
    assert loop.wants_encoding(10.05, 10.1)             # the frame the decision is taken on
    assert not loop.wants_encoding(10.2, 10.3)          # one request per decision ...
    assert loop.wants_encoding(12.1, 12.2)              # ... unless no tokens came back in 2 s
    assert loop.frame_ready(12.1, 12.3)
    assert not loop.wants_encoding(12.4, 12.5)          # deciding
    loop.on_decision(Action.MOVE_FORWARD, 12.6)
    loop.on_move_done('succeeded', '', 14.0)
    assert not loop.wants_encoding(13.9, 14.1)          # stamped before the move ended
    assert loop.wants_encoding(14.05, 14.1)             # a new wait: a new request at once


def test_the_frame_timeout_names_what_the_policy_waits_for():
    loop = DecisionLoop(LoopConfig(frame_timeout_s=1.0, frame_source='fused tokens from X'))
    loop.start('go', 0.0)
    assert loop.tick(1.5) == [Action.STOP]
    assert loop.s.result == 'error' and 'fused tokens from X' in loop.s.reason


def test_out_of_memory_messages_name_the_memory_asked_for():
    try:
        torch.empty(2**50, dtype=torch.uint8)   # a real allocator failure, not a made-up one
    except RuntimeError as exc:
        err = exc
    assert is_out_of_memory(err)
    text = describe_model_error(err, what='the memory encoder', device='cpu', todo='reconfigure')
    assert 'ran out of memory' in text and '1048576.00 GiB' in text and 'reconfigure' in text
    other = describe_model_error(KeyError('x'), what='the decision step')
    assert 'KeyError' in other and 'To do' in other and 'out of memory' not in other


def test_dtype_auto_is_bfloat16_on_cuda_only():
    assert resolve_dtype('auto', 'cuda') is torch.bfloat16
    assert resolve_dtype('auto', 'cuda:1') is torch.bfloat16
    assert resolve_dtype('auto', 'cpu') is torch.float32
    assert resolve_dtype('float16', 'cpu') is torch.float16
    with pytest.raises(ValueError, match='bfloat16'):
        resolve_dtype('fp8', 'cpu')


@pytest.mark.parametrize('dtype', ['float64', 'bfloat16'])
def test_released_history_stays_at_the_model_dtype(dtype, tmp_path_factory):
    from vln_stack.models.tiny_checkpoint import make_tiny_checkpoint
    folder = make_tiny_checkpoint(tmp_path_factory.mktemp('ckpt') / 'tiny', seed=1)
    backend = make_backend('janus', checkpoint_dir=str(folder), dtype=dtype)
    assert backend.policy.dtype is getattr(torch, dtype)
    backend.reset('go')
    width = backend.width
    for i in range(3):
        tokens = torch.randn(48, 2 * width, generator=torch.Generator().manual_seed(i))
        dec = backend.decide(Observation('go', tokens=tokens))
        assert dec.history_frames == i
    assert [h.dtype for h in backend.history] == [getattr(torch, dtype)] * 3
    if dtype == 'float64':   # kept exactly, not rounded through fp16
        first = torch.randn(48, 2 * width, generator=torch.Generator().manual_seed(0))
        assert torch.equal(backend.history[0], first[:, :width].to(torch.float64))
