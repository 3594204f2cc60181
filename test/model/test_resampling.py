"""Resize backends (oryx_ros.model.resampling): ``exact`` is Pillow bit for bit, ``fast`` stays within a bound.

Bounds of ``fast`` against ``exact``, in 8-bit levels. One resize is two passes. Each pass rounds weights to
about 15 bits instead of Pillow's 22, which moves the rounding of a pass by at most one level. The second
pass multiplies a first-pass difference by at most the filter's sum of |weights|, 1.25 for bicubic with
a = -0.5, and then rounds. So one resize is off by at most 2 levels. The image views chain two or three
resizes (tiny guard, highres, lowres from highres), where a difference can grow further; in 400 random
sizes on black/white noise the most was 3, and the test allows 4. Almost all values are equal: about 0.2 %
differ on noise, and none on a smooth camera frame (``bench/bench_preprocess.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from oryx_ros.model.engine import OryxEngine
from oryx_ros.model.preprocessing import preprocess_image, preprocess_video, preprocess_video_frame
from oryx_ros.model.resampling import normalize_rgb, pillow_pass_order, resize_rgb, rgb_tensor

ONE_RESIZE_MAX_LEVELS = 2
CHAINED_MAX_LEVELS = 4
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True)
KINDS = ("noise", "smooth", "black_white")


def _image(kind: str, width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "black_white":  # the worst case: bicubic overshoot is clipped at every edge
        return rng.integers(0, 2, (height, width, 3), dtype=np.uint8) * np.uint8(255)
    coarse = rng.integers(0, 256, (max(height // 8, 1), max(width // 8, 1), 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


def _levels(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| in 8-bit levels, for uint8 pixels or normalised values ((u8 - 127.5) / 127.5)."""
    if a.dtype == torch.uint8:
        return (a.int() - b.int()).abs()
    return ((a - b).abs() * 127.5).round().int()


# ----------------------------------------------------------------------------------------- exact
def test_normalisation_is_the_clip_processor_arithmetic_for_every_value():
    # The processor's steps (spec §2.3): u8 * (1/255) in float64, cast to float32, (x - 0.5) / 0.5 in float32.
    # Every value at many positions, so vectorised loops and their tails are both covered.
    pixels = np.random.default_rng(0).integers(0, 256, (101, 263, 3), dtype=np.uint8)
    pixels[0, :256, 0] = np.arange(256)
    rescaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    expected = ((rescaled - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)
    ours = normalize_rgb(torch.from_numpy(pixels))
    assert ours.dtype == torch.float32 and ours.is_contiguous() and ours.shape == (3, 101, 263)
    assert np.array_equal(ours.numpy(), expected)
    planar = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).permute(1, 2, 0)  # as fast resizes
    assert torch.equal(normalize_rgb(planar), ours)


@pytest.mark.parametrize(("source", "target"), [((1280, 720), (640, 320)), ((1280, 720), (1280, 704)),
                                                ((1280, 704), (512, 256)), ((61, 477), (551, 164)),
                                                ((20, 50), (64, 160))])
def test_exact_backend_is_pillow(source, target):
    pixels = _image("noise", *source)
    expected = np.asarray(Image.fromarray(pixels).resize(target, Image.Resampling.BICUBIC))
    assert np.array_equal(resize_rgb(torch.from_numpy(pixels), target, "exact").numpy(), expected)


def test_same_size_is_returned_unchanged_by_both_backends():
    pixels = torch.from_numpy(_image("noise", 64, 32))
    assert resize_rgb(pixels, (64, 32), "exact") is pixels
    assert resize_rgb(pixels, (64, 32), "fast") is pixels


# ----------------------------------------------------------------------------------------- fast vs exact
@BOUNDED
@given(source=st.tuples(st.integers(8, 320), st.integers(8, 320)),
       target=st.tuples(st.integers(4, 400), st.integers(4, 400)), kind=st.sampled_from(KINDS))
def test_one_fast_resize_is_within_two_levels_of_pillow(source, target, kind):
    pixels = torch.from_numpy(_image(kind, *source))
    fast, exact = resize_rgb(pixels, target, "fast"), resize_rgb(pixels, target, "exact")
    assert fast.shape == exact.shape == (target[1], target[0], 3) and fast.dtype == torch.uint8
    levels = _levels(fast, exact)
    assert int(levels.max()) <= ONE_RESIZE_MAX_LEVELS
    if levels.numel() >= 10_000:
        assert float(levels.float().mean()) < 0.05  # almost every value is equal


