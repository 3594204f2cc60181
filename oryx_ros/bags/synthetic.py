"""Deterministic multi-camera test content and the ``oryx-ros make-test-bag`` command.

Every colour frame carries its camera index and frame index as two bands of 16 black/white cells across
the top of the image, so a receiver can check what it got after transport, JPEG and downscaling
(``decode_frame_code``). Depth (on chosen cameras) is a ramp whose millimetre values also encode the
frame index (``decode_depth_frame_index``), with a small no-return (NaN) patch in the top-left corner.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from rosbags.rosbag2 import WriterError

from oryx_ros.bags.camera_bag import BagSummary, write_camera_bag
from oryx_ros.perception.frames import CameraIntrinsics, Frame

__all__ = [
    "decode_depth_frame_index",
    "decode_frame_code",
    "encode_frame_code",
    "main",
    "make_test_frames",
    "synthetic_depth_m",
    "synthetic_intrinsics",
]

_log = logging.getLogger(__name__)

CODE_BITS: Final = 16  # cells per band: camera and frame index each fit 16 bits
MIN_CODE_WIDTH: Final = 4 * CODE_BITS  # at least 4 px per cell
MIN_CODE_HEIGHT: Final = 16
DEFAULT_START_NS: Final = 1_700_000_000 * 1_000_000_000  # a plausible wall-clock epoch (2023-11-14)
_NO_RETURN_PATCH: Final = 4  # px, top-left square of NaN depth
_DEPTH_BASE_MM: Final = 1000


def _band_height(height: int) -> int:
    return max(4, height // 12)


def encode_frame_code(rgb: npt.NDArray[np.uint8], camera_index: int, frame_index: int) -> None:
    """Paint ``camera_index`` (band 1) and ``frame_index`` (band 2) as 16-bit cell codes, in place."""
    height, width = rgb.shape[:2]
    if width < MIN_CODE_WIDTH or height < MIN_CODE_HEIGHT:
        raise ValueError(f"image {width}x{height} too small for the code (>= {MIN_CODE_WIDTH}x{MIN_CODE_HEIGHT})")
    for value, name in ((camera_index, "camera_index"), (frame_index, "frame_index")):
        if not 0 <= value < 2**CODE_BITS:
            raise ValueError(f"{name} must be in [0, {2**CODE_BITS}), got {value}")
    band = _band_height(height)
    cell = width // CODE_BITS
    for row, value in enumerate((camera_index, frame_index)):
        for bit in range(CODE_BITS):
            on = (value >> (CODE_BITS - 1 - bit)) & 1
            rgb[row * band : (row + 1) * band, bit * cell : (bit + 1) * cell] = 255 if on else 0


def decode_frame_code(rgb: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """``(camera_index, frame_index)`` read back from an image painted by encode_frame_code.

    Each cell is read as the mean of its central half, in coordinates relative to the image size, so
    JPEG and moderate downscaling (to a height of about 48 px or more) do not change the result.
    """
    height, width = rgb.shape[:2]
    band_fraction = _band_height(height) / height
    values = []
    for row in range(2):
        y0, y1 = _central_half(row, band_fraction, height)
        value = 0
        for bit in range(CODE_BITS):
            x0, x1 = _central_half(bit, 1.0 / CODE_BITS, width)
            value = (value << 1) | int(rgb[y0:y1, x0:x1].mean() > 127)
        values.append(value)
    return values[0], values[1]


def _central_half(index: int, fraction: float, size: int) -> tuple[int, int]:
    """Pixel span of the central half of cell ``index`` when cells are ``fraction`` of ``size`` long."""
    start, stop = index * fraction * size, (index + 1) * fraction * size
    quarter = (stop - start) / 4
    lo, hi = math.floor(start + quarter), math.ceil(stop - quarter)
    return lo, max(hi, lo + 1)


def synthetic_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """A pinhole camera with ~64° horizontal field of view and the principal point at the centre."""
    focal = 0.8 * width
    k = np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(width, height, k, np.zeros(5), "plumb_bob")


def synthetic_depth_m(width: int, height: int, frame_index: int) -> npt.NDArray[np.float32]:
    """Ramp ``(1000 + 2x + frame_index) mm`` (exact in 16UC1), NaN in a 4x4 top-left patch."""
    depth_mm = _DEPTH_BASE_MM + frame_index + 2 * np.arange(width, dtype=np.float64)
    depth_m = np.broadcast_to(depth_mm / 1000.0, (height, width)).astype(np.float32)
    depth_m[:_NO_RETURN_PATCH, :_NO_RETURN_PATCH] = np.nan
    return depth_m


def decode_depth_frame_index(depth_m: npt.NDArray[np.float32]) -> int:
    """Frame index from a synthetic_depth_m image (read at the first column of the middle row)."""
    height = depth_m.shape[0]
    return round(float(depth_m[height // 2, 0]) * 1000.0) - _DEPTH_BASE_MM


def _background(width: int, height: int, camera_index: int) -> npt.NDArray[np.uint8]:
    """Smooth per-camera colours (so downscaling and JPEG have something to do)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.broadcast_to(x, (height, width))
    rgb[..., 1] = np.broadcast_to(y, (height, width))
    rgb[..., 2] = (60 * camera_index + 40) % 256
    return rgb


