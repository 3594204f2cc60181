"""The field on a live node: hostile sensor traffic over Fast DDS never costs the memory the robot has.

The node (tiny random checkpoint, its own process) holds the frames of a replayed 3-camera scene. Then a
``hostile`` compressed camera sends image bombs, float colour, a corrupt PNG and poisoned CameraInfo, and
the RGB ``probe`` camera sends a stamp an hour in the future, a non-normalised ``nanosec`` and a zero
stamp, each followed by ordinary frames. Every bad message is counted on /diagnostics by its reason and
not stored; the scene's frames are all still there, the good frames after the bad ones are stored, and
the node goes on answering.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from live_node import PROBE_TOPIC, RELIABLE, SCENE_CAMERAS, SCENE_FRAMES, Live, live_node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from oryx_ros.bags.hostile import corrupt_png, jpeg_bomb, pfm, png_bomb
from oryx_ros.perception.image_codec import numpy_to_compressed, numpy_to_image
from oryx_ros.ros.conversions import ns_to_stamp

pytestmark = pytest.mark.ros

HOSTILE_IMAGE_TOPIC = "/hostile/image_raw/compressed"
HOSTILE_INFO_TOPIC = "/hostile/camera_info"
WIDTH, HEIGHT = 32, 24


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    hostile = {"hostile": {"image_topic": HOSTILE_IMAGE_TOPIC, "compressed": True,
                           "camera_info_topic": HOSTILE_INFO_TOPIC}}
    with live_node(tmp_path_factory.mktemp("field"), "field_client", extra_cameras=hostile) as node:
        yield node


def _header(stamp_ns: int, sec_nanosec: tuple[int, int] | None = None) -> Header:
    stamp = Time(sec=sec_nanosec[0], nanosec=sec_nanosec[1]) if sec_nanosec else ns_to_stamp(stamp_ns, Time)
    return Header(stamp=stamp, frame_id="field_optical")


def _camera_info(stamp_ns: int, fx: float = 30.0, binning: int = 0) -> CameraInfo:
    return CameraInfo(header=_header(stamp_ns), width=WIDTH, height=HEIGHT, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[fx, 0.0, WIDTH / 2, 0.0, fx, HEIGHT / 2, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, WIDTH / 2, 0.0, 0.0, fx, HEIGHT / 2, 0.0, 0.0, 0.0, 1.0, 0.0],
                      binning_x=binning, binning_y=binning)


def _compressed(stamp_ns: int, fmt: str, data: bytes) -> CompressedImage:
    msg = CompressedImage(header=_header(stamp_ns), format=fmt)
    msg.data = data
    return msg


def _counters(live: Live, camera: str, until) -> dict[str, str]:
    return live.statuses(lambda s: until(s[f"camera {camera}"][2]), timeout_s=30)[f"camera {camera}"][2]


def test_hostile_traffic_is_counted_by_reason_and_the_memory_survives(live: Live) -> None:
    before = live.ask(question="what is there?", cameras=SCENE_CAMERAS, window_s=60.0)
    assert before.success and before.frames_used == SCENE_FRAMES * len(SCENE_CAMERAS), before.error

    # The hostile camera: two bad CameraInfo, a good one, four bad payloads, then one good JPEG.
    info_pub = live.client.create_publisher(CameraInfo, HOSTILE_INFO_TOPIC, RELIABLE)
    image_pub = live.client.create_publisher(CompressedImage, HOSTILE_IMAGE_TOPIC, RELIABLE)
    assert live.spin(10, lambda: info_pub.get_subscription_count() and image_pub.get_subscription_count())
    stamp = live.scene_newest_ns
    for info in (_camera_info(stamp, fx=float("nan")), _camera_info(stamp, binning=100_000), _camera_info(stamp)):
        info_pub.publish(info)
        live.spin(0.1)
    for fmt, payload in (("jpeg", jpeg_bomb()), ("png", png_bomb()), ("pfm", pfm()), ("png", corrupt_png())):
        stamp += 20_000_000
        image_pub.publish(_compressed(stamp, fmt, payload))
        live.spin(0.1)
    good = numpy_to_compressed(np.full((HEIGHT, WIDTH, 3), 77, np.uint8), "jpeg", CompressedImage,
                               _header(stamp + 20_000_000))
    image_pub.publish(good)

    # The probe: bad stamps, each followed by an ordinary frame on its own time base.
    future_ns = time.time_ns() + 3600 * 10**9
    for bad in (_header(future_ns), _header(0, (1_700_000_000, 1_500_000_000)), _header(0, (0, 0))):
        image = numpy_to_image(np.zeros((120, 160, 3), np.uint8), "rgb8", Image, bad)
        live.probe_pub.publish(image)
        live.publish_probe()
    assert live.probe_pub.topic_name == PROBE_TOPIC

    hostile = _counters(live, "hostile", lambda v: int(v.get("frames", 0)) >= 1
                        and int(v.get("rejected_images_total", 0)) >= 4)
    assert {key: hostile.get(key) for key in ("rejected_images_too_many_pixels", "rejected_images_float_colour",
                                              "rejected_images_corrupt")} == {
        "rejected_images_too_many_pixels": "2", "rejected_images_float_colour": "1", "rejected_images_corrupt": "1"}
    assert hostile.get("rejected_camera_infos_non_finite") == "1", hostile
    assert int(hostile.get("rejected_camera_infos_total", 0)) == 2, hostile
    assert hostile["frames"] == "1"

    probe = _counters(live, "probe", lambda v: int(v.get("frames", 0)) >= 3)
    assert {key: probe.get(key) for key in ("quarantined_future", "quarantined_nanosec_not_normalised",
                                            "quarantined_nonpositive")} == {
        "quarantined_future": "1", "quarantined_nanosec_not_normalised": "1", "quarantined_nonpositive": "1"}
    assert probe["frames"] == "3"

    after = live.ask(question="and now?", cameras=SCENE_CAMERAS, window_s=60.0)
    assert after.success and after.frames_used == before.frames_used, after.error  # nothing was wiped
    for camera, frames in (("hostile", 1), ("probe", 3)):
        answer = live.ask(question="this camera?", cameras=[camera], window_s=60.0)
        assert answer.success and answer.frames_used == frames, (camera, answer.error)
    assert live.process.poll() is None
