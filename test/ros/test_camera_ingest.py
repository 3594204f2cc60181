"""CameraIngest in one process over real Fast DDS: bad messages are counted by reason and throttled, depth
pairs with colour in either order (or is given up on), CameraInfo is cached and scaled, dead cameras give
partial sets, messages the rate cap will refuse are not decoded (and the same sets are stored); and field
faults: one future stamp then silence, cameras out of phase, non-normalised nanosec and stale frames, a
looped bag, /clock going back. Storage of the other cameras never stops, nothing is wiped by one
message, and the diagnostics say what happened. Messages are published one at a time and the test waits
for each to be handled."""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from oryx_ros.perception.frame_buffer import FrameBuffer  # noqa: E402
from oryx_ros.perception.frames import CameraIntrinsics  # noqa: E402
from oryx_ros.perception.image_codec import numpy_to_image  # noqa: E402
from oryx_ros.perception.sync import ApproximateTimeSynchronizer  # noqa: E402
from oryx_ros.ros import camera_ingest  # noqa: E402
from oryx_ros.ros.camera_ingest import CameraConfig, CameraIngest  # noqa: E402
from oryx_ros.ros.conversions import intrinsics_to_camera_info, ns_to_stamp  # noqa: E402

MS = 1_000_000
S = 1_000_000_000
T0 = 1_000 * 1_000_000_000
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)


class RecordingLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str]] = []

    def warning(self, text: str, **_: object) -> None:
        self.records.append(("warning", text))

    def error(self, text: str, **_: object) -> None:
        self.records.append(("error", text))

    def __getattr__(self, name: str):  # anything else the node logs goes to a real logger
        return getattr(rclpy.logging.get_logger("test_camera_ingest"), name)


class Harness:
    """An ingest node, a publisher node and a way to publish and wait until a message was handled."""

    def __init__(self, context, cameras: list[CameraConfig], buffer: FrameBuffer, **ingest_kwargs) -> None:
        self.node = Node("ingest", context=context)
        self.logger = RecordingLogger()
        self.node.get_logger = lambda: self.logger  # record the ingest's warnings
        self.buffer = buffer
        self.ingest = CameraIngest(self.node, cameras, buffer, qos=RELIABLE, **ingest_kwargs)
        self.publisher_node = Node("camera_driver", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._publishers: dict[str, object] = {}

    def publisher(self, msg_type: type, topic: str):
        if topic not in self._publishers:
            publisher = self.publisher_node.create_publisher(msg_type, topic, RELIABLE)
            deadline = time.monotonic() + 10
            while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            self._publishers[topic] = publisher
        return self._publishers[topic]

    def send(self, topic: str, msg, handled: Callable[[], bool]) -> None:
        self.publisher(type(msg), topic).publish(msg)
        deadline = time.monotonic() + 10
        while not handled() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
        assert handled(), f"message on {topic} was not handled"

    def counters(self, camera: str):
        return self.ingest.stats().cameras[camera]

    def close(self) -> None:
        self.executor.shutdown()
        self.ingest.destroy()
        self.node.destroy_node()
        self.publisher_node.destroy_node()




def _header(stamp_ns: int, frame_id: str = "cam_optical") -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns, Time), frame_id=frame_id)


def _image(stamp_ns: int, value: int = 0, width: int = 32, height: int = 24) -> Image:
    return numpy_to_image(np.full((height, width, 3), value, np.uint8), "rgb8", Image, _header(stamp_ns))


def _depth(stamp_ns: int, metres: float, width: int = 32, height: int = 24) -> Image:
    return numpy_to_image(np.full((height, width), round(metres * 1000), np.uint16), "16UC1", Image,
                          _header(stamp_ns))


