"""Relation predicates on hand-built boxes in a REP 103 frame (x forward, y left, z up)."""

from __future__ import annotations

import numpy as np
import pytest

from oryx_ros.spatial.relations import (
    Box,
    RelationParams,
    SpatialRelation,
    compute_relations,
    relation_margins,
    relation_set,
    surface_gap_m,
)


def box(centre: tuple[float, float, float], size: tuple[float, float, float]) -> Box:
    return Box(np.array(centre, dtype=float), np.array(size, dtype=float))


TABLE = box((2.0, 0.0, 0.35), (1.0, 0.8, 0.7))
CUP_LEFT = box((2.0, 0.3, 0.75), (0.1, 0.1, 0.1))  # on the table, left (+y)
CUP_RIGHT = box((2.2, -0.3, 0.75), (0.1, 0.1, 0.1))  # on the table, right (-y) and further away (+x)
BALL_FLOOR = box((0.8, 0.0, 0.1), (0.2, 0.2, 0.2))  # on the floor, in front of the table (closer to the robot)


def test_directional_predicates_follow_rep103_axes() -> None:
    found = relation_set(compute_relations([TABLE, CUP_LEFT, CUP_RIGHT, BALL_FLOOR], [1, 2, 3, 4]))
    assert (2, "left_of", 3) in found and (3, "right_of", 2) in found
    assert (2, "right_of", 3) not in found
    assert (2, "in_front_of", 3) in found and (3, "behind", 2) in found  # smaller x = closer to the viewer
    assert (4, "in_front_of", 1) in found and (1, "behind", 4) in found
    # Centres 0.2 m apart along y ... but the ball and the table are aligned in y: neither left nor right.
    assert not {(4, "left_of", 1), (4, "right_of", 1), (1, "left_of", 4), (1, "right_of", 4)} & found


def test_support_and_vertical_predicates() -> None:
    found = relation_set(compute_relations([TABLE, CUP_LEFT, CUP_RIGHT, BALL_FLOOR], [1, 2, 3, 4]))
    assert {(2, "on", 1), (3, "on", 1), (2, "above", 1), (1, "below", 2)} <= found
    assert (1, "on", 2) not in found  # not symmetric
    assert (2, "on", 3) not in found and (2, "above", 3) not in found  # side by side at the same height
    assert (4, "on", 1) not in found and (1, "above", 4) not in found  # no footprint overlap


def test_stacked_with_gap_is_above_but_not_on() -> None:
    base = box((1.0, 0.0, 0.1), (0.3, 0.3, 0.2))
    hovering = box((1.0, 0.0, 0.4), (0.1, 0.1, 0.1))  # bottom at 0.35, 15 cm over the base's top
    resting = box((1.0, 0.0, 0.25 + 0.01), (0.1, 0.1, 0.1))  # bottom 1 cm over the top: within contact_m
    found = relation_set(compute_relations([base, hovering, resting], [1, 2, 3]))
    assert (2, "above", 1) in found and (2, "on", 1) not in found
    assert (3, "on", 1) in found and (3, "above", 1) in found


def test_near_uses_surface_gap_and_is_listed_both_ways() -> None:
    big = box((0.0, 0.0, 0.5), (2.0, 2.0, 1.0))
    close = box((1.3, 0.0, 0.1), (0.2, 0.2, 0.2))  # surface gap 0.2 m, centre distance ~1.4 m
    far = box((1.6, 0.0, 0.1), (0.2, 0.2, 0.2))  # surface gap 0.5 m
    assert surface_gap_m(big, close) == pytest.approx(0.2)
    found = relation_set(compute_relations([big, close, far], [1, 2, 3], RelationParams(near_m=0.25)))
    assert {(1, "near", 2), (2, "near", 1)} <= found
    assert (1, "near", 3) not in found
    assert (2, "near", 3) in found  # 0.1 m apart


def test_distance_is_centre_to_centre_and_confidence_grows_with_margin() -> None:
    a = box((1.0, 0.5, 0.1), (0.2, 0.2, 0.2))
    b_barely = box((1.0, 0.43, 0.1), (0.2, 0.2, 0.2))  # 7 cm: just past the 5 cm margin
    b_clear = box((1.0, -0.5, 0.1), (0.2, 0.2, 0.2))
    relations = compute_relations([a, b_barely, b_clear], [1, 2, 3], viewpoint="base_footprint")
    left = {(r.subject_id, r.object_id): r for r in relations if r.predicate == "left_of"}
    assert left[(1, 3)].distance == pytest.approx(1.0)
    assert 0.5 < left[(1, 2)].confidence < 0.65 < left[(1, 3)].confidence == pytest.approx(1.0)
    assert all(r.viewpoint == "base_footprint" and r.source == "geometry" for r in relations)
    assert all(0.5 <= r.confidence <= 1.0 for r in relations)


def test_margins_sign_matches_relations() -> None:
    rng = np.random.default_rng(3)
    boxes = [box(tuple(rng.uniform(-1, 1, 3)), tuple(rng.uniform(0.05, 0.5, 3))) for _ in range(6)]
    found = relation_set(compute_relations(boxes, list(range(1, 7))))
    for i, a in enumerate(boxes):
        for j, b in enumerate(boxes):
            if i != j:
                for predicate, margin in relation_margins(a, b).items():
                    assert ((i + 1, predicate, j + 1) in found) == (margin > 0)


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match="unknown predicate"):
        SpatialRelation(1, "inside", 2, 0.0, 1.0)
    with pytest.raises(ValueError, match="source"):
        SpatialRelation(1, "on", 2, 0.0, 1.0, source="guess")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        compute_relations([TABLE, CUP_LEFT], [1, 1])
    with pytest.raises(ValueError, match="ids"):
        compute_relations([TABLE, CUP_LEFT], [1])
    with pytest.raises(ValueError, match="unknown predicates"):
        RelationParams(predicates=("on", "inside"))
