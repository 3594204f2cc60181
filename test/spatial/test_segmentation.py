"""Support planes, clustering helpers and colour splitting on hand-made point clouds (z up)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from oryx_ros.spatial.segmentation import (
    SegmentationParams,
    _connected_components,
    _is_plane_remnant,
    merge_flat_fragments,
    remove_support_planes,
    split_by_colour,
)

STEP = 0.01


def grid(x: tuple[float, float], y: tuple[float, float], z: float) -> npt.NDArray[np.float64]:
    xs, ys = np.meshgrid(np.arange(x[0], x[1], STEP), np.arange(y[0], y[1], STEP))
    return np.column_stack([xs.ravel(), ys.ravel(), np.full(xs.size, z)])


def box_surface(low: tuple[float, float, float], high: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    """Points every 1 cm on the six faces of an axis-aligned box."""
    lo, hi = np.array(low), np.array(high)
    faces = []
    for axis in range(3):
        a, b = [k for k in range(3) if k != axis]
        ua, ub = np.meshgrid(np.arange(lo[a], hi[a] + 1e-9, STEP), np.arange(lo[b], hi[b] + 1e-9, STEP))
        for value in (lo[axis], hi[axis]):
            face = np.zeros((ua.size, 3))
            face[:, a], face[:, b], face[:, axis] = ua.ravel(), ub.ravel(), value
            faces.append(face)
    return np.unique(np.round(np.concatenate(faces), 6), axis=0)


def test_floor_and_table_top_are_removed_but_objects_stay() -> None:
    floor = grid((-1.0, 2.0), (-1.5, 1.5), 0.0)
    table_top = grid((0.2, 1.0), (-0.4, 0.4), 0.6)
    cube_on_table = box_surface((0.5, 0.0, 0.6), (0.65, 0.15, 0.75))
    tall_post = box_surface((1.5, 1.0, 0.0), (1.6, 1.1, 1.0))  # crosses the table-top height elsewhere
    points = np.concatenate([floor, table_top, cube_on_table, tall_post])
    keep, planes, tilted = remove_support_planes(points, SegmentationParams())
    assert sorted(round(p.height_m, 3) for p in planes) == [0.0, 0.6]
    assert tilted == 0
    kept = points[keep]
    assert not np.any(np.all(np.isin(kept, floor), axis=1) & (np.abs(kept[:, 2]) < 1e-9))
    start = len(floor) + len(table_top)
    cube_kept = keep[start:start + len(cube_on_table)]
    post_kept = keep[start + len(cube_on_table):]
    # The cube loses only its bottom band (the plane's inlier distance); the post is not sliced at the
    # table-top height, because that height band lies outside the table top's footprint.
    assert cube_kept[cube_on_table[:, 2] > 0.6 + 0.015 + 1e-9].all()
    assert not cube_kept[cube_on_table[:, 2] < 0.6 + 1e-9].any()
    post = tall_post[post_kept]
    assert np.any(np.abs(post[:, 2] - 0.6) < 0.01)
    assert post_kept[tall_post[:, 2] > 0.05].all()


def test_walls_are_left_in_place() -> None:
    floor = grid((0.0, 2.0), (-1.0, 1.0), 0.0)
    ys, zs = np.meshgrid(np.arange(-1.0, 1.0, STEP), np.arange(0.02, 1.5, STEP))
    wall = np.column_stack([np.full(ys.size, 2.0), ys.ravel(), zs.ravel()])
    keep, planes, tilted = remove_support_planes(np.concatenate([wall, floor]), SegmentationParams())
    assert len(planes) == 1 and abs(planes[0].height_m) < 1e-6
    assert tilted == 1
    assert keep[: len(wall)].all() and not keep[len(wall):].any()


def test_connected_components_match_a_breadth_first_search() -> None:
    rng = np.random.default_rng(0)
    n = 400
    edges = rng.integers(0, n, size=(300, 2))
    labels = _connected_components(n, edges[:, 0], edges[:, 1])
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in edges:
        neighbours[int(a)].add(int(b))
        neighbours[int(b)].add(int(a))
    seen: set[int] = set()
    for start in range(n):
        if start in seen:
            continue
        component, frontier = {start}, [start]
        while frontier:
            for nxt in neighbours[frontier.pop()] - component:
                component.add(nxt)
                frontier.append(nxt)
        seen |= component
        assert {int(labels[i]) for i in component} == {min(component)}


def _colours(n: int, rgb: tuple[float, float, float], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    shade = rng.uniform(0.4, 1.0, size=(n, 1))  # shading changes brightness, not chromaticity
    return np.clip(np.array(rgb) * shade, 0, 1)


def test_touching_objects_of_different_colours_are_split() -> None:
    rng = np.random.default_rng(1)
    base = box_surface((0.0, 0.0, 0.0), (0.3, 0.3, 0.2))
    top = box_surface((0.1, 0.1, 0.2), (0.2, 0.2, 0.32))
    top = top[top[:, 2] > 0.2 + 1e-9]  # no face inside the contact
    points = np.concatenate([base, top])
    colours = np.concatenate([_colours(len(base), (0.55, 0.25, 0.75), rng), _colours(len(top), (0.9, 0.8, 0.15), rng)])
    labels, split = split_by_colour(points, colours, np.zeros(len(points), np.int64), SegmentationParams())
    assert split == 1
    assert len(np.unique(labels[: len(base)])) == 1 and len(np.unique(labels[len(base):])) == 1
    assert labels[0] != labels[-1]


def test_printed_patch_does_not_split_its_object() -> None:
    rng = np.random.default_rng(2)
    points = box_surface((0.0, 0.0, 0.0), (0.3, 0.3, 0.3))
    colours = _colours(len(points), (0.8, 0.2, 0.2), rng)
    logo = (points[:, 0] == 0.0) & (np.abs(points[:, 1] - 0.15) < 0.08) & (np.abs(points[:, 2] - 0.15) < 0.08)
    colours[logo] = _colours(int(logo.sum()), (0.1, 0.3, 0.9), rng)
    labels, split = split_by_colour(points, colours, np.zeros(len(points), np.int64), SegmentationParams())
    assert logo.sum() > 100 and split == 0
    assert np.all(labels == 0)


def test_flat_pieces_of_a_support_plane_are_remnants_but_objects_are_not() -> None:
    floor = grid((-1.0, 2.0), (-1.5, 1.5), 0.0)
    _, planes, _ = remove_support_planes(floor, SegmentationParams())
    params = SegmentationParams()
    rng = np.random.default_rng(4)
    stray_patch = grid((3.0, 3.3), (0.0, 0.2), 0.0) + rng.normal(0, 0.003, (600, 3)) * [0, 0, 1]
    assert _is_plane_remnant(stray_patch, planes, params)
    assert not _is_plane_remnant(box_surface((3.0, 0.0, 0.0), (3.1, 0.1, 0.08)), planes, params)
    assert not _is_plane_remnant(grid((3.0, 3.3), (0.0, 0.2), 0.3), planes, params)  # a shelf board, not the floor


def test_flat_fragments_join_the_solid_object_of_their_colour() -> None:
    rng = np.random.default_rng(5)
    body = box_surface((0.0, 0.0, 0.0), (0.3, 0.3, 0.3))
    body = body[body[:, 0] < 0.3 - 1e-9]  # its +x face is missing ...
    face = grid((0.0, 0.3), (0.0, 0.3), 0.0)[:, [2, 0, 1]] + np.array([0.31, 0.0, 0.0])  # ... came as a patch
    far_patch = face + np.array([1.0, 0.0, 0.0])  # the same colour, 1 m away: a thin object of its own
    blue_patch = face + np.array([0.0, 0.0, 0.4])  # near the top edge but another colour
    points = np.concatenate([body, face, far_patch, blue_patch])
    sizes = [len(body), len(face), len(far_patch), len(blue_patch)]
    labels = np.repeat(np.arange(4), sizes)
    orange = [_colours(n, (0.8, 0.3, 0.1), rng) for n in sizes[:3]]
    colours = np.concatenate([*orange, _colours(sizes[3], (0.1, 0.3, 0.9), rng)])
    merged_labels, merged = merge_flat_fragments(points, colours, labels.copy(), SegmentationParams())
    assert merged == 1
    assert np.array_equal(np.unique(merged_labels[: sizes[0] + sizes[1]]), [0])
    assert np.array_equal(merged_labels[sizes[0] + sizes[1]:], labels[sizes[0] + sizes[1]:])