def test_bad_messages_are_counted_throttled_and_do_not_stop_the_stream(ros_context) -> None:
    cameras = [CameraConfig.standard("raw"), CameraConfig("jpeg", "/jpeg/image_raw/compressed", compressed=True)]
    harness = Harness(ros_context, cameras, FrameBuffer(), warn_throttle_s=60.0)
    try:
        for i in range(3):  # step too short, three times: one warning, the rest throttled
            bad = _image(T0 + i * MS)
            bad.step = 10
            harness.send("/raw/image_raw", bad, lambda i=i: harness.counters("raw").conversion_errors == i + 1)
        garbage = CompressedImage(header=_header(T0), format="jpeg")
        garbage.data = b"not a jpeg at all"
        harness.send("/jpeg/image_raw/compressed", garbage, lambda: harness.counters("jpeg").conversion_errors == 1)
        uncalibrated = CameraInfo(header=_header(T0), width=32, height=24)
        harness.send("/raw/camera_info", uncalibrated, lambda: harness.counters("raw").conversion_errors == 4)

        raw = harness.counters("raw")
        assert raw.images == 3 and raw.camera_infos == 1 and raw.frames == 0
        assert "uncalibrated" in raw.last_error
        # By reason (the codec's / CameraInfoError's ``reason``, else the error type).
        assert sum(raw.rejected_images.values()) == 3 and sum(raw.rejected_camera_infos.values()) == 1
        assert sum(harness.counters("jpeg").rejected_images.values()) == 1
        warnings = [text for level, text in harness.logger.records if level == "warning"]
        assert len([w for w in warnings if "'raw': dropped a image" in w]) == 1
        assert any("'jpeg': dropped a image" in w and "cannot decode" in w for w in warnings)
        assert any("camera_info" in w for w in warnings)
        level, message, values = harness.ingest.diagnostic_status()
        assert level == 1 and "5 conversion errors" in message and ("raw conversion_errors", "4") in values
        assert harness.ingest.diagnostic_status()[0] == 0  # nothing new since

        # The stream goes on: a good CameraInfo, then good frames from both cameras make a set.
        k = np.array([[32.0, 0.0, 15.5], [0.0, 32.0, 11.5], [0.0, 0.0, 1.0]])
        info = intrinsics_to_camera_info(CameraIntrinsics(32, 24, k), CameraInfo, _header(T0))
        harness.send("/raw/camera_info", info, lambda: harness.counters("raw").camera_infos == 2)
        good_jpeg = CompressedImage(header=_header(T0 + 100 * MS), format="jpeg")
        good_jpeg.data = cv2.imencode(".jpg", np.full((24, 32, 3), 200, np.uint8))[1].tobytes()
        harness.send("/raw/image_raw", _image(T0 + 100 * MS, 50), lambda: harness.counters("raw").frames == 1)
        harness.send("/jpeg/image_raw/compressed", good_jpeg, lambda: harness.buffer.set_count() == 1)
        (frame_set,) = harness.buffer.query_sets()
        assert frame_set.complete and set(frame_set.frames) == {"raw", "jpeg"}
        assert abs(int(frame_set.frames["jpeg"].rgb.mean()) - 200) <= 2
    finally:
        harness.close()


