"""Input deadlines: when was each watched input last heard, and which are overdue.

ROS-free, clock injected (seconds). The safety layer watches odometry, camera frames and the
heartbeats; the velocity controller watches odometry and the decision heartbeat. A deadline of 0
(or less) disables that input's check; an input never heard is infinitely old.
"""
from __future__ import annotations

import math
from collections.abc import Mapping


class Watchdog:
    def __init__(self, deadlines: Mapping[str, float] | None = None) -> None:
        self.deadlines: dict[str, float] = dict(deadlines or {})
        self._heard: dict[str, float] = {}

    def heard(self, key: str, now_s: float) -> None:
        """``key`` arrived at ``now_s``."""
        self._heard[key] = now_s

    def forget(self, key: str) -> None:
        self._heard.pop(key, None)

    def age(self, key: str, now_s: float) -> float:
        """Seconds since ``key`` was last heard (inf: never)."""
        t = self._heard.get(key)
        return math.inf if t is None else max(0.0, now_s - t)

    def overdue(self, key: str, now_s: float) -> bool:
        """True when ``key`` has a deadline (> 0) and is older than it."""
        limit = self.deadlines.get(key, 0.0)
        return limit > 0 and self.age(key, now_s) > limit

    def expired(self, now_s: float) -> dict[str, float]:
        """Every overdue input -> its age (inf: never heard), in deadline order."""
        return {k: self.age(k, now_s) for k in self.deadlines if self.overdue(k, now_s)}
