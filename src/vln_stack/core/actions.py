"""The discrete action space of the JanusVLN policy and the metric size of each move."""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Action(str, enum.Enum):
    """Policy actions; the values are the exact words the released JanusVLN model emits."""

    STOP = 'STOP'
    MOVE_FORWARD = 'MOVE_FORWARD'
    TURN_LEFT = 'TURN_LEFT'
    TURN_RIGHT = 'TURN_RIGHT'

    @classmethod
    def parse(cls, text: str) -> 'Action':
        """Exact match of an action word; raises ValueError for anything else."""
        try:
            return cls(text.strip())
        except ValueError:
            raise ValueError(f'not an action: {text!r} (expected one of '
                             f'{[a.value for a in cls]})') from None


@dataclass(frozen=True)
class MoveSpec:
    """Size of one move. JanusVLN paper: 0.25 m / 30 deg; its released config: 0.25 m / 15 deg."""

    forward_m: float = 0.25
    turn_deg: float = 30.0

    @property
    def turn_rad(self) -> float:
        return math.radians(self.turn_deg)

    def __post_init__(self) -> None:
        if not (0.0 < self.forward_m <= 2.0):
            raise ValueError(f'forward_m must be in (0, 2] m, got {self.forward_m}')
        if not (0.0 < self.turn_deg <= 180.0):
            raise ValueError(f'turn_deg must be in (0, 180] deg, got {self.turn_deg}')
