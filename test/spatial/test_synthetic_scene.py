"""The synthetic RGB-D generator: rendered geometry, noise model, ground truth and the bag it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from oryx_ros.bags.camera_bag import read_camera_frames, read_messages
from oryx_ros.spatial.geometry import backproject_depth, pose_from_xyz_quat, transform_points
from oryx_ros.spatial.relations import relation_margins
from oryx_ros.spatial.synthetic_scene import DepthNoise, LayoutParams, main, make_scene, write_scene


@pytest.fixture(scope="module")
def scene():
    return make_scene(11, width=160, height=120)


def test_rendered_depth_is_metric_and_owned_by_the_right_object(scene) -> None:
    views_seeing = np.zeros(len(scene.primitives), dtype=int)
    for frame, camera in zip(scene.frames, scene.cameras, strict=True):
        assert frame.rgb.shape == (120, 160, 3) and frame.depth_m.dtype == np.float32
        back = backproject_depth(frame.depth_m, frame.intrinsics, max_depth_m=100.0)
        points = transform_points(camera.T_base_from_cam, back.points_cam_m)
        owner = scene.instance_images[camera.name][back.pixels_uv[:, 1], back.pixels_uv[:, 0]]
        np.testing.assert_allclose(points[owner == -1, 2], 0.0, atol=1e-3)  # the floor is z = 0
        for index, primitive in enumerate(scene.primitives):
            mine = points[owner == index]
            views_seeing[index] += len(mine) >= 20
            # Every point of a primitive lies in (or on) its ground-truth box.
            assert np.all(mine >= primitive.box.low - 2e-3) and np.all(mine <= primitive.box.high + 2e-3)
    assert np.all(views_seeing >= 2)  # the generator's visibility rule


def test_ground_truth_is_json_and_unambiguous(scene) -> None:
    truth = json.loads(json.dumps(scene.ground_truth()))
    assert len(truth["objects"]) == len(scene.primitives) == 8
    assert truth["objects"][0]["name"] == "table"
    assert {tuple(r.values()) for r in truth["relations"]} == set(scene.true_relations())
    assert sum(1 for r in truth["relations"] if r["predicate"] == "on") >= 4  # 3 on the table + the stack
    margin = LayoutParams().ambiguity_margin_m
    for a in scene.primitives:
        for b in scene.primitives:
            if a is not b:
                assert all(abs(m) >= margin - 1e-9 for m in relation_margins(a.box, b.box).values())
    for name, camera in truth["cameras"].items():
        pose = pose_from_xyz_quat(camera["mount"][:3], camera["mount"][3:])
        np.testing.assert_allclose(pose, scene.T_base_from_cam[name], atol=1e-9)


def test_depth_noise_follows_the_axial_model() -> None:
    clean = make_scene(12, width=160, height=120)
    noisy = make_scene(12, width=160, height=120, noise=DepthNoise(dropout=0.05))
    for a, b in zip(clean.frames, noisy.frames, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)  # same layout, same cameras
        both = np.isfinite(a.depth_m) & np.isfinite(b.depth_m)
        normalised = (b.depth_m[both] - a.depth_m[both]) / DepthNoise().sigma_m(a.depth_m[both])
        assert abs(normalised.std() - 1.0) < 0.1 and abs(normalised.mean()) < 0.05
        dropped = np.isnan(b.depth_m) & np.isfinite(a.depth_m)
        assert 0.04 < dropped.sum() / np.isfinite(a.depth_m).sum() < 0.06


def test_layout_options() -> None:
    few = make_scene(13, width=160, height=120, n_cameras=3,
                     layout=LayoutParams(table_objects=2, floor_objects=1, stacked_pair=False))
    assert len(few.cameras) == 3 and len(few.primitives) == 4
    assert {p.support for p in few.primitives} == {"floor", "table"}
    with pytest.raises(ValueError, match="n_cameras"):
        make_scene(0, width=160, height=120, n_cameras=9)


def test_write_scene_bag_reads_back(scene, tmp_path: Path) -> None:
    paths = write_scene(scene, tmp_path, n_frames=2, rate_hz=10.0)
    frames = read_camera_frames(paths["bag"], [c.name for c in scene.cameras])
    assert len(frames) == 2 * len(scene.cameras)
    first = {f.camera: f for f in frames if f.stamp_ns == scene.frames[0].stamp_ns}
    for original in scene.frames:
        read = first[original.camera]
        np.testing.assert_array_equal(read.rgb, original.rgb)
        np.testing.assert_array_equal(read.depth_m, original.depth_m)  # 32FC1, NaN kept
        np.testing.assert_allclose(read.intrinsics.k, original.intrinsics.k)
    assert {f.stamp_ns for f in frames} == {scene.frames[0].stamp_ns, scene.frames[0].stamp_ns + 100_000_000}
    (tf_static,) = list(read_messages(paths["bag"], ["/tf_static"]))
    by_child = {t.child_frame_id: t for t in tf_static.msg.transforms}
    for camera in scene.cameras:
        t = by_child[camera.frame_id].transform
        pose = pose_from_xyz_quat([t.translation.x, t.translation.y, t.translation.z],
                                  [t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w])
        np.testing.assert_allclose(pose, camera.T_base_from_cam, atol=1e-9)
    params = yaml.safe_load(paths["cameras"].read_text())["/**"]["ros__parameters"]["cameras"]
    assert params["names"] == [c.name for c in scene.cameras]
    mount = params["cam0"]["mount"]
    np.testing.assert_allclose(pose_from_xyz_quat(mount[:3], mount[3:]), scene.T_base_from_cam["cam0"], atol=1e-5)
    assert json.loads(paths["ground_truth"].read_text())["seed"] == 11
    with pytest.raises(FileExistsError):
        write_scene(scene, tmp_path)


def test_make_scene_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "out"), "--noise", "--cameras", "3", "--seed", "5",
                 "--width", "128", "--height", "96", "--frames", "1"]) == 0
    assert (tmp_path / "out" / "bag" / "metadata.yaml").exists()
    truth = json.loads((tmp_path / "out" / "ground_truth.json").read_text())
    assert truth["seed"] == 5 and len(truth["cameras"]) == 3 and truth["noise"]["dropout"] == 0.02
    assert "3 cameras" in capsys.readouterr().out
