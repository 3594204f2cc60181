"""Instance tracker, prominence, badge placement and drawing."""

from __future__ import annotations

import numpy as np
import pytest

from oryx_ros.spatial.correspondences import (
    InstanceTracker,
    Mark,
    MarkParams,
    draw_marks,
    mark_colour,
    place_marks,
    prominence_order,
    select_prominent,
)


def test_tracker_keeps_ids_for_objects_that_stay_put() -> None:
    tracker = InstanceTracker(gate_m=0.1)
    first = tracker.assign([[1.0, 0.0, 0.5], [2.0, 0.5, 0.5], [1.5, -0.5, 0.1]])
    assert first == [1, 2, 3]
    # Same objects, measured again with a few centimetres of noise and listed in another order.
    second = tracker.assign([[1.51, -0.48, 0.1], [1.02, 0.01, 0.5], [1.99, 0.52, 0.49]])
    assert second == [3, 1, 2]


def test_tracker_gives_new_ids_and_never_reuses_them() -> None:
    tracker = InstanceTracker(gate_m=0.1, max_missed=1)
    assert tracker.assign([[0, 0, 0], [1, 0, 0]]) == [1, 2]
    assert tracker.assign([[0, 0, 0], [1, 0.5, 0]]) == [1, 3]  # object 2 moved beyond the gate: new id
    assert tracker.assign([[0, 0, 0]]) == [1]  # 3 missed once: kept; 2 missed twice: forgotten
    assert sorted(tracker.track_ids) == [1, 3]
    assert tracker.assign([[1, 0, 0]]) == [4]  # where 2 used to be: a new id, not 2 again


def test_tracker_greedy_matching_prefers_the_closest_pair() -> None:
    tracker = InstanceTracker(gate_m=0.3)
    tracker.assign([[0.0, 0, 0], [0.25, 0, 0]])
    # 0.2 is within the gate of both tracks; it belongs to the closer one (id 2), 0.0 stays 1.
    assert tracker.assign([[0.2, 0, 0], [0.0, 0, 0]]) == [2, 1]


def test_tracker_validates() -> None:
    with pytest.raises(ValueError):
        InstanceTracker(gate_m=0)
    with pytest.raises(ValueError):
        InstanceTracker(max_missed=-1)


def test_prominence_prefers_more_views_then_more_pixels() -> None:
    visible = [
        {"a": 500},  # big but in one view
        {"a": 50, "b": 60},
        {"a": 400, "b": 400},
        {},  # not visible anywhere
    ]
    assert prominence_order(visible) == [2, 1, 0, 3]
    assert select_prominent(visible, 2) == [2, 1]
    assert select_prominent(visible, 10) == [2, 1, 0]


def test_marks_sit_on_their_instance_near_its_top_and_apart() -> None:
    labels = np.zeros((120, 160), dtype=np.int32)
    labels[40:100, 20:70] = 1  # instance 0
    labels[50:90, 72:130] = 2  # instance 1, right next to it
    labels[5:8, 150:153] = 3  # instance 2: 9 px, too small to mark
    params = MarkParams(min_visible_px=20)
    marks = place_marks(labels, {0: 7, 1: 3, 2: 9}, params)
    assert [m.mark_id for m in marks] == [7, 3]
    for mark, instance in zip(marks, (0, 1), strict=True):
        assert labels[mark.v, mark.u] == instance + 1  # anchored on the instance's own pixels
        top = np.flatnonzero((labels == instance + 1).any(axis=1))[0]
        assert mark.v - top <= params.edge_inset_px + 2  # near the top edge, so the badge covers little
        assert mark.radius_px == params.radius_px(120, 160)
    first, second = marks
    assert np.hypot(first.u - second.u, first.v - second.v) >= first.radius_px + second.radius_px


def test_badge_radius_scales_with_image_size() -> None:
    params = MarkParams()
    assert params.radius_px(480, 640) == 19
    assert params.radius_px(96, 128) == params.min_radius_px
    with pytest.raises(ValueError):
        MarkParams(radius_fraction=0.0)


def test_draw_marks_paints_the_id_colour_and_leaves_the_input_alone() -> None:
    rgb = np.full((100, 100, 3), 128, dtype=np.uint8)
    out = draw_marks(rgb, [Mark(4, 50, 50, 15)])
    assert np.all(rgb == 128)
    colour = np.array(mark_colour(4))
    ring = out[50, 50 - 11]  # inside the disc, clear of the digit
    np.testing.assert_array_equal(ring, colour)
    assert np.any(np.all(out[40:60, 45:55] != colour, axis=-1))  # the number is drawn on the disc
    assert np.all(out[0:20, 0:20] == 128)
    assert mark_colour(1) != mark_colour(2)
    with pytest.raises(ValueError):
        mark_colour(0)
