"""CameraIngest with workers (as the node runs it) over real Fast DDS: four RGB-D cameras (colour, depth,
CameraInfo) streamed together are all received and processed, every camera alike (counts, not timing);
a full hand-off queue gives up the oldest message and counts it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from oryx_ros.perception.frame_buffer import FrameBuffer  # noqa: E402
from oryx_ros.perception.frames import CameraIntrinsics  # noqa: E402
from oryx_ros.perception.image_codec import numpy_to_image  # noqa: E402
from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest  # noqa: E402
from oryx_ros.ros.conversions import intrinsics_to_camera_info, ns_to_stamp  # noqa: E402
from oryx_ros.ros.side_node import SideNode  # noqa: E402

T0 = 1_000 * 1_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
CAMERAS = [f"cam{i}" for i in range(4)]
WIDTH, HEIGHT = 160, 120


def _messages(stamp_ns: int) -> tuple[Image, Image, CameraInfo]:
    header = Header(stamp=ns_to_stamp(stamp_ns, Time), frame_id="optical")
    colour = numpy_to_image(np.full((HEIGHT, WIDTH, 3), 50, np.uint8), "rgb8", Image, header)
    depth = numpy_to_image(np.full((HEIGHT, WIDTH), 1500, np.uint16), "16UC1", Image, header)
    k = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 60.0], [0.0, 0.0, 1.0]])
    info = intrinsics_to_camera_info(CameraIntrinsics(width=WIDTH, height=HEIGHT, k=k), CameraInfo, header)
    return colour, depth, info


def _wait(predicate, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def test_four_rgbd_cameras_are_all_received_and_processed_alike(ros_context) -> None:
    frames = 20
    node = Node("ingest", context=ros_context)
    buffer = FrameBuffer(rate_cap_hz=2.0)  # the node's default rate cap
    ingest = CameraIngest(node, [CameraConfig.standard(name, depth=True) for name in CAMERAS], buffer,
                          qos=RELIABLE, workers=True)
    driver = Node("camera_driver", context=ros_context)
    publishers = []
    for name in CAMERAS:
        config = CameraConfig.standard(name, depth=True)
        publishers.append((driver.create_publisher(Image, config.image_topic, RELIABLE),
                           driver.create_publisher(Image, config.depth_topic, RELIABLE),
                           driver.create_publisher(CameraInfo, config.camera_info_topic, RELIABLE)))
    executor = MultiThreadedExecutor(num_threads=4, context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert _wait(lambda: all(p.get_subscription_count() for trio in publishers for p in trio), 10)
        for index in range(frames):  # all cameras in phase: each tick is a burst of 12 messages
            messages = _messages(T0 + index * PERIOD_NS)
            for trio in publishers:
                for publisher, msg in zip(trio, messages, strict=True):
                    publisher.publish(msg)
            time.sleep(0.01)

        def counts() -> list[tuple[int, int, int]]:
            cameras = ingest.stats().cameras
            return [(cameras[n].images, cameras[n].depth_images, cameras[n].camera_infos) for n in CAMERAS]

        assert _wait(lambda: counts() == [(frames, frames, frames)] * len(CAMERAS)), counts()
        assert ingest.wait_idle()
        ingest.flush()
        stats = ingest.stats()
        for name in CAMERAS:
            c = stats.cameras[name]
            assert c.queue_overflow == {} and c.conversion_errors == 0
            assert c.frames == frames and c.colour_without_depth == 0 and c.depth_unmatched == 0
        # Fair: the rate cap stores the same frames of every camera, and every one of them is in a full set.
        stored = {name: stats.cameras[name].stored for name in CAMERAS}
        assert len(set(stored.values())) == 1 and stored["cam0"] >= frames * PERIOD_NS * 2 // 1_000_000_000, stored
        assert stats.sets_stored == stored["cam0"] and stats.sync.partial_sets == 0
    finally:
        executor.shutdown()
        ingest.destroy()
        node.destroy_node()
        driver.destroy_node()


def test_a_full_hand_off_queue_gives_up_the_oldest_and_counts_it(ros_context, monkeypatch) -> None:
    release = threading.Event()
    original = CameraIngest._on_camera_info

    def blocked(self, camera, msg) -> None:
        release.wait(10)
        original(self, camera, msg)

    monkeypatch.setattr(CameraIngest, "_on_camera_info", blocked)
    node = Node("ingest", context=ros_context)
    ingest = CameraIngest(node, [CameraConfig.standard("cam0")], FrameBuffer(), qos=RELIABLE, workers=True,
                          worker_queue=2)
    driver = Node("camera_driver", context=ros_context)
    publisher = driver.create_publisher(CameraInfo, "/cam0/camera_info", RELIABLE)
    executor = MultiThreadedExecutor(num_threads=2, context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        assert _wait(lambda: publisher.get_subscription_count() > 0, 10)
        info = _messages(T0)[2]
        for _ in range(6):  # one is taken by the blocked worker, two wait, three are given up
            publisher.publish(info)
        assert _wait(lambda: ingest.stats().cameras["cam0"].queue_overflow.get("camera_info", 0) == 3, 10)
        release.set()
        assert ingest.wait_idle()
        c = ingest.stats().cameras["cam0"]
        assert c.camera_infos == 3 and c.queue_overflow == {"camera_info": 3}
        values = dict(ingest.diagnostic_status()[2])
        assert values["cam0 queue_overflow camera_info"] == "3"
    finally:
        release.set()
        executor.shutdown()
        ingest.destroy()
        node.destroy_node()
        driver.destroy_node()


def test_a_side_node_takes_messages_without_the_owners_executor_where_the_owner_would() -> None:
    """With a SideNode (as the node runs it) the subscriptions live on a hidden node spun on a thread of its
    own, in the owner's namespace and with the process's remaps, but not renamed by a ``__node`` remap; the
    owner is never spun here, so every message must come through that thread."""
    context = rclpy.Context()
    rclpy.init(context=context, args=["--ros-args", "-r", "__node:=renamed", "-r", "cam0/image:=remapped/image"])
    owner = Node("oryx", namespace="/robot1", context=context)
    camera = CameraConfig(name="cam0", image_topic="cam0/image", camera_info_topic="cam0/camera_info",
                          depth_topic="cam0/depth")
    side_node = SideNode(owner, "sensors")
    ingest = CameraIngest(owner, [camera], FrameBuffer(), qos=RELIABLE, workers=True, side_node=side_node)
    driver = Node("camera_driver", context=context, use_global_arguments=False)
    try:
        side = ingest.subscriber
        assert owner.get_name() == "renamed" and side.get_name() == "_renamed_sensors" and side is side_node.node
        assert side.get_namespace() == "/robot1" and side is not owner and not list(owner.subscriptions)
        topics = sorted(s.topic_name for s in side.subscriptions)
        assert topics == ["/robot1/cam0/camera_info", "/robot1/cam0/depth", "/robot1/remapped/image"], topics
        publishers = (driver.create_publisher(Image, "/robot1/remapped/image", RELIABLE),
                      driver.create_publisher(Image, "/robot1/cam0/depth", RELIABLE),
                      driver.create_publisher(CameraInfo, "/robot1/cam0/camera_info", RELIABLE))
        assert _wait(lambda: all(p.get_subscription_count() for p in publishers), 10)
        frames = 5
        for index in range(frames):
            for publisher, msg in zip(publishers, _messages(T0 + index * PERIOD_NS), strict=True):
                publisher.publish(msg)

        def counts() -> tuple[int, int, int]:
            c = ingest.stats().cameras["cam0"]
            return c.images, c.depth_images, c.camera_infos

        assert _wait(lambda: counts() == (frames, frames, frames)), counts()
        assert "_renamed_sensors" in {name for name, _ in driver.get_node_names_and_namespaces()}
        ingest.destroy()
        assert not list(side.subscriptions)
        side_node.close()
        assert _wait(lambda: "_renamed_sensors" not in {name for name, _ in driver.get_node_names_and_namespaces()},
                     10)
    finally:
        ingest.destroy()
        side_node.close()
        owner.destroy_node()
        driver.destroy_node()
        context.try_shutdown()

