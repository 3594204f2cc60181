"""Hostile compressed payloads on a real node over Fast DDS: a camera publishing a JPEG bomb (16384x16384
claimed in under a kilobyte), a PFM (float colour) and a corrupt PNG has each counted as rejected by its
reason, nothing of it stored, while a second camera goes on being stored."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from oryx_ros.bags.hostile import corrupt_png, jpeg_bomb, pfm  # noqa: E402
from oryx_ros.perception.frame_buffer import FrameBuffer  # noqa: E402
from oryx_ros.perception.image_codec import numpy_to_image  # noqa: E402
from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest  # noqa: E402
from oryx_ros.ros.conversions import ns_to_stamp  # noqa: E402

MS = 1_000_000
T0 = 1_000 * 1_000_000_000
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)


def _header(stamp_ns: int) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns, Time), frame_id="cam_optical")


def _compressed(stamp_ns: int, fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(header=_header(stamp_ns), format=fmt)
    msg.data = data
    return msg


def _wait(executor: SingleThreadedExecutor, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not done() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.02)
    assert done(), "message was not handled"


def test_bombs_float_and_corrupt_payloads_are_rejected_by_reason_while_another_camera_is_stored(ros_context):
    cameras = [CameraConfig("hostile", "/hostile/image_raw/compressed", compressed=True),
               CameraConfig("good", "/good/image_raw")]
    node = Node("ingest", context=ros_context)
    driver = Node("camera_driver", context=ros_context)
    buffer = FrameBuffer()
    ingest = CameraIngest(node, cameras, buffer, qos=RELIABLE)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    hostile_pub = driver.create_publisher(CompressedImage, "/hostile/image_raw/compressed", RELIABLE)
    good_pub = driver.create_publisher(Image, "/good/image_raw", RELIABLE)
    counters = lambda camera: ingest.stats().cameras[camera]  # noqa: E731
    try:
        deadline = time.monotonic() + 10
        while (hostile_pub.get_subscription_count() < 1 or good_pub.get_subscription_count() < 1) and (
                time.monotonic() < deadline):
            time.sleep(0.01)
        hostile = [("jpeg", jpeg_bomb(), "too_many_pixels"), ("pfm", pfm(), "float_colour"),
                   ("png", corrupt_png(), "corrupt")]
        for i, (fmt, payload, _) in enumerate(hostile):
            stamp = T0 + i * 100 * MS
            good_pub.publish(numpy_to_image(np.full((24, 32, 3), 10 * i, np.uint8), "rgb8", Image, _header(stamp)))
            _wait(executor, lambda i=i: counters("good").frames == i + 1)
            hostile_pub.publish(_compressed(stamp + 5 * MS, fmt, payload))
            _wait(executor, lambda i=i: counters("hostile").conversion_errors == i + 1)
        good_pub.publish(numpy_to_image(np.full((24, 32, 3), 99, np.uint8), "rgb8", Image, _header(T0 + 300 * MS)))
        _wait(executor, lambda: counters("good").frames == 4)

        rejected = counters("hostile")
        assert rejected.rejected_images == {reason: 1 for _, _, reason in hostile}
        assert rejected.frames == 0 and "OpenCV cannot decode" in rejected.last_error
        assert counters("good").conversion_errors == 0
        stored = buffer.query(cameras=["good"])
        assert [int(f.rgb[0, 0, 0]) for f in stored] == [0, 10, 20, 99]
        assert not buffer.query(cameras=["hostile"])
    finally:
        executor.shutdown()
        ingest.destroy()
        node.destroy_node()
        driver.destroy_node()
