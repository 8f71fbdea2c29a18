#!/usr/bin/env bash
# The whole test suite: set up the environment, then run pytest. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-/tmp/vln_ros_logs}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests -q "$@"
