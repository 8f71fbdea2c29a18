"""Small rclpy helpers shared by every node: parameters <-> config dataclasses and a main loop.

Nothing here holds robot logic; that lives in the ROS-free ``vln_stack.core`` package.
"""
from __future__ import annotations

import dataclasses
import signal
import sys
import threading
from typing import Any, Callable, TypeVar

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

T = TypeVar('T')


def declare_config(node: Node, cfg_cls: type[T], *, prefix: str = '') -> T:
    """Declare one ROS parameter per dataclass field (default = field default) and build the config.

    Lists are declared with their default's element type; an empty list default is declared as a
    string array.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cfg_cls):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        else:
            raise TypeError(f'{cfg_cls.__name__}.{field.name} needs a default to become a parameter')
        if isinstance(default, tuple):
            default = list(default)
        if isinstance(default, list) and not default:
            default = ['']
        value = node.declare_parameter(prefix + field.name, default).value
        if isinstance(value, list) and value == ['']:
            value = []
        if isinstance(field.default, tuple):
            value = tuple(value)
        values[field.name] = value
    return cfg_cls(**values)


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` instead of shutting the context down under the node."""
    def handler(_signum, _frame) -> None:
        stop.set()
    try:
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
    except ValueError:   # not the main thread (embedded use): rclpy's defaults stay
        pass


def run_node(factory: Callable[[], Node], args: list[str] | None = None, *,
             threads: int = 1) -> int:
    """Init rclpy, build the node, spin it until shutdown; Humble-compatible (no context manager).

    Callbacks stay short and heavy work runs in the nodes' own worker threads, so one executor
    thread is enough; a MultiThreadedExecutor over one mutually exclusive callback group was
    measured to stall the decision node for up to ~1 s under load.

    SIGINT and SIGTERM end the spin loop while the context is still up, so a node's
    ``on_shutdown()`` hook can still publish (the motion nodes send a last zero twist); rclpy's
    own handlers would shut the context down first and drop that message.
    """
    stop = threading.Event()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    _stop_on_signals(stop)
    node = None
    code = 0
    try:
        node = factory()
        executor = (SingleThreadedExecutor() if threads <= 1
                    else MultiThreadedExecutor(num_threads=threads))
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set():
            executor.spin_once(timeout_sec=0.1)   # returns often enough to see the signal
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:  # noqa: BLE001 - report, then exit non-zero so supervisors see it
        name = node.get_name() if node is not None else 'node'
        print(f'[{name}] fatal: {type(exc).__name__}: {exc}', file=sys.stderr, flush=True)
        code = 1
    finally:
        if node is not None:
            shutdown_hook = getattr(node, 'on_shutdown', None)
            if shutdown_hook is not None:
                try:
                    shutdown_hook()
                except Exception as exc:  # noqa: BLE001 - best effort while going down
                    print(f'[{node.get_name()}] shutdown hook failed: {exc}', file=sys.stderr,
                          flush=True)
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def publish_final(publisher, msg, *, timeout_s: float = 0.3) -> bool:
    """Publish ``msg`` while going down and wait (bounded) until reliable subscribers have it."""
    from rclpy.duration import Duration
    publisher.publish(msg)
    try:
        return bool(publisher.wait_for_all_acked(Duration(seconds=timeout_s)))
    except Exception:  # noqa: BLE001 - best effort: not every RMW implements it
        return False
