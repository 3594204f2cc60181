"""Object instances from a fused multi-view point cloud: support planes out, clusters in, boxes, visibility.

All 3D quantities are in the *common* frame of the fusion (world, or the robot base when there is no
odometry), which must have z up (REP 103 / REP 105): "horizontal" support planes and the vertical
snapping of boxes onto them rely on it.

Pipeline (:func:`segment_instances`):

1. RANSAC planes (open3d ``segment_plane`` on a random subset, inliers then taken from all points),
   repeated while the largest one is big; a horizontal one (floor, table top) is a *support plane*
   and is removed together with a thin band around it; a large tilted one (a wall) is only excluded
   from the next searches; a second horizontal plane just above a support plane is its noise
   layer (removed, not a support). The plane's extent is its largest connected patch on a 2D grid,
   so the slice of a tall object that happens to cross the table-top height is not mistaken for
   part of the table.
2. DBSCAN (open3d ``cluster_dbscan``), then a cluster made of touching objects of clearly different
   colours (a box stacked on another) is split by colour (:func:`split_by_colour`). Flat horizontal
   clusters lying in a support plane are pieces of it that its main patch missed, and are dropped;
   other flat clusters next to a solid one of their colour are faces cut off it, and join it.
3. Per instance: its axis-aligned box in the common frame over all views' points; the bottom (top) is
   snapped down (up) onto a support plane that it rests on (that rests on it), since the plane band
   took the few centimetres next to the contact away.
4. Visibility: the instance's points are projected into each view and kept where the view's own
   depth agrees (occlusion check), then splatted into a per-view label image.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from oryx_ros.spatial.geometry import PosedView, fuse_views, invert_pose, project_points, transform_points

_log = logging.getLogger(__name__)

# Chromaticity is undefined for near-black voxels; darker ones (mean channel, of 1) do not vote for colours.
_DARK_INTENSITY: Final = 0.08
_CHROMA_BIN: Final = 0.02  # histogram bin of the rg-chromaticity modes
_RANSAC_MAX_POINTS: Final = 20_000  # plane hypotheses are scored on at most this many points
_RANSAC_CONFIDENCE: Final = 0.9999  # stop once a better plane is this unlikely (open3d's default: 1 - 1e-8)
# Support-plane footprints are rasterised on a grid of this many voxels per cell.
_PLANE_CELL_VOXELS: Final = 3


@dataclass(frozen=True)
class SegmentationParams:
    """Tuning of :func:`segment_instances`; lengths in metres."""

    voxel_size_m: float = 0.01  # fused cloud resolution; 1 cm keeps 5 cm objects and runs in ~100 ms
    min_depth_m: float = 0.1
    smooth_sigma_m: float | None = 0.04  # bilateral depth filter before fusion (None: off); see smooth_depth
    max_depth_m: float = 4.0  # consumer RGB-D noise exceeds ~2.5 cm beyond this: too coarse for instances
    plane_distance_m: float = 0.015  # RANSAC inlier distance (~3 sigma of depth noise at 2 m)
    plane_band_below_m: float = 0.03  # also drop points this far *under* a support plane (noise; nothing rests there)
    plane_merge_m: float = 0.05  # a horizontal plane this close to a support plane is its noise layer
    plane_min_area_m2: float = 0.25  # smaller planes are object faces, not supports (a 50 cm square)
    plane_max_tilt_deg: float = 15.0  # a support plane's normal is within this angle of +z
    max_planes: int = 6  # RANSAC rounds (support + excluded tilted planes)
    ransac_iterations: int = 500
    cluster_eps_m: float = 0.025  # DBSCAN neighbourhood (2.5 voxels)
    cluster_min_points: int = 10  # DBSCAN core-point density
    min_instance_points: int = 40  # smaller clusters are dropped (and counted)
    colour_split: bool = True  # split clusters at sharp colour edges (touching objects)
    colour_split_chroma: float = 0.08  # rg-chromaticity distance between two objects' colours that splits them
    colour_split_min_thickness_m: float = 0.012  # pieces thinner than this are surface patches, not objects
    fragment_merge_m: float = 0.05  # a flat cluster this close to a solid one of its colour joins it
    support_snap_m: float = 0.04  # box bottom/top within this gap of a support plane is snapped onto it
    wall_min_area_m2: float = 0.5  # a vertical plane this large, seen from one side only, is background
    part_below_m: float = 0.05  # a cluster reaching this far under a raised support plane is part of its object
    occlusion_abs_m: float = 0.03  # a projected point is visible if |z - measured depth| <= abs + rel * z
    occlusion_rel: float = 0.02
    min_visible_px: int = 20  # fewer labelled pixels in a view = not visible there
    seed: int = 0  # RANSAC seed (open3d's global generator), for repeatable results

    def __post_init__(self) -> None:
        for name in ("voxel_size_m", "plane_distance_m", "cluster_eps_m", "plane_min_area_m2"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.min_depth_m >= self.max_depth_m:
            raise ValueError(f"min_depth_m {self.min_depth_m} must be below max_depth_m {self.max_depth_m}")
        if not 0 < self.plane_max_tilt_deg < 90:
            raise ValueError(f"plane_max_tilt_deg must be in (0, 90), got {self.plane_max_tilt_deg}")


@dataclass(frozen=True)
class SupportPlane:
    """A large horizontal plane that was removed (floor, table top); ``normal . p + offset = 0``."""

    normal: npt.NDArray[np.float64]  # (3,) unit, pointing up (n_z > 0)
    offset: float
    height_m: float  # median z of its inliers
    area_m2: float  # area of its largest connected patch
    cell_origin_xy: npt.NDArray[np.float64]  # (2,) xy of the footprint grid's corner
    cell_size_m: float
    footprint: npt.NDArray[np.bool_] = field(repr=False)  # (nx, ny) cells covered by the patch (dilated)
    inliers: int = 0

    def covers(self, xy: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """(N, 2) points → (N,) whether each lies over the plane's patch."""
        cells = np.floor((np.asarray(xy) - self.cell_origin_xy) / self.cell_size_m).astype(np.int64)
        inside = np.all((cells >= 0) & (cells < self.footprint.shape), axis=1)
        result = np.zeros(len(cells), dtype=bool)
        result[inside] = self.footprint[cells[inside, 0], cells[inside, 1]]
        return result

    def signed_distance(self, points: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        return np.asarray(points, dtype=np.float64) @ self.normal + self.offset


def _covers_grid(origin: npt.NDArray[np.float64], footprint: npt.NDArray[np.bool_], cell_m: float,
                 uv: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
    cells = np.floor((np.asarray(uv) - origin) / cell_m).astype(np.int64)
    inside = np.all((cells >= 0) & (cells < footprint.shape), axis=1)
    result = np.zeros(len(cells), dtype=bool)
    result[inside] = footprint[cells[inside, 0], cells[inside, 1]]
    return result


@dataclass(frozen=True, eq=False)
class Instance:
    """One segmented object, in the common frame. ``index`` is 0-based within one segmentation."""

    index: int
    points_m: npt.NDArray[np.float32]  # (N, 3) fused voxel centres
    colours_rgb: npt.NDArray[np.uint8]  # (N, 3)
    bbox_min_m: npt.NDArray[np.float64]  # (3,) after snapping onto support planes
    bbox_max_m: npt.NDArray[np.float64]
    mean_rgb: npt.NDArray[np.uint8]  # (3,)
    rests_on_plane: int | None  # index into SegmentationResult.planes when the bottom was snapped
    visible_px: dict[str, int]  # view key → labelled pixels in that view (only views where it is visible)

    @property
    def centre_m(self) -> npt.NDArray[np.float64]:
        return 0.5 * (self.bbox_min_m + self.bbox_max_m)

    @property
    def size_m(self) -> npt.NDArray[np.float64]:
        return self.bbox_max_m - self.bbox_min_m

    @property
    def n_points(self) -> int:
        return len(self.points_m)


@dataclass(frozen=True, eq=False)
class SegmentationResult:
    instances: list[Instance]
    planes: list[SupportPlane]
    # view key → (H, W) int32 label image: instance index + 1, 0 where no instance is visible
    label_images: dict[str, npt.NDArray[np.int32]]
    counts: dict[str, int]  # what was fused, removed or dropped at each step
    timings_s: dict[str, float]
    # The whole fused cloud (N, 3) in the common frame, planes and background included: what occludes
    # what when the objects are projected into a view without depth.
    fused_points_m: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 3)), repr=False)
    plane_owner: dict[int, int] = field(default_factory=dict)  # support plane index → instance index (a top)


