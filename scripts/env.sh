# Sourced by scripts/setup.sh and scripts/dev.sh: where the venv and the interface workspace live, and
# the environment that makes this checkout, its built interfaces and the ROS wheels importable.
# Override ORYX_ROS_HOME (default ~/.cache/oryx_ros) to put them elsewhere.
ORYX_ROS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ORYX_ROS_HOME=${ORYX_ROS_HOME:-$HOME/.cache/oryx_ros}
ORYX_ROS_VENV=${ORYX_ROS_VENV:-$ORYX_ROS_HOME/venv}
# One interface workspace per checkout, so two clones never share build trees.
ORYX_ROS_WS=$ORYX_ROS_HOME/ws-$(printf %s "$ORYX_ROS_REPO" | sha1sum | cut -c1-10)
_site=$(ls -d "$ORYX_ROS_WS"/install/oryx_ros/lib/python3*/site-packages 2>/dev/null | head -1 || true)
export ORYX_ROS_REPO ORYX_ROS_HOME ORYX_ROS_VENV ORYX_ROS_WS
# Generated data (tiny checkpoint, converted SmolLM2, demo scene) lives there too.
export ORYX_ROS_CACHE=${ORYX_ROS_CACHE:-$ORYX_ROS_HOME}
export PATH="$ORYX_ROS_REPO/scripts/bin:$ORYX_ROS_VENV/bin:$PATH"
export PYTHONPATH="$ORYX_ROS_REPO${_site:+:$_site}${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$ORYX_ROS_WS/install/oryx_ros/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$ORYX_ROS_WS/install/oryx_ros:$ORYX_ROS_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$ORYX_ROS_REPO/config/fastdds_shm.xml}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset _site