def make_test_frames(
    cameras: int | Sequence[str] = 3,
    frames: int = 30,
    *,
    width: int = 160,
    height: int = 120,
    fps: float = 10.0,
    depth_cameras: Iterable[int] = (),
    jitter_ns: int = 2_000_000,
    start_ns: int = DEFAULT_START_NS,
    seed: int = 0,
) -> list[Frame]:
    """Deterministic frames for ``cameras`` (a count → ``cam0``, ``cam1``...), sorted by stamp.

    Frame ``i`` of camera ``c`` is stamped ``start_ns + i / fps`` plus a per-message jitter drawn
    uniformly from ``[-jitter_ns, jitter_ns]`` (seeded), as unsynchronised cameras would be.
    """
    names = [f"cam{i}" for i in range(cameras)] if isinstance(cameras, int) else list(cameras)
    if not names or frames < 1 or fps <= 0:
        raise ValueError(f"need cameras, frames >= 1 and fps > 0 (got {names}, {frames}, {fps})")
    period_ns = 1e9 / fps
    if 2 * jitter_ns >= period_ns:
        raise ValueError(f"jitter {jitter_ns} ns must stay below half the frame period {period_ns:.0f} ns")
    with_depth = set(depth_cameras)
    rng = np.random.default_rng(seed)
    intrinsics = synthetic_intrinsics(width, height)
    result = []
    for frame_index in range(frames):
        for camera_index, name in enumerate(names):
            rgb = _background(width, height, camera_index)
            encode_frame_code(rgb, camera_index, frame_index)
            jitter = int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else 0
            result.append(
                Frame(
                    camera=name,
                    stamp_ns=start_ns + round(frame_index * period_ns) + jitter,
                    rgb=rgb,
                    depth_m=synthetic_depth_m(width, height, frame_index) if camera_index in with_depth else None,
                    intrinsics=intrinsics,
                    frame_id=f"{name}_optical_frame",
                )
            )
    result.sort(key=lambda frame: (frame.stamp_ns, frame.camera))
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oryx-ros make-test-bag",
        description="Write a small multi-camera rosbag2 with deterministic, checkable frames.",
    )
    parser.add_argument("out", type=Path, help="bag directory to create (must not exist)")
    parser.add_argument("--cameras", type=int, default=3, help="number of cameras cam0..camN-1")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--frames", type=int, default=None, help="frames per camera (default 30)")
    length.add_argument("--duration", type=float, default=None, help="seconds of recording (frames = fps*s)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=160)
    parser.add_argument("--height", type=int, default=120)
    parser.add_argument("--depth-cameras", type=int, nargs="*", default=[0],
                        help="camera indices that also publish registered depth (default: 0)")
    parser.add_argument("--depth-encoding", choices=["16UC1", "32FC1"], default="16UC1")
    parser.add_argument("--depth-compressed", action="store_true", help="compressedDepth PNG topics")
    parser.add_argument("--encoding", choices=["rgb8", "bgr8"], default="rgb8")
    parser.add_argument("--compression", choices=["jpeg", "png"], default=None,
                        help="CompressedImage colour topics instead of raw Image")
    parser.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3")
    parser.add_argument("--jitter-ms", type=float, default=2.0, help="max per-message stamp jitter")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    frames_per_camera = (
        args.frames if args.frames is not None
        else max(1, round(args.duration * args.fps)) if args.duration is not None
        else 30
    )
    try:
        frames = make_test_frames(
            args.cameras, frames_per_camera, width=args.width, height=args.height, fps=args.fps,
            depth_cameras=args.depth_cameras, jitter_ns=round(args.jitter_ms * 1e6), seed=args.seed,
        )
        summary: BagSummary = write_camera_bag(
            args.out, frames, storage=args.storage, image_encoding=args.encoding,
            compression=args.compression, depth_encoding=args.depth_encoding,
            depth_compressed=args.depth_compressed,
        )
    except (ValueError, OSError, WriterError) as err:
        print(f"make-test-bag: {err}", file=sys.stderr)
        return 2
    total = sum(summary.message_counts.values())
    print(f"wrote {summary.path} ({summary.storage}): {total} messages, {summary.duration_s:.2f} s")
    for topic, count in sorted(summary.message_counts.items()):
        print(f"  {topic}: {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
