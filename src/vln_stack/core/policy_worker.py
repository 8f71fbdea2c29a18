"""One thread that owns the policy backend: episode resets and decisions run on it, in order.

The decision node never touches the backend from its executor thread. A new instruction (or a
cancel) queues a reset behind whatever decision is running, so an old episode's decision always
finishes, or is skipped, before the reset, and can never write into the new episode's memory
(e.g. become history frame 0 of the released prompt). A decision queued for an episode that has
been reset since is skipped without calling the backend.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

__all__ = ['PolicyWorker', 'StaleDecision']


class StaleDecision(Exception):
    """The decision was queued for an episode that has been reset since; it did not run."""


class PolicyWorker:
    """Serialises ``backend.reset`` and ``decide`` calls on one thread, tagged by episode."""

    def __init__(self, backend: Any, *, name: str = 'policy') -> None:
        self.backend = backend
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._episode = 0          # the newest episode a reset was queued for
        self._ran_episode = 0      # the episode whose reset last ran on the worker

    def reset(self, episode: int, instruction: str) -> Future:
        """Queue the backend's reset for ``episode``; decisions of older episodes queued before
        or after it are skipped. The future holds the reset's exception, if any."""
        with self._lock:
            self._episode = episode

        def run() -> None:
            self.backend.reset(instruction)
            self._ran_episode = episode

        return self._pool.submit(run)

    def decide(self, episode: int, call: Callable[[], Any]) -> Future:
        """Queue ``call()`` (a decision of ``episode``). It raises `StaleDecision` without running
        when another episode has been reset meanwhile."""

        def run() -> Any:
            with self._lock:
                current = self._episode
            if episode != current or self._ran_episode != episode:
                raise StaleDecision(f'decision of episode {episode} skipped: episode {current} '
                                    'started meanwhile')
            return call()

        return self._pool.submit(run)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