def test_depth_pairs_with_colour_in_either_order_and_is_given_up_after_the_wait(ros_context) -> None:
    config = CameraConfig("rgbd", "/rgbd/image_raw", depth_topic="/rgbd/depth/image_raw")  # no CameraInfo
    harness = Harness(ros_context, [config], FrameBuffer(window_ns=None), depth_wait_ns=250 * MS)
    frames = lambda: harness.counters("rgbd").frames  # noqa: E731
    count = lambda name: getattr(harness.counters("rgbd"), name)  # noqa: E731
    try:
        # 0: colour first. 1: depth first, 3 ms apart. 2: depth at half resolution.
        harness.send(config.image_topic, _image(T0), lambda: harness.counters("rgbd").images == 1)
        harness.send(config.depth_topic, _depth(T0, 1.0), lambda: frames() == 1)
        harness.send(config.depth_topic, _depth(T0 + 100 * MS, 2.0), lambda: harness.counters("rgbd").depth_images == 2)
        harness.send(config.image_topic, _image(T0 + 103 * MS), lambda: frames() == 2)
        harness.send(config.image_topic, _image(T0 + 200 * MS), lambda: harness.counters("rgbd").images == 3)
        harness.send(config.depth_topic, _depth(T0 + 200 * MS, 3.0, 16, 12), lambda: frames() == 3)
        # 3: colour whose depth never comes; 4: depth whose colour never comes. Both are given up once
        # the camera's stamps are 250 ms past them.
        harness.send(config.image_topic, _image(T0 + 300 * MS), lambda: harness.counters("rgbd").images == 4)
        harness.send(config.depth_topic, _depth(T0 + 400 * MS, 5.0), lambda: count("depth_images") == 4)
        harness.send(config.image_topic, _image(T0 + 600 * MS), lambda: frames() == 4)
        harness.send(config.depth_topic, _depth(T0 + 700 * MS, 7.0), lambda: count("depth_unmatched") == 1)
        harness.ingest.flush()  # the colour at 600 ms still waits for depth: release it

        counters = harness.counters("rgbd")
        assert counters.colour_without_depth == 2 and counters.depth_unmatched == 1 and counters.frames == 5
        stored = harness.buffer.query()
        assert [(f.stamp_ns - T0) // MS for f in stored] == [0, 103, 200, 300, 600]
        depths = [None if f.depth_m is None else float(np.nanmean(f.depth_m)) for f in stored]
        assert depths == [1.0, 2.0, 3.0, None, None]
        assert stored[2].depth_m.shape == (24, 32)  # half-resolution depth resized to the colour size
    finally:
        harness.close()


def test_camera_info_is_awaited_cached_and_scaled_to_the_image(ros_context) -> None:
    config = CameraConfig.standard("cam")
    harness = Harness(ros_context, [config], FrameBuffer())
    k = np.array([[64.0, 0.0, 31.5], [0.0, 64.0, 23.5], [0.0, 0.0, 1.0]])
    info = intrinsics_to_camera_info(CameraIntrinsics(64, 48, k), CameraInfo, _header(T0))
    counters = lambda: harness.counters("cam")  # noqa: E731
    try:
        # The first image beats the first CameraInfo: it waits for it instead of going on without.
        harness.send(config.image_topic, _image(T0), lambda: counters().images == 1)
        assert counters().frames == 0
        harness.send(config.camera_info_topic, info, lambda: counters().frames == 1)
        harness.send(config.camera_info_topic, info, lambda: counters().camera_infos == 2)
        harness.send(config.image_topic, _image(T0 + 100 * MS), lambda: counters().frames == 2)
        frames = harness.buffer.query()
        assert counters().frames_without_camera_info == 0 and len(frames) == 2
        for frame in frames:  # CameraInfo for 64x48, images 32x24: scaled
            assert (frame.intrinsics.width, frame.intrinsics.height) == (32, 24) and frame.intrinsics.fx == 32.0
            assert frame.frame_id == "cam_optical"
    finally:
        harness.close()


def test_frames_go_on_without_intrinsics_when_camera_info_never_comes(ros_context) -> None:
    config = CameraConfig.standard("cam")
    harness = Harness(ros_context, [config], FrameBuffer(), camera_info_wait_ns=300 * MS)
    try:
        for i in range(4):
            handled = lambda i=i: harness.counters("cam").images == i + 1  # noqa: E731
            harness.send(config.image_topic, _image(T0 + i * 100 * MS), handled)
        assert harness.counters("cam").frames == 0  # 300 ms not yet exceeded
        harness.send(config.image_topic, _image(T0 + 400 * MS), lambda: harness.counters("cam").frames == 5)
        harness.send(config.image_topic, _image(T0 + 500 * MS), lambda: harness.counters("cam").frames == 6)
        counters = harness.counters("cam")
        assert counters.frames_without_camera_info == 6 and counters.conversion_errors == 0
        assert [f.intrinsics for f in harness.buffer.query()] == [None] * 6
        assert any("no CameraInfo on /cam/camera_info" in text for _, text in harness.logger.records)
    finally:
        harness.close()


def test_a_silent_camera_leads_to_partial_sets(ros_context) -> None:
    cameras = [CameraConfig("left", "/left/image_raw"), CameraConfig("right", "/right/image_raw")]
    sync = ApproximateTimeSynchronizer(["left", "right"], 10, 20 * MS, dead_camera_timeout_ns=300 * MS)
    harness = Harness(ros_context, cameras, FrameBuffer(), synchronizer=sync)
    try:
        for i in range(6):
            handled = lambda i=i: harness.counters("left").frames == i + 1  # noqa: E731
            harness.send("/left/image_raw", _image(T0 + i * 100 * MS), handled)
        sets = harness.buffer.query_sets()
        # 'right' never published: dead once left's stamps are 300 ms past the first one.
        assert [(s.stamp_ns - T0) // MS for s in sets] == [0, 100, 200, 300, 400, 500]
        assert all(s.missing == ("right",) and set(s.frames) == {"left"} for s in sets)
        level, message, _ = harness.ingest.diagnostic_status()
        assert level == 1 and "dead cameras: right" in message
    finally:
        harness.close()


def _jpeg(stamp_ns: int, value: int) -> CompressedImage:
    msg = CompressedImage(header=_header(stamp_ns), format="jpeg")
    msg.data = cv2.imencode(".jpg", np.full((24, 32, 3), value, np.uint8))[1].tobytes()
    return msg


def _stored_sets(buffer: FrameBuffer) -> list[tuple]:
    """Everything the buffer holds, comparable between runs (frame uids aside)."""
    return [
        (s.stamp_ns, s.missing, sorted(
            (name, f.stamp_ns, f.rgb.tobytes(), None if f.depth_m is None else f.depth_m.tobytes())
            for name, f in s.frames.items()
        ))
        for s in buffer.query_sets()
    ]


def _decode_spy(monkeypatch) -> list[int]:
    """Counts real colour and depth decodes by the ingest."""
    calls: list[int] = []
    for name in ("to_rgb", "to_depth_m"):
        real = getattr(camera_ingest, name)
        monkeypatch.setattr(camera_ingest, name, lambda msg, real=real, **kw: calls.append(1) or real(msg, **kw))
    return calls


def _stream_30fps_into_a_5hz_cap(ros_context, skip: bool, decodes: list[int]) -> tuple:
    """1 s at 30 fps: "left" raw colour + registered depth (depth before or after its colour), "right"
    JPEG 12 ms later (approximate sync, slop 20 ms), into a buffer that keeps 5 sets a second."""
    cameras = [CameraConfig("left", "/left/image_raw", depth_topic="/left/depth/image_raw"),
               CameraConfig("right", "/right/image_raw/compressed", compressed=True)]
    harness = Harness(ros_context, cameras, FrameBuffer(rate_cap_hz=5.0), skip_rate_capped=skip)
    count = lambda camera, name: getattr(harness.counters(camera), name)  # noqa: E731
    decodes.clear()
    try:
        for k in range(30):
            stamp_ns = T0 + round(k * 1e9 / 30)
            depth = ("/left/depth/image_raw", _depth(stamp_ns, 1.0 + k / 10),
                     lambda k=k: count("left", "depth_images") == k + 1)
            colour = ("/left/image_raw", _image(stamp_ns, k), lambda k=k: count("left", "images") == k + 1)
            for topic, msg, handled in (depth, colour) if k % 2 else (colour, depth):
                harness.send(topic, msg, handled)
            harness.send("/right/image_raw/compressed", _jpeg(stamp_ns + 12 * MS, 8 * k),
                         lambda k=k: count("right", "images") == k + 1)
        harness.ingest.flush()
        return _stored_sets(harness.buffer), harness.ingest.stats(), len(decodes), harness.ingest.diagnostic_status()
    finally:
        harness.close()


def test_rate_capped_messages_are_not_decoded_and_the_same_sets_are_stored(ros_context, monkeypatch) -> None:
    decodes = _decode_spy(monkeypatch)
    plain_sets, plain, plain_decodes, _ = _stream_30fps_into_a_5hz_cap(ros_context, False, decodes)
    sets, stats, decoded, (_, _, diagnostics) = _stream_30fps_into_a_5hz_cap(ros_context, True, decodes)
    assert [(stamp - T0) // MS for stamp, *_ in sets] == [12, 212, 412, 612, 812]  # every 6th: 200 ms
    assert sets == plain_sets and stats.buffer_drops == plain.buffer_drops
    assert (stats.sets_stored, stats.sets_skipped) == (plain.sets_stored, plain.sets_skipped) == (5, 25)
    assert stats.sync == plain.sync
    skipped = {name: c.skipped_rate_cap for name, c in stats.cameras.items()}
    assert plain_decodes == 90 and all(c.skipped_rate_cap == 0 for c in plain.cameras.values())
    assert decoded == 90 - sum(skipped.values()) and sum(skipped.values()) > 60  # most were never decoded
    assert all(c.decoded_late == 0 and c.conversion_errors == 0 for c in stats.cameras.values())
    assert ("left skipped_rate_cap", str(skipped["left"])) in diagnostics


def test_a_skipped_message_is_decoded_after_all_when_the_buffer_would_store_its_set(ros_context) -> None:
    cameras = [CameraConfig("left", "/left/image_raw"), CameraConfig("right", "/right/image_raw")]
    harness = Harness(ros_context, cameras, FrameBuffer(rate_cap_hz=2.0))
    count = lambda camera, name: getattr(harness.counters(camera), name)  # noqa: E731
    try:
        harness.send("/left/image_raw", _image(T0, 10), lambda: count("left", "frames") == 1)
        harness.send("/right/image_raw", _image(T0, 10), lambda: count("right", "frames") == 1)
        harness.send("/left/image_raw", _image(T0 + 100 * MS, 20), lambda: count("left", "frames") == 2)
        assert count("left", "skipped_rate_cap") == 1  # 100 ms after the stored set: certain to be refused
        harness.buffer.clear()  # ... until the buffer loses that set (here cleared; evicted in practice)
        harness.send("/right/image_raw", _image(T0 + 100 * MS, 30), lambda: count("right", "frames") == 2)
        (frame_set,) = harness.buffer.query_sets()
        assert frame_set.stamp_ns == T0 + 100 * MS and frame_set.complete
        assert int(frame_set.frames["left"].rgb.mean()) == 20 and int(frame_set.frames["right"].rgb.mean()) == 30
        assert count("left", "decoded_late") == 1 and count("right", "skipped_rate_cap") == 0
    finally:
        harness.close()


def test_nothing_is_skipped_without_a_rate_cap(ros_context, monkeypatch) -> None:
    decodes = _decode_spy(monkeypatch)
    harness = Harness(ros_context, [CameraConfig("cam", "/cam/image_raw")], FrameBuffer())
    try:
        for k in range(10):
            harness.send("/cam/image_raw", _image(T0 + round(k * 1e9 / 30), k),
                         lambda k=k: harness.counters("cam").frames == k + 1)
        assert len(decodes) == 10 and harness.counters("cam").skipped_rate_cap == 0
        assert len(harness.buffer.query_sets()) == 10
    finally:
        harness.close()


def test_configuration_errors_raise(ros_context) -> None:
    node = Node("bad_config", context=ros_context)
    try:
        with pytest.raises(ValueError, match="unique"):
            CameraIngest(node, [CameraConfig.standard("a"), CameraConfig.standard("a")], FrameBuffer())
        with pytest.raises(ValueError, match="differ"):
            CameraIngest(node, [CameraConfig.standard("a")], FrameBuffer(),
                         synchronizer=ApproximateTimeSynchronizer(["b"], 5, 10))
    finally:
        node.destroy_node()


# --- field faults ------------------------------------------------------------------------------------

CAMERAS = ["cam0", "cam1", "cam2"]


def _configs(names=CAMERAS) -> list[CameraConfig]:
    return [CameraConfig(name, f"/{name}/image_raw") for name in names]


def _stamped(stamp_ns: int, *, nanosec: int | None = None):
    msg = _image(max(stamp_ns, 0))
    if nanosec is not None:
        msg.header = Header(stamp=Time(sec=stamp_ns // S, nanosec=nanosec), frame_id="cam_optical")
    return msg


class FakeClock:
    """Monotonic seconds the test advances (arrival time for the no-set warning)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _send(harness: Harness, camera: str, msg) -> None:
    before = harness.counters(camera).images
    harness.send(f"/{camera}/image_raw", msg, lambda: harness.counters(camera).images == before + 1)


@pytest.mark.parametrize("clock_known", [True, False])
def test_future_stamp_then_silence_does_not_stop_or_evict_the_others(ros_context, clock_known) -> None:
    wall = time.time_ns()
    buffer = FrameBuffer(window_ns=10 * S)
    harness = Harness(ros_context, _configs(), buffer, now_ns=(lambda: wall) if clock_known else (lambda: 0))
    try:
        base = wall - 5 * S  # stamps a little behind the node's clock, as from a live driver
        for camera in CAMERAS:
            _send(harness, camera, _stamped(base))
        _send(harness, "cam2", _stamped(base + 3600 * S))  # an hour ahead, then cam2 goes quiet
        for i in range(1, 21):
            for camera in ("cam0", "cam1"):
                _send(harness, camera, _stamped(base + i * 100 * MS))
        assert len(buffer.query(["cam0"])) == len(buffer.query(["cam1"])) == 21  # every frame stored
        assert buffer.drop_counts()["evicted_window"] == 0 and buffer.drop_counts()["too_old"] == 0
        assert harness.ingest.stats().time_jumps == 0
        if clock_known:
            assert harness.counters("cam2").quarantined == {"future": 1}
            assert len(buffer.query(["cam2"])) == 1
            level, message, values = harness.ingest.diagnostic_status()
            assert level == 1 and "1 stamps quarantined" in message and "future 1" in message
            assert ("cam2 quarantined future", "1") in values
        else:  # sim time before the first /clock: no future check, but the window ignores the outlier
            assert buffer.reference_stamp_ns() == base + 2 * S
    finally:
        harness.close()


def test_out_of_phase_cameras_are_all_stored_and_the_warning_names_the_offsets(ros_context) -> None:
    clock = FakeClock()
    sync = ApproximateTimeSynchronizer(CAMERAS, 10, 20 * MS, dead_camera_timeout_ns=1 * S)
    harness = Harness(ros_context, _configs(), FrameBuffer(window_ns=None), synchronizer=sync, clock=clock,
                      no_set_warn_s=1.0)
    try:
        phases = {"cam0": 0, "cam1": 30 * MS, "cam2": 60 * MS}  # 10 Hz, started independently
        for i in range(20):
            for camera, phase in phases.items():
                _send(harness, camera, _stamped(1000 * S + i * 100 * MS + phase))
            clock.now += 0.1
        assert {c: len(harness.buffer.query([c])) for c in CAMERAS} == dict.fromkeys(CAMERAS, 20)
        assert harness.buffer.set_count() == 0 and sync.stats().full_sets == 0
        level, message, _ = harness.ingest.diagnostic_status()
        assert level == 1, message
        assert "cameras stream but no synchronized set formed in the last 1 s: offsets vs cam0:" in message
        assert "cam1 +30 ms" in message and "cam2 +60 ms" in message and "(slop 20 ms)" in message
        # Nearest frames are there for what needs simultaneous views anyway.
        nearest = harness.buffer.nearest_frames(1000 * S + 1930 * MS)
        assert set(nearest.frames) == set(CAMERAS) and nearest.spread_ns == 60 * MS
    finally:
        harness.close()


def test_in_phase_cameras_form_sets_and_the_status_is_ok(ros_context) -> None:
    clock = FakeClock()
    harness = Harness(ros_context, _configs(), FrameBuffer(window_ns=None), clock=clock, no_set_warn_s=1.0)
    try:
        for i in range(20):
            for k, camera in enumerate(CAMERAS):
                _send(harness, camera, _stamped(1000 * S + i * 100 * MS + k * MS))
            clock.now += 0.1
        assert harness.buffer.set_count() == 20 and len(harness.buffer) == 60
        assert harness.ingest.diagnostic_status()[:2] == (0, "all cameras streaming")
    finally:
        harness.close()


def test_non_normalised_nanosec_and_stale_frames_do_not_wipe(ros_context) -> None:
    harness = Harness(ros_context, _configs(["cam0", "cam1"]), FrameBuffer(window_ns=60 * S))
    try:
        for i in range(10):
            for camera in ("cam0", "cam1"):
                _send(harness, camera, _stamped(1000 * S + i * 100 * MS))
            if i == 4:
                _send(harness, "cam0", _stamped(1000 * S, nanosec=1_500_000_000))
            if i in (5, 7):  # a stale frame released late, 10 s old (e.g. after a lost frame)
                _send(harness, "cam1", _stamped(990 * S + i * MS))
        assert len(harness.buffer) == 20 and harness.buffer.drop_counts()["time_jump"] == 0
        assert harness.counters("cam0").quarantined == {"nanosec_not_normalised": 1}
        assert harness.counters("cam1").quarantined == {"time_jump_unconfirmed": 2}
        assert harness.ingest.stats().time_jumps == 0 and harness.buffer.set_count() == 10
    finally:
        harness.close()


def test_a_looped_bag_is_confirmed_and_storage_resumes_on_the_new_base(ros_context) -> None:
    harness = Harness(ros_context, _configs(["cam0", "cam1"]), FrameBuffer(window_ns=60 * S))
    try:
        for i in range(10):
            for camera in ("cam0", "cam1"):
                _send(harness, camera, _stamped(1000 * S + i * 100 * MS))
        for i in range(5):  # the bag starts again, 1 s of stamps behind
            for camera in ("cam0", "cam1"):
                _send(harness, camera, _stamped(999 * S + i * 100 * MS))
        # Out of order within the 3 s threshold: not a jump; those stamps are simply stored too.
        assert harness.ingest.stats().time_jumps == 0 and len(harness.buffer) == 30
        for i in range(5):  # now a real loop: 100 s back
            for camera in ("cam0", "cam1"):
                _send(harness, camera, _stamped(900 * S + i * 100 * MS))
        stats = harness.ingest.stats()
        assert stats.time_jumps == 1 and harness.buffer.time_jumps == 1
        # The first two stamps of the new base were held back until confirmed; the rest is stored.
        assert sum(c.quarantined.get("time_jump_unconfirmed", 0) for c in stats.cameras.values()) == 2
        assert [f.stamp_ns // MS for f in harness.buffer.query(["cam0"])] == [900_100, 900_200, 900_300, 900_400]
        assert harness.buffer.drop_counts()["time_jump"] == 30
    finally:
        harness.close()


def test_clock_going_back_clears_at_once(ros_context) -> None:
    harness = Harness(ros_context, _configs(["cam0"]), FrameBuffer(window_ns=60 * S))
    try:
        for i in range(5):
            _send(harness, "cam0", _stamped(1000 * S + i * 100 * MS))
        harness.ingest.on_clock_jump()  # what the node calls from its /clock jump callback
        assert len(harness.buffer) == 0 and harness.ingest.stats().time_jumps == 1
        _send(harness, "cam0", _stamped(10 * S))
        assert [f.stamp_ns for f in harness.buffer.query()] == [10 * S]
    finally:
        harness.close()


def test_decode_limit_and_future_tolerance_are_settable_at_run_time(ros_context) -> None:
    wall = time.time_ns()
    harness = Harness(ros_context, _configs(["cam0"]), FrameBuffer(), now_ns=lambda: wall)
    try:
        _send(harness, "cam0", _stamped(wall + 5 * S))
        assert harness.counters("cam0").quarantined == {"future": 1}
        harness.ingest.future_tolerance_ns = 10 * S
        _send(harness, "cam0", _stamped(wall + 5 * S + 1))
        assert len(harness.buffer) == 1
        harness.ingest.max_decode_pixels = 100
        assert harness.ingest.max_decode_pixels == 100
        with pytest.raises(ValueError):
            harness.ingest.max_decode_pixels = 0
    finally:
        harness.close()
