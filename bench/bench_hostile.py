"""Hostile input at the sensor boundary: what a rejected payload costs, as ratios to a normal message.

- Codec: ``image_codec.to_rgb`` on hostile ``sensor_msgs/CompressedImage`` payloads (a JPEG and a PNG
  whose headers claim 16384x16384 in under a kilobyte, a corrupt PNG, a PFM of float colour) against the
  reference, ``to_rgb`` of an ordinary 640x480 JPEG in the same run. Per case: time per call (median of
  alternating batches, as bench_sensor) and the process's peak-RSS growth over one call (VmHWM reset
  through /proc/self/clear_refs before it). ``--unguarded`` also times one bare ``cv2.imdecode`` of the
  JPEG bomb, which is what the codec did before it read headers (about 1.5 GB and several seconds).
- Synchronizer: one ``ApproximateTimeSynchronizer.add`` that completes a set, at the largest allowed
  ``sync.queue_size`` (1000) with stamps crafted so message_filters' product walk visits ~250 000
  combinations first, against the same add at the default queue size (10) on ordinary stamps. Reported:
  candidates visited (``match_steps``) and time, as ratios.

    python bench/bench_hostile.py                 # about 15 s
    python bench/bench_hostile.py --unguarded     # + one unguarded bomb decode (1.5 GB, seconds)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from machine import cpu_model
from sensor_msgs.msg import CompressedImage

from oryx_ros.bags.hostile import BOMB_SIDE, corrupt_png, jpeg_bomb, pfm, png_bomb
from oryx_ros.bags.synthetic import make_test_frames
from oryx_ros.perception.image_codec import ImageConversionError, numpy_to_compressed, to_rgb
from oryx_ros.perception.sync import ApproximateTimeSynchronizer, feed


def compressed(fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


def rejecting(msg: CompressedImage) -> Callable[[], str]:
    def call() -> str:
        try:
            to_rgb(msg)
        except ImageConversionError as error:
            return error.reason
        return "accepted"

    return call


def per_call_s(call: Callable[[], object], batch_s: float) -> float:
    call()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < batch_s:
        call()
        n += 1
    return elapsed / n


def peak_rss_growth_bytes(call: Callable[[], object]) -> int:
    """Peak resident memory added by one call (VmHWM reset first; Linux only, else -1)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmHWM")
        call()
        return (_status_kib("VmHWM") - before) * 1024
    except OSError:
        return -1


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(key)


def codec_cases(repeats: int, batch_s: float) -> list[dict]:
    reference_msg = numpy_to_compressed(make_test_frames(1, 1, width=640, height=480)[0].rgb, "jpeg", CompressedImage)
    reference = lambda: to_rgb(reference_msg)  # noqa: E731
    cases = {
        f"JPEG claiming {BOMB_SIDE}x{BOMB_SIDE}": compressed("jpeg", jpeg_bomb()),
        f"PNG claiming {BOMB_SIDE}x{BOMB_SIDE}": compressed("png", png_bomb()),
        "corrupt 640x480 PNG": compressed("png", corrupt_png(640, 480)),
        "PFM float colour 640x480": compressed("pfm", pfm(640, 480)),
    }
    rows = []
    for name, msg in cases.items():
        call = rejecting(msg)
        ratios, times = [], []
        for _ in range(repeats):
            reference_s = per_call_s(reference, batch_s)
            case_s = per_call_s(call, batch_s)
            ratios.append(case_s / reference_s)
            times.append(case_s)
        rows.append({"case": name, "bytes": len(msg.data), "reason": call(),
                     "per_call_ms": statistics.median(times) * 1e3,
                     "time_vs_normal_jpeg": statistics.median(ratios),
                     "peak_rss_growth_mb": peak_rss_growth_bytes(call) / 1e6})
    rows.append({"case": "reference: normal 640x480 JPEG", "bytes": len(reference_msg.data), "reason": "accepted",
                 "per_call_ms": per_call_s(reference, batch_s) * 1e3, "time_vs_normal_jpeg": 1.0,
                 "peak_rss_growth_mb": peak_rss_growth_bytes(reference) / 1e6})
    return rows


def unguarded_bomb() -> dict:
    payload = np.frombuffer(jpeg_bomb(), np.uint8)
    start = time.perf_counter()
    growth = peak_rss_growth_bytes(lambda: cv2.imdecode(payload, cv2.IMREAD_UNCHANGED))
    return {"case": "unguarded cv2.imdecode of the JPEG bomb", "seconds": time.perf_counter() - start,
            "peak_rss_growth_mb": growth / 1e6}


def synchronizer_case() -> dict:
    """The crafted worst case at queue 1000 vs an ordinary completing add at queue 10."""
    slop, per_camera = 1000, 1000
    a = [501 + i for i in range(per_camera - 1)] + [-999]
    b = [-501 - i for i in range(per_camera)]
    events = [("a", s, s) for s in a] + [("b", s, s) for s in b]

    def worst() -> tuple[float, int]:
        sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=per_camera, slop_ns=slop)
        feed(sync, events)
        before = sync.stats().match_steps
        start = time.perf_counter()
        sync.add("c", 0, 0)
        return time.perf_counter() - start, sync.stats().match_steps - before

    def ordinary() -> tuple[float, int]:
        sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=10, slop_ns=slop)
        feed(sync, [("a", 10, 0), ("b", -10, 0)])
        before = sync.stats().match_steps
        start = time.perf_counter()
        sync.add("c", 0, 0)
        return time.perf_counter() - start, sync.stats().match_steps - before

    worst_runs = [worst() for _ in range(5)]
    ordinary_runs = [ordinary() for _ in range(200)]
    worst_s = statistics.median(t for t, _ in worst_runs)
    ordinary_s = statistics.median(t for t, _ in ordinary_runs)
    return {"case": "synchronizer add, queue 1000, crafted stamps", "match_steps": worst_runs[0][1],
            "reference_match_steps": ordinary_runs[0][1], "product_walk_combinations": (per_camera - 1) ** 2 // 4,
            "per_add_ms": worst_s * 1e3, "time_vs_ordinary_add": worst_s / ordinary_s}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-ms", type=float, default=200.0)
    parser.add_argument("--unguarded", action="store_true", help="also decode the JPEG bomb without the guard")
    parser.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    args = parser.parse_args(argv)
    print(f"[bench_hostile] {cpu_model()}", file=sys.stderr)
    codec = codec_cases(args.repeats, args.batch_ms / 1e3)
    extra = [unguarded_bomb()] if args.unguarded else []
    sync = synchronizer_case()
    if args.json:
        print(json.dumps({"codec": codec, "unguarded": extra, "synchronizer": sync}, indent=2))
        return 0
    print("| payload | bytes | rejected as | time / normal JPEG decode | peak RSS growth |")
    print("|---|---|---|---|---|")
    for row in codec:
        print(f"| {row['case']} | {row['bytes']} | {row['reason']} | {row['time_vs_normal_jpeg']:.3f} "
              f"({row['per_call_ms']:.3f} ms) | {row['peak_rss_growth_mb']:.1f} MB |")
    for row in extra:
        print(f"| {row['case']} | — | — | {row['seconds']:.1f} s | {row['peak_rss_growth_mb']:.0f} MB |")
    print()
    print(f"Synchronizer, crafted worst case at queue 1000: {sync['match_steps']} candidates visited "
          f"(message_filters' product walk: ~{sync['product_walk_combinations']} combinations; an ordinary add: "
          f"{sync['reference_match_steps']}), {sync['per_add_ms']:.2f} ms, "
          f"{sync['time_vs_ordinary_add']:.0f}x an ordinary add at queue 10.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