# ---------------------------------------------------------------------------------------------------------
# Support planes
# ---------------------------------------------------------------------------------------------------------


def _largest_patch(
    xy: npt.NDArray[np.float64], cell_m: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], float]:
    """Rasterise (N, 2) xy points; return (grid origin, dilated mask of the largest 8-connected patch, area m²)."""
    origin = xy.min(axis=0) - cell_m
    cells = np.floor((xy - origin) / cell_m).astype(np.int64)
    shape = tuple(cells.max(axis=0) + 2)
    grid = np.zeros(shape, dtype=np.uint8)
    grid[cells[:, 0], cells[:, 1]] = 1
    # Close one-cell gaps (sparse rows at grazing angles) before judging connectivity.
    closed = cv2.morphologyEx(grid, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    if n_labels <= 1:
        return origin, np.zeros(shape, dtype=bool), 0.0
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    patch = labels == largest
    area = float(np.count_nonzero(patch & (grid > 0))) * cell_m * cell_m
    dilated = cv2.dilate(patch.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return origin, dilated, area


def _plane_basis(normal: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """(3, 2) two orthonormal directions spanning the plane with this unit normal."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    first = np.cross(normal, helper)
    first /= np.linalg.norm(first)
    return np.column_stack([first, np.cross(normal, first)])


def remove_support_planes(
    points_m: npt.NDArray[np.float64], params: SegmentationParams
) -> tuple[npt.NDArray[np.bool_], list[SupportPlane], int]:
    """Find and remove large horizontal planes.

    Returns (keep mask (N,), support planes, number of large tilted planes that were left in place).
    """
    keep, planes, tilted, _, _ = find_planes(points_m, params)
    return keep, planes, tilted


def _background_wall(
    points_m: npt.NDArray[np.float64], normal: npt.NDArray[np.float64], offset: float,
    in_plane_origin: npt.NDArray[np.float64], footprint: npt.NDArray[np.bool_], cell_m: float,
    viewpoints_m: npt.NDArray[np.float64] | None, params: SegmentationParams,
) -> tuple[bool, npt.NDArray[np.float64], float]:
    """Whether a large vertical plane is background (a wall, a cabinet front): every camera is on one
    side of it and almost nothing was measured behind its patch. Returns (is background, normal, offset)
    with the normal turned towards the cameras."""
    if viewpoints_m is None or not len(viewpoints_m):
        return False, normal, offset
    side = viewpoints_m @ normal + offset
    if not (np.all(side > 0) or np.all(side < 0)):
        return False, normal, offset
    if side[0] < 0:
        normal, offset = -normal, -offset
    signed = points_m @ normal + offset
    behind = signed < -3 * params.plane_distance_m
    basis = _plane_basis(normal)
    covered = _covers_grid(in_plane_origin, footprint, cell_m, points_m[behind] @ basis)
    inliers = max(1, int(np.count_nonzero(np.abs(signed) <= params.plane_distance_m)))
    return bool(np.count_nonzero(covered) <= 0.01 * inliers), normal, offset


def find_planes(
    points_m: npt.NDArray[np.float64], params: SegmentationParams,
    viewpoints_m: npt.NDArray[np.float64] | None = None,
) -> tuple[npt.NDArray[np.bool_], list[SupportPlane], int, npt.NDArray[np.int64], int]:
    """Support planes (removed, see the module docstring) and vertical background planes (removed when
    ``viewpoints_m``, the (V, 3) camera centres, show that they bound the scene).

    Returns (keep mask (N,), support planes, tilted planes left in place, (N,) index of the support
    plane whose band removed each point (-1: none; noise layers count as their plane), walls removed).
    """
    keep = np.ones(len(points_m), dtype=bool)
    removed_by = np.full(len(points_m), -1, dtype=np.int64)
    walls = 0
    searchable = np.ones(len(points_m), dtype=bool)
    planes: list[SupportPlane] = []
    tilted = merged = 0
    cell_m = _PLANE_CELL_VOXELS * params.voxel_size_m
    min_cos_tilt = math.cos(math.radians(params.plane_max_tilt_deg))
    # A plane of the minimum area holds about area / voxel² voxel centres; fewer inliers cannot be one.
    min_inliers = int(params.plane_min_area_m2 / params.voxel_size_m**2 * 0.5)
    o3d.utility.random.seed(params.seed)
    rng = np.random.default_rng(params.seed)
    for _ in range(params.max_planes):
        candidates = np.flatnonzero(keep & searchable)
        if len(candidates) < max(min_inliers, 3):
            break
        # RANSAC scores every hypothesis on every point; a random subset finds the same dominant plane.
        sample = candidates
        if len(candidates) > _RANSAC_MAX_POINTS:
            sample = np.sort(rng.choice(candidates, _RANSAC_MAX_POINTS, replace=False))
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points_m[sample]))
        model, _ = cloud.segment_plane(params.plane_distance_m, 3, params.ransac_iterations, _RANSAC_CONFIDENCE)
        normal = np.asarray(model[:3], dtype=np.float64)
        scale = np.linalg.norm(normal)
        normal, offset = normal / scale, float(model[3]) / scale
        if normal[2] < 0:
            normal, offset = -normal, -offset
        candidate_distance = np.abs(points_m[candidates] @ normal + offset)
        inliers = candidates[candidate_distance <= params.plane_distance_m]
        if len(inliers) < min_inliers:
            break
        horizontal = normal[2] >= min_cos_tilt
        # Judge the patch in the plane's own coordinates; for a support plane they are x and y (the
        # footprint is then directly usable from above), for a wall two in-plane directions.
        in_plane = points_m[inliers, :2] if horizontal else points_m[inliers] @ _plane_basis(normal)
        origin, footprint, area = _largest_patch(in_plane, cell_m)
        if area < params.plane_min_area_m2:
            break
        if not horizontal:
            vertical = abs(normal[2]) <= math.sin(math.radians(params.plane_max_tilt_deg))
            if vertical and area >= params.wall_min_area_m2:
                background, normal, offset = _background_wall(
                    points_m, normal, offset, origin, footprint, cell_m, viewpoints_m, params)
                if background:
                    signed = points_m @ normal + offset
                    band = (signed >= -params.plane_band_below_m) & (signed <= params.plane_distance_m)
                    band &= _covers_grid(origin, footprint, cell_m, points_m @ _plane_basis(normal))
                    keep &= ~band
                    walls += 1
                    _log.debug("background plane with normal %s (%.2f m²) removed", normal.round(2), area)
                    continue
            # A tilted plane: stop searching its points, keep them (objects may lean on it).
            searchable[inliers] = False
            tilted += 1
            _log.debug("plane with normal %s (%.2f m²) is not horizontal; left in place", normal.round(2), area)
            continue
        plane = SupportPlane(
            normal=normal,
            offset=offset,
            height_m=float(np.median(points_m[inliers, 2])),
            area_m2=area,
            cell_origin_xy=origin,
            cell_size_m=cell_m,
            footprint=footprint,
            inliers=len(inliers),
        )
        signed = plane.signed_distance(points_m)
        in_band = (signed >= -params.plane_band_below_m) & (signed <= params.plane_distance_m)
        in_band &= plane.covers(points_m[:, :2])
        fresh = in_band & keep
        keep &= ~in_band
        # Far from the cameras depth noise exceeds the band, and what is left of a floor looks like a
        # second floor a few centimetres higher: remove it the same way but keep the first as the support.
        parent = next((k for k, other in enumerate(planes)
                       if abs(plane.height_m - other.height_m) < params.plane_merge_m), None)
        removed_by[fresh] = len(planes) if parent is None else parent
        if parent is not None:
            merged += 1
            _log.debug("plane at z=%.3f m is the noise layer of a support plane; removed %d points",
                       plane.height_m, in_band.sum())
            continue
        planes.append(plane)
        _log.debug("support plane at z=%.3f m, %.2f m², %d points removed", plane.height_m, area, in_band.sum())
    if merged:
        _log.debug("%d noise layers merged into support planes", merged)
    return keep, planes, tilted, removed_by, walls


# ---------------------------------------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------------------------------------


def _connected_components(
    n_nodes: int, edges_i: npt.NDArray[np.int64], edges_j: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """(n,) component label (the smallest node index in it) by min-label propagation with pointer jumping.

    Hand-written because scipy (csgraph) is not a dependency; converges in O(log diameter) rounds.
    """
    labels = np.arange(n_nodes)
    while True:
        low = np.minimum(labels[edges_i], labels[edges_j])
        updated = labels.copy()
        np.minimum.at(updated, labels[edges_i], low)  # hook roots onto the smaller neighbouring root
        np.minimum.at(updated, labels[edges_j], low)
        while True:  # pointer jumping: point every node at its root
            jumped = updated[updated]
            if np.array_equal(jumped, updated):
                break
            updated = jumped
        if np.array_equal(updated, labels):
            return labels
        labels = updated


def _neighbour_edges(
    points_m: npt.NDArray[np.float64], cell_m: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pairs of points in the same or adjacent grid cells (a 3x3x3 neighbourhood), vectorised by hashing."""
    cells = np.floor(points_m / cell_m).astype(np.int64)
    cells -= cells.min(axis=0)
    dims = cells.max(axis=0) + 3
    keys = ((cells[:, 0] + 1) * dims[1] + (cells[:, 1] + 1)) * dims[2] + (cells[:, 2] + 1)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    # Voxel centres are about one per cell, but a cell can hold a few when the grids are offset.
    per_cell = int(np.unique(sorted_keys, return_counts=True)[1].max())
    edges_i: list[npt.NDArray[np.int64]] = []
    edges_j: list[npt.NDArray[np.int64]] = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                query = keys + (dx * dims[1] + dy) * dims[2] + dz
                lo = np.searchsorted(sorted_keys, query, side="left")
                hi = np.searchsorted(sorted_keys, query, side="right")
                for slot in range(per_cell):
                    has = lo + slot < hi
                    i = np.flatnonzero(has)
                    j = order[lo[has] + slot]
                    distinct = i < j
                    edges_i.append(i[distinct])
                    edges_j.append(j[distinct])
    return np.concatenate(edges_i), np.concatenate(edges_j)


def _chroma_modes(chroma: npt.NDArray[np.float64], min_mass: int, separation: float) -> npt.NDArray[np.float64]:
    """(K, 2) dominant rg-chromaticities of a set of voxels: smoothed-histogram peaks holding at least
    ``min_mass`` voxels within ``separation``, strongest first, at least ``separation`` apart."""
    bins = int(np.ceil(1.0 / _CHROMA_BIN))
    cells = np.clip((chroma / _CHROMA_BIN).astype(np.int64), 0, bins - 1)
    histogram = np.zeros((bins, bins), dtype=np.float32)
    np.add.at(histogram, (cells[:, 0], cells[:, 1]), 1.0)
    smooth = cv2.GaussianBlur(histogram, (5, 5), 1.0)
    peaks = np.argwhere((smooth == cv2.dilate(smooth, np.ones((3, 3), np.uint8))) & (smooth > 0))
    centres = (peaks + 0.5) * _CHROMA_BIN
    mass = np.array([np.count_nonzero(np.linalg.norm(chroma - c, axis=1) < separation) for c in centres])
    modes: list[npt.NDArray[np.float64]] = []
    for index in np.argsort(-mass, kind="stable"):
        if mass[index] < min_mass:
            break
        if all(np.linalg.norm(centres[index] - m) >= separation for m in modes):
            modes.append(centres[index])
    return np.array(modes).reshape(-1, 2)


def _thickness_m(points_m: npt.NDArray[np.float64]) -> float:
    """Standard deviation along the points' thinnest principal direction (a flat patch is ~0)."""
    if len(points_m) < 4:
        return 0.0
    return float(np.sqrt(max(np.linalg.eigvalsh(np.cov(points_m.T))[0], 0.0)))


def split_by_colour(
    points_m: npt.NDArray[np.float64],
    colours: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    params: SegmentationParams,
) -> tuple[npt.NDArray[np.int64], int]:
    """Split clusters (labels, -1 = noise) made of touching objects of different colours.

    Colour is compared as rg-chromaticity (r, g) / (r + g + b), which ignores shading, so the faces of
    one object lit differently stay together. In each cluster the dominant chromaticities are found; if
    there are several, every voxel joins the nearest one and the cluster falls apart into connected
    pieces of one colour class. The split is kept only when every large piece is a 3D body (thicker
    than ``colour_split_min_thickness_m``): a printed label or logo is a flat patch on its object.
    Voxels mixed across a colour edge end up in small pieces that the caller drops as too small.
    Returns (new labels 0..K-1 with -1 for noise, number of clusters split).
    """
    intensity = colours.sum(axis=1)
    chroma = colours[:, :2] / np.maximum(intensity, 1e-6)[:, None]
    colour_class = np.zeros(len(points_m), dtype=np.int64)
    candidates: list[int] = []
    for cluster in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == cluster)
        bright = members[intensity[members] >= 3 * _DARK_INTENSITY]
        if len(bright) < 2 * params.min_instance_points:
            continue
        modes = _chroma_modes(chroma[bright], params.min_instance_points, params.colour_split_chroma)
        if len(modes) < 2:
            continue
        distances = np.linalg.norm(chroma[members, None, :] - modes[None, :, :], axis=2)
        colour_class[members] = np.argmin(distances, axis=1)
        candidates.append(cluster)
    if not candidates:
        return labels, 0
    # Voxel centres of adjacent voxels are < 2 voxels apart: 2-voxel cells make them grid neighbours.
    edges_i, edges_j = _neighbour_edges(points_m, 2 * params.voxel_size_m)
    joined = (labels[edges_i] == labels[edges_j]) & (colour_class[edges_i] == colour_class[edges_j])
    component = _connected_components(len(points_m), edges_i[joined], edges_j[joined])
    split = 0
    for cluster in candidates:
        members = np.flatnonzero(labels == cluster)
        pieces, sizes = np.unique(component[members], return_counts=True)
        large = pieces[sizes >= params.min_instance_points]
        solid = all(
            _thickness_m(points_m[members[component[members] == piece]]) >= params.colour_split_min_thickness_m
            for piece in large
        )
        if len(large) >= 2 and solid:
            split += 1
        else:
            component[members] = members.min()  # keep the cluster whole
    component[labels < 0] = -1
    _, relabelled = np.unique(component, return_inverse=True)
    relabelled = relabelled.astype(np.int64) - (1 if np.any(component < 0) else 0)
    return relabelled, split


def merge_flat_fragments(
    points_m: npt.NDArray[np.float64],
    colours: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    params: SegmentationParams,
) -> tuple[npt.NDArray[np.int64], int]:
    """Join flat clusters to the solid cluster of the same colour that they touch.

    A face seen only at a grazing angle is sampled sparsely and DBSCAN can cut it off its object as a
    flat patch. A cluster thinner than half the plane tolerance (see :func:`_thickness_m`) joins the
    solid (thicker) cluster whose box is within ``fragment_merge_m`` of its box and whose mean
    rg-chromaticity is within ``colour_split_chroma``; flat clusters with no such neighbour stay as they
    are (a thin object, or an object seen from one side only). Returns (labels, fragments merged).
    """
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    if n_clusters < 2:
        return labels, 0
    intensity = np.maximum(colours.sum(axis=1), 1e-6)
    chroma = colours[:, :2] / intensity[:, None]
    members = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    low = np.array([points_m[m].min(axis=0) if len(m) else np.full(3, np.inf) for m in members])
    high = np.array([points_m[m].max(axis=0) if len(m) else np.full(3, -np.inf) for m in members])
    mean_chroma = np.array([chroma[m].mean(axis=0) if len(m) else np.full(2, np.nan) for m in members])
    flat = np.array([len(m) > 0 and _thickness_m(points_m[m]) < 0.5 * params.plane_distance_m for m in members])
    solid = np.array([len(m) > 0 for m in members]) & ~flat
    merged = 0
    for fragment in np.flatnonzero(flat):
        gaps = np.linalg.norm(np.maximum(0.0, np.maximum(low[fragment] - high, low - high[fragment])), axis=1)
        similar = np.linalg.norm(mean_chroma - mean_chroma[fragment], axis=1) < params.colour_split_chroma
        candidates = np.flatnonzero(solid & similar & (gaps <= params.fragment_merge_m))
        if len(candidates):
            target = candidates[np.argmin(gaps[candidates])]
            labels[members[fragment]] = target
            merged += 1
    return labels, merged


def _join_object_tops(
    points_m: npt.NDArray[np.float64],
    colours: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    tops: Sequence[SupportPlane],
    top_points: Sequence[npt.NDArray[np.float64]],
    top_colours: Sequence[npt.NDArray[np.float64]],
    params: SegmentationParams,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64], dict[int, int], int]:
    """Raised support planes (table tops, shelf boards) become objects, with the parts that hang from them.

    Each plane's removed band comes back as a new cluster. A cluster joins it when it touches the band
    (within two voxels) and lies under it, reaching at least ``part_below_m`` lower (table legs, a
    table's sides, a shelf's sides below its top); a cluster that touches two bands and spans the height
    between them (a shelf's side between two boards) joins both, which makes them one object; so does a
    cluster of the plane's colour that touches it and spans 80 % of its length or width (a shelf's sides
    and top over a board: the same-coloured object is one object). A thin
    cluster (at most 8 cm across) of the plane's colour under its footprint is a part whose link to it
    is hidden (a leg behind an object). Objects resting on a plane lie over it and stay apart.
    Returns (points, colours, labels with the bands appended, top index → its final label, clusters joined).
    """
    cell = 2 * params.voxel_size_m
    n_clusters = int(labels.max()) + 1 if len(labels) and labels.max() >= 0 else 0
    parent = list(range(n_clusters + len(tops)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(x: int, y: int) -> None:
        parent[find(x)] = find(y)

    members = [np.flatnonzero(labels == c) for c in range(n_clusters)]
    cluster_cells = [np.unique(np.floor(points_m[m] / cell).astype(np.int64), axis=0) for m in members]
    offsets = np.array(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1])).reshape(3, -1).T
    touching: dict[int, set[int]] = {}  # cluster → tops whose band it touches
    usable = [k for k, band in enumerate(top_points) if len(band) >= params.min_instance_points]
    for k in usable:
        band_cells = np.unique(np.floor(top_points[k] / cell).astype(np.int64), axis=0)
        near_band = {tuple(c) for c in (band_cells[:, None, :] + offsets[None]).reshape(-1, 3)}
        for c in range(n_clusters):
            if len(members[c]) and any(tuple(x) in near_band for x in cluster_cells[c]):
                touching.setdefault(c, set()).add(k)
    joined = 0
    slack = 2 * params.plane_distance_m
    for c, planes_touched in touching.items():
        z = points_m[members[c], 2]
        linked = False
        for k in planes_touched:
            height = tops[k].height_m
            if z.min() < height - params.part_below_m and z.max() <= height + slack:
                union(c, n_clusters + k)
                linked = True
        for low in planes_touched:
            for high in planes_touched:
                h_low, h_high = tops[low].height_m, tops[high].height_m
                if h_low < h_high and z.min() >= h_low - slack and z.max() <= h_high + slack \
                        and z.min() <= h_low + params.part_below_m and z.max() >= h_high - params.part_below_m:
                    union(c, n_clusters + low)
                    union(c, n_clusters + high)
                    linked = True
        joined += linked
    intensity = np.maximum(colours.sum(axis=1), 1e-6)
    chroma = colours[:, :2] / intensity[:, None]
    band_chromas = [(band_colours[:, :2] / np.maximum(band_colours.sum(axis=1), 1e-6)[:, None]).mean(axis=0)
                    for band_colours in top_colours]
    for c, planes_touched in touching.items():
        # Structure of the plane's colour that spans it (a shelf's sides and top over a board) is its object.
        extent = points_m[members[c], :2].max(axis=0) - points_m[members[c], :2].min(axis=0)
        for k in planes_touched:
            band_extent = top_points[k][:, :2].max(axis=0) - top_points[k][:, :2].min(axis=0)
            same_colour = np.linalg.norm(chroma[members[c]].mean(axis=0) - band_chromas[k]) < params.colour_split_chroma
            if same_colour and np.any(extent >= 0.8 * band_extent) and find(c) != find(n_clusters + k):
                union(c, n_clusters + k)
                joined += 1
    for k in usable:
        band_chroma = band_chromas[k]
        for c in range(n_clusters):
            if not len(members[c]) or find(c) != c:
                continue
            part = points_m[members[c]]
            extent = part.max(axis=0) - part.min(axis=0)
            if (min(extent[0], extent[1]) <= 0.08 and part[:, 2].max() < tops[k].height_m
                    and tops[k].covers(part[:, :2]).mean() >= 0.9
                    and np.linalg.norm(chroma[members[c]].mean(axis=0) - band_chroma) < params.colour_split_chroma):
                union(c, n_clusters + k)
                joined += 1
    # Final labels: clusters keep theirs unless joined; a group with a top takes a fresh label.
    next_label = n_clusters
    group_label: dict[int, int] = {}
    for k in usable:
        root = find(n_clusters + k)
        if root not in group_label:
            group_label[root] = next_label
            next_label += 1
    relabel = np.array([group_label.get(find(c), c) for c in range(n_clusters)] or [0], dtype=np.int64)
    out_labels = np.where(labels >= 0, relabel[np.maximum(labels, 0)], -1)
    new_points, new_colours, new_labels = [points_m], [colours], [out_labels]
    plane_label: dict[int, int] = {}
    for k in usable:
        plane_label[k] = group_label[find(n_clusters + k)]
        new_points.append(top_points[k])
        new_colours.append(top_colours[k])
        new_labels.append(np.full(len(top_points[k]), plane_label[k], dtype=np.int64))
    return (np.concatenate(new_points), np.concatenate(new_colours), np.concatenate(new_labels), plane_label,
            joined)


# ---------------------------------------------------------------------------------------------------------
# Boxes and visibility
# ---------------------------------------------------------------------------------------------------------


def _snapped_box(
    points_m: npt.NDArray[np.float64], planes: Sequence[SupportPlane], params: SegmentationParams
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], int | None]:
    """Axis-aligned box of the points, its bottom snapped down onto the plane it rests on and its top
    snapped up onto a plane lying on it (a table top over the table's sides)."""
    low, high = points_m.min(axis=0), points_m.max(axis=0)
    rests_on: int | None = None
    bottom_xy = points_m[points_m[:, 2] <= low[2] + 2 * params.voxel_size_m, :2]
    for plane_index, plane in enumerate(planes):
        gap_below = low[2] - plane.height_m
        touches = -params.plane_band_below_m <= gap_below <= params.support_snap_m and plane.covers(bottom_xy).any()
        if touches and (rests_on is None or plane.height_m > planes[rests_on].height_m):
            rests_on = plane_index  # the highest support under its bottom
        gap_above = plane.height_m - high[2]
        if -params.plane_distance_m <= gap_above <= params.support_snap_m:
            # The plane lies on this instance if it mostly covers the instance's footprint, and the
            # instance spans most of the plane (so an object standing under a table top does not grow).
            covered = plane.covers(points_m[:, :2]).mean()
            footprint_cells = np.argwhere(plane.footprint)
            centres = plane.cell_origin_xy + (footprint_cells + 0.5) * plane.cell_size_m
            spanned = np.all((centres >= low[:2]) & (centres <= high[:2]), axis=1).mean()
            if covered > 0.8 and spanned > 0.5:
                high[2] = max(high[2], plane.height_m)
    if rests_on is not None:
        low[2] = planes[rests_on].height_m
    return low, high, rests_on


