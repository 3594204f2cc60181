"""Spatial relations between object boxes, from geometry, in a viewpoint frame.

The viewpoint frame is a REP 103 frame: x forward, y left, z up; by default the robot's base frame
(``viewpoint='base_link'``). Left/right and in front/behind depend on it; above/below/on/near only need
z up. Boxes are axis-aligned in that frame.

Predicates for an ordered pair (A, B), "A <predicate> B". Each has a *margin* in metres (positive when
it holds, the larger the clearer; the synthetic-scene generator uses it to avoid ambiguous layouts):

============  ==========================================================================================
left_of       A's centre is more than ``direction_margin_m`` further along +y (left) than B's
right_of      ... further along -y
in_front_of   A is closer to the viewpoint: A's centre is more than ``direction_margin_m`` smaller in x
behind        A's centre is more than ``direction_margin_m`` larger in x
above         A's bottom is at or over B's top (within ``contact_m``) and their footprints overlap in x and y
below         B above A
on            support contact: |A's bottom - B's top| <= ``contact_m`` and A's centre lies over B's footprint
near          the gap between the two boxes' surfaces is at most ``near_m`` (holds together with ``on``)
============  ==========================================================================================

``distance`` is always the centre-to-centre distance in metres (as ``SpatialRelation.msg`` states);
``confidence`` is 0.5 + 0.5 * margin / scale clipped to [0.5, 1], where scale is the mean extent of the
two boxes along the axis the predicate tests: 0.5 on the decision boundary, 1 when the margin is as
large as the objects themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

PREDICATES: Final[tuple[str, ...]] = (
    "left_of", "right_of", "in_front_of", "behind", "above", "below", "on", "near",
)
# Predicates whose truth depends on the viewpoint's horizontal axes (the others only need z up).
VIEWER_RELATIVE: Final = frozenset({"left_of", "right_of", "in_front_of", "behind"})
INVERSE_PREDICATE: Final[dict[str, str]] = {
    "left_of": "right_of", "right_of": "left_of", "in_front_of": "behind", "behind": "in_front_of",
    "above": "below", "below": "above", "near": "near",
}

Source = Literal["geometry", "model"]


@dataclass(frozen=True)
class SceneObject:
    """One object, mirroring ``oryx_ros/msg/SceneObject``; position and size in the scene's frame."""

    id: int  # the number drawn on it in every marked view
    label: str  # e.g. "red object"
    position: tuple[float, float, float]  # centre of its fused multi-view bounding box, metres
    size: tuple[float, float, float]  # box extent along x, y, z, metres
    confidence: float  # 0..1
    points: int = 0  # fused 3D points that support it
    cameras: tuple[str, ...] = ()  # views in which it is visible


@dataclass(frozen=True)
class SpatialRelation:
    """"subject predicate object", mirroring ``oryx_ros/msg/SpatialRelation``."""

    subject_id: int
    predicate: str  # one of PREDICATES
    object_id: int
    distance: float  # centre-to-centre, metres (0 when unknown, e.g. relations asserted by the model)
    confidence: float  # 0..1
    source: Source = "geometry"
    viewpoint: str = "base_link"  # frame whose axes define left/right/front/behind ("" = unknown)

    def __post_init__(self) -> None:
        if self.predicate not in PREDICATES:
            raise ValueError(f"unknown predicate {self.predicate!r}; expected one of {PREDICATES}")
        if self.source not in ("geometry", "model"):
            raise ValueError(f"source must be 'geometry' or 'model', got {self.source!r}")


@dataclass(frozen=True)
class Box:
    """Axis-aligned box in a REP 103 viewpoint frame (x forward, y left, z up), metres."""

    centre: npt.NDArray[np.float64]  # (3,)
    size: npt.NDArray[np.float64]  # (3,)

    @property
    def low(self) -> npt.NDArray[np.float64]:
        return self.centre - 0.5 * self.size

    @property
    def high(self) -> npt.NDArray[np.float64]:
        return self.centre + 0.5 * self.size

    @staticmethod
    def from_corners(low: npt.ArrayLike, high: npt.ArrayLike) -> Box:
        low_, high_ = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        return Box(0.5 * (low_ + high_), high_ - low_)


@dataclass(frozen=True)
class RelationParams:
    direction_margin_m: float = 0.05  # centres closer than this along an axis are neither left nor right
    contact_m: float = 0.03  # bottom-to-top gap still counted as touching (depth noise + voxel size)
    near_m: float = 0.25  # surface gap under which two objects are near
    predicates: tuple[str, ...] = field(default=PREDICATES)

    def __post_init__(self) -> None:
        unknown = set(self.predicates) - set(PREDICATES)
        if unknown:
            raise ValueError(f"unknown predicates {sorted(unknown)}")
        if min(self.direction_margin_m, self.contact_m, self.near_m) < 0:
            raise ValueError("relation thresholds must be non-negative")


