#!/usr/bin/env bash
# The main job on its embedded default: set up the environment, then run one episode of the
# headless simulator through the whole node graph. Extra arguments go to the runner
# (python -m vln_stack.tools.runner.run_episode --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
export MUJOCO_GL="${MUJOCO_GL:-egl}"
export ROS_LOG_DIR="${ROS_LOG_DIR:-/tmp/vln_ros_logs}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m vln_stack.tools.runner.run_episode "$@"
