"""Boundary conversions: Time ↔ ns, CameraInfo ↔ CameraIntrinsics, Image (+ depth) → Frame."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from oryx_ros.perception.frames import CameraIntrinsics
from oryx_ros.perception.image_codec import ImageConversionError, numpy_to_image
from oryx_ros.ros.conversions import (
    CameraInfoError,
    camera_info_to_intrinsics,
    image_to_frame,
    intrinsics_for_size,
    intrinsics_to_camera_info,
    ns_to_stamp,
    stamp_to_ns,
)

TS = get_typestore(Stores.ROS2_KILTED)
HAS_RCLPY = importlib.util.find_spec("sensor_msgs") is not None


@pytest.fixture(params=["rosbags", pytest.param("rclpy", marks=pytest.mark.skipif(not HAS_RCLPY, reason="no rclpy"))])
def types(request) -> dict[str, type]:
    if request.param == "rosbags":
        return {name: TS.types[f"{pkg}/msg/{name}"] for pkg, name in
                [("builtin_interfaces", "Time"), ("std_msgs", "Header"), ("sensor_msgs", "CameraInfo"),
                 ("sensor_msgs", "Image")]}
    from builtin_interfaces.msg import Time
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    return {"Time": Time, "Header": Header, "CameraInfo": CameraInfo, "Image": Image}


def _intrinsics(width=640, height=480) -> CameraIntrinsics:
    k = np.array([[500.0, 0.0, 319.5], [0.0, 510.0, 239.5], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(width, height, k, np.array([0.1, -0.05, 0.001, 0.002, 0.0]), "plumb_bob")


def test_stamps_round_trip(types) -> None:
    for stamp_ns in (0, 1, 999_999_999, 1_700_000_000_123_456_789):
        stamp = ns_to_stamp(stamp_ns, types["Time"])
        assert stamp.nanosec < 1_000_000_000 and stamp_to_ns(stamp) == stamp_ns
    with pytest.raises(ValueError, match="does not fit"):
        ns_to_stamp(-1, types["Time"])
    with pytest.raises(ValueError, match="does not fit"):
        ns_to_stamp(2**31 * 1_000_000_000, types["Time"])


def test_camera_info_round_trip(types) -> None:
    original = _intrinsics()
    msg = intrinsics_to_camera_info(original, types["CameraInfo"])
    assert (msg.width, msg.height, msg.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], original.k)
    back = camera_info_to_intrinsics(msg)
    np.testing.assert_array_equal(back.k, original.k)
    np.testing.assert_array_equal(back.d, original.d)
    assert (back.width, back.height, back.distortion_model) == (640, 480, "plumb_bob")


def test_binning_and_roi_describe_the_published_image() -> None:
    msg = intrinsics_to_camera_info(_intrinsics(), TS.types["sensor_msgs/msg/CameraInfo"])
    msg.binning_x = msg.binning_y = 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 400, 300
    intrinsics = camera_info_to_intrinsics(msg)
    assert (intrinsics.width, intrinsics.height) == (200, 150)
    assert intrinsics.fx == 250.0 and intrinsics.fy == 255.0
    assert intrinsics.cx == pytest.approx((319.5 - 100) / 2) and intrinsics.cy == pytest.approx((239.5 - 40) / 2)


def test_unusable_camera_info_raises() -> None:
    msg = intrinsics_to_camera_info(_intrinsics(), TS.types["sensor_msgs/msg/CameraInfo"])
    msg.k = np.zeros(9)
    with pytest.raises(CameraInfoError, match="uncalibrated") as caught:
        camera_info_to_intrinsics(msg)
    assert caught.value.reason == "uncalibrated"
    msg = intrinsics_to_camera_info(_intrinsics(), TS.types["sensor_msgs/msg/CameraInfo"])
    msg.width = 0
    with pytest.raises(CameraInfoError, match="zero size") as caught:
        camera_info_to_intrinsics(msg)
    assert caught.value.reason == "zero_size"


def test_intrinsics_follow_a_resized_image_but_not_another_aspect() -> None:
    half = intrinsics_for_size(_intrinsics(), 320, 240)
    assert half.fx == 250.0 and half.cx == pytest.approx(159.5)
    with pytest.raises(CameraInfoError, match="aspect") as caught:
        intrinsics_for_size(_intrinsics(), 320, 320)
    assert caught.value.reason == "aspect_mismatch"


def test_image_and_depth_become_a_frame(types) -> None:
    header = types["Header"](stamp=ns_to_stamp(1_234_567_890_123, types["Time"]), frame_id="cam0_optical_frame")
    rgb = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    colour = numpy_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8", types["Image"], header)
    depth_mm = np.full((24, 32), 1500, np.uint16)  # half resolution, registered
    depth_mm[0, 0] = 0
    depth = numpy_to_image(depth_mm, "16UC1", types["Image"], header)
    frame = image_to_frame(colour, "cam0", depth_msg=depth, intrinsics=_intrinsics())
    assert frame.camera == "cam0" and frame.stamp_ns == 1_234_567_890_123
    assert frame.frame_id == "cam0_optical_frame"
    np.testing.assert_array_equal(frame.rgb, rgb)
    assert frame.depth_m.shape == (48, 64)
    assert np.isnan(frame.depth_m[:2, :2]).all() and np.allclose(frame.depth_m[2:, 2:], 1.5)
    assert (frame.intrinsics.width, frame.intrinsics.height) == (64, 48) and frame.intrinsics.fx == 50.0
    assert image_to_frame(colour, "cam0", frame_id="override").frame_id == "override"
    square = numpy_to_image(np.zeros((48, 48), np.uint16), "16UC1", types["Image"], header)
    with pytest.raises(ImageConversionError, match="registered"):
        image_to_frame(colour, "cam0", depth_msg=square)
