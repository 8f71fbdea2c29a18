"""Start stack nodes as separate processes (what a launch file does), for the demo runner and tests.

launch/launch_ros are not installable from PyPI, so the runner and CI start the very same
executables with the same parameter files and remappings through this module.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...core.paths import REPO_ROOT


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our CLI arguments, ['--ros-args', ...]) for tools that take both."""
    if '--ros-args' in argv:
        i = argv.index('--ros-args')
        return argv[:i], argv[i:]
    return argv, []


def _param_arg(name: str, value: Any) -> str:
    if isinstance(value, bool):
        text = 'true' if value else 'false'
    elif isinstance(value, (list, tuple)):
        text = '[' + ','.join(_fmt_item(v) for v in value) + ']'
    elif isinstance(value, str):
        text = _fmt_item(value)  # YAML-quoted: '' and '123' stay strings
    else:
        text = str(value)
    return f'{name}:={text}'


def _fmt_item(v: Any) -> str:
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    return str(v)


@dataclass
class NodeSpec:
    """One node process: python module with a ``main()``, ROS name, params file(s), overrides."""

    module: str
    name: str
    params_files: list[Path] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    remaps: dict[str, str] = field(default_factory=dict)
    namespace: str = ''

    def argv(self) -> list[str]:
        args = [sys.executable, '-m', self.module, '--ros-args', '-r', f'__node:={self.name}']
        if self.namespace:
            ns = self.namespace if self.namespace.startswith('/') else '/' + self.namespace
            args += ['-r', f'__ns:={ns}']
        for pf in self.params_files:
            args += ['--params-file', str(pf)]
        for key, val in self.params.items():
            args += ['-p', _param_arg(key, val)]
        for src, dst in self.remaps.items():
            args += ['-r', f'{src}:={dst}']
        return args


def ros_env(domain_id: int, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for an isolated, localhost-only ROS graph with large-message Fast DDS transport."""
    env = dict(os.environ)
    env['ROS_DOMAIN_ID'] = str(domain_id)
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    env.setdefault('AMENT_PREFIX_PATH', sys.prefix)
    env.setdefault('ROS_LOG_DIR', str(Path(os.environ.get('TMPDIR', '/tmp')) / 'vln_ros_logs'))
    env.setdefault('MUJOCO_GL', 'egl')
    env['PYTHONUNBUFFERED'] = '1'
    profile = REPO_ROOT / 'config' / 'fastdds.xml'
    if profile.is_file():
        env.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    src = str(REPO_ROOT / 'src')
    env['PYTHONPATH'] = src + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    if extra:
        env.update(extra)
    return env


class ProcessGroup:
    """Owns the node processes it started; stops them (SIGINT, then SIGKILL) by PID."""

    def __init__(self, env: dict[str, str], log_dir: Path | None = None) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: list[Any] = []

    def start(self, spec: NodeSpec) -> subprocess.Popen:
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f'{spec.name}.log', 'w')  # noqa: SIM115 - closed in stop_all
            self._logs.append(out)
            proc = subprocess.Popen(spec.argv(), env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        else:
            proc = subprocess.Popen(spec.argv(), env=self.env, start_new_session=True)
        self.procs[spec.name] = proc
        return proc

    def stop(self, name: str, *, sig: int = signal.SIGINT, timeout_s: float = 5.0) -> None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)

    def kill(self, name: str) -> None:
        """SIGKILL one node, as a crash would."""
        self.stop(name, sig=signal.SIGKILL)

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop_all(self, timeout_s: float = 5.0) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        for fh in self._logs:
            fh.close()
        self._logs.clear()

    def __enter__(self) -> 'ProcessGroup':
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
