"""Message <-> core-type conversions at the ROS boundary: Time ↔ int ns, CameraInfo ↔ CameraIntrinsics,
Image/CompressedImage (+ depth) → Frame.

Duck-typed: works with rclpy messages and with rosbags typestore messages, and imports no rclpy, so
oryx_ros.bags and offline tools use it too (keep it that way). Constructors take the message class
to build (``msg_type``), as oryx_ros.perception.image_codec does.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from oryx_ros.perception.frames import CameraIntrinsics, Frame
from oryx_ros.perception.image_codec import ImageConversionError, to_depth_m, to_rgb

__all__ = [
    "CameraInfoError",
    "camera_info_to_intrinsics",
    "depth_to_colour_size",
    "header_stamp_ns",
    "image_to_frame",
    "intrinsics_for_size",
    "intrinsics_to_camera_info",
    "ns_to_stamp",
    "stamp_to_ns",
]

_NS_PER_S: Final = 1_000_000_000
_INT32_MAX: Final = 2**31 - 1
# Relative aspect-ratio difference tolerated when scaling intrinsics or depth to another image size
# (sizes are integers, so e.g. 1280x720 → 426x240 differs by 0.16 %).
_ASPECT_TOLERANCE: Final = 0.01


class CameraInfoError(ValueError):
    """A sensor_msgs/CameraInfo that gives no usable pinhole model (zero size, uncalibrated K, ...)."""


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) → integer nanoseconds."""
    return int(stamp.sec) * _NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` in integer nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


def ns_to_stamp(stamp_ns: int, time_type: type) -> Any:
    """Integer nanoseconds → ``time_type(sec=..., nanosec=...)`` (rclpy or rosbags Time class)."""
    stamp_ns = int(stamp_ns)
    if stamp_ns < 0 or stamp_ns // _NS_PER_S > _INT32_MAX:
        raise ValueError(f"stamp {stamp_ns} ns does not fit builtin_interfaces/Time (0 .. 2^31 s)")
    sec, nanosec = divmod(stamp_ns, _NS_PER_S)
    return time_type(sec=sec, nanosec=nanosec)


def _rosbags_module(msg_type: type) -> Any | None:
    """The typestore module of a rosbags message class (it holds the nested types), else None."""
    return sys.modules[msg_type.__module__] if hasattr(msg_type, "__msgtype__") else None


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """sensor_msgs/CameraInfo → CameraIntrinsics of the image as published.

    Binning and a region of interest are applied (as image_geometry's PinholeCameraModel does), so the
    result matches the published image: ``fx / binning_x``, ``(cx - roi.x_offset) / binning_x``, size
    ``roi.width / binning_x`` (full width when the ROI is empty).
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"CameraInfo has zero size ({width}x{height})")
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3).copy()
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CameraInfoError(f"CameraInfo is uncalibrated (fx={k[0, 0]}, fy={k[1, 1]})")
    binning_x, binning_y = max(1, int(msg.binning_x)), max(1, int(msg.binning_y))
    roi = msg.roi
    if int(roi.width) > 0 and int(roi.height) > 0:
        k[0, 2] -= int(roi.x_offset)
        k[1, 2] -= int(roi.y_offset)
        width, height = int(roi.width), int(roi.height)
    if binning_x > 1 or binning_y > 1:
        k[0, 0] /= binning_x
        k[0, 2] /= binning_x
        k[1, 1] /= binning_y
        k[1, 2] /= binning_y
        width, height = width // binning_x, height // binning_y
    d = np.asarray(msg.d, dtype=np.float64).copy()
    return CameraIntrinsics(width=width, height=height, k=k, d=d,
                            distortion_model=str(msg.distortion_model) or "plumb_bob")


def intrinsics_to_camera_info(intrinsics: CameraIntrinsics, msg_type: type, header: Any = None) -> Any:
    """CameraIntrinsics → ``msg_type`` (sensor_msgs/CameraInfo): K, D, R = I, P = [K | 0], no ROI."""
    k = np.asarray(intrinsics.k, dtype=np.float64).reshape(3, 3)
    p = np.hstack([k, np.zeros((3, 1))]).reshape(-1)
    fields = dict(
        height=int(intrinsics.height),
        width=int(intrinsics.width),
        distortion_model=intrinsics.distortion_model,
        k=k.reshape(-1).copy(),
        r=np.eye(3).reshape(-1),
        p=p,
        binning_x=0,
        binning_y=0,
    )
    module = _rosbags_module(msg_type)
    if module is not None:
        if header is None:
            header = module.std_msgs__msg__Header(
                stamp=module.builtin_interfaces__msg__Time(sec=0, nanosec=0), frame_id=""
            )
        roi = module.sensor_msgs__msg__RegionOfInterest(
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        return msg_type(header=header, d=np.asarray(intrinsics.d, dtype=np.float64).copy(), roi=roi, **fields)
    msg = msg_type(**fields) if header is None else msg_type(header=header, **fields)
    msg.d = [float(x) for x in np.asarray(intrinsics.d).reshape(-1)]
    return msg


def _same_aspect(w0: int, h0: int, w1: int, h1: int) -> bool:
    return abs((w0 / h0) / (w1 / h1) - 1.0) <= _ASPECT_TOLERANCE


def intrinsics_for_size(intrinsics: CameraIntrinsics, width: int, height: int) -> CameraIntrinsics:
    """``intrinsics`` for an image of ``width`` x ``height``: itself, or scaled when only the resolution
    differs (same aspect); CameraInfoError when the aspect differs (a different or cropped camera)."""
    if (intrinsics.width, intrinsics.height) == (width, height):
        return intrinsics
    if not _same_aspect(intrinsics.width, intrinsics.height, width, height):
        raise CameraInfoError(
            f"CameraInfo is for {intrinsics.width}x{intrinsics.height}, the image is {width}x{height} "
            "(different aspect ratio)"
        )
    return intrinsics.scaled(width, height)


def depth_to_colour_size(depth_m: npt.NDArray[np.float32], width: int, height: int) -> npt.NDArray[np.float32]:
    """Registered depth at the colour image's size: itself, or resized (nearest neighbour, so no depth
    is invented between surfaces) when only the resolution differs; ImageConversionError otherwise."""
    dh, dw = depth_m.shape[:2]
    if (dw, dh) == (width, height):
        return depth_m
    if not _same_aspect(dw, dh, width, height):
        raise ImageConversionError(
            f"depth image {dw}x{dh} does not match colour image {width}x{height} in aspect ratio "
            "(is the depth topic registered to the colour camera?)"
        )
    return cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)


def image_to_frame(
    msg: Any,
    camera: str,
    *,
    depth_msg: Any = None,
    intrinsics: CameraIntrinsics | None = None,
    frame_id: str | None = None,
) -> Frame:
    """Colour Image/CompressedImage (+ registered depth Image/CompressedImage) → Frame.

    Stamp and frame_id come from the colour message's header (``frame_id`` overrides it). The depth
    image must be registered to the colour camera (e.g. ``aligned_depth_to_color``); when its
    resolution differs but its aspect does not, it is resized to the colour size with nearest
    neighbour. Intrinsics are scaled to the colour size when only the resolution differs.
    """
    rgb = to_rgb(msg)
    height, width = rgb.shape[:2]
    depth_m = None if depth_msg is None else depth_to_colour_size(to_depth_m(depth_msg), width, height)
    if intrinsics is not None:
        intrinsics = intrinsics_for_size(intrinsics, width, height)
    return Frame(
        camera=camera,
        stamp_ns=header_stamp_ns(msg),
        rgb=rgb,
        depth_m=depth_m,
        intrinsics=intrinsics,
        frame_id=str(msg.header.frame_id) if frame_id is None else frame_id,
    )
