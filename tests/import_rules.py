"""Import rules of the package, checked by the tests that own each part (one helper for all).

- The ROS-free packages (:data:`ROS_FREE_PACKAGES`) never import a ROS 2 module, neither at the
  top of a file nor inside a function; found by walking the source tree, so a new module is
  covered without editing a list.
- The layers: ``vln_stack.core`` imports nothing above it (see :func:`upward_imports`).

Both work on the files (AST), and :func:`imported_after` also imports modules in a fresh
interpreter and reports which unwanted modules ended up loaded.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / 'src'
PACKAGE = 'vln_stack'

# Subpackages (and top-level modules) that must work without ROS 2: the nodes (vln_stack.nodes,
# vln_stack.ros) wrap them, the tools may import rclpy where they talk to a graph.
ROS_FREE_PACKAGES = ('vln_stack.core', 'vln_stack.models', 'vln_stack.zero_shot',
                     'vln_stack.camera', 'vln_stack.sim', 'vln_stack.backends')

# Top-level names that mean "ROS 2 at run time" (message packages are matched by suffix).
ROS_TOP_LEVEL = ('rclpy', 'rpyutils', 'rosidl_runtime_py', 'rosidl_parser', 'rmw',
                 'ament_index_python', 'launch', 'launch_ros', 'tf2_ros', 'tf2_py',
                 'cv_bridge', 'message_filters', 'rosbag2_py', 'rosgraph')
ROS_SUFFIXES = ('_msgs', '_srvs', '_interfaces')


def is_ros_module(name: str) -> bool:
    top = name.split('.')[0]
    return top in ROS_TOP_LEVEL or top.endswith(ROS_SUFFIXES)


def _path_of(module: str) -> Path:
    rel = Path(*module.split('.'))
    pkg = SRC / rel / '__init__.py'
    return pkg if pkg.is_file() else SRC / rel.with_suffix('.py')


def discover_modules(*names: str) -> list[str]:
    """Every module under the packages (or the single modules) named, from the files on disk
    (nothing is imported): ``discover_modules('vln_stack.core')`` -> ``['vln_stack.core',
    'vln_stack.core.actions', ...]``."""
    found: list[str] = []
    for name in names:
        path = _path_of(name)
        if not path.is_file():
            raise FileNotFoundError(f'no module or package {name!r} under {SRC}')
        if path.name != '__init__.py':
            found.append(name)
            continue
        for file in sorted(path.parent.rglob('*.py')):
            rel = file.relative_to(SRC).with_suffix('')
            parts = rel.parts[:-1] if rel.name == '__init__' else rel.parts
            if '__pycache__' not in parts:
                found.append('.'.join(parts))
    return sorted(set(found))


def imports_of(module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``module``'s file, at any depth (inside
    functions, classes, ``if TYPE_CHECKING``), relative imports resolved, and
    ``importlib.import_module('...')`` / ``__import__('...')`` calls with a constant name.
    ``from . import x`` gives ``package.x`` (x may be a module)."""
    path = _path_of(module)
    package = module if path.name == '__init__.py' else module.rpartition('.')[0]
    tree = ast.parse(path.read_text(encoding='utf-8'), filename=str(path))
    out: list[tuple[int, str]] = []

    def resolve(level: int, name: str | None) -> str:
        if level == 0:
            return name or ''
        base = package.split('.')
        if level > 1:
            base = base[:-(level - 1)]
        return '.'.join(base + ([name] if name else []))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = resolve(node.level, node.module)
            if node.module is None:   # from . import x, y
                out += [(node.lineno, f'{base}.{alias.name}') for alias in node.names]
            else:
                out.append((node.lineno, base))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
            if fname in ('import_module', '__import__'):
                target = node.args[0].value
                if target.startswith('.'):
                    level = len(target) - len(target.lstrip('.'))
                    target = resolve(level, target.lstrip('.') or None)
                out.append((node.lineno, target))
    return out


def static_ros_imports(modules: list[str]) -> list[str]:
    """'module:line imports name' for every ROS import written in ``modules``."""
    return [f'{m}:{line} imports {name}' for m in modules for line, name in imports_of(m)
            if is_ros_module(name)]


def upward_imports(layer: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """'module:line imports name' for every import of a ``vln_stack`` module outside ``layer``
    (and ``allowed``) written anywhere in the modules of ``layer``."""
    keep = (layer,) + allowed
    bad = []
    for module in discover_modules(layer):
        for line, name in imports_of(module):
            if name.split('.')[0] != PACKAGE or name == PACKAGE:
                continue
            if not any(name == k or name.startswith(k + '.') for k in keep):
                bad.append(f'{module}:{line} imports {name}')
    return bad


def imported_after(modules: list[str], unwanted: tuple[str, ...] = ()) -> list[str]:
    """Import ``modules`` in a fresh interpreter (src on the path, no ROS environment) and list
    the ROS modules, and the modules named in ``unwanted`` (top-level names), then loaded."""
    code = (
        'import importlib, json, sys\n'
        f'for m in {modules!r}:\n'
        '    importlib.import_module(m)\n'
        'print(json.dumps(sorted(sys.modules)))\n')
    env = {'PYTHONPATH': str(SRC), 'PATH': '/usr/bin:/bin', 'MUJOCO_GL': 'egl',
           'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    loaded = json.loads(res.stdout.strip().splitlines()[-1])
    return [m for m in loaded if is_ros_module(m) or m.split('.')[0] in unwanted]
