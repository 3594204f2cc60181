"""Coarse correspondences: the same numbered mark on the same object instance in every view.

Oryx was trained on multi-view frames in which one object carries the same number in every view
("Coarse Correspondences"). Here the instances come from depth (exact, not guessed), so the marks are
consistent by construction: :func:`select_prominent` picks which instances get a mark,
:class:`InstanceTracker` keeps their numbers stable across successive requests while the objects stay
put, :func:`place_marks` chooses where each badge goes in each view and :func:`draw_marks` draws it.

Badge placement: a badge is anchored on a pixel where the instance itself is visible (so the number
unambiguously belongs to it), a few pixels inside the top edge of its visible region, so that most of
the badge lies above the object instead of covering it; badges of different ids avoid each other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

_log = logging.getLogger(__name__)

# Colours for ids 1, 2, ... (RGB), Sasha Trubetskoy's "20 distinct colours" minus the greys and white,
# ordered so that consecutive ids contrast; id k uses MARK_COLOURS_RGB[(k - 1) % len].
MARK_COLOURS_RGB: Final[tuple[tuple[int, int, int], ...]] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128),
)


def mark_colour(mark_id: int) -> tuple[int, int, int]:
    """RGB colour of the badge of ``mark_id`` (ids start at 1)."""
    if mark_id < 1:
        raise ValueError(f"mark ids start at 1, got {mark_id}")
    return MARK_COLOURS_RGB[(mark_id - 1) % len(MARK_COLOURS_RGB)]


@dataclass(frozen=True)
class MarkParams:
    max_marks: int = 8  # K: instances that get a number (the model reads a handful reliably)
    # Badge radius as a fraction of the image's shorter side: 0.04 → 19 px at 640x480, which is still
    # ~15 px (two-digit numbers readable) after the model's resize to ~512x384 / 384² lowres.
    radius_fraction: float = 0.04
    min_radius_px: int = 8
    edge_inset_px: int = 3  # anchor this far inside the visible region's edge (robust to boundary noise)
    min_visible_px: int = 20  # smaller visible regions get no badge in that view

    def __post_init__(self) -> None:
        if self.max_marks < 0:
            raise ValueError(f"max_marks must be >= 0, got {self.max_marks}")
        if not 0 < self.radius_fraction < 0.5:
            raise ValueError(f"radius_fraction must be in (0, 0.5), got {self.radius_fraction}")

    def radius_px(self, height: int, width: int) -> int:
        return max(self.min_radius_px, round(self.radius_fraction * min(height, width)))


@dataclass(frozen=True)
class Mark:
    """One badge in one view: ``(u, v)`` is its centre (column, row) and lies on the instance's pixels."""

    mark_id: int
    u: int
    v: int
    radius_px: int


# ---------------------------------------------------------------------------------------------------------
# Which instances, which ids
# ---------------------------------------------------------------------------------------------------------


def prominence_order(visible_px: Sequence[Mapping[str, int]]) -> list[int]:
    """Indices of instances, most prominent first: seen in the most views, then with the most visible
    pixels summed over views (apparent size, which grows with both physical size and nearness)."""
    return sorted(
        range(len(visible_px)),
        key=lambda i: (-len(visible_px[i]), -sum(visible_px[i].values()), i),
    )


def select_prominent(visible_px: Sequence[Mapping[str, int]], k: int) -> list[int]:
    """The ``k`` most prominent instances (see :func:`prominence_order`) that are visible in some view."""
    return [i for i in prominence_order(visible_px) if visible_px[i]][:k]


@dataclass
class _Track:
    track_id: int
    centre_m: npt.NDArray[np.float64]
    missed: int = 0


