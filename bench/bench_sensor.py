"""Per-call costs of the sensor-side steps, in one process (no DDS), as ratios to a reference in the same run.

- ``image_codec.to_rgb`` on sensor_msgs/Image rgb8 and bgr8 and on a JPEG sensor_msgs/CompressedImage
  (quality 95, as oryx_ros writes them), at 640x480 and 1920x1080, with a bare ``cv2.imdecode`` +
  ``cvtColor`` for comparison. Reference: a numpy copy of the same number of bytes (memcpy of one
  rgb8 image of that size), the least any conversion that hands out an owned array can cost.
- ``ApproximateTimeSynchronizer.add``: 3 cameras at 30 fps with +-2 ms stamp jitter, the ingest's
  defaults (slop 20 ms, queue 10, dead-camera timeout 1 s). Reference: memcpy of one 640x480 rgb8 image.
- ``FrameBuffer.add_set``: sets of 3 frames at 30 fps into a 256 MB buffer that is already full (so
  every call also evicts), at 640x480, 1920x1080 and 3840x2160 (the last is downscaled to the model's
  1536² area on the way in). Frames are built outside the timed loop. Reference: memcpy of the set's
  bytes.

The messages are rclpy's (sensor_msgs.msg), as the node receives them; no rclpy.init is needed. Each
case and its reference run once untimed (warm-up), then ``--repeats`` times a batch of the reference
and a batch of the case, each of enough calls to take about ``--batch-ms``. The ratio is the median of
the per-pair ratios (alternating keeps a change in the machine's load from landing on one side only);
its spread ((max - min) / median) shows how noisy the machine was.

    python bench/bench_sensor.py                 # about 10 s
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from batches import Runner, alternating_batches
from machine import cpu_model
from sensor_msgs.msg import CompressedImage, Image

from oryx_ros.bags.synthetic import make_test_frames
from oryx_ros.perception.frame_buffer import FrameBuffer
from oryx_ros.perception.frames import Frame
from oryx_ros.perception.image_codec import numpy_to_compressed, numpy_to_image, to_rgb
from oryx_ros.perception.sync import ApproximateTimeSynchronizer

CAMERAS = ("cam0", "cam1", "cam2")
PERIOD_NS = 1_000_000_000 // 30
START_NS = 1_700_000_000 * 1_000_000_000
BUFFER_BUDGET_BYTES = 256 * 1024**2



@dataclass
class Timing:
    per_call_s: float  # median over the batches
    reference_per_call_s: float
    ratio: float  # median over the batches of (case / reference in the batch next to it)
    spread: float  # (max - min) / median of those ratios


def timed_loop(call: Callable[[], object]) -> Runner:
    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            call()
        return time.perf_counter() - start

    return run


def measure(run: Runner, reference: Runner, repeats: int, batch_s: float) -> Timing:
    """Case and reference in alternating batches; the ratio case / reference."""
    case_s, reference_s = alternating_batches(run, reference, repeats, batch_s)
    ratios = [c / r for c, r in zip(case_s, reference_s, strict=True)]
    ratio = statistics.median(ratios)
    return Timing(statistics.median(case_s), statistics.median(reference_s), ratio,
                  (max(ratios) - min(ratios)) / ratio)


def memcpy(nbytes: int) -> Runner:
    source = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    return timed_loop(lambda: source.copy())


def rgb_image(width: int, height: int) -> np.ndarray:
    """A smooth synthetic frame (random noise would make JPEG unrealistically large and slow)."""
    return make_test_frames(1, 1, width=width, height=height)[0].rgb


def conversion_cases(width: int, height: int) -> list[tuple[str, Runner]]:
    rgb = rgb_image(width, height)
    rgb_msg = numpy_to_image(rgb, "rgb8", Image)
    bgr_msg = numpy_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", Image)
    jpeg_msg = numpy_to_compressed(rgb, "jpeg", CompressedImage)
    jpeg_bytes = np.frombuffer(jpeg_msg.data, dtype=np.uint8)

    def bare_decode() -> np.ndarray:
        return cv2.cvtColor(cv2.imdecode(jpeg_bytes, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)

    return [
        ("to_rgb rgb8", timed_loop(lambda: to_rgb(rgb_msg))),
        ("to_rgb bgr8", timed_loop(lambda: to_rgb(bgr_msg))),
        (f"to_rgb jpeg ({jpeg_bytes.size / 1e3:.0f} kB)", timed_loop(lambda: to_rgb(jpeg_msg))),
        ("cv2.imdecode+cvtColor jpeg", timed_loop(bare_decode)),
    ]


def sync_add() -> Runner:
    sync = ApproximateTimeSynchronizer(CAMERAS, 10, 20_000_000, dead_camera_timeout_ns=1_000_000_000)
    jitter = np.random.default_rng(1).integers(-2_000_000, 2_000_001, 4096).tolist()
    counter = itertools.count()

    def run(n: int) -> float:
        # Stamps computed before the clock starts; they keep increasing from batch to batch.
        items = []
        for _ in range(n):
            i = next(counter)
            frame_index, camera = divmod(i, len(CAMERAS))
            items.append((CAMERAS[camera], START_NS + frame_index * PERIOD_NS + jitter[i % len(jitter)]))
        start = time.perf_counter()
        for camera_name, stamp_ns in items:
            sync.add(camera_name, stamp_ns, None)
        return time.perf_counter() - start

    return run


def buffer_add_set(width: int, height: int) -> Runner:
    buffer = FrameBuffer(memory_budget_bytes=BUFFER_BUDGET_BYTES, window_ns=120 * 1_000_000_000)
    images = [rgb_image(width, height) for _ in CAMERAS]  # shared by every set: only stamps differ
    counter = itertools.count()

    def make_set() -> list[Frame]:
        stamp_ns = START_NS + next(counter) * PERIOD_NS
        return [Frame(camera=name, stamp_ns=stamp_ns, rgb=rgb) for name, rgb in zip(CAMERAS, images, strict=True)]

    while buffer.drop_counts()["evicted_memory"] == 0:  # fill to the budget: from here on, every call evicts
        buffer.add_set(make_set())

    def run(n: int) -> float:
        sets = [make_set() for _ in range(n)]
        start = time.perf_counter()
        for frames in sets:
            buffer.add_set(frames)
        return time.perf_counter() - start

    return run


def duration(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} us" if seconds < 0.01 else f"{seconds * 1e3:.1f} ms"


def hardware() -> str:
    model = cpu_model()
    return (f"CPU: {model}, {os.cpu_count()} logical cores, OpenCV {cv2.__version__} with {cv2.getNumThreads()} "
            f"threads, numpy {np.__version__}, python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed batches per case (median reported)")
    parser.add_argument("--batch-ms", type=float, default=25.0, help="length of one timed batch")
    args = parser.parse_args(argv)
    batch_s = args.batch_ms / 1e3

    print(hardware())
    print(f"batch size 1 (one message / set per call); {args.repeats} batches of about {args.batch_ms:g} ms, "
          f"each next to a batch of its reference, after 1 warm-up call; medians; spread = (max - min) / "
          f"median of the per-batch ratios\n")
    header = f"{'case':<52} {'per call':>10} {'reference':>10} {'ratio':>7} {'spread':>6}  reference is"
    print(header)
    print("-" * (len(header) + 24))

    def row(name: str, run: Runner, reference: Runner, reference_name: str) -> None:
        t = measure(run, reference, args.repeats, batch_s)
        print(f"{name:<52} {duration(t.per_call_s):>10} {duration(t.reference_per_call_s):>10} {t.ratio:>7.2f} "
              f"{t.spread:>6.0%}  {reference_name}")

    for width, height in ((640, 480), (1920, 1080)):
        nbytes = width * height * 3
        reference = memcpy(nbytes)
        for name, run in conversion_cases(width, height):
            row(f"{width}x{height} {name}", run, reference, f"memcpy {nbytes / 1e6:.2f} MB")

    row("ApproximateTimeSynchronizer.add (3 cameras)", sync_add(), memcpy(640 * 480 * 3),
        "memcpy 0.92 MB (one 640x480 image)")

    for width, height in ((640, 480), (1920, 1080), (3840, 2160)):
        set_bytes = 3 * width * height * 3
        note = ", downscaled" if width * height > 1536**2 else ""
        row(f"{width}x{height} FrameBuffer.add_set (3 frames{note})", buffer_add_set(width, height),
            memcpy(set_bytes), f"memcpy {set_bytes / 1e6:.1f} MB (the set)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
