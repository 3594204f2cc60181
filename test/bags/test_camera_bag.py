"""Camera bag writer and readers (rosbags only), and the synthetic, checkable test content."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from oryx_ros.bags.camera_bag import (
    CameraBagWriter,
    bag_topics,
    camera_topics,
    read_camera_frames,
    read_messages,
    write_camera_bag,
)
from oryx_ros.bags.synthetic import (
    decode_depth_frame_index,
    decode_frame_code,
    encode_frame_code,
    main,
    make_test_frames,
)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize(
    ("options", "exact"),
    [
        ({}, True),
        ({"image_encoding": "bgr8", "depth_encoding": "32FC1"}, True),
        ({"compression": "png", "depth_compressed": True}, True),
        ({"compression": "jpeg", "depth_compressed": True, "depth_encoding": "32FC1"}, False),
    ],
)
def test_frames_round_trip_through_a_bag(tmp_path: Path, storage: str, options: dict, exact: bool) -> None:
    frames = make_test_frames(3, 4, width=96, height=64, depth_cameras=[1], seed=1)
    bag = tmp_path / "bag"
    summary = write_camera_bag(bag, frames, storage=storage, **options)
    assert summary.storage == storage and summary.start_ns == frames[0].stamp_ns
    assert summary.end_ns == frames[-1].stamp_ns

    compressed = "compression" in options
    topics = bag_topics(bag)
    cam1 = camera_topics("cam1", compressed=compressed, depth_compressed=options.get("depth_compressed", False))
    expected_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    assert topics[cam1.image] == (expected_type, 4)
    assert topics[cam1.camera_info] == ("sensor_msgs/msg/CameraInfo", 4)
    assert cam1.depth in topics and topics[cam1.depth_info][1] == 4
    assert camera_topics("cam0").depth not in topics  # only camera 1 has depth
    assert sum(n for _, n in topics.values()) == 3 * 4 * 2 + 4 * 2

    read = read_camera_frames(bag, ["cam0", "cam1", "cam2"])
    assert [(f.camera, f.stamp_ns) for f in read] == [(f.camera, f.stamp_ns) for f in frames]
    for original, back in zip(frames, read, strict=True):
        assert decode_frame_code(back.rgb) == decode_frame_code(original.rgb)
        if exact:
            np.testing.assert_array_equal(back.rgb, original.rgb)
        else:
            assert np.abs(back.rgb.astype(int) - original.rgb.astype(int)).mean() < 4
        np.testing.assert_allclose(back.intrinsics.k, original.intrinsics.k)
        assert back.frame_id == original.frame_id
        if original.depth_m is None:
            assert back.depth_m is None
        else:
            assert decode_depth_frame_index(back.depth_m) == decode_depth_frame_index(original.depth_m)
            np.testing.assert_array_equal(np.isnan(back.depth_m), np.isnan(original.depth_m))
            np.testing.assert_allclose(back.depth_m, original.depth_m, atol=1e-3)  # within a millimetre


def test_extra_messages_and_raw_cdr_go_into_the_same_bag(tmp_path: Path) -> None:
    typestore = get_typestore(Stores.ROS2_KILTED)
    Time = typestore.types["builtin_interfaces/msg/Time"]
    clock = typestore.types["rosgraph_msgs/msg/Clock"](clock=Time(sec=5, nanosec=7))
    frames = make_test_frames(1, 2, width=64, height=48)
    bag = tmp_path / "bag"
    with CameraBagWriter(bag, storage="mcap", typestore=typestore) as writer:
        for frame in frames:
            writer.write_frame(frame)
        writer.write_message("/clock", "rosgraph_msgs/msg/Clock", clock, frames[0].stamp_ns)
        writer.write_cdr("/clock", "rosgraph_msgs/msg/Clock",
                         typestore.serialize_cdr(clock, "rosgraph_msgs/msg/Clock"), frames[1].stamp_ns)
        with pytest.raises(ValueError, match="already has type"):
            writer.write_message("/clock", "sensor_msgs/msg/Image", None, 0)
    clocks = list(read_messages(bag, ["/clock"]))
    assert [m.log_time_ns for m in clocks] == [frames[0].stamp_ns, frames[1].stamp_ns]
    assert all((m.msg.clock.sec, m.msg.clock.nanosec) == (5, 7) for m in clocks)
    assert writer.summary.message_counts["/clock"] == 2


def test_writer_refuses_bad_options_and_existing_bags(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage"):
        CameraBagWriter(tmp_path / "x", storage="rosbag1")
    with pytest.raises(ValueError, match="image_encoding"):
        CameraBagWriter(tmp_path / "x", image_encoding="mono8")
    with pytest.raises(ValueError, match="compression"):
        CameraBagWriter(tmp_path / "x", compression="webp")
    (tmp_path / "exists").mkdir()
    with pytest.raises(Exception, match="exists"):
        write_camera_bag(tmp_path / "exists", make_test_frames(1, 1, width=64, height=48))


def test_frame_code_survives_jpeg_and_downscaling() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    encode_frame_code(rgb, 7, 54321)
    assert decode_frame_code(rgb) == (7, 54321)
    ok, jpeg = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok and decode_frame_code(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) == (7, 54321)
    small = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)
    assert decode_frame_code(small) == (7, 54321)
    with pytest.raises(ValueError, match="too small"):
        encode_frame_code(np.zeros((10, 10, 3), np.uint8), 0, 0)
    with pytest.raises(ValueError, match="frame_index"):
        encode_frame_code(rgb, 0, 2**16)


def test_synthetic_frames_are_deterministic_and_jittered() -> None:
    first = make_test_frames(2, 10, width=64, height=48, fps=20, jitter_ns=1_000_000, seed=5)
    again = make_test_frames(2, 10, width=64, height=48, fps=20, jitter_ns=1_000_000, seed=5)
    assert [(f.camera, f.stamp_ns) for f in first] == [(f.camera, f.stamp_ns) for f in again]
    offsets = [(f.stamp_ns - first[0].stamp_ns) % 50_000_000 for f in first]
    assert any(o not in (0,) for o in offsets)  # jitter is there
    for frame in first:
        index = decode_frame_code(frame.rgb)[1]
        assert abs(frame.stamp_ns - (first[0].stamp_ns + index * 50_000_000)) <= 2_000_000
    with pytest.raises(ValueError, match="jitter"):
        make_test_frames(1, 2, fps=100, jitter_ns=6_000_000)


def test_make_test_bag_command(tmp_path: Path, capsys) -> None:
    bag = tmp_path / "cli"
    assert main([str(bag), "--cameras", "2", "--duration", "0.5", "--fps", "10", "--width", "64",
                 "--height", "48", "--storage", "mcap", "--depth-cameras", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    topics = bag_topics(bag)
    assert topics["/cam0/image_raw"] == ("sensor_msgs/msg/Image", 5)
    assert topics["/cam1/depth/image_raw"] == ("sensor_msgs/msg/Image", 5)
    assert "/cam0/depth/image_raw" not in topics
    assert main([str(bag)]) == 2  # exists already
    assert "exists" in capsys.readouterr().err
