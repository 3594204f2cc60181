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
from oryx_ros.perception.image_codec import MAX_DECODE_PIXELS, ImageConversionError, to_depth_m, to_rgb

__all__ = [
    "CAMERA_INFO_ERROR_REASONS",
    "DISTORTION_COEFFICIENTS",
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


# Coefficient count of each distortion model of sensor_msgs/distortion_models.hpp.
DISTORTION_COEFFICIENTS: Final = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}

# CameraInfoError.reason values.
CAMERA_INFO_ERROR_REASONS: Final = frozenset({
    "malformed",  # a missing field, or K / D not numbers of the right count
    "zero_size",  # width or height 0 (before or after binning and ROI)
    "non_finite",  # NaN or Inf in K or D
    "uncalibrated",  # fx or fy not positive (K all zeros: the driver has no calibration)
    "bad_k",  # K's last row is not (0, 0, 1)
    "bad_binning",  # binning that leaves no pixel
    "bad_roi",  # an ROI outside the sensor
    "distortion_count",  # D's length does not match distortion_model
    "aspect_mismatch",  # CameraInfo for another image shape than the image's
})


class CameraInfoError(ValueError):
    """A sensor_msgs/CameraInfo that gives no usable pinhole model; ``reason`` (one of
    CAMERA_INFO_ERROR_REASONS) says why."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):  # keep the reason through pickling
        return type(self), (str(self), self.reason)


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


def _float_array(values: Any, what: str) -> npt.NDArray[np.float64]:
    try:
        return np.array(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as err:
        raise CameraInfoError(f"CameraInfo {what} is not a list of numbers: {err}", "malformed") from err


def _checked_distortion(model: str, d: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """D as given when its length fits the model; empty when it is all zeros (no distortion, whatever
    its length, as many drivers publish it); CameraInfoError otherwise. Unknown models keep their D:
    oryx_ros.spatial refuses them where it would have to undistort."""
    if not np.isfinite(d).all():
        raise CameraInfoError(f"CameraInfo D has non-finite coefficients {d.tolist()}", "non_finite")
    if not d.any():
        return np.zeros(0)
    expected = DISTORTION_COEFFICIENTS.get(model)
    if expected is not None and d.size != expected:
        raise CameraInfoError(f"CameraInfo D has {d.size} coefficients; {model} has {expected}", "distortion_count")
    return d


def camera_info_to_intrinsics(msg: Any) -> CameraIntrinsics:
    """sensor_msgs/CameraInfo → CameraIntrinsics of the image as published, or CameraInfoError.

    Binning and a region of interest are applied (as image_geometry's PinholeCameraModel does), so the
    result matches the published image: ``fx / binning_x``, ``(cx - roi.x_offset) / binning_x``, size
    ``roi.width / binning_x`` (full width when the ROI is empty; binning 0 means 1).

    Validated, since a bad calibration would otherwise poison every 3D answer: K finite with positive
    focal lengths and last row (0, 0, 1), D finite with the model's coefficient count (or all zeros), a
    non-empty size after ROI and binning, the ROI inside the sensor. R and P are not used (the images
    are the raw ones, which K and D describe), so they are not checked.
    """
    try:
        width, height = int(msg.width), int(msg.height)
        binning_x, binning_y = int(msg.binning_x), int(msg.binning_y)
        roi = msg.roi
        roi_x, roi_y, roi_width, roi_height = (int(roi.x_offset), int(roi.y_offset), int(roi.width),
                                               int(roi.height))
        model = str(msg.distortion_model) or "plumb_bob"
        k_values, d_values = msg.k, msg.d
    except (AttributeError, TypeError, ValueError, OverflowError) as err:
        raise CameraInfoError(f"not a usable sensor_msgs/CameraInfo: {err}", "malformed") from err
    if width <= 0 or height <= 0:
        raise CameraInfoError(f"CameraInfo has zero size ({width}x{height})", "zero_size")
    k = _float_array(k_values, "K")
    if k.size != 9:
        raise CameraInfoError(f"CameraInfo K has {k.size} values, not 9", "malformed")
    k = k.reshape(3, 3)
    if not np.isfinite(k).all():
        raise CameraInfoError(f"CameraInfo K has non-finite values {k.reshape(-1).tolist()}", "non_finite")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise CameraInfoError(f"CameraInfo is uncalibrated (fx={k[0, 0]}, fy={k[1, 1]})", "uncalibrated")
    if not np.allclose(k[2], (0.0, 0.0, 1.0)) or k[1, 0] != 0:
        raise CameraInfoError(f"CameraInfo K is not a camera matrix (rows 2-3: {k[1:].tolist()})", "bad_k")
    d = _checked_distortion(model, _float_array(d_values, "D"))
    if binning_x < 0 or binning_y < 0:
        raise CameraInfoError(f"CameraInfo binning {binning_x}x{binning_y} is negative", "bad_binning")
    binning_x, binning_y = max(1, binning_x), max(1, binning_y)
    if roi_width > 0 and roi_height > 0:
        if roi_x < 0 or roi_y < 0 or roi_x + roi_width > width or roi_y + roi_height > height:
            raise CameraInfoError(
                f"CameraInfo ROI {roi_width}x{roi_height}+{roi_x}+{roi_y} is outside the {width}x{height} sensor",
                "bad_roi",
            )
        k[0, 2] -= roi_x
        k[1, 2] -= roi_y
        width, height = roi_width, roi_height
    if width // binning_x == 0 or height // binning_y == 0:
        raise CameraInfoError(
            f"CameraInfo binning {binning_x}x{binning_y} leaves no pixel of a {width}x{height} image", "bad_binning"
        )
    k[0] /= binning_x  # fx, skew, cx
    k[1, 1:] /= binning_y  # fy, cy
    width, height = width // binning_x, height // binning_y
    if not (k[0, 0] > 0 and k[1, 1] > 0):  # a subnormal focal length divided by the binning
        raise CameraInfoError(f"CameraInfo focal length underflows with binning (fx={k[0, 0]}, fy={k[1, 1]})",
                              "uncalibrated")
    return CameraIntrinsics(width=width, height=height, k=k, d=d, distortion_model=model)


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
            "(different aspect ratio)",
            "aspect_mismatch",
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
            "(is the depth topic registered to the colour camera?)",
            "size_mismatch",
        )
    return cv2.resize(depth_m, (width, height), interpolation=cv2.INTER_NEAREST)


def image_to_frame(
    msg: Any,
    camera: str,
    *,
    depth_msg: Any = None,
    intrinsics: CameraIntrinsics | None = None,
    frame_id: str | None = None,
    max_pixels: int = MAX_DECODE_PIXELS,
) -> Frame:
    """Colour Image/CompressedImage (+ registered depth Image/CompressedImage) → Frame.

    Stamp and frame_id come from the colour message's header (``frame_id`` overrides it). The depth
    image must be registered to the colour camera (e.g. ``aligned_depth_to_color``); when its
    resolution differs but its aspect does not, it is resized to the colour size with nearest
    neighbour. Intrinsics are scaled to the colour size when only the resolution differs. Images of
    more than ``max_pixels`` are refused before decoding (ImageConversionError ``too_many_pixels``).
    """
    rgb = to_rgb(msg, max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    depth_m = None if depth_msg is None else depth_to_colour_size(to_depth_m(depth_msg, max_pixels=max_pixels),
                                                                  width, height)
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