def _is_plane_remnant(
    points_m: npt.NDArray[np.float64], planes: Sequence[SupportPlane], params: SegmentationParams
) -> bool:
    """A flat horizontal patch lying in a support plane: a piece of floor outside the plane's main patch
    (cut off by an occlusion shadow), not an object. Objects flatter than half the plane tolerance
    (~7 mm: a sheet of paper) on a support are indistinguishable from it and are dropped too."""
    if not planes or len(points_m) < 4:
        return False
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(points_m.T))
    flat = np.sqrt(max(eigenvalues[0], 0.0)) <= 0.5 * params.plane_distance_m
    horizontal = abs(eigenvectors[2, 0]) >= math.cos(math.radians(params.plane_max_tilt_deg))
    in_a_plane = any(abs(np.median(p.signed_distance(points_m))) <= params.plane_distance_m for p in planes)
    return bool(flat and horizontal and in_a_plane)


def _label_views(
    views: Sequence[PosedView],
    points_m: npt.NDArray[np.float64],
    point_labels: npt.NDArray[np.int64],
    params: SegmentationParams,
) -> dict[str, npt.NDArray[np.int32]]:
    """Per view, a label image of which instance (label + 1) is seen at each pixel (0 = none).

    Each instance point is projected into the view and counts as seen only where the view's own
    depth agrees with the projected depth (occlusion check). Every seen point is splatted over the
    pixels that its voxel covers at that depth, again only where the measured depth agrees; when
    two instances claim a pixel, the one whose depth agrees better wins.
    """
    label_images: dict[str, npt.NDArray[np.int32]] = {}
    for view in views:
        depth = view.frame.depth_m
        intrinsics = view.frame.intrinsics
        assert depth is not None and intrinsics is not None  # checked by fuse_views
        height, width = depth.shape
        points_cam = transform_points(invert_pose(view.T_common_from_cam), points_m)
        uv, z = project_points(points_cam, intrinsics)
        with np.errstate(invalid="ignore"):
            inside = (z > params.min_depth_m) & np.all(np.isfinite(uv), axis=1)
            u = np.rint(np.where(inside, uv[:, 0], -1)).astype(np.int64)
            v = np.rint(np.where(inside, uv[:, 1], -1)).astype(np.int64)
        inside &= (u >= 0) & (u < width) & (v >= 0) & (v < height)
        idx = np.flatnonzero(inside)
        u, v, z_seen, labels_seen = u[idx], v[idx], z[idx], point_labels[idx]
        tolerance = params.occlusion_abs_m + params.occlusion_rel * z_seen
        with np.errstate(invalid="ignore"):
            visible = np.abs(depth[v, u] - z_seen) <= tolerance  # NaN depth → not visible
        u, v, z_seen = u[visible], v[visible], z_seen[visible]
        labels_seen, tolerance = labels_seen[visible], tolerance[visible]
        label_image = np.zeros((height, width), dtype=np.int32)
        best_error = np.full((height, width), np.inf, dtype=np.float32)
        if len(u):
            # A voxel of size s at depth z covers about fx * s / z pixels.
            radius = np.ceil(0.5 * intrinsics.fx * params.voxel_size_m / z_seen).astype(np.int64)
            max_radius = int(radius.max())
            for du in range(-max_radius, max_radius + 1):
                for dv in range(-max_radius, max_radius + 1):
                    reach = np.maximum(abs(du), abs(dv)) <= radius
                    uu, vv = u[reach] + du, v[reach] + dv
                    ok = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
                    uu, vv = uu[ok], vv[ok]
                    with np.errstate(invalid="ignore"):
                        error = np.abs(depth[vv, uu] - z_seen[reach][ok])
                    better = (error <= tolerance[reach][ok]) & (error < best_error[vv, uu])
                    best_error[vv[better], uu[better]] = error[better]
                    label_image[vv[better], uu[better]] = labels_seen[reach][ok][better] + 1
        label_images[view.key] = label_image
    return label_images


