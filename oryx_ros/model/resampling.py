"""Bicubic resampling backends for preprocessing (spec §2.2): ``exact`` (Pillow) and ``fast`` (torch).

The official code resizes with Pillow's ``Image.resize(size)``, whose default filter for RGB is BICUBIC:
a separable filter (a = -0.5) whose support is widened by the downscale factor (antialiasing), with
22-bit fixed-point weights and a uint8 intermediate image between the two passes.

* ``exact`` calls Pillow itself, so its pixels are the official ones by construction (for the installed
  Pillow version, pinned in ``scripts/constraints.txt``).
* ``fast`` calls torch's uint8 antialiased bicubic kernel (``F.interpolate(..., mode="bicubic",
  antialias=True)`` on a channels-last uint8 tensor: AVX2/AVX-512, using torch's intra-op threads). It
  implements the same filter, also with a uint8 intermediate, but with weights rounded to about 15 bits
  instead of 22: about 0.2 % of values differ from Pillow on noise (none on a smooth camera frame), by one
  level, at most two per resize (``bench/bench_preprocess.py``, ``test/model/test_resampling.py``).

Both backends normalise with the same exact table look-up (:func:`normalize_rgb`).

Pass order: Pillow ≥ 13 runs the vertical pass first for some size pairs (python-pillow/Pillow#9549, "if
height is scaled down significantly more than width, resize vertically first"); torch always runs the
horizontal pass first. Because the intermediate is clipped to uint8, the order changes pixels near strong
edges by up to tens of levels. The rule is not public API, so :func:`pillow_pass_order` asks the installed
Pillow once per (input size, output size) pair with a probe image, and the fast backend runs its two passes
in that order.

Pixel arrays are RGB ``uint8`` ``(H, W, 3)`` (numpy or torch); sizes are ``(width, height)`` as PIL's.
"""

from __future__ import annotations

import functools
from typing import Final, Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from PIL import Image

ResizeBackend = Literal["exact", "fast"]
RESIZE_BACKENDS: Final[tuple[str, ...]] = get_args(ResizeBackend)
PassOrder = Literal["horizontal_first", "vertical_first"]


def check_backend(backend: str) -> ResizeBackend:
    """``backend`` if it names a resize backend, else ``ValueError``."""
    if backend not in RESIZE_BACKENDS:
        raise ValueError(f"unknown resize backend {backend!r}; expected one of {list(RESIZE_BACKENDS)}")
    return backend  # type: ignore[return-value]


def rgb_tensor(pixels: npt.NDArray[np.uint8]) -> torch.Tensor:
    """A uint8 ``(H, W, 3)`` tensor sharing memory with a C-contiguous, writable numpy array (else a copy)."""
    if not (pixels.flags.c_contiguous and pixels.flags.writeable):
        pixels = np.array(pixels, order="C")  # torch.from_numpy rejects negative strides and warns on read-only
    return torch.from_numpy(pixels)


def resize_rgb(pixels: torch.Tensor, size: tuple[int, int], backend: ResizeBackend = "exact") -> torch.Tensor:
    """Bicubic resize of RGB uint8 ``(H, W, 3)`` to ``size = (width, height)`` → uint8 ``(height, width, 3)``.

    Returns ``pixels`` itself when the size already matches (Pillow returns a copy: same pixels). The fast
    backend's result is a view of channel planes (strides ``(w, 1, h*w)``), which :func:`normalize_rgb`
    reads without a copy.
    """
    height, width = pixels.shape[:2]
    if (width, height) == tuple(size):
        return pixels
    if backend == "exact":
        resized = Image.fromarray(pixels.numpy(), mode="RGB").resize(tuple(size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.array(resized))  # np.array: Pillow's array interface is read-only
    if backend == "fast":
        return _resize_torch(pixels, size)
    check_backend(backend)
    raise AssertionError("unreachable")


def _resize_torch(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    height, width = pixels.shape[:2]
    new_width, new_height = size
    if new_width != width and new_height != height and pillow_pass_order((width, height), size) == "vertical_first":
        pixels = _interpolate(pixels, (width, new_height))
    return _interpolate(pixels, size)  # one call runs the horizontal pass first, as Pillow ≤ 12 always did


def _interpolate(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(H, W, 3)`` uint8 → ``(h, w, 3)`` view of torch's output, which holds channel planes ``(3, h, w)``."""
    planes = pixels.permute(2, 0, 1)
    if planes.is_contiguous():  # torch's uint8 kernel is 2x slower on planes than on interleaved pixels
        pixels = torch.from_numpy(cv2.merge(list(planes.numpy())))  # interleaving 1280x704 takes ~0.1 ms
    x = pixels.permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W) with channels-last strides
    out = F.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True, align_corners=False)
    return out[0].permute(1, 2, 0)


@functools.lru_cache(maxsize=256)
def pillow_pass_order(in_size: tuple[int, int], out_size: tuple[int, int]) -> PassOrder:
    """Which pass the installed Pillow runs first when resizing ``in_size`` to ``out_size`` (both ``(w, h)``).

    Measured once per size pair (cached): a random black/white probe resized in one call is compared with
    the same probe resized horizontally then vertically (single-axis resizes are unambiguous). A probe on
    which both orders agree says ``horizontal_first``; the order is then immaterial to within its pixels.
    """
    (width, height), (new_width, new_height) = in_size, out_size
    if new_width == width or new_height == height:
        return "horizontal_first"  # only one pass runs
    probe = np.random.default_rng(0).integers(0, 2, (height, width), dtype=np.uint8) * np.uint8(255)
    image = Image.fromarray(probe, mode="L")  # the 8-bit passes are the same code for L and RGB
    both = image.resize(out_size, Image.Resampling.BICUBIC)
    horizontal_first = image.resize((new_width, height), Image.Resampling.BICUBIC).resize(
        out_size, Image.Resampling.BICUBIC)
    return "horizontal_first" if both.tobytes() == horizontal_first.tobytes() else "vertical_first"


def _normalisation_table() -> npt.NDArray[np.float32]:
    # CLIP processor, mean = std = 0.5: u8 * (1/255) in float64, cast to float32, then (x - 0.5) / 0.5 in float32.
    rescaled = (np.arange(256, dtype=np.float64) * (1 / 255)).astype(np.float32)
    return (rescaled - np.float32(0.5)) / np.float32(0.5)


# One entry per uint8 value, so normalising is a table look-up with the processor's exact rounding.
NORMALISED_U8: Final = _normalisation_table()


def normalize_rgb(pixels: torch.Tensor) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` → float32 ``(3, H, W)`` = ``(u8/255 - 0.5)/0.5``, bit-equal to the CLIP processor.

    A 256-entry table look-up (:data:`NORMALISED_U8`) with OpenCV's ``cv2.LUT`` straight into the output
    planes. Planar pixels (torch's resize returns channel planes, viewed here as ``(H, W, 3)``) take one
    call; interleaved ones (numpy, Pillow) are split into planes first. About 3x faster than three numpy
    float32 passes over the transposed array.
    """
    height, width = pixels.shape[:2]
    out = np.empty((3, height, width), dtype=np.float32)
    planes = pixels.permute(2, 0, 1)
    if planes.is_contiguous():
        cv2.LUT(planes.numpy().reshape(3 * height, width), NORMALISED_U8, dst=out.reshape(3 * height, width))
    else:
        for channel, plane in enumerate(cv2.split(np.ascontiguousarray(pixels.numpy()))):
            cv2.LUT(plane, NORMALISED_U8, dst=out[channel])
    return torch.from_numpy(out)