def surface_gap_m(a: Box, b: Box) -> float:
    """Euclidean gap between two axis-aligned boxes (0 when they touch or overlap)."""
    separation = np.maximum(0.0, np.maximum(a.low - b.high, b.low - a.high))
    return float(np.linalg.norm(separation))


def _footprint_overlap_m(a: Box, b: Box) -> float:
    """Smaller of the x and y overlap lengths of the two footprints (negative: the separation)."""
    overlap = np.minimum(a.high[:2], b.high[:2]) - np.maximum(a.low[:2], b.low[:2])
    return float(overlap.min())


def _inside_footprint_m(point_xy: npt.NDArray[np.float64], box: Box) -> float:
    """Signed distance from a point to the box footprint's border, positive inside."""
    return float(np.minimum(point_xy - box.low[:2], box.high[:2] - point_xy).min())


def _scale(a: Box, b: Box, axes: Sequence[int]) -> float:
    return max(float(np.mean([a.size[list(axes)].mean(), b.size[list(axes)].mean()])), 0.02)


_MarginFn = Callable[[Box, Box, RelationParams], tuple[float, float]]


def _left(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return a.centre[1] - b.centre[1] - p.direction_margin_m, _scale(a, b, [1])


def _right(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return b.centre[1] - a.centre[1] - p.direction_margin_m, _scale(a, b, [1])


def _in_front(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return b.centre[0] - a.centre[0] - p.direction_margin_m, _scale(a, b, [0])


def _behind(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return a.centre[0] - b.centre[0] - p.direction_margin_m, _scale(a, b, [0])


def _above(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return min(a.low[2] - b.high[2] + p.contact_m, _footprint_overlap_m(a, b)), _scale(a, b, [0, 1, 2])


def _below(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return _above(b, a, p)


def _on(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    contact = p.contact_m - abs(a.low[2] - b.high[2])
    return min(contact, _inside_footprint_m(a.centre[:2], b)), _scale(a, b, [0, 1])


def _near(a: Box, b: Box, p: RelationParams) -> tuple[float, float]:
    return p.near_m - surface_gap_m(a, b), max(p.near_m, 0.02)


_MARGINS: Final[dict[str, _MarginFn]] = {
    "left_of": _left, "right_of": _right, "in_front_of": _in_front, "behind": _behind,
    "above": _above, "below": _below, "on": _on, "near": _near,
}


def relation_margins(a: Box, b: Box, params: RelationParams | None = None) -> dict[str, float]:
    """Margin in metres of every predicate for "a <predicate> b" (> 0: holds)."""
    params = params or RelationParams()
    return {name: _MARGINS[name](a, b, params)[0] for name in params.predicates}


def compute_relations(
    boxes: Sequence[Box],
    ids: Sequence[int],
    params: RelationParams | None = None,
    *,
    viewpoint: str = "base_link",
) -> list[SpatialRelation]:
    """All relations that hold between ordered pairs of boxes (in the ``viewpoint`` frame).

    Symmetric ``near`` is listed in both directions so that every object's relations can be read
    by filtering on ``subject_id``.
    """
    params = params or RelationParams()
    if len(boxes) != len(ids):
        raise ValueError(f"{len(boxes)} boxes but {len(ids)} ids")
    if len(set(ids)) != len(ids):
        raise ValueError(f"ids must be unique, got {list(ids)}")
    relations: list[SpatialRelation] = []
    for i, (box_a, id_a) in enumerate(zip(boxes, ids, strict=True)):
        for j, (box_b, id_b) in enumerate(zip(boxes, ids, strict=True)):
            if i == j:
                continue
            distance = float(np.linalg.norm(box_a.centre - box_b.centre))
            for name in params.predicates:
                margin, scale = _MARGINS[name](box_a, box_b, params)
                if margin > 0:
                    confidence = float(np.clip(0.5 + 0.5 * margin / scale, 0.5, 1.0))
                    relations.append(
                        SpatialRelation(id_a, name, id_b, distance, confidence, "geometry", viewpoint)
                    )
    return relations


def relation_set(relations: Sequence[SpatialRelation]) -> set[tuple[int, str, int]]:
    """(subject, predicate, object) triples, for comparing relation lists."""
    return {(r.subject_id, r.predicate, r.object_id) for r in relations}
