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
on            A rests on B (support contact, see below) and nothing of B lies over A
in            A rests on B and part of B lies over A (a shelf board above it): A is in a shelf, cabinet
under         part of B lies over A, A does not rest on B, A's centre is over B's footprint and A's bottom is
              not below B's bottom (an object on the floor under a table, between its legs)
near          the gap between the two boxes' surfaces is at most ``near_m`` (holds together with ``on``)
============  ==========================================================================================

Support contact (:class:`Contact`, per ordered pair) comes from the objects' shapes, not their boxes:
:func:`contacts_from_parts` for objects made of known boxes (ground truth: a table's top and legs),
:func:`contacts_from_points` for measured objects. Without contacts, "A rests on B" is the box test
|A's bottom - B's top| <= ``contact_m`` with A's centre over B's footprint, and ``in``/``under`` never hold.

:func:`select_relations` then keeps what a consumer needs: for each object the relations with its
``per_object`` nearest neighbours (surface gap), and of two inverse relations ("3 left_of 5", "5 right_of
3") only the one whose subject is the smaller object, unless ``inverse`` is set.

``distance`` is always the centre-to-centre distance in metres (as ``SpatialRelation.msg`` states);
``confidence`` is 0.5 + 0.5 * margin / scale clipped to [0.5, 1], where scale is the mean extent of the
two boxes along the axis the predicate tests: 0.5 on the decision boundary, 1 when the margin is as
large as the objects themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

PREDICATES: Final[tuple[str, ...]] = (
    "left_of", "right_of", "in_front_of", "behind", "above", "below", "on", "in", "under", "near",
)
COVER_REACH_M: Final = 0.1  # B covers A when B is over A's footprint grown by this much on each side
# Predicates decided from support contact (Contact), not from the two boxes alone.
SUPPORT_PREDICATES: Final = frozenset({"on", "in", "under"})
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
    label: str  # e.g. "mug" (named by the model) or "red object" (colour only)
    position: tuple[float, float, float]  # centre of its fused multi-view bounding box, metres
    size: tuple[float, float, float]  # box extent along x, y, z, metres
    confidence: float  # 0..1
    points: int = 0  # fused 3D points that support it
    cameras: tuple[str, ...] = ()  # views in which it is visible
    colour: str = ""  # perceptual colour name of its robust colour, e.g. "orange"
    label_source: str = "colour"  # "model" (named by Oryx from the marked views) or "colour" (the fallback)


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
    per_object: int = 0  # keep relations with each object's this many nearest neighbours (0 = all pairs)
    inverse: bool = True  # keep both of two inverse relations (False: only the smaller object as subject)

    def __post_init__(self) -> None:
        unknown = set(self.predicates) - set(PREDICATES)
        if unknown:
            raise ValueError(f"unknown predicates {sorted(unknown)}")
        if min(self.direction_margin_m, self.contact_m, self.near_m) < 0:
            raise ValueError("relation thresholds must be non-negative")
        if self.per_object < 0:
            raise ValueError(f"per_object must be >= 0, got {self.per_object}")


@dataclass(frozen=True)
class Contact:
    """Support contact of an ordered pair (A, B); viewpoint-independent (needs z up only)."""

    rests_on: bool  # A's bottom touches B where B is under A (a table top, a shelf board)
    covered: bool  # some of B lies over A's footprint (grown by COVER_REACH_M), above A's top


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
    """Margin in metres of every box predicate for "a <predicate> b" (> 0: holds); ``on`` is the box
    test (see the module docstring), ``in`` and ``under`` need contacts and are left out."""
    params = params or RelationParams()
    return {name: _MARGINS[name](a, b, params)[0] for name in params.predicates if name in _MARGINS}


def _footprint_contains(box: Box, xy: npt.NDArray[np.float64]) -> bool:
    return bool(np.all(xy >= box.low[:2]) and np.all(xy <= box.high[:2]))


def contacts_from_parts(parts: Sequence[Sequence[Box]], params: RelationParams | None = None) -> dict[
        tuple[int, int], Contact]:
    """Contacts between objects made of boxes (index pairs): A rests on B when A's bottom is within
    ``contact_m`` of the top of a part of B under A's centre; B covers A when a part of B over A's
    footprint has its bottom at or above A's top (within ``contact_m``)."""
    params = params or RelationParams()
    outer = [Box.from_corners(np.min([p.low for p in ps], axis=0), np.max([p.high for p in ps], axis=0))
             for ps in parts]
    contacts: dict[tuple[int, int], Contact] = {}
    for i, a in enumerate(outer):
        for j, b_parts in enumerate(parts):
            if i == j:
                continue
            raised = a.low[2] >= min(p.low[2] for p in b_parts) + params.contact_m  # A stands on B, not beside
            rests = raised and any(abs(a.low[2] - p.high[2]) <= params.contact_m
                                   and _footprint_contains(p, a.centre[:2]) for p in b_parts)
            reach = Box(a.centre, a.size + np.array([2 * COVER_REACH_M, 2 * COVER_REACH_M, 0.0]))
            covered = any(p.low[2] >= a.high[2] - params.contact_m and _footprint_overlap_m(reach, p) > 0
                          for p in b_parts)
            contacts[(i, j)] = Contact(rests, covered)
    return contacts


def contacts_from_points(
    points: Sequence[npt.NDArray[np.floating]], boxes: Sequence[Box], params: RelationParams | None = None,
    *, reach_m: float = 0.02, min_points: int = 5,
) -> dict[tuple[int, int], Contact]:
    """Contacts between measured objects (index pairs; points and boxes in one z-up frame).

    A rests on B when B has at least ``min_points`` points within ``reach_m`` of A's footprint whose
    height is within ``contact_m`` of A's bottom, or when the box test holds (A's bottom at B's top,
    A's centre over B's footprint: a top face hidden under A). B covers A when B has that many points
    over A's footprint above A's top.
    """
    params = params or RelationParams()
    contacts: dict[tuple[int, int], Contact] = {}
    clouds = [np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in points]
    for i, a in enumerate(boxes):
        low_xy, high_xy = a.low[:2] - reach_m, a.high[:2] + reach_m
        for j, b in enumerate(boxes):
            if i == j:
                continue
            cloud = clouds[j]
            over = np.all((cloud[:, :2] >= low_xy) & (cloud[:, :2] <= high_xy), axis=1)
            z = cloud[over, 2]
            touching = np.count_nonzero(np.abs(z - a.low[2]) <= params.contact_m) >= min_points
            raised = a.low[2] >= b.low[2] + params.contact_m  # A stands on B, not beside it on the same floor
            rests = raised and (touching or _on(a, b, params)[0] > 0)
            # Surfaces over an object are seen at grazing angles and sparsely: look a little around it.
            inner = np.all((cloud[:, :2] >= a.low[:2] - COVER_REACH_M) & (cloud[:, :2] <= a.high[:2] + COVER_REACH_M),
                           axis=1)
            covered = np.count_nonzero(cloud[inner, 2] > a.high[2] + 0.5 * params.contact_m) >= min_points
            contacts[(i, j)] = Contact(bool(rests), bool(covered))
    return contacts


def _support_holds(name: str, a: Box, b: Box, contact: Contact, params: RelationParams) -> bool:
    if name == "on":
        return contact.rests_on and not contact.covered
    if name == "in":
        return contact.rests_on and contact.covered
    return (contact.covered and not contact.rests_on and _footprint_contains(b, a.centre[:2])
            and a.low[2] >= b.low[2] - params.contact_m)


def compute_relations(
    boxes: Sequence[Box],
    ids: Sequence[int],
    params: RelationParams | None = None,
    *,
    viewpoint: str = "base_link",
    contacts: Mapping[tuple[int, int], Contact] | None = None,
) -> list[SpatialRelation]:
    """All relations that hold between ordered pairs of boxes (in the ``viewpoint`` frame), then
    :func:`select_relations` with ``params.per_object`` and ``params.inverse``.

    ``contacts``: (i, j) box positions → Contact, for on/in/under (see the module docstring). With the
    default params, symmetric ``near`` is listed in both directions so that every object's relations can
    be read by filtering on ``subject_id``.
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
            contact = None if contacts is None else contacts.get((i, j))
            for name in params.predicates:
                margin, scale = _MARGINS[name](box_a, box_b, params) if name in _MARGINS else (0.0, 1.0)
                if name in SUPPORT_PREDICATES and contact is not None:
                    if not _support_holds(name, box_a, box_b, contact, params):
                        continue
                    # Support contact is a yes/no fact; confidence from the box margin when it is clear.
                    margin = max(margin, 0.5 * scale)
                if margin > 0:
                    confidence = float(np.clip(0.5 + 0.5 * margin / scale, 0.5, 1.0))
                    relations.append(
                        SpatialRelation(id_a, name, id_b, distance, confidence, "geometry", viewpoint)
                    )
    return select_relations(relations, dict(zip(ids, boxes, strict=True)), params)


def select_relations(
    relations: Sequence[SpatialRelation], boxes: Mapping[int, Box], params: RelationParams
) -> list[SpatialRelation]:
    """The relations a consumer needs (see the module docstring); ``boxes`` by id."""
    kept = list(relations)
    if params.per_object > 0:
        ids = sorted(boxes)
        neighbours: dict[int, set[int]] = {}
        for a in ids:
            others = sorted((b for b in ids if b != a), key=lambda b: (
                surface_gap_m(boxes[a], boxes[b]), float(np.linalg.norm(boxes[a].centre - boxes[b].centre)), b))
            neighbours[a] = set(others[:params.per_object])
        kept = [r for r in kept if r.object_id in neighbours[r.subject_id] or r.subject_id in neighbours[r.object_id]]
    if not params.inverse:
        present = {(r.subject_id, r.predicate, r.object_id) for r in kept}

        def rank(object_id: int) -> tuple[float, int]:
            return float(np.prod(boxes[object_id].size)), object_id  # smaller object first, then lower id

        kept = [r for r in kept
                if not (INVERSE_PREDICATE.get(r.predicate) is not None
                        and (r.object_id, INVERSE_PREDICATE[r.predicate], r.subject_id) in present
                        and rank(r.subject_id) > rank(r.object_id))]
    return kept


def relation_set(relations: Sequence[SpatialRelation]) -> set[tuple[int, str, int]]:
    """(subject, predicate, object) triples, for comparing relation lists."""
    return {(r.subject_id, r.predicate, r.object_id) for r in relations}
