"""build_scene end to end on rendered scenes with ground truth (small images, so it runs in seconds).

Tolerances: centres within 3 cm without depth noise and 8 cm with Kinect-like noise; relation
predicates equal to the ground truth's on at least 95% of ordered object pairs.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from oryx_ros.perception.frames import Frame
from oryx_ros.spatial.correspondences import InstanceTracker, MarkParams, mark_colour
from oryx_ros.spatial.evaluation import SceneScore, score_scene
from oryx_ros.spatial.geometry import invert_pose, look_at_pose, pose_from_xyz_rpy
from oryx_ros.spatial.prompting import parse_object_labels
from oryx_ros.spatial.relations import PREDICATES
from oryx_ros.spatial.scene_graph import (
    SceneInputError,
    SceneParams,
    SceneResult,
    build_scene,
    colour_name,
    mentioned_ids,
    with_model_labels,
)
from oryx_ros.spatial.synthetic_scene import DepthNoise, Renderer, SceneCamera, SyntheticScene, make_scene, rerender

WIDTH, HEIGHT = 320, 240


@pytest.fixture(scope="module")
def clean() -> tuple[SyntheticScene, SceneResult, SceneScore]:
    scene = make_scene(0, width=WIDTH, height=HEIGHT)
    result = build_scene(scene.frames, scene.T_base_from_cam)
    return scene, result, score_scene(scene, result)


@pytest.fixture(scope="module")
def noisy() -> tuple[SyntheticScene, SceneResult, SceneScore]:
    scene = make_scene(1, width=WIDTH, height=HEIGHT, noise=DepthNoise())
    result = build_scene(scene.frames, scene.T_base_from_cam)
    return scene, result, score_scene(scene, result)


def _colour_word(scene: SyntheticScene, index: int) -> str:
    primitive = scene.primitives[index]
    return "brown" if primitive.name == "table" else primitive.label.split()[0]


@pytest.mark.parametrize(("case", "max_error_m"), [("clean", 0.03), ("noisy", 0.08)])
def test_instances_match_ground_truth(case: str, max_error_m: float, request: pytest.FixtureRequest) -> None:
    scene, result, score = request.getfixturevalue(case)
    assert result.available and result.reason == ""
    assert score.unmatched_gt == [] and score.spurious_ids == []
    assert score.max_centre_error_m < max_error_m
    assert max(score.size_errors_m.values()) < 2 * max_error_m
    for obj in result.objects:
        assert obj.label == f"{_colour_word(scene, score.gt_of_id[obj.id])} object"
        assert 0.0 < obj.confidence <= 1.0 and obj.points > 0 and len(obj.cameras) >= 2
    assert sorted(o.id for o in result.objects) == list(range(1, len(scene.primitives) + 1))


@pytest.mark.parametrize("case", ["clean", "noisy"])
def test_relations_agree_with_ground_truth(case: str, request: pytest.FixtureRequest) -> None:
    _, result, score = request.getfixturevalue(case)
    assert score.pair_agreement >= 0.95, score.disagreements
    assert all(r.predicate in PREDICATES and r.viewpoint == "base_link" for r in result.relations)
    # The stacked pair and the table's load are found as support contacts.
    assert sum(r.predicate == "on" for r in result.relations) >= 3


@pytest.mark.parametrize("case", ["clean", "noisy"])
def test_marks_are_consistent_across_views(case: str, request: pytest.FixtureRequest) -> None:
    scene, result, score = request.getfixturevalue(case)
    assert score.marks >= 2 * len(result.marked_ids)  # every marked object is marked in several views
    assert score.marks_on_their_object == score.marks  # the badge of id k lies on k's GT object everywhere
    for view, marks in result.marks.items():
        drawn = result.marked_views[view]
        assert drawn.shape == scene.frames[0].rgb.shape and drawn.dtype == np.uint8
        for mark in marks:
            assert mark.mark_id in result.marked_ids
            # The disc's colour is there, just inside its rim (beside the number).
            inset = mark.radius_px - 2
            rim = [drawn[mark.v, mark.u + du] for du in (-inset, inset) if 0 <= mark.u + du < drawn.shape[1]]
            assert any(np.abs(p.astype(int) - mark_colour(mark.mark_id)).max() <= 40 for p in rim)
        # Badges may touch in a crowded view but never hide each other's number.
        for i, a in enumerate(marks):
            for b in marks[i + 1:]:
                assert math.hypot(a.u - b.u, a.v - b.v) >= max(a.radius_px, b.radius_px)
    assert "the same number marks the same object in every view" in result.prompt


def test_only_the_k_most_prominent_objects_are_marked(clean) -> None:
    scene, full, _ = clean
    result = build_scene(scene.frames, scene.T_base_from_cam, params=SceneParams(marks=MarkParams(max_marks=3)))
    assert len(result.objects) == len(full.objects) and len(result.marked_ids) == 3
    assert result.counts["visible_objects_not_marked"] == len(result.objects) - 3
    ranked = sorted(result.instances, key=lambda d: d.prominence_rank)
    assert {d.id for d in ranked[:3]} == set(result.marked_ids)
    views_of = {d.id: len(d.instance.visible_px) for d in result.instances}
    assert min(views_of[i] for i in result.marked_ids) >= max(
        views_of[i] for i in views_of if i not in result.marked_ids
    )
    assert {m.mark_id for marks in result.marks.values() for m in marks} == set(result.marked_ids)
    assert "The marked objects are " + ", ".join(map(str, sorted(result.marked_ids))) + "." in result.prompt


def test_model_names_replace_colour_labels_and_tie_words_to_ids(clean) -> None:
    _, result, _ = clean
    mug, chair, other = result.marked_ids[:3]
    answer = f"Sure, here they are.\n{mug}: a mug\n[{chair}] office chair\n{other}: I am not sure\n99: lamp"
    named = with_model_labels(result, parse_object_labels(answer, result.marked_ids))
    before, after = {o.id: o for o in result.objects}, {o.id: o for o in named.objects}
    assert after[mug].label == "mug" and after[chair].label == "office chair"
    assert after[mug].label_source == after[chair].label_source == "model"
    assert after[mug].colour == before[mug].colour != ""  # the colour is kept beside the name
    assert after[other] == before[other] and after[other].label == f"{after[other].colour} object"
    assert after[other].label_source == "colour"
    assert f"{mug} (mug)" in named.prompt
    assert mentioned_ids("Is the mug left of the chair?", named) == [mug, chair]
    assert mentioned_ids(f"Object {other} is near the mug.", named) == [other, mug]
    assert mentioned_ids("Is the mug left of the chair?", result) == []  # colour labels only: no mug


def test_ids_are_stable_across_requests() -> None:
    scene = make_scene(2, width=WIDTH, height=HEIGHT, noise=DepthNoise())
    tracker = InstanceTracker()
    first = build_scene(scene.frames, scene.T_base_from_cam, tracker=tracker)
    later_frames = rerender(scene, scene.frames[0].stamp_ns + 500_000_000, np.random.default_rng(7))
    second = build_scene(later_frames, scene.T_base_from_cam, tracker=tracker)
    first_score, second_score = score_scene(scene, first), score_scene(scene, second)
    assert first_score.gt_of_id == second_score.gt_of_id
    assert len(first_score.gt_of_id) == len(scene.primitives)


def test_rgb_only_view_is_marked_by_projection_or_left_out_with_a_reason() -> None:
    scene = make_scene(3, width=160, height=120)
    rgb_only = [replace(scene.frames[0], depth_m=None), *scene.frames[1:]]
    result = build_scene(rgb_only, scene.T_base_from_cam)
    assert result.available and result.projected_views == ["cam0"] and result.views_left_out == {}
    score = score_scene(scene, result)
    cam0_marks = result.marks["cam0"]
    assert cam0_marks  # marks drawn by projecting the objects fused from the other cameras
    truth = scene.instance_images["cam0"]
    on_object = [score.gt_of_id.get(m.mark_id) == truth[m.v, m.u] for m in cam0_marks]
    assert sum(on_object) >= 0.7 * len(on_object)  # 5 of 7 at 160x120 (z-buffer of the fused cloud)
    # Without its mount the view is left out, and the result says why.
    mounts = {k: v for k, v in scene.T_base_from_cam.items() if k != "cam0"}
    left = build_scene(rgb_only, mounts)
    assert left.available and "cam0" not in left.marks and "mount" in left.views_left_out["cam0"]
    # With no depth anywhere there is no scene, and nothing is fabricated.
    none = build_scene([replace(f, depth_m=None) for f in scene.frames], scene.T_base_from_cam)
    assert not none.available and "depth" in none.reason and scene.frames[0].camera in none.reason
    assert none.objects == [] and none.relations == [] and none.marked_views == {} and none.marks == {}
    no_info = [replace(frame, intrinsics=None) for frame in scene.frames]
    assert "intrinsics" in build_scene(no_info, scene.T_base_from_cam).reason


def test_depth_without_returns_gives_an_empty_scene() -> None:
    scene = make_scene(3, width=160, height=120)
    blind = [replace(frame, depth_m=np.full_like(frame.depth_m, np.nan)) for frame in scene.frames]
    result = build_scene(blind, scene.T_base_from_cam)
    assert result.available  # depth was there, it just saw nothing: not the same as RGB-only
    assert result.objects == [] and result.relations == [] and result.counts["fused_voxels"] == 0
    assert all(marks == [] for marks in result.marks.values())
    assert all(np.array_equal(result.marked_views[f.camera], f.rgb) for f in scene.frames)


def test_bad_inputs_raise() -> None:
    scene = make_scene(3, width=160, height=120)
    with pytest.raises(SceneInputError, match="at least one frame"):
        build_scene([], scene.T_base_from_cam)
    mounts = dict(scene.T_base_from_cam)
    del mounts["cam1"]
    with pytest.raises(SceneInputError, match="cam1"):
        build_scene(scene.frames, mounts)
    with pytest.raises(SceneInputError, match="stamp"):
        build_scene(scene.frames, scene.T_base_from_cam, {123: np.eye(4)})
    with pytest.raises(SceneInputError, match="twice"):
        build_scene([scene.frames[0], scene.frames[0]], scene.T_base_from_cam)
    with pytest.raises(ValueError, match="4x4"):
        build_scene(scene.frames, {**scene.T_base_from_cam, "cam0": np.eye(3)})


def test_moving_robot_with_per_stamp_poses() -> None:
    """Two cameras on a robot seen at two stamps: fused in the world frame with T_world_from_base."""
    scene = make_scene(4, width=WIDTH, height=HEIGHT)
    table_xy = np.array(scene.primitives[0].centre_m[:2])
    # Earlier pose: the robot had driven 0.5 rad around the table; now (newest stamp) it is at the origin.
    around = pose_from_xyz_rpy([*table_xy, 0.0], [0, 0, 0.5]) @ pose_from_xyz_rpy([*-table_xy, 0.0], [0, 0, 0])
    poses = {100: around, 200: np.eye(4)}
    renderer = Renderer(scene.primitives)
    mounts = {c.name: c.T_base_from_cam for c in scene.cameras[:2]}
    frames = []
    for stamp, T_world_from_base in poses.items():
        for camera in scene.cameras[:2]:
            moved = SceneCamera(camera.name, camera.intrinsics, T_world_from_base @ mounts[camera.name])
            rgb, depth, _ = renderer.render(moved)
            frames.append(Frame(camera.name, stamp, rgb, depth, camera.intrinsics, camera.frame_id))
    result = build_scene(frames, mounts, poses)
    assert result.frame_id == "odom" and result.viewpoint == "base_link"
    assert set(result.marked_views) == {"cam0@100", "cam1@100", "cam0@200", "cam1@200"}
    score = score_scene(scene, result)
    assert score.unmatched_gt == [] and score.max_centre_error_m < 0.03
    assert score.pair_agreement >= 0.95, score.disagreements


def test_relations_use_the_newest_base_pose() -> None:
    """A robot turned by 180° sees left and right swapped: relations are in its base frame."""
    scene = make_scene(5, width=WIDTH, height=HEIGHT)
    plain = build_scene(scene.frames, scene.T_base_from_cam)
    # Same frames, but the base is now declared to sit in a world frame rotated by pi: the cameras'
    # world poses change, and so does what the world sees, but not what the base sees.
    turned = build_scene(scene.frames, scene.T_base_from_cam, pose_from_xyz_rpy([1.0, 2.0, 0.0], [0, 0, math.pi]))
    key = lambda r: (r.subject_id, r.predicate, r.object_id)  # noqa: E731
    assert {key(r) for r in turned.relations} == {key(r) for r in plain.relations}
    # Positions are reported in the world frame: x_world = 1 - x_base.
    world_from_base = pose_from_xyz_rpy([1.0, 2.0, 0.0], [0, 0, math.pi])
    for obj in plain.objects:
        moved = world_from_base[:3, :3] @ np.array(obj.position) + world_from_base[:3, 3]
        match = min(turned.objects, key=lambda o: np.linalg.norm(np.array(o.position) - moved))
        assert np.linalg.norm(np.array(match.position) - moved) < 0.01
    assert np.allclose(invert_pose(world_from_base) @ world_from_base, np.eye(4))


def test_relations_from_a_cameras_point_of_view() -> None:
    """A camera facing the robot (looking along -x): its left is the robot's right, its front the
    robot's back; support, height and nearness do not depend on the viewpoint."""
    scene = make_scene(6, width=WIDTH, height=HEIGHT)
    facing = SceneCamera("facing", scene.cameras[0].intrinsics, look_at_pose([4.0, 0.0, 1.6], [1.6, 0.0, 0.3]))
    rgb, depth, _ = Renderer(scene.primitives).render(facing)
    frames = [*scene.frames, Frame("facing", scene.frames[0].stamp_ns, rgb, depth, facing.intrinsics, "facing_optical")]
    mounts = {**scene.T_base_from_cam, "facing": facing.T_base_from_cam}
    robot = build_scene(frames, mounts)
    camera = build_scene(frames, mounts, params=SceneParams(viewpoint_camera="facing"))
    assert camera.viewpoint == "facing_optical_level" and robot.viewpoint == "base_link"
    assert all(r.viewpoint == "facing_optical_level" for r in camera.relations)
    swap = {"left_of": "right_of", "right_of": "left_of", "in_front_of": "behind", "behind": "in_front_of"}
    expected = {(r.subject_id, swap.get(r.predicate, r.predicate), r.object_id) for r in robot.relations}
    assert {(r.subject_id, r.predicate, r.object_id) for r in camera.relations} == expected
    # A viewpoint camera that gave no frame: its mount on the base.
    mounted = build_scene(scene.frames, mounts, params=SceneParams(viewpoint_camera="facing"))
    assert mounted.viewpoint == "facing_level"
    assert {(r.subject_id, r.predicate, r.object_id) for r in mounted.relations} == expected
    with pytest.raises(SceneInputError, match="viewpoint camera"):
        build_scene(frames, mounts, params=SceneParams(viewpoint_camera="nobody"))


@pytest.mark.parametrize(
    ("rgb", "name"),
    [((215, 35, 35), "red"), ((150, 20, 20), "red"), ((40, 80, 215), "blue"), ((235, 205, 40), "yellow"),
     ((75, 50, 30), "brown"), ((150, 100, 60), "brown"), ((240, 240, 240), "white"), ((120, 120, 125), "grey"),
     ((160, 160, 160), "grey"), ((10, 10, 10), "black"), ((140, 60, 190), "purple"), ((235, 110, 170), "pink"),
     ((40, 190, 200), "cyan"), ((40, 165, 60), "green"), ((240, 125, 25), "orange"), ((255, 140, 0), "orange"),
     ((215, 195, 150), "beige"), ((235, 220, 185), "beige")],
)
def test_colour_names(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(rgb) == name
