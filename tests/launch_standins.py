"""Recording stand-ins for the `launch` / `launch_ros` modules, which cannot be installed from
PyPI: they let a test run a launch file's own code (arguments -> actions) and read the actions it
would start. Only the names our launch files import exist here; anything else fails the import."""
from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any


class Action:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(Action):
    pass


class ExecuteProcess(Action):
    pass


class Node(Action):
    pass


class OpaqueFunction(Action):
    pass


class LaunchDescription(Action):
    pass


class LaunchConfiguration:
    def __init__(self, name: str) -> None:
        self.name = name

    def perform(self, context: dict[str, str]) -> str:
        return context[self.name]


class FindPackageShare:
    share = Path('.')

    def __init__(self, package: str) -> None:
        assert package == 'vln_stack', package

    def perform(self, _context: dict[str, str]) -> str:
        return str(self.share)


MODULES = {
    'launch': {'LaunchDescription': LaunchDescription},
    'launch.actions': {'DeclareLaunchArgument': DeclareLaunchArgument,
                       'ExecuteProcess': ExecuteProcess, 'OpaqueFunction': OpaqueFunction},
    'launch.substitutions': {'LaunchConfiguration': LaunchConfiguration},
    'launch_ros': {},
    'launch_ros.actions': {'Node': Node},
    'launch_ros.substitutions': {'FindPackageShare': FindPackageShare},
}


def run_launch_file(path: Path, share: Path, monkeypatch, **args: str) -> list[Action]:
    """Load ``path`` with the stand-ins, give every declared argument its default unless ``args``
    sets it, and return the actions its OpaqueFunction(s) produce."""
    for name, attrs in MODULES.items():
        mod = types.ModuleType(name)
        for key, val in attrs.items():
            setattr(mod, key, val)
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(FindPackageShare, 'share', share)
    spec = importlib.util.spec_from_file_location(path.stem.replace('.', '_'), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries = module.generate_launch_description().args[0]
    declared = {a.args[0]: a.kwargs['default_value'] for a in entries
                if isinstance(a, DeclareLaunchArgument)}
    unknown = set(args) - set(declared)
    assert not unknown, f'{path.name} declares no {sorted(unknown)}'
    context = {**declared, **args}
    actions: list[Action] = []
    for fn in (a for a in entries if isinstance(a, OpaqueFunction)):
        actions += fn.kwargs['function'](context)
    return actions