@pytest.mark.parametrize(("source", "target"), [((61, 477), (551, 164)), ((100, 300), (300, 100)),
                                                ((477, 61), (164, 551)), ((300, 300), (100, 100))])
def test_fast_runs_its_passes_in_pillows_order(source, target):
    # Pillow ≥ 13 runs the vertical pass first for some size pairs; on black/white noise the other order
    # is off by tens of levels, so this fails unless the fast backend follows pillow_pass_order.
    pixels = torch.from_numpy(_image("black_white", *source))
    assert pillow_pass_order(source, target) in ("horizontal_first", "vertical_first")
    assert int(_levels(resize_rgb(pixels, target, "fast"), resize_rgb(pixels, target, "exact")).max()) <= 2


@settings(max_examples=12, deadline=None, derandomize=True)
@given(size=st.tuples(st.integers(8, 1000), st.integers(8, 800)), kind=st.sampled_from(KINDS))
def test_fast_preprocessing_is_within_bounds_of_exact(size, kind):
    pixels = _image(kind, *size)
    try:
        exact = preprocess_image(pixels)
    except ValueError:  # extreme aspect ratio: both backends refuse alike
        with pytest.raises(ValueError):
            preprocess_image(pixels, resize_backend="fast")
        return
    fast = preprocess_image(pixels, resize_backend="fast")
    assert fast.sizes == exact.sizes
    assert int(_levels(fast.highres, exact.highres).max()) <= CHAINED_MAX_LEVELS
    assert int(_levels(fast.lowres, exact.lowres).max()) <= CHAINED_MAX_LEVELS
    for modality in ("video", "video_long"):
        try:
            frame = preprocess_video_frame(pixels, modality)
        except ValueError:
            continue
        fast_frame = preprocess_video_frame(pixels, modality, resize_backend="fast")
        assert int(_levels(fast_frame, frame).max()) <= ONE_RESIZE_MAX_LEVELS  # one resize


@pytest.mark.parametrize("kind", KINDS)
def test_canonical_1280x720_paths(kind):
    pixels = _image(kind, 1280, 720)
    exact, fast = preprocess_image(pixels), preprocess_image(pixels, resize_backend="fast")
    assert fast.highres.shape == (3, 704, 1280) and fast.lowres.shape == (3, 256, 512)
    # The highres view is one vertical pass (720 → 704 rows), the lowres view two more: both within one level here.
    assert int(_levels(fast.highres, exact.highres).max()) <= 1
    assert int(_levels(fast.lowres, exact.lowres).max()) <= ONE_RESIZE_MAX_LEVELS
    for modality, shape in (("video", (3, 320, 640)), ("video_long", (3, 256, 640))):
        frame = preprocess_video_frame(pixels, modality, resize_backend="fast")
        assert frame.shape == shape
        assert int(_levels(frame, preprocess_video_frame(pixels, modality)).max()) <= ONE_RESIZE_MAX_LEVELS


# ----------------------------------------------------------------------------------------- inputs
@pytest.mark.parametrize("backend", ["exact", "fast"])
def test_read_only_and_strided_frames_are_accepted_without_warnings(backend):
    pixels = _image("smooth", 200, 150)
    read_only = np.frombuffer(pixels.tobytes(), dtype=np.uint8).reshape(pixels.shape)  # as from a ROS message
    bgr_view = np.ascontiguousarray(pixels[:, :, ::-1])[:, :, ::-1]  # negative strides, same pixels
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = preprocess_image(pixels, resize_backend=backend)
        for frame in (read_only, bgr_view):
            got = preprocess_image(frame, resize_backend=backend)
            assert torch.equal(got.lowres, expected.lowres) and torch.equal(got.highres, expected.highres)
    assert rgb_tensor(pixels).data_ptr() == pixels.ctypes.data  # contiguous writable arrays are not copied


def test_unknown_backend_raises(tiny_oryx):
    pixels = _image("smooth", 64, 48)
    for call in (lambda: preprocess_image(pixels, resize_backend="cv2"),
                 lambda: preprocess_video_frame(pixels, resize_backend="cv2"),
                 lambda: preprocess_video([pixels], resize_backend="cv2"),
                 lambda: resize_rgb(torch.from_numpy(pixels), (32, 32), "cv2"),  # type: ignore[arg-type]
                 lambda: OryxEngine(tiny_oryx, resize_backend="cv2")):
        with pytest.raises(ValueError, match="resize backend"):
            call()
    assert OryxEngine(tiny_oryx).resize_backend == "fast"
    assert OryxEngine(tiny_oryx, resize_backend="exact").resize_backend == "exact"
