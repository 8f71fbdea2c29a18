"""Shared fixtures: an isolated ROS domain per test session/worker and node-process launching."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'src'))

# Each pytest worker gets its own ROS domain so parallel runs never cross-talk.
_WORKER = os.environ.get('PYTEST_XDIST_WORKER', 'gw0')
_DOMAIN = 40 + (int(_WORKER[2:]) if _WORKER[2:].isdigit() else 0) + (os.getpid() % 40)
os.environ['ROS_DOMAIN_ID'] = str(_DOMAIN)
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('ROS_LOG_DIR', '/tmp/vln_ros_logs')
os.environ.setdefault('MUJOCO_GL', 'egl')
_FASTDDS = REPO / 'config' / 'fastdds.xml'
if _FASTDDS.is_file():
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', str(_FASTDDS))


def shared_data_dir() -> Path:
    """../shared/data beside the repository (or $VLN_SHARED_DATA)."""
    return Path(os.environ.get('VLN_SHARED_DATA', REPO.parent / 'shared' / 'data'))


@pytest.fixture(scope='session')
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f'real sensor data folder not found: {path} (set VLN_SHARED_DATA)')
    return path


@pytest.fixture(scope='session')
def ros_domain() -> int:
    return _DOMAIN


@pytest.fixture()
def procs(tmp_path):
    """A ProcessGroup on this session's ROS domain; every process is stopped after the test."""
    from vln_stack.tools.runner.procs import ProcessGroup, ros_env

    group = ProcessGroup(ros_env(_DOMAIN), log_dir=tmp_path / 'node_logs')
    yield group
    group.stop_all()


@pytest.fixture()
def rclpy_node():
    """An in-process rclpy node on the same domain, for publishing/subscribing from the test."""
    import rclpy
    from rclpy.node import Node

    rclpy.init()
    node = Node('vln_test_probe')
    yield node
    node.destroy_node()
    rclpy.try_shutdown()


# Native libraries loaded in this process (librealsense playback threads, EGL contexts, Fast DDS)
# have been seen to crash during interpreter teardown, after every test had run and the summary
# was printed (exit 139). The outcome is decided by then, so leave without that teardown.
_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if _EXIT_STATUS and os.environ.get('VLN_TEST_CLEAN_EXIT', '1') == '1':
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])