class InstanceTracker:
    """Stable ids for instances across successive requests, by 3D centre proximity.

    Centres must be in a frame fixed to the scene (world/odom, or the base of a robot that does not
    move); otherwise a moving robot will see its objects jump and get new ids. Matching is greedy on
    ascending distance with a gate: for objects farther apart than twice the gate this gives the same
    answer as the Hungarian assignment. New objects get new ids (never reused); a track that goes
    unmatched for more than ``max_missed`` requests is forgotten.
    """

    def __init__(self, gate_m: float = 0.15, max_missed: int = 5) -> None:
        if gate_m <= 0:
            raise ValueError(f"gate_m must be positive, got {gate_m}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.gate_m = gate_m
        self.max_missed = max_missed
        self._tracks: list[_Track] = []
        self._next_id = 1

    @property
    def track_ids(self) -> list[int]:
        return [track.track_id for track in self._tracks]

    def assign(self, centres_m: npt.ArrayLike) -> list[int]:
        """(N, 3) centres (in priority order: new ids are handed out in this order) → N ids."""
        centres = np.asarray(centres_m, dtype=np.float64).reshape(-1, 3)
        ids: list[int | None] = [None] * len(centres)
        matched_tracks: set[int] = set()
        if self._tracks and len(centres):
            track_centres = np.stack([track.centre_m for track in self._tracks])
            distances = np.linalg.norm(centres[:, None, :] - track_centres[None, :, :], axis=2)  # (N, T)
            for flat in np.argsort(distances, axis=None, kind="stable"):
                new_index, track_index = np.unravel_index(flat, distances.shape)
                if distances[new_index, track_index] > self.gate_m:
                    break
                if ids[new_index] is not None or track_index in matched_tracks:
                    continue
                track = self._tracks[track_index]
                ids[new_index] = track.track_id
                track.centre_m = centres[new_index].copy()
                track.missed = 0
                matched_tracks.add(int(track_index))
        for track_index, track in enumerate(self._tracks):
            if track_index not in matched_tracks:
                track.missed += 1
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        for new_index, assigned in enumerate(ids):
            if assigned is None:
                ids[new_index] = self._next_id
                self._tracks.append(_Track(self._next_id, centres[new_index].copy()))
                self._next_id += 1
        return [int(i) for i in ids if i is not None]


# ---------------------------------------------------------------------------------------------------------
# Where, and drawing
# ---------------------------------------------------------------------------------------------------------


def _anchor_candidates(mask: npt.NDArray[np.bool_], inset_px: int) -> npt.NDArray[np.int64]:
    """(M, 2) (u, v) pixels of the mask's largest blob at least ``inset_px`` inside its edge, best first:
    near the top edge, and near the blob's horizontal middle."""
    n_labels, blobs, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n_labels <= 1:
        return np.zeros((0, 2), dtype=np.int64)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    blob = (blobs == largest).astype(np.uint8)
    inside = cv2.distanceTransform(blob, cv2.DIST_L2, 3)
    inset = min(float(inset_px), float(inside.max()))  # thin blobs: take their middle line
    rows, cols = np.nonzero((inside >= inset) & (blob > 0))
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    middle = 0.5 * (stats[largest, cv2.CC_STAT_LEFT] * 2 + stats[largest, cv2.CC_STAT_WIDTH])
    score = rows + 0.3 * np.abs(cols - middle)
    order = np.argsort(score, kind="stable")
    return np.column_stack([cols[order], rows[order]])


def place_marks(
    label_image: npt.NDArray[np.int32],
    instance_to_mark: Mapping[int, int],
    params: MarkParams,
) -> list[Mark]:
    """Badges for one view.

    ``label_image``: (H, W) instance label + 1 per pixel (0 = none). ``instance_to_mark``: instance
    label (0-based) → mark id. Marks come back in that order; the smallest visible region chooses its
    place first, as it has the fewest places to choose from.
    """
    height, width = label_image.shape
    radius = params.radius_px(height, width)
    areas = np.bincount(label_image.ravel(), minlength=max(instance_to_mark, default=0) + 2)
    marks: list[Mark] = []
    # Smallest visible region first: it has the fewest places for a badge; larger ones can make way.
    for instance, mark_id in sorted(instance_to_mark.items(), key=lambda item: areas[item[0] + 1]):
        mask = label_image == instance + 1
        if areas[instance + 1] < params.min_visible_px:
            continue
        candidates = _anchor_candidates(mask, params.edge_inset_px)
        if len(candidates) == 0:
            continue
        # Prefer anchors whose badge stays in the image and clear of the badges already placed.
        cost = np.zeros(len(candidates))
        for other in marks:
            gap = np.hypot(candidates[:, 0] - other.u, candidates[:, 1] - other.v) - (radius + other.radius_px)
            cost += np.clip(-gap, 0, None)
        clipped = (
            np.clip(radius - candidates[:, 0], 0, None) + np.clip(candidates[:, 0] + radius - (width - 1), 0, None)
            + np.clip(radius - candidates[:, 1], 0, None) + np.clip(candidates[:, 1] + radius - (height - 1), 0, None)
        )
        cost += clipped
        best = int(np.argmin(cost + 1e-3 * np.arange(len(candidates)) / len(candidates)))  # ties: earlier = better
        if cost[best] > 0:
            _log.debug("badge %d overlaps another badge or the image edge by %.1f px", mark_id, cost[best])
        marks.append(Mark(mark_id, int(candidates[best, 0]), int(candidates[best, 1]), radius))
    order = {mark_id: rank for rank, mark_id in enumerate(instance_to_mark.values())}
    return sorted(marks, key=lambda mark: order[mark.mark_id])


def draw_marks(rgb: npt.NDArray[np.uint8], marks: Sequence[Mark]) -> npt.NDArray[np.uint8]:
    """A copy of the (H, W, 3) RGB image with each mark drawn as a numbered badge.

    A badge is a disc in the id's colour with a white then a black outline (visible on any background),
    and the number in black or white, whichever contrasts with the disc.
    """
    image = np.ascontiguousarray(rgb.copy())
    for mark in marks:
        colour = mark_colour(mark.mark_id)
        centre = (mark.u, mark.v)
        ring = max(1, mark.radius_px // 8)
        cv2.circle(image, centre, mark.radius_px + ring, (0, 0, 0), -1, cv2.LINE_AA)
        cv2.circle(image, centre, mark.radius_px, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(image, centre, mark.radius_px - ring, colour, -1, cv2.LINE_AA)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        text_colour = (0, 0, 0) if luminance > 140 else (255, 255, 255)
        text = str(mark.mark_id)
        thickness = max(1, mark.radius_px // 7)
        font = cv2.FONT_HERSHEY_SIMPLEX
        # Largest font scale whose text fits in ~1.3 radii wide and ~1.0 radius high.
        (w1, h1), _ = cv2.getTextSize(text, font, 1.0, thickness)
        scale = min(1.3 * mark.radius_px / w1, 1.0 * mark.radius_px / h1)
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        origin = (round(mark.u - tw / 2), round(mark.v + th / 2))
        cv2.putText(image, text, origin, font, scale, text_colour, thickness, cv2.LINE_AA)
    return image
