"""Back-projection, projection and pose conventions with known intrinsics and poses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oryx_ros.perception.frames import CameraIntrinsics, Frame
from oryx_ros.spatial.geometry import (
    GeometryError,
    PosedView,
    backproject_depth,
    check_pose,
    fuse_views,
    invert_pose,
    level_pose_of_camera,
    look_at_pose,
    mount_from_pose,
    pose_from_mount,
    pose_from_xyz_quat,
    pose_from_xyz_rpy,
    project_points,
    quat_xyzw_from_rotation,
    rotation_from_rpy,
    smooth_depth,
    transform_points,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])
INTRINSICS = CameraIntrinsics(640, 480, K)


def test_backprojection_of_known_pixels() -> None:
    depth = np.full((480, 640), np.nan, dtype=np.float32)
    depth[240, 320] = 2.0  # principal point: straight ahead
    depth[240, 420] = 1.0  # 100 px right of it at fx = 500: x = 0.2 z
    depth[40, 320] = 3.0  # 200 px above at fy = 480: y = -200 / 480 z
    back = backproject_depth(depth, INTRINSICS)
    by_pixel = {tuple(p): q for p, q in zip(back.pixels_uv.tolist(), back.points_cam_m, strict=True)}
    assert len(by_pixel) == 3
    np.testing.assert_allclose(by_pixel[(320, 240)], [0.0, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(by_pixel[(420, 240)], [0.2, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(by_pixel[(320, 40)], [0.0, -1.25, 3.0], atol=1e-6)


def test_backprojection_skips_missing_and_out_of_range_depth() -> None:
    depth = np.array([[np.nan, 0.0, 0.05, 1.0], [20.0, 2.0, np.inf, 3.0]], dtype=np.float32)
    intrinsics = CameraIntrinsics(4, 2, np.array([[2.0, 0, 1.5], [0, 2.0, 0.5], [0, 0, 1]]))
    back = backproject_depth(depth, intrinsics, min_depth_m=0.1, max_depth_m=10.0)
    assert sorted(back.points_cam_m[:, 2].tolist()) == [1.0, 2.0, 3.0]


def test_projection_inverts_backprojection_with_and_without_distortion() -> None:
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, size=(480, 640)).astype(np.float32)
    distorted = CameraIntrinsics(640, 480, K, np.array([-0.12, 0.05, 0.001, -0.0005, 0.0]))
    for intrinsics in (INTRINSICS, distorted):
        back = backproject_depth(depth, intrinsics, stride=7)
        uv, z = project_points(back.points_cam_m, intrinsics)
        np.testing.assert_allclose(uv, back.pixels_uv, atol=0.02)
        np.testing.assert_allclose(z, depth[back.pixels_uv[:, 1], back.pixels_uv[:, 0]], rtol=1e-6)


def test_unsupported_distortion_model_raises() -> None:
    fisheye = CameraIntrinsics(640, 480, K, np.array([0.1, 0.01, 0.0, 0.0]), "equidistant")
    with pytest.raises(GeometryError, match="equidistant"):
        backproject_depth(np.ones((480, 640), np.float32), fisheye)


def test_depth_size_must_match_intrinsics() -> None:
    with pytest.raises(GeometryError, match="does not match"):
        backproject_depth(np.ones((240, 320), np.float32), INTRINSICS)


def test_rpy_follows_urdf_fixed_axes() -> None:
    # yaw 90°: base x axis turns into y; pitch 90° (about y): x turns into -z.
    np.testing.assert_allclose(rotation_from_rpy([0, 0, math.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rotation_from_rpy([0, math.pi / 2, 0]) @ [1, 0, 0], [0, 0, -1], atol=1e-12)
    # R = Rz(yaw) Ry(pitch) Rx(roll): roll is applied first, about the fixed x axis.
    combined = rotation_from_rpy([math.pi / 2, 0, math.pi / 2])
    np.testing.assert_allclose(combined @ [0, 1, 0], [0, 0, 1], atol=1e-12)


def test_quaternion_is_xyzw_and_matches_rpy() -> None:
    half = math.sqrt(0.5)
    yaw_90 = pose_from_xyz_quat([1, 2, 3], [0, 0, half, half])  # x, y, z, w
    np.testing.assert_allclose(yaw_90, pose_from_xyz_rpy([1, 2, 3], [0, 0, math.pi / 2]), atol=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        rotation = rotation_from_rpy(rng.uniform(-math.pi, math.pi, 3))
        quat = quat_xyzw_from_rotation(rotation)
        assert quat[3] >= 0
        np.testing.assert_allclose(pose_from_xyz_quat([0, 0, 0], quat)[:3, :3], rotation, atol=1e-9)
    with pytest.raises(GeometryError, match="zero length"):
        pose_from_xyz_quat([0, 0, 0], [0, 0, 0, 0])


def test_transforms_chain_and_invert() -> None:
    T_base_from_cam = pose_from_xyz_rpy([0.2, 0.0, 1.0], [-math.pi / 2, 0.0, -math.pi / 2])
    T_world_from_base = pose_from_xyz_rpy([5.0, -1.0, 0.0], [0.0, 0.0, math.pi])
    point_cam = np.array([[0.0, 0.0, 2.0]])  # 2 m along the optical axis
    point_base = transform_points(T_base_from_cam, point_cam)
    # This mount is the standard optical frame: optical z = base x, so the point is 2 m ahead of the camera.
    np.testing.assert_allclose(point_base, [[2.2, 0.0, 1.0]], atol=1e-12)
    point_world = transform_points(T_world_from_base @ T_base_from_cam, point_cam)
    np.testing.assert_allclose(point_world, [[5.0 - 2.2, -1.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(invert_pose(T_world_from_base) @ T_world_from_base, np.eye(4), atol=1e-12)


def test_look_at_gives_optical_axes() -> None:
    pose = look_at_pose([0, 0, 1], [3, 0, 1])  # camera looking along base +x
    np.testing.assert_allclose(pose[:3, 2], [1, 0, 0], atol=1e-12)  # optical z forward = base x
    np.testing.assert_allclose(pose[:3, 0], [0, -1, 0], atol=1e-12)  # optical x right = base -y
    np.testing.assert_allclose(pose[:3, 1], [0, 0, -1], atol=1e-12)  # optical y down = base -z
    with pytest.raises(GeometryError, match="parallel"):
        look_at_pose([0, 0, 2], [0, 0, 0])


def test_check_pose_rejects_non_rigid() -> None:
    with pytest.raises(GeometryError, match="4x4"):
        check_pose(np.eye(3))
    scaled = np.eye(4)
    scaled[0, 0] = 2.0
    with pytest.raises(GeometryError, match="orthonormal"):
        check_pose(scaled)
    mirrored = np.diag([1.0, 1.0, -1.0, 1.0])
    with pytest.raises(GeometryError, match="det"):
        check_pose(mirrored)


def test_smooth_depth_keeps_holes_and_edges() -> None:
    rng = np.random.default_rng(2)
    depth = np.full((60, 80), 2.0, dtype=np.float32)
    depth[:, 40:] = 1.0  # a 1 m step: must stay sharp
    noisy = depth + rng.normal(0, 0.005, depth.shape).astype(np.float32)
    noisy[10, 10] = np.nan
    smooth = smooth_depth(noisy)
    assert np.isnan(smooth[10, 10]) and np.count_nonzero(np.isnan(smooth)) == 1
    assert np.nanstd(smooth[:, 5:35] - 2.0) < 0.5 * np.nanstd(noisy[:, 5:35] - 2.0)
    np.testing.assert_allclose(smooth[:, 39], 2.0, atol=0.02)
    np.testing.assert_allclose(smooth[:, 40], 1.0, atol=0.02)


def test_fuse_views_puts_two_cameras_on_one_plane() -> None:
    """Two cameras looking down at a floor from different poses: the fused points lie on z = 0."""
    intrinsics = CameraIntrinsics(64, 48, np.array([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]]))
    views = []
    for index, eye in enumerate(([0.0, 0.0, 1.5], [2.0, 1.0, 1.2])):
        T_base_from_cam = look_at_pose(eye, [1.0, 0.5, 0.0])
        # Depth of the floor plane z = 0 along each pixel's ray, in the optical frame.
        u, v = np.meshgrid(np.arange(64.0), np.arange(48.0))
        rays_cam = np.stack([(u - 31.5) / 50.0, (v - 23.5) / 50.0, np.ones_like(u)], axis=-1)
        rays_base_z = rays_cam @ T_base_from_cam[:3, :3].T
        depth = (-T_base_from_cam[2, 3] / rays_base_z[..., 2]).astype(np.float32)
        frame = Frame(f"cam{index}", 0, np.zeros((48, 64, 3), np.uint8), depth, intrinsics)
        views.append(PosedView(f"cam{index}", frame, T_base_from_cam))
    cloud = fuse_views(views, voxel_size_m=0.02, smooth_sigma_m=None)
    points = np.asarray(cloud.points)
    assert len(points) > 500
    np.testing.assert_allclose(points[:, 2], 0.0, atol=1e-4)


def test_mount_parameter_round_trip() -> None:
    # The node's example front camera: optical frame 0.2 m ahead, 0.5 m up, looking along base +x.
    mount = [0.20, 0.0, 0.50, -0.5, 0.5, -0.5, 0.5]
    pose = pose_from_mount(mount)
    np.testing.assert_allclose(pose[:3, 2], [1, 0, 0], atol=1e-12)  # optical z = base x
    np.testing.assert_allclose(pose[:3, 0], [0, -1, 0], atol=1e-12)  # optical x = base -y
    np.testing.assert_allclose(mount_from_pose(pose), mount, atol=1e-12)
    with pytest.raises(GeometryError, match="mount"):
        pose_from_mount([0.0, 0.0, 0.0])


def test_level_frame_ignores_pitch_and_roll() -> None:
    # A camera 1.5 m up looking down at 40° towards +y, rolled by 10°: its level frame looks along +y.
    T_base_from_cam = look_at_pose([0.0, 0.0, 1.5], [0.0, 1.8, 0.0])
    T_base_from_cam[:3, :3] = T_base_from_cam[:3, :3] @ rotation_from_rpy([0, 0, math.radians(10)])
    level = level_pose_of_camera(T_base_from_cam)
    np.testing.assert_allclose(level[:3, 3], [0.0, 0.0, 1.5])
    np.testing.assert_allclose(level[:3, :3], rotation_from_rpy([0, 0, math.pi / 2]), atol=1e-12)
    with pytest.raises(GeometryError, match="straight"):
        level_pose_of_camera(pose_from_xyz_rpy([0, 0, 2], [0, math.pi, 0]))  # optical z = base -z: straight down