def _mean_colour(colours: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    return np.clip(np.rint(colours.mean(axis=0) * 255.0), 0, 255).astype(np.uint8)


def segment_instances(views: Sequence[PosedView], params: SegmentationParams) -> SegmentationResult:
    """Fuse the posed RGB-D views and split the result into object instances (see the module docstring)."""
    timings: dict[str, float] = {}
    counts: dict[str, int] = {}
    start = time.perf_counter()
    cloud = fuse_views(
        views, voxel_size_m=params.voxel_size_m, min_depth_m=params.min_depth_m, max_depth_m=params.max_depth_m,
        smooth_sigma_m=params.smooth_sigma_m,
    )
    points = np.asarray(cloud.points, dtype=np.float64)
    colours = np.asarray(cloud.colors, dtype=np.float64)
    counts["fused_voxels"] = len(points)
    timings["fuse"] = time.perf_counter() - start

    start = time.perf_counter()
    fused_points = points
    viewpoints = np.array([view.T_common_from_cam[:3, 3] for view in views]).reshape(-1, 3)
    if len(points):
        keep, planes, tilted, removed_by, walls = find_planes(points, params, viewpoints)
    else:
        keep, planes, tilted, removed_by, walls = np.zeros(0, dtype=bool), [], 0, np.zeros(0, np.int64), 0
    counts["support_plane_voxels"] = int(np.count_nonzero(~keep))
    counts["support_planes"] = len(planes)
    counts["tilted_planes_kept"] = tilted
    counts["background_planes_removed"] = walls
    # Raised support planes are the tops of objects (a table, a shelf); their bands come back as objects.
    floor_height = min((plane.height_m for plane in planes), default=0.0)
    raised = [k for k, plane in enumerate(planes) if plane.height_m > floor_height + params.plane_merge_m]
    top_points = [points[removed_by == k] for k in raised]
    top_colours = [colours[removed_by == k] for k in raised]
    points, colours = points[keep], colours[keep]
    timings["planes"] = time.perf_counter() - start

    start = time.perf_counter()
    if len(points):
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
        labels = np.asarray(cloud.cluster_dbscan(params.cluster_eps_m, params.cluster_min_points), dtype=np.int64)
    else:
        labels = np.zeros(0, dtype=np.int64)
    counts["dbscan_noise_voxels"] = int(np.count_nonzero(labels < 0))
    counts["dbscan_clusters"] = int(labels.max() + 1) if len(labels) else 0
    counts["colour_splits"] = 0
    if params.colour_split and len(points) and labels.max() >= 0:
        labels, counts["colour_splits"] = split_by_colour(points, colours, labels, params)
    counts["plane_remnants_dropped"] = 0
    for cluster in range(int(labels.max()) + 1 if len(labels) else 0):
        members = labels == cluster
        enough = np.count_nonzero(members) >= params.cluster_min_points
        if enough and _is_plane_remnant(points[members], planes, params):
            labels[members] = -1
            counts["plane_remnants_dropped"] += 1
    labels, counts["flat_fragments_merged"] = merge_flat_fragments(points, colours, labels, params)
    points, colours, labels, plane_label, counts["parts_joined"] = _join_object_tops(
        points, colours, labels, [planes[k] for k in raised], top_points, top_colours, params)
    sizes = np.bincount(labels[labels >= 0], minlength=0) if np.any(labels >= 0) else np.zeros(0, np.int64)
    big = np.flatnonzero(sizes >= params.min_instance_points)
    counts["small_clusters_dropped"] = int(np.count_nonzero(sizes) - len(big))
    counts["small_cluster_voxels_dropped"] = int(sizes[sizes < params.min_instance_points].sum())
    timings["cluster"] = time.perf_counter() - start
    if counts["small_clusters_dropped"]:
        _log.debug(
            "dropped %d clusters under %d voxels (%d voxels)",
            counts["small_clusters_dropped"], params.min_instance_points, counts["small_cluster_voxels_dropped"],
        )

    start = time.perf_counter()
    remap = np.full(max(int(labels.max()) + 1, 1) if len(labels) else 1, -1, dtype=np.int64)
    remap[big] = np.arange(len(big))
    instance_of_point = np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)
    member = instance_of_point >= 0
    label_images = _label_views(views, points[member], instance_of_point[member], params)
    visible_px = {key: np.bincount(image.ravel(), minlength=len(big) + 1)[1:] for key, image in label_images.items()}
    instances: list[Instance] = []
    plane_owner = {raised[j]: int(remap[label]) for j, label in plane_label.items() if remap[label] >= 0}
    for index in range(len(big)):
        mask = instance_of_point == index
        own = {k for k, owner in plane_owner.items() if owner == index}
        low, high, rests_on = _snapped_box(points[mask], [p for k, p in enumerate(planes) if k not in own], params)
        if rests_on is not None:  # back to an index into planes
            rests_on = [k for k in range(len(planes)) if k not in own][rests_on]
        seen = {key: int(px[index]) for key, px in visible_px.items() if px[index] >= params.min_visible_px}
        instances.append(
            Instance(
                index=index,
                points_m=points[mask].astype(np.float32),
                colours_rgb=np.clip(np.rint(colours[mask] * 255), 0, 255).astype(np.uint8),
                bbox_min_m=low,
                bbox_max_m=high,
                mean_rgb=_mean_colour(colours[mask]),
                rests_on_plane=rests_on,
                visible_px=seen,
            )
        )
    counts["instances"] = len(instances)
    timings["instances"] = time.perf_counter() - start
    return SegmentationResult(instances, planes, label_images, counts, timings, fused_points, plane_owner)
