"""Rigid transforms, depth back-projection, projection and multi-view fusion into one point cloud.

Frames used across ``oryx_ros.spatial``:

* camera optical frame (REP 103 ``*_optical_frame``): x right, y down, z forward.
* base frame (REP 103, e.g. ``base_link``): x forward, y left, z up.
* world frame (REP 105 ``odom``/``map``): z up.

Transforms are 4x4 homogeneous ``float64`` matrices named ``T_<to>_from_<from>``, so that
``p_to = T_to_from_from @ p_from`` and names chain: ``T_world_from_cam = T_world_from_base @ T_base_from_cam``.
Pixel coordinates are ``(u, v)`` = (column, row); integer ``(u, v)`` is the *centre* of that pixel
(OpenCV / ``sensor_msgs/CameraInfo`` convention), so ``u = fx * x / z + cx``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
import open3d as o3d

from oryx_ros.perception.frames import CameraIntrinsics, Frame

_log = logging.getLogger(__name__)

Pose = npt.NDArray[np.float64]  # (4, 4) homogeneous rigid transform

# Distortion models that cv2.undistortPoints / cv2.projectPoints implement with the ROS coefficient order.
_OPENCV_DISTORTION_MODELS: Final = frozenset({"plumb_bob", "rational_polynomial"})


class GeometryError(ValueError):
    """Geometric input that cannot be used: wrong shapes, non-rigid poses, unknown distortion."""


# ---------------------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------------------


def _as_vector(values: Sequence[float] | npt.ArrayLike, length: int, name: str) -> npt.NDArray[np.float64]:
    vector = np.asarray(values, dtype=np.float64).reshape(-1)
    if vector.shape != (length,) or not np.all(np.isfinite(vector)):
        raise GeometryError(f"{name} must be {length} finite numbers, got {values!r}")
    return vector


def rotation_from_rpy(rpy_rad: Sequence[float]) -> npt.NDArray[np.float64]:
    """(3, 3) rotation from roll, pitch, yaw in radians.

    URDF / tf2 convention: fixed axes, roll about x, then pitch about y, then yaw about z,
    i.e. ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``.
    """
    roll, pitch, yaw = _as_vector(rpy_rad, 3, "rpy")
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rot_x = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    rot_y = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rot_z = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def rotation_from_quat_xyzw(quat_xyzw: Sequence[float]) -> npt.NDArray[np.float64]:
    """(3, 3) rotation from a quaternion in geometry_msgs/Quaternion order (x, y, z, w; not Eigen's wxyz)."""
    x, y, z, w = _as_vector(quat_xyzw, 4, "quaternion (x, y, z, w)")
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if norm < 1e-9:
        raise GeometryError("quaternion has zero length")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_xyzw_from_rotation(rotation: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Quaternion (x, y, z, w) with w >= 0 for a (3, 3) rotation matrix (Shepperd's method)."""
    r = np.asarray(rotation, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s])
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = np.array([0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s])
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = np.array([(r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = np.array([(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s, (r[1, 0] - r[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def pose_from_xyz_rpy(xyz_m: Sequence[float], rpy_rad: Sequence[float]) -> Pose:
    """4x4 ``T_parent_from_child`` from a translation (metres) and URDF roll/pitch/yaw (radians, see
    :func:`rotation_from_rpy`), as in a URDF ``<origin xyz rpy>`` or ``static_transform_publisher``."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_from_rpy(rpy_rad)
    pose[:3, 3] = _as_vector(xyz_m, 3, "xyz")
    return pose


def pose_from_xyz_quat(xyz_m: Sequence[float], quat_xyzw: Sequence[float]) -> Pose:
    """4x4 ``T_parent_from_child`` from a translation (metres) and a quaternion in ROS order x, y, z, w
    (geometry_msgs/Transform)."""
    pose = np.eye(4)
    pose[:3, :3] = rotation_from_quat_xyzw(quat_xyzw)
    pose[:3, 3] = _as_vector(xyz_m, 3, "xyz")
    return pose


def pose_from_mount(mount: Sequence[float]) -> Pose:
    """4x4 ``T_base_from_cam`` from the node's ``cameras.<name>.mount`` parameter:
    [x, y, z, qx, qy, qz, qw] (metres; quaternion in ROS order, as static_transform_publisher)."""
    values = _as_vector(mount, 7, "mount [x, y, z, qx, qy, qz, qw]")
    return pose_from_xyz_quat(values[:3], values[3:])


def mount_from_pose(T_base_from_cam: Pose) -> list[float]:
    """[x, y, z, qx, qy, qz, qw] of a 4x4 pose (the inverse of :func:`pose_from_mount`)."""
    pose = check_pose(T_base_from_cam)
    return [float(v) for v in (*pose[:3, 3], *quat_xyzw_from_rotation(pose[:3, :3]))]


def check_pose(pose: npt.ArrayLike, name: str = "pose") -> Pose:
    """The pose as a (4, 4) float64 array; raises :class:`GeometryError` if it is not a rigid transform."""
    matrix = np.asarray(pose, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise GeometryError(f"{name} must be a finite 4x4 matrix, got shape {matrix.shape}")
    rotation = matrix[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) < 0:
        raise GeometryError(f"{name} rotation is not orthonormal with det +1")
    if not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
        raise GeometryError(f"{name} last row must be [0, 0, 0, 1], got {matrix[3]}")
    return matrix


def invert_pose(T_a_from_b: Pose) -> Pose:
    """``T_b_from_a`` for a rigid ``T_a_from_b`` (transpose the rotation, no general inverse)."""
    rotation = T_a_from_b[:3, :3]
    inverse = np.eye(4)
    inverse[:3, :3] = rotation.T
    inverse[:3, 3] = -rotation.T @ T_a_from_b[:3, 3]
    return inverse


def transform_points(T_a_from_b: Pose, points_b: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """(N, 3) points expressed in frame b → the same points in frame a."""
    points = np.asarray(points_b, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise GeometryError(f"points must have shape (N, 3), got {points.shape}")
    # (R @ P^T)^T rather than P @ R^T: numpy's (N, 3) @ (3, 3) path is ~10x slower for large N.
    return (T_a_from_b[:3, :3] @ points.T).T + T_a_from_b[:3, 3]


def look_at_pose(eye_m: Sequence[float], target_m: Sequence[float], up: Sequence[float] = (0, 0, 1)) -> Pose:
    """``T_parent_from_cam`` of a camera optical frame (x right, y down, z forward) at ``eye`` looking at
    ``target``, with image "up" along the parent's ``up`` (z up for REP 103 base/world frames)."""
    eye, target, up_axis = (_as_vector(v, 3, n) for v, n in ((eye_m, "eye"), (target_m, "target"), (up, "up")))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-9:
        raise GeometryError("eye and target coincide")
    z_cam = forward / np.linalg.norm(forward)
    x_cam = np.cross(z_cam, up_axis)  # right = forward × up
    if np.linalg.norm(x_cam) < 1e-6:
        raise GeometryError("viewing direction is parallel to the up axis")
    x_cam /= np.linalg.norm(x_cam)
    y_cam = np.cross(z_cam, x_cam)  # down = forward × right
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x_cam, y_cam, z_cam])
    pose[:3, 3] = eye
    return pose


def level_pose_of_camera(T_parent_from_cam: Pose) -> Pose:
    """``T_parent_from_level``: a REP 103 frame (x forward, y left, z up) at the camera's optical centre,
    x along its optical axis projected onto the parent's horizontal plane (parent z up). "Left of" in
    this frame is left in that camera's image, whatever the camera's pitch and roll."""
    forward = T_parent_from_cam[:3, 2].copy()  # optical z axis in the parent frame
    forward[2] = 0.0
    if np.linalg.norm(forward) < 1e-6:
        raise GeometryError("the camera looks straight up or down: its horizontal direction is undefined")
    x_axis = forward / np.linalg.norm(forward)
    z_axis = np.array([0.0, 0.0, 1.0])
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([x_axis, np.cross(z_axis, x_axis), z_axis])
    pose[:3, 3] = T_parent_from_cam[:3, 3]
    return pose


# ---------------------------------------------------------------------------------------------------------
# Pinhole back-projection / projection
# ---------------------------------------------------------------------------------------------------------


def _has_distortion(intrinsics: CameraIntrinsics) -> bool:
    if intrinsics.d.size == 0 or not np.any(intrinsics.d):
        return False
    if intrinsics.distortion_model not in _OPENCV_DISTORTION_MODELS:
        raise GeometryError(
            f"distortion model {intrinsics.distortion_model!r} is not supported "
            f"(supported: {sorted(_OPENCV_DISTORTION_MODELS)}); rectify the images first"
        )
    return True


def normalized_rays(intrinsics: CameraIntrinsics) -> npt.NDArray[np.float64]:
    """(H, W, 2) ``(x/z, y/z)`` of the ray through every pixel centre, in the camera optical frame.

    Undistorts with OpenCV when the intrinsics carry non-zero plumb_bob / rational_polynomial
    coefficients; a plain pinhole inversion otherwise.
    """
    u, v = np.meshgrid(np.arange(intrinsics.width, dtype=np.float64), np.arange(intrinsics.height, dtype=np.float64))
    if not _has_distortion(intrinsics):
        return np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy], axis=-1)
    pixels = np.stack([u, v], axis=-1).reshape(-1, 1, 2)
    undistorted = cv2.undistortPoints(pixels, intrinsics.k, intrinsics.d)  # (N, 1, 2) normalised coordinates
    return undistorted.reshape(intrinsics.height, intrinsics.width, 2).astype(np.float64)


@dataclass(frozen=True)
class BackProjection:
    """Valid depth pixels of one image as 3D points in that camera's optical frame."""

    points_cam_m: npt.NDArray[np.float32]  # (N, 3) x right, y down, z forward, metres
    pixels_uv: npt.NDArray[np.int32]  # (N, 2) (column, row) of each point


def check_depth_frame(frame: Frame) -> tuple[npt.NDArray[np.float32], CameraIntrinsics]:
    """The frame's depth and intrinsics after shape checks; raises GeometryError when they do not agree."""
    if frame.depth_m is None or frame.intrinsics is None:
        raise GeometryError(f"frame of camera {frame.camera!r} has no depth or no intrinsics")
    depth = frame.depth_m
    intrinsics = frame.intrinsics
    if depth.ndim != 2:
        raise GeometryError(f"depth of camera {frame.camera!r} must be (H, W), got {depth.shape}")
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise GeometryError(
            f"depth of camera {frame.camera!r} is {depth.shape[1]}x{depth.shape[0]} but its intrinsics "
            f"describe {intrinsics.width}x{intrinsics.height}"
        )
    if frame.rgb.shape[:2] != depth.shape:
        raise GeometryError(
            f"rgb {frame.rgb.shape[:2]} and depth {depth.shape} of camera {frame.camera!r} are not registered"
        )
    return depth, intrinsics


def backproject_depth(
    depth_m: npt.NDArray[np.floating],
    intrinsics: CameraIntrinsics,
    *,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
    stride: int = 1,
) -> BackProjection:
    """Back-project a (H, W) depth image (metres along the optical z axis, NaN/0 = no return).

    Pixels outside ``[min_depth_m, max_depth_m]`` are left out. ``stride`` keeps every n-th row and
    column (a cheap pre-decimation before voxel filtering).
    """
    if stride < 1:
        raise GeometryError(f"stride must be >= 1, got {stride}")
    depth = np.asarray(depth_m, dtype=np.float32)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise GeometryError(f"depth {depth.shape} does not match intrinsics {intrinsics.width}x{intrinsics.height}")
    rays = normalized_rays(intrinsics)[::stride, ::stride]  # (h, w, 2)
    depth = depth[::stride, ::stride]
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth >= min_depth_m) & (depth <= max_depth_m)
    rows, cols = np.nonzero(valid)
    z = depth[rows, cols].astype(np.float64)
    xy = rays[rows, cols] * z[:, None]
    points = np.column_stack([xy, z]).astype(np.float32)
    pixels = np.column_stack([cols * stride, rows * stride]).astype(np.int32)
    return BackProjection(points, pixels)


def project_points(
    points_cam_m: npt.NDArray[np.floating], intrinsics: CameraIntrinsics
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(N, 3) optical-frame points → ((N, 2) pixel (u, v), (N,) depth z). Points with z <= 0 get NaN pixels."""
    points = np.asarray(points_cam_m, dtype=np.float64)
    z = points[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        if _has_distortion(intrinsics):
            image_points, _ = cv2.projectPoints(points, np.zeros(3), np.zeros(3), intrinsics.k, intrinsics.d)
            uv = image_points.reshape(-1, 2).astype(np.float64)
        else:
            uv = np.column_stack(
                [intrinsics.fx * points[:, 0] / z + intrinsics.cx, intrinsics.fy * points[:, 1] / z + intrinsics.cy]
            )
    uv[z <= 0] = np.nan
    return uv, z


def smooth_depth(
    depth_m: npt.NDArray[np.floating], *, diameter_px: int = 5, sigma_m: float = 0.04, sigma_px: float = 2.0
) -> npt.NDArray[np.float32]:
    """Edge-preserving denoising of a (H, W) depth image (OpenCV bilateral filter), NaN kept as NaN.

    Neighbours whose depth differs by much more than ``sigma_m`` (another surface) barely contribute,
    and missing pixels are set to 0 m before filtering, so they count as "another surface" too. This is
    the role of the RealSense / Azure Kinect spatial filters: it reduces the axial noise that otherwise
    inflates fused bounding boxes by about two sigma on each side.
    """
    depth = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(depth)
    filtered = cv2.bilateralFilter(np.where(valid, depth, 0.0).astype(np.float32), diameter_px, sigma_m, sigma_px)
    filtered[~valid] = np.nan
    return filtered


# ---------------------------------------------------------------------------------------------------------
# Multi-view fusion
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PosedView:
    """One RGB-D frame with its pose in the common frame of a fusion (world, or base when no odometry)."""

    key: str  # name of this view in results (the camera name, or camera@stamp when a camera repeats)
    frame: Frame
    T_common_from_cam: Pose


def fuse_views(
    views: Sequence[PosedView],
    *,
    voxel_size_m: float,
    min_depth_m: float = 0.1,
    max_depth_m: float = 10.0,
    smooth_sigma_m: float | None = 0.04,
) -> o3d.geometry.PointCloud:
    """Back-project every view, move it into the common frame and voxel-downsample the union.

    Depth is first smoothed with :func:`smooth_depth` (``smooth_sigma_m`` None: used as measured).
    Colours are RGB in [0, 1] (open3d convention), averaged per voxel like the positions.
    """
    if voxel_size_m <= 0:
        raise GeometryError(f"voxel_size_m must be positive, got {voxel_size_m}")
    all_points: list[npt.NDArray[np.float64]] = []
    all_colours: list[npt.NDArray[np.float64]] = []
    for view in views:
        depth, intrinsics = check_depth_frame(view.frame)
        if smooth_sigma_m is not None:
            depth = smooth_depth(depth, sigma_m=smooth_sigma_m)
        back = backproject_depth(depth, intrinsics, min_depth_m=min_depth_m, max_depth_m=max_depth_m)
        all_points.append(transform_points(view.T_common_from_cam, back.points_cam_m))
        u, v = back.pixels_uv[:, 0], back.pixels_uv[:, 1]
        all_colours.append(view.frame.rgb[v, u].astype(np.float64) / 255.0)
        _log.debug("view %s: %d valid depth pixels of %d", view.key, len(u), depth.size)
    cloud = o3d.geometry.PointCloud()
    if all_points:
        cloud.points = o3d.utility.Vector3dVector(np.concatenate(all_points))
        cloud.colors = o3d.utility.Vector3dVector(np.concatenate(all_colours))
    return cloud.voxel_down_sample(voxel_size_m)
