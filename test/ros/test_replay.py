"""oryx_ros.ros.replay: type import, QoS choice, skipped types, and the command's exit codes.
(The full multi-process replay → ingest check is test_replay_integration.py.)"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime  # noqa: E402
from rosbags.rosbag2 import Writer  # noqa: E402
from rosbags.typesys import Stores, get_types_from_msg, get_typestore  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from oryx_ros.bags.camera_bag import write_camera_bag  # noqa: E402
from oryx_ros.bags.synthetic import make_test_frames  # noqa: E402
from oryx_ros.ros.replay import main, message_class, replay  # noqa: E402

T0 = 1_000 * 1_000_000_000




def _qos(durability: QosDurability) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, durability, zero, zero, QosLiveliness.AUTOMATIC,
               zero, False)


def test_message_class_imports_by_type_name() -> None:
    from sensor_msgs.msg import Image

    assert message_class("sensor_msgs/msg/Image") is Image
    with pytest.raises(ImportError):
        message_class("no_such_pkg/msg/Thing")
    with pytest.raises(AttributeError):
        message_class("std_msgs/msg/NoSuchType")


def test_replay_skips_unimportable_types_and_keeps_latched_topics_latched(tmp_path: Path, ros_context) -> None:
    typestore = get_typestore(Stores.ROS2_KILTED)
    typestore.register(get_types_from_msg("int32 value", "oryx_test_only/msg/Thing"))
    string, thing = typestore.types["std_msgs/msg/String"], typestore.types["oryx_test_only/msg/Thing"]
    bag = tmp_path / "mixed"
    with Writer(bag, version=9) as writer:
        latched = writer.add_connection("/map_name", "std_msgs/msg/String", typestore=typestore,
                                        offered_qos_profiles=[_qos(QosDurability.TRANSIENT_LOCAL)])
        chatter = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=typestore,
                                        offered_qos_profiles=[_qos(QosDurability.VOLATILE)])
        custom = writer.add_connection("/thing", "oryx_test_only/msg/Thing", typestore=typestore)
        writer.write(latched, T0, typestore.serialize_cdr(string(data="office"), "std_msgs/msg/String"))
        for i in range(3):
            writer.write(chatter, T0 + i, typestore.serialize_cdr(string(data=str(i)), "std_msgs/msg/String"))
            writer.write(custom, T0 + i, typestore.serialize_cdr(thing(value=i), "oryx_test_only/msg/Thing"))

    node = Node("player", context=ros_context)
    try:
        result = replay(node, bag, rate=1000.0)
        assert result.skipped_topics == ["/thing"]
        assert dict(result.published) == {"/map_name": 1, "/chatter": 3} and result.all_acked
        (latched_info,) = node.get_publishers_info_by_topic("/map_name")
        (chatter_info,) = node.get_publishers_info_by_topic("/chatter")
        assert latched_info.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert chatter_info.qos_profile.durability == DurabilityPolicy.VOLATILE
        assert chatter_info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        # A subscriber that joins after playback still gets the latched message.
        received: list[str] = []
        listener = Node("late_listener", context=ros_context)
        listener.create_subscription(String, "/map_name", lambda m: received.append(m.data),
                                     QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(listener)
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.shutdown()
        listener.destroy_node()
        assert received == ["office"]
    finally:
        node.destroy_node()


def test_replay_rejects_bad_arguments(tmp_path: Path, ros_context) -> None:
    node = Node("player", context=ros_context)
    try:
        with pytest.raises(ValueError, match="rate"):
            replay(node, tmp_path, rate=0.0)
        bag = tmp_path / "bag"
        write_camera_bag(bag, make_test_frames(1, 1, width=64, height=48))
        with pytest.raises(ValueError, match="nothing to replay"):
            replay(node, bag, topics=["/not/in/the/bag"])
    finally:
        node.destroy_node()


def test_command_exit_codes(tmp_path: Path) -> None:
    assert main([str(tmp_path / "missing")]) == 2
    assert main([str(tmp_path), "--rate", "0"]) == 2
    bag = tmp_path / "bag"
    write_camera_bag(bag, make_test_frames(1, 2, width=64, height=48))
    # Nobody subscribes: waiting for a subscriber times out with exit status 1.
    completed = subprocess.run(
        [sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1", "--wait-timeout", "0.5"],
        capture_output=True, text=True, timeout=60,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "timed out" in completed.stderr and "/cam0/image_raw (0/1)" in completed.stderr
