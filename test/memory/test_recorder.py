"""KeyframeRecorder: rate limiting by stamp, resizing, non-blocking offer, failures survived, flush/close."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from oryx_ros.memory import KeyframeRecorder, MemoryEntry, Pose, open_memory_store
from oryx_ros.memory.recorder import fit_to_pixels
from oryx_ros.memory.store import MemoryStore
from oryx_ros.perception.frames import Frame

S = 1_000_000_000
MS = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    store = open_memory_store("", directory=tmp_path, max_bytes=0, max_age_s=0)
    yield store
    store.close()


def frame(camera: str, stamp_ns: int, width: int = 32, height: int = 24) -> Frame:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = 200
    return Frame(camera, stamp_ns, rgb)


def test_rate_limit_keeps_the_first_frame_of_each_slot_per_camera(store: MemoryStore) -> None:
    recorder = KeyframeRecorder(store, keyframe_hz=2.0, max_pixels=10**6)
    # 10 Hz cameras with +-3 ms jitter for 3 s: each 0.5 s slot keeps its first frame, per camera.
    rng = np.random.default_rng(0)
    for i in range(30):
        for camera in ("cam0", "cam1"):
            recorder.offer(frame(camera, 10 * S + i * 100 * MS + int(rng.integers(-3, 4)) * MS))
    assert recorder.flush(timeout_s=30.0)
    for camera in ("cam0", "cam1"):
        slots = [k.stamp_ns // (500 * MS) for k in store.keyframes([camera])]
        assert len(slots) == len(set(slots)) and 6 <= len(slots) <= 7
    counters = recorder.counters()
    assert counters["offered"] == 60 and counters["written"] + counters["skipped_rate"] == 60
    recorder.close()


def test_stamps_going_back_restart_the_rate_limit(store: MemoryStore) -> None:
    recorder = KeyframeRecorder(store, keyframe_hz=1.0, max_pixels=10**6)
    assert recorder.offer(frame("cam0", 100 * S))
    assert not recorder.offer(frame("cam0", 100 * S + 500 * MS))
    assert recorder.offer(frame("cam0", 5 * S))  # a bag looped: a new start, not a frame to skip
    recorder.close()
    assert [k.stamp_ns for k in store.keyframes()] == [5 * S, 100 * S]


def test_keyframes_are_resized_to_max_pixels_keeping_the_aspect(store: MemoryStore) -> None:
    recorder = KeyframeRecorder(store, keyframe_hz=1.0, max_pixels=160 * 120, pose_at=lambda t: Pose(
        t / S, 0, 0, 0, 0, 0, 1, "map"))
    recorder.offer(frame("cam0", 7 * S, width=640, height=480))
    recorder.offer(frame("cam1", 7 * S, width=100, height=50))  # already small: kept as it is
    assert recorder.flush(timeout_s=30.0)
    big, small = store.keyframes()
    assert (big.width, big.height) == (160, 120) and (small.width, small.height) == (100, 50)
    assert big.pose is not None and big.pose.x == 7.0
    rgb = store.keyframe_rgb(big.id)
    assert rgb.shape == (120, 160, 3) and abs(int(rgb[..., 0].mean()) - 200) <= 2  # RGB order survives
    recorder.close()


@pytest.mark.parametrize(("width", "height", "max_pixels"), [(640, 480, 100_000), (1920, 1080, 307_200),
                                                              (7, 3000, 1000), (5, 5, 1)])
def test_fit_to_pixels(width: int, height: int, max_pixels: int) -> None:
    new_width, new_height = fit_to_pixels(width, height, max_pixels)
    assert new_width * new_height <= max_pixels and new_width >= 1 and new_height >= 1
    assert abs(new_width / new_height - width / height) <= max(width / height, 1) * 0.5


def test_offer_never_blocks_when_the_writer_is_stuck(store: MemoryStore) -> None:
    gate = threading.Event()

    def stuck_pose(stamp_ns: int) -> None:
        gate.wait(30.0)  # the recorder thread hangs in a tf lookup
        return None

    recorder = KeyframeRecorder(store, keyframe_hz=1000.0, max_pixels=10**6, pose_at=stuck_pose, queue_size=4)
    accepted = [recorder.offer(frame("cam0", i * S)) for i in range(20)]
    counters = recorder.counters()
    assert sum(accepted) <= 5 and counters["dropped_queue_full"] == 20 - sum(accepted)
    gate.set()
    assert recorder.flush(timeout_s=30.0)
    assert recorder.offer(frame("cam0", 100 * S))  # room again
    recorder.close()


def test_failures_are_counted_and_the_thread_keeps_going(store: MemoryStore) -> None:
    def failing_pose(stamp_ns: int) -> Pose:
        raise LookupError("no transform yet")

    recorder = KeyframeRecorder(store, keyframe_hz=10.0, max_pixels=10**6, pose_at=failing_pose)
    assert recorder.offer(Frame("cam0", 1 * S, np.zeros((4, 4), np.float32)))  # not RGB uint8: cannot encode
    assert recorder.offer(frame("cam0", 2 * S))
    recorder.add_entry(MemoryEntry(3 * S, 2 * S, 3 * S, ("cam0",), "a table"))
    assert recorder.flush(timeout_s=30.0)
    store.close()  # the database goes away under the recorder
    assert recorder.offer(frame("cam0", 4 * S))
    recorder.add_entry(MemoryEntry(4 * S, 3 * S, 4 * S, ("cam0",), "a chair"))
    assert recorder.flush(timeout_s=30.0)
    counters = recorder.counters()
    assert counters["encode_errors"] == 1 and counters["pose_errors"] == 2
    assert counters["written"] == 1 and counters["entries_written"] == 1
    assert counters["write_errors"] >= 2 and counters["dropped_on_error"] == 2
    assert recorder._thread.is_alive()
    recorder.close()
    assert not recorder._thread.is_alive()


def test_close_writes_what_is_queued_and_is_idempotent(tmp_path: Path) -> None:
    store = open_memory_store("", directory=tmp_path, max_bytes=0, max_age_s=0)
    recorder = KeyframeRecorder(store, keyframe_hz=10.0, max_pixels=10**6, commit_interval_s=60.0)
    for i in range(5):
        recorder.offer(frame("cam0", i * S))
    recorder.add_entry(MemoryEntry(5 * S, 0, 5 * S, ("cam0",), "the end"))
    recorder.close(timeout_s=30.0)
    recorder.close()
    assert not recorder.offer(frame("cam0", 10 * S))
    assert len(store.keyframes()) == 5 and [e.text for e in store.entries()] == ["the end"]
    store.close()


@pytest.mark.parametrize("kwargs", [{"keyframe_hz": 0.0}, {"max_pixels": 0}, {"encoding": "webp"},
                                    {"quality": 0}, {"commit_interval_s": 0.0}])
def test_invalid_settings_are_refused(store: MemoryStore, kwargs: dict) -> None:
    settings = {"keyframe_hz": 1.0, "max_pixels": 100, **kwargs}
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        KeyframeRecorder(store, **settings)
