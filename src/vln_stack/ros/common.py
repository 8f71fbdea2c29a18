"""Small rclpy helpers shared by every node: parameters <-> config dataclasses and a main loop.

Nothing here holds robot logic; that lives in the ROS-free ``vln_stack.core`` package.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, TypeVar

import rclpy
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.node import Node

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


def run_node(factory: Callable[[], Node], args: list[str] | None = None, *,
             threads: int = 1) -> int:
    """Init rclpy, build the node, spin it until shutdown; Humble-compatible (no context manager).

    Callbacks stay short and heavy work runs in the nodes' own worker threads, so one executor
    thread is enough; a MultiThreadedExecutor over one mutually exclusive callback group was
    measured to stall the decision node for up to ~1 s under load.
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = factory()
        executor = (SingleThreadedExecutor() if threads <= 1
                    else MultiThreadedExecutor(num_threads=threads))
        executor.add_node(node)
        executor.spin()
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
                except Exception:  # noqa: BLE001 - best effort while going down
                    pass
            node.destroy_node()
        rclpy.try_shutdown()
    return code
