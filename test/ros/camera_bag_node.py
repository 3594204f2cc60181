"""The three-camera bag and the node parameters the end-to-end tests share (test_node_e2e and
test_node_stop_cancel), and a node process on a ROS domain of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from oryx_ros.bags.camera_bag import write_camera_bag
from oryx_ros.bags.synthetic import make_test_frames
from oryx_ros.params_file import camera_groups, write_params_file

CAMERAS = ["cam0", "cam1", "cam2"]
FRAMES, FPS, WIDTH, HEIGHT = 24, 10.0, 160, 120
DESCRIPTION_WINDOW_S = 30.0
TOPICS = [f"/{c}/{kind}" for c in CAMERAS for kind in ("image_raw", "camera_info")]


@dataclass
class Bag:
    path: Path
    newest_stamp_ns: int
    oldest_stamp_ns: int


def write_bag(path: Path) -> Bag:
    frames = make_test_frames(CAMERAS, FRAMES, fps=FPS, width=WIDTH, height=HEIGHT)
    write_camera_bag(path, frames)
    stamps = [frame.stamp_ns for frame in frames]
    return Bag(path, max(stamps), min(stamps))


def write_params(path: Path) -> Path:
    return write_params_file(path, {
        "cameras": camera_groups(CAMERAS), "buffer": {"max_rate_hz": 0.0},
        "qos": {"sensor_reliable": True, "sensor_depth": 100},
        "ask": {"queue_size": 1, "max_new_tokens": 8, "default_window_s": 60.0},
        "description": {"period_s": 1.0, "window_s": DESCRIPTION_WINDOW_S, "max_new_tokens": 4}})


def domain_env(domain_offset: int) -> dict[str, str]:
    """This process's environment on another ROS domain (the test run's own one plus ``domain_offset``)."""
    return dict(os.environ, ROS_DOMAIN_ID=str((int(os.environ["ROS_DOMAIN_ID"]) + domain_offset) % 200 + 1))


def start_node(command: str, params: Path, env: dict[str, str], output: Path | int = subprocess.PIPE,
               extra_args: tuple[str, ...] = ()) -> subprocess.Popen:
    """The node process (``command``: ``node`` or ``lifecycle-node``); text output to ``output``."""
    out = open(output, "w") if isinstance(output, Path) else output  # noqa: SIM115 (the child holds it)
    return subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", command, "--ros-args", "--params-file",
                             str(params), *private_memory(params), *extra_args], env=env, stdout=out,
                            stderr=subprocess.STDOUT, text=True)


def private_memory(params: Path) -> tuple[str, ...]:
    """ROS arguments giving a node started with ``params`` a memory store of its own, next to the file (tests
    replay the same stamps into many nodes; a shared store would mix their keyframes)."""
    directory = tempfile.mkdtemp(prefix="memory-", dir=params.parent)
    return ("-p", f"memory.directory:={directory}")


def stop_node(process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()


def replay_into(env: dict[str, str], bag: Path, *extra: str) -> None:
    replay = subprocess.run([sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                             "--topics", *TOPICS, *extra], env=env, capture_output=True, text=True, timeout=120)
    assert replay.returncode == 0, replay.stdout + replay.stderr
