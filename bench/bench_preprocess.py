"""Oryx preprocessing speed on 1280x720 frames, as speed-ups over the reference pipeline in the same run.

Reference: the official pipeline as spec §2 describes it. ``PIL.Image.fromarray`` of the frame, PIL's
bicubic ``resize``, then the CLIP processor's arithmetic (rescale by 1/255 in float64, cast to float32,
``(x - 0.5) / 0.5``, channels first). Cases: ``oryx_ros.model.preprocessing`` with
``resize_backend="exact"`` (Pillow, bit-equal to the reference) and ``"fast"`` (torch's uint8
antialiased bicubic kernel), the latter also with one torch thread.

Paths: 4x (``video``, a frame to 640x320), 16x (``video_long``, to 640x256) and 1x (``image``: highres
1280x704, then lowres 512x256 from it). Each case and the reference run once untimed (warm-up, which
also fills the per-size caches), then ``--repeats`` times a batch of the reference and a batch of the
case, each of enough calls to take about ``--batch-ms``. The speed-up is the median of the per-pair
ratios reference / case (alternating keeps a change in the machine's load from landing on one side
only); its spread ((max - min) / median) shows how noisy the machine was. On a shared machine whose load
comes in bursts, "best-case" (fastest reference batch / fastest case batch) is the steadier estimate.

The script also prints how far ``fast`` is from ``exact``: max and mean absolute difference in 8-bit
levels and the share of differing values, on a smooth synthetic camera frame, on uniform noise and on a
black/white noise image (the worst case for bicubic overshoot).

    python bench/bench_preprocess.py             # about 50 s on 2 cores
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from batches import Runner, alternating_batches
from machine import cpu_model
from PIL import Image

from oryx_ros.bags.synthetic import make_test_frames
from oryx_ros.model.preprocessing import image_sizes, preprocess_image, preprocess_video_frame, video_frame_size

WIDTH, HEIGHT = 1280, 720
PATHS = ("4x video", "16x video_long", "1x image")



@dataclass
class Timing:
    per_call_s: float  # median over the batches
    reference_per_call_s: float
    speedup: float  # median over the batches of (reference in the batch next to it / case)
    spread: float  # (max - min) / median of those speed-ups
    best_speedup: float  # fastest reference batch / fastest case batch: the least disturbed pair of estimates


# ----------------------------------------------------------------------------------------- reference
def reference_normalise(image: Image.Image) -> torch.Tensor:
    """CLIP processor, mean = std = 0.5: rescale in float64, cast to float32, normalise in float32."""
    rescaled = (np.asarray(image, dtype=np.uint8).astype(np.float64) * (1 / 255)).astype(np.float32)
    normalised = (rescaled - np.float32(0.5)) / np.float32(0.5)
    return torch.from_numpy(normalised.transpose(2, 0, 1).copy())


def reference_call(path: str, frame: np.ndarray) -> Callable[[], object]:
    height, width = frame.shape[:2]
    if path == "1x image":
        sizes = image_sizes(width, height)

        def image() -> object:
            highres = Image.fromarray(frame).convert("RGB").resize(sizes.highres, Image.Resampling.BICUBIC)
            lowres = highres.resize(sizes.lowres, Image.Resampling.BICUBIC)
            return reference_normalise(lowres), reference_normalise(highres)

        return image
    size = video_frame_size(width, height, "video" if path == "4x video" else "video_long")
    return lambda: reference_normalise(Image.fromarray(frame).convert("RGB").resize(size, Image.Resampling.BICUBIC))


def our_call(path: str, frame: np.ndarray, backend: str) -> Callable[[], object]:
    if path == "1x image":
        return lambda: preprocess_image(frame, resize_backend=backend)  # type: ignore[arg-type]
    modality = "video" if path == "4x video" else "video_long"
    return lambda: preprocess_video_frame(frame, modality, resize_backend=backend)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- timing
def timed_loop(call: Callable[[], object], threads: int | None = None) -> Runner:
    def run(n: int) -> float:
        before = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            start = time.perf_counter()
            for _ in range(n):
                call()
            return time.perf_counter() - start
        finally:
            torch.set_num_threads(before)

    return run


def measure(run: Runner, reference: Runner, repeats: int, batch_s: float) -> Timing:
    """Case and reference in alternating batches; the speed-up reference / case."""
    case_s, reference_s = alternating_batches(run, reference, repeats, batch_s)
    speedups = [r / c for c, r in zip(case_s, reference_s, strict=True)]
    speedup = statistics.median(speedups)
    return Timing(statistics.median(case_s), statistics.median(reference_s), speedup,
                  (max(speedups) - min(speedups)) / speedup, min(reference_s) / min(case_s))


# ----------------------------------------------------------------------------------------- difference
def test_images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "smooth synthetic frame": make_test_frames(1, 1, width=WIDTH, height=HEIGHT)[0].rgb,
        "uniform noise": rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        "black/white noise": rng.integers(0, 2, (HEIGHT, WIDTH, 3), dtype=np.uint8) * np.uint8(255),
    }


def outputs(path: str, frame: np.ndarray, backend: str) -> list[torch.Tensor]:
    out = our_call(path, frame, backend)()
    return [out.lowres, out.highres] if path == "1x image" else [out]  # type: ignore[attr-defined]


def difference_rows() -> list[str]:
    rows = []
    for name, frame in test_images().items():
        for path in PATHS:
            exact, fast = outputs(path, frame, "exact"), outputs(path, frame, "fast")
            # Normalised values are (u8 - 127.5) / 127.5: back to 8-bit levels.
            levels = torch.cat([((f - e).abs() * 127.5).round().flatten() for f, e in zip(fast, exact, strict=True)])
            rows.append(f"{name:<24} {path:<16} {int(levels.max()):>4} {float(levels.mean()):>9.4f} "
                        f"{float((levels > 0).float().mean()) * 100:>9.4f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="alternating batch pairs per case")
    parser.add_argument("--batch-ms", type=float, default=120.0, help="target duration of one batch")
    args = parser.parse_args(argv)
    batch_s = args.batch_ms / 1e3

    frame = make_test_frames(1, 1, width=WIDTH, height=HEIGHT)[0].rgb
    print(f"Machine: {cpu_model()}, {os.cpu_count()} logical cores; torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads; python {platform.python_version()}")
    sizes = image_sizes(WIDTH, HEIGHT)
    print(f"One {WIDTH}x{HEIGHT} rgb8 frame per call (smooth synthetic camera frame): 4x -> "
          f"{'x'.join(map(str, video_frame_size(WIDTH, HEIGHT, 'video')))}, 16x -> "
          f"{'x'.join(map(str, video_frame_size(WIDTH, HEIGHT, 'video_long')))}, 1x -> highres "
          f"{'x'.join(map(str, sizes.highres))} + lowres {'x'.join(map(str, sizes.lowres))}. "
          f"{args.repeats} alternating batch pairs of ~{args.batch_ms:.0f} ms.")
    print()
    print(f"{'path':<16} {'case':<22} {'ms/call':>8} {'calls/s':>8} {'ref ms':>7} {'ref /s':>7} "
          f"{'speed-up':>9} {'spread':>7} {'best-case':>9}")
    cases = (("exact", "exact", None), ("fast", "fast", None), ("fast, 1 torch thread", "fast", 1))
    for path in PATHS:
        reference = timed_loop(reference_call(path, frame))
        for label, backend, threads in cases:
            print(f"running {path} {label}", file=sys.stderr, flush=True)
            t = measure(timed_loop(our_call(path, frame, backend), threads), reference, args.repeats, batch_s)
            print(f"{path:<16} {label:<22} {t.per_call_s * 1e3:>8.2f} {1 / t.per_call_s:>8.1f} "
                  f"{t.reference_per_call_s * 1e3:>7.2f} {1 / t.reference_per_call_s:>7.1f} "
                  f"{t.speedup:>8.2f}x {t.spread * 100:>6.0f}% {t.best_speedup:>8.2f}x")
    print()
    print("fast vs exact, all output values of a call (8-bit levels):")
    print(f"{'image':<24} {'path':<16} {'max':>4} {'mean':>9} {'% differ':>9}")
    for row in difference_rows():
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
