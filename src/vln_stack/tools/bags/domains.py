"""A ROS domain nobody else uses, for the replay graph: probe, take, hold until released."""
from __future__ import annotations

import os
import time
from typing import Any


class DomainLease:
    """Holds a ROS domain that no other node used when it was taken: a node named
    ``bag_eval_lease_<pid>_<domain>`` stays on it until :meth:`release`, so other scanners (another
    engineer's run of the same tests) see it taken, also in the gaps between our graphs."""

    def __init__(self, domain: int, context: Any, node: Any) -> None:
        self.domain = domain
        self.context = context
        self.node = node
        self.node_name = node.get_name()

    def release(self) -> None:
        import rclpy  # noqa: PLC0415
        if self.node is not None:
            self.node.destroy_node()
            self.node = None
            rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> 'DomainLease':
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lease_domain(candidates: list[int], *, settle_s: float = 2.0) -> DomainLease | None:
    """Take the first ROS domain of ``candidates`` on which no other node is seen within
    ``settle_s`` (all candidates are probed at once, each through its own rclpy context), and
    check it again once taken (two scanners racing for it: the later one moves on)."""
    import rclpy  # noqa: PLC0415
    from rclpy.context import Context  # noqa: PLC0415
    from rclpy.node import Node  # noqa: PLC0415

    probes: dict[int, tuple[Any, Any]] = {}
    chosen = None
    try:
        for d in dict.fromkeys(int(c) for c in candidates):
            ctx = Context()
            rclpy.init(context=ctx, domain_id=d)
            probes[d] = (ctx, Node(f'bag_eval_lease_{os.getpid()}_{d}', context=ctx))
        time.sleep(settle_s)
        for d, (_ctx, node) in probes.items():
            name = node.get_name()
            if [n for n in node.get_node_names() if n != name]:
                continue
            time.sleep(0.5)  # a racing scanner that took it meanwhile shows up now
            if not [n for n in node.get_node_names() if n != name]:
                chosen = d
                break
        return DomainLease(chosen, *probes[chosen]) if chosen is not None else None
    finally:
        for d, (ctx, node) in probes.items():
            if d != chosen:
                node.destroy_node()
                rclpy.try_shutdown(context=ctx)


def default_domain_candidates() -> list[int]:
    """Domains nobody else's formula reaches: run_episode / evaluate use 1 + pid % 100 (evaluate
    sweeps 1..100 over its episodes) and the tests 40 + pid % 40. 101 and 215..232 are the
    domains whose DDS ports stay out of Linux's ephemeral port range; the order is rotated by
    the PID so that two runs started together rarely race for the same one."""
    pool = [101, *range(215, 233)]
    k = os.getpid() % len(pool)
    return pool[k:] + pool[:k]
