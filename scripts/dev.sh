#!/usr/bin/env bash
# The README's entry commands. Each one first runs the idempotent set-up (scripts/setup.sh).
#   scripts/dev.sh demo [args]   run the demo (bundled bag, tiny model unless MODEL=/path/to/checkpoint)
#   scripts/dev.sh test [args]   run the test suite (pytest args pass through)
#   scripts/dev.sh lint          ruff
#   scripts/dev.sh shell         a shell with the environment set
#   scripts/dev.sh run CMD...    any command with the environment set (e.g. run oryx-ros node)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$here/setup.sh" >&2  # set-up talk goes to stderr: stdout is the command's output
source "$here/env.sh"
cd "$ORYX_ROS_REPO"
cmd=${1:-help}; shift || true
case "$cmd" in
  demo)  exec python -m oryx_ros.cli demo ${MODEL:+--model "$MODEL"} "$@" ;;
  test)  exec python -m pytest -q -ra "$@" ;;
  lint)  exec ruff check . ;;
  shell) exec bash -i ;;
  run)   exec "$@" ;;
  *) sed -n '2,8p' "$0"; exit 2 ;;
esac
