"""Whole furniture (a table with legs, a chair, a shelf) and a wall, on rendered scenes with ground truth."""

from __future__ import annotations

import pytest

from oryx_ros.spatial.evaluation import score_scene
from oryx_ros.spatial.scene_graph import build_scene
from oryx_ros.spatial.synthetic_scene import DepthNoise, make_furniture_scene


@pytest.mark.parametrize(("noise", "max_error_m"), [(None, 0.03), (DepthNoise(), 0.08)])
def test_furniture_is_whole_walls_are_gone_and_support_relations_hold(noise: DepthNoise | None,
                                                                       max_error_m: float) -> None:
    scene = make_furniture_scene(1, width=320, height=240, noise=noise)
    result = build_scene(scene.frames, scene.T_base_from_cam)
    score = score_scene(scene, result)
    assert score.unmatched_gt == [] and score.spurious_ids == []  # legs, backs, shelf sides joined
    assert result.counts["background_planes_removed"] >= 1
    assert score.max_centre_error_m < max_error_m
    assert score.pair_agreement >= 0.95
    names = {scene.primitives[gt].name: oid for oid, gt in score.gt_of_id.items()}
    found = {(r.subject_id, r.predicate, r.object_id) for r in result.relations}
    for subject, predicate, obj in scene.true_relations():
        if predicate in ("on", "in", "under"):
            assert (names[scene.primitives[subject].name], predicate, names[scene.primitives[obj].name]) in found
    colour = {obj.id: obj.colour for obj in result.objects}
    assert colour[names["table"]] == "brown" and colour[names["shelf"]] == "beige"
