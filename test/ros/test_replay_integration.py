"""A 3-camera bag replayed by ``python -m oryx_ros.ros.replay`` in a separate process, received by
CameraIngest in this process over real Fast DDS (test/conftest.py: localhost discovery, a domain of the
run's own, the shared-memory profile). Checks that nothing is lost, order, pixel content and sync sets.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402

from oryx_ros.bags.camera_bag import camera_topics, write_camera_bag  # noqa: E402
from oryx_ros.bags.synthetic import (  # noqa: E402
    decode_depth_frame_index,
    decode_frame_code,
    make_test_frames,
)
from oryx_ros.perception.frame_buffer import FrameBuffer  # noqa: E402
from oryx_ros.perception.sync import ApproximateTimeSynchronizer  # noqa: E402
from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest  # noqa: E402
from oryx_ros.ros.conversions import stamp_to_ns  # noqa: E402

CAMERAS = ("cam0", "cam1", "cam2")
FRAMES = 20
FPS = 10.0
RATE = 2.0
SLOP_NS = 20_000_000
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
TIMEOUT_S = 40.0




def _replay_process(bag: Path, *args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``sigint_ignored``: start it as a non-interactive shell starts a background job (SIGINT ignored)."""
    return subprocess.Popen(
        [sys.executable, "-m", "oryx_ros.ros.replay", str(bag), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None,
    )


def _spin_until(executor: SingleThreadedExecutor, done, process: subprocess.Popen[str], grace_s: float = 3.0) -> None:
    """Spin until ``done()``, or until the player has exited and ``grace_s`` has passed, or TIMEOUT_S."""
    deadline = time.monotonic() + TIMEOUT_S
    exited_at = None
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if exited_at is None and process.poll() is not None:
            exited_at = time.monotonic()
        if exited_at is not None and time.monotonic() - exited_at > grace_s:
            break


def test_replayed_bag_fills_the_buffer_with_every_frame_in_order(tmp_path: Path, ros_context) -> None:
    frames = make_test_frames(len(CAMERAS), FRAMES, width=160, height=120, fps=FPS, depth_cameras=[0], seed=3)
    bag = tmp_path / "three_cameras"
    write_camera_bag(bag, frames, storage="sqlite3")
    expected = {name: sorted(f.stamp_ns for f in frames if f.camera == name) for name in CAMERAS}

    node = Node("ingest_under_test", context=ros_context)
    buffer = FrameBuffer(window_ns=None)
    sync = ApproximateTimeSynchronizer(CAMERAS, 10, SLOP_NS, dead_camera_timeout_ns=1_000_000_000)
    configs = [CameraConfig.standard(name, depth=(name == "cam0")) for name in CAMERAS]
    ingest = CameraIngest(node, configs, buffer, synchronizer=sync, qos=RELIABLE)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    topics = [t for c in configs for t in (c.image_topic, c.camera_info_topic, c.depth_topic) if t]
    try:
        process = _replay_process(
            bag, "--rate", str(RATE), "--wait-subscribers", "1", "--wait-timeout", "20", "--topics", *topics,
        )
        _spin_until(executor, lambda: buffer.set_count() >= FRAMES and len(buffer) >= FRAMES * 3, process)
        output, _ = process.communicate(timeout=TIMEOUT_S)
    finally:
        executor.shutdown()
        ingest.destroy()
        node.destroy_node()

    assert process.returncode == 0, output
    stats = ingest.stats()
    # Every frame arrived, once, in stamp order, with the right pixels.
    for index, name in enumerate(CAMERAS):
        stored = buffer.query([name])
        assert [f.stamp_ns for f in stored] == expected[name], name
        assert [decode_frame_code(f.rgb) for f in stored] == [(index, i) for i in range(FRAMES)]
        assert all(f.intrinsics is not None and f.intrinsics.width == 160 for f in stored)
        assert all(f.frame_id == f"{name}_optical_frame" for f in stored)
        counters = stats.cameras[name]
        assert counters.images == FRAMES and counters.conversion_errors == 0
        assert counters.frames_without_camera_info == 0
    depth_frames = buffer.query(["cam0"])
    assert [decode_depth_frame_index(f.depth_m) for f in depth_frames] == list(range(FRAMES))
    assert all(np.isnan(f.depth_m[0, 0]) for f in depth_frames)
    assert stats.cameras["cam0"].colour_without_depth == 0 and stats.cameras["cam0"].depth_unmatched == 0
    # One full, synchronised set per instant.
    sets = buffer.query_sets()
    assert len(sets) == FRAMES and all(s.complete for s in sets)
    for i, frame_set in enumerate(sets):
        assert set(frame_set.frames) == set(CAMERAS)
        stamps = [f.stamp_ns for f in frame_set.frames.values()]
        assert max(stamps) - min(stamps) < SLOP_NS
        assert {decode_frame_code(f.rgb)[1] for f in frame_set.frames.values()} == {i}
    assert stats.sync.full_sets == FRAMES and stats.sync.partial_sets == 0
    # Paced by the bag: (FRAMES - 1) / FPS seconds of bag at RATE.
    wall_s = float(re.search(r"messages on \d+ topics in ([0-9.]+) s", output).group(1))
    bag_s = (FRAMES - 1) / FPS
    assert bag_s / RATE * 0.9 <= wall_s <= bag_s / RATE + 1.0, output


def test_loop_clock_and_topic_filter_until_interrupted(tmp_path: Path, ros_context) -> None:
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image

    frames = make_test_frames(2, 5, width=64, height=48, fps=FPS, jitter_ns=0)
    bag = tmp_path / "loop.mcap.d"
    write_camera_bag(bag, frames, storage="mcap")
    bag_start, bag_end = frames[0].stamp_ns, frames[-1].stamp_ns
    kept, filtered = camera_topics("cam1").image, camera_topics("cam0").image

    node = Node("loop_listener", context=ros_context)
    received: list[int] = []
    clocks: list[int] = []
    others: list[int] = []
    node.create_subscription(Image, kept, lambda m: received.append(decode_frame_code(_rgb(m))[1]), RELIABLE)
    node.create_subscription(Image, filtered, lambda m: others.append(1), RELIABLE)
    node.create_subscription(Clock, "/clock", lambda m: clocks.append(stamp_to_ns(m.clock)), 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    process = None
    try:
        process = _replay_process(
            bag, "--loop", "--clock", "50", "--rate", "4", "--topics", kept,
            "--wait-subscribers", "1", "--wait-timeout", "20", sigint_ignored=True,
        )
        # Three passes over the 5 frames show the loop; then stop the player like Ctrl-C would.
        _spin_until(executor, lambda: len(received) >= 15, process)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    finally:
        if process is not None and process.poll() is None:  # never leave a looping player behind
            process.kill()
            process.wait()
        executor.shutdown()
        node.destroy_node()

    assert process.returncode == 0, output
    assert received[:15] == [0, 1, 2, 3, 4] * 3
    assert others == []
    assert clocks, "no /clock received"
    assert all(bag_start <= t <= bag_end + 50_000_000 for t in clocks), (bag_start, bag_end, clocks[:5])
    assert any(b < a for a, b in itertools.pairwise(clocks)), "clock never jumped back on loop"


def _rgb(msg) -> np.ndarray:
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(msg.height, msg.width, 3)
