"""Colour words that people agree with: the nearest named colour in CIELAB to an object's robust colour.

Hue sectors in HSV call a dark orange "brown" and an orange in shade "brown" too. Here colours are
compared in CIELAB (D65, CIE 1976 ΔE), which is roughly perceptually uniform, against a small palette of
basic colour terms (Berlin & Kay's eleven plus beige), each with a few sRGB prototypes spread over the
range of shades that carry that name. The object's colour is taken from its lit side: the median Lab
colour of its brightest quarter of voxels, so that shading (a face turned away from the light) does not
darken an orange ball into a brown one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

# name → sRGB prototypes (0..255). Several per name where the name covers a range of lightness.
NAMED_COLOURS: Final[dict[str, tuple[tuple[int, int, int], ...]]] = {
    "red": ((200, 30, 35), (160, 20, 25), (230, 60, 60)),
    "orange": ((245, 130, 30), (230, 110, 20), (255, 160, 60)),
    "yellow": ((240, 215, 40), (250, 235, 90), (215, 190, 30)),
    "green": ((40, 165, 60), (30, 110, 40), (110, 200, 90)),
    "cyan": ((40, 190, 200), (90, 220, 230)),
    "blue": ((40, 80, 215), (30, 50, 140), (80, 130, 230)),
    "purple": ((140, 60, 190), (100, 40, 130), (170, 110, 210)),
    "pink": ((235, 110, 170), (250, 170, 200)),
    "brown": ((150, 100, 60), (110, 70, 40), (130, 80, 45), (170, 120, 75)),
    "beige": ((215, 195, 150), (230, 215, 180), (200, 180, 140)),
    "white": ((245, 245, 245), (225, 225, 220)),
    "grey": ((128, 128, 128), (90, 90, 95), (170, 170, 170)),
    "black": ((20, 20, 20), (45, 45, 50)),
}


def srgb_to_lab(rgb: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(..., 3) sRGB 0..255 → (..., 3) CIELAB (L 0..100), D65 white."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


_PROTOTYPE_NAMES: Final = [name for name, protos in NAMED_COLOURS.items() for _ in protos]
_PROTOTYPE_LAB: Final = srgb_to_lab([p for protos in NAMED_COLOURS.values() for p in protos])


def robust_colour(colours_rgb: npt.ArrayLike, lit_fraction: float = 0.1) -> npt.NDArray[np.float64]:
    """An object's colour as (3,) sRGB 0..255: per-channel median of its brightest ``lit_fraction`` of
    voxels (by CIELAB lightness), which is its albedo as lit, not as shaded."""
    rgb = np.asarray(colours_rgb, dtype=np.float64).reshape(-1, 3)
    if len(rgb) == 0:
        raise ValueError("robust_colour needs at least one colour")
    lightness = srgb_to_lab(rgb)[:, 0]
    lit = rgb[lightness >= np.quantile(lightness, 1.0 - lit_fraction)]
    return np.median(lit, axis=0)


def colour_name(rgb: Sequence[float] | npt.NDArray[np.floating]) -> str:
    """The nearest named colour (CIE 1976 ΔE in CIELAB) to an sRGB (0..255) colour."""
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64).reshape(3))
    return _PROTOTYPE_NAMES[int(np.argmin(np.linalg.norm(_PROTOTYPE_LAB - lab, axis=1)))]
