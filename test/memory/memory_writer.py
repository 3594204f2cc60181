"""A recorder in a loop, for test_kill9: offers a frame every 20 ms (stamps = wall clock) and prints
``offered <stamp_ns>`` after each, line-buffered, until it is killed.

    python memory_writer.py <directory>
"""

from __future__ import annotations

import sys
import time

import numpy as np

from oryx_ros.memory import KeyframeRecorder, MemoryEntry, open_memory_store
from oryx_ros.perception.frames import Frame


def main(directory: str) -> None:
    store = open_memory_store("", directory=directory, max_bytes=0, max_age_s=0)
    recorder = KeyframeRecorder(store, keyframe_hz=50.0, max_pixels=64 * 48, commit_interval_s=0.2)
    rng = np.random.default_rng(0)
    i = 0
    while True:
        stamp = time.time_ns()
        if recorder.offer(Frame("cam0", stamp, rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))):
            print(f"offered {stamp}", flush=True)
        if i % 10 == 0:
            recorder.add_entry(MemoryEntry(stamp, stamp - 200_000_000, stamp, ("cam0",), f"entry {i}"))
        i += 1
        time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1])
