"""Hour-scale memory on a live node, on SQLite (the default) and on a real PostgreSQL server.

An hour of robot time (oryx_ros.bags.hour_bag: a red box on the table from 5 to 10 min, a blue cylinder on the
floor from 20 min, moved from the left to the right of the table at 40 min) is replayed in sim time at 60x into
the node. Then ``/oryx/recall`` and ``/oryx/ask`` must find the events at the right times (within one keyframe
period, the bag's set period) and places (from depth), and show their evidence; and a node started again on the
same store finds the memory again.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from hour_node import HourNode, hour_node
from postgres_server import postgres_server

from oryx_ros.msg import EvidenceFrame
from oryx_ros.ros.client import call_service
from oryx_ros.ros.conversions import ns_to_stamp
from oryx_ros.srv import Ask, Recall

pytestmark = pytest.mark.ros

POSITION_TOLERANCE_M = 0.15


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hour(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HourNode]:
    directory = tmp_path_factory.mktemp(f"hour-{request.param}")
    if request.param == "sqlite":
        with hour_node(directory, "memory_live_client", {"directory": str(directory / "memory")}) as node:
            yield node
    else:
        with postgres_server() as server, \
                hour_node(directory, "memory_live_client", {"url": server.url(), "robot": "robot1"}) as node:
            yield node


def _appearances(hour: HourNode, label: str) -> list[dict[str, Any]]:
    return [a for a in hour.events["appearances"] if a["label"] == label]


def _within(hour: HourNode, seconds: float, appearance: dict[str, Any]) -> bool:
    slack = hour.events["period_s"]  # one keyframe period
    return appearance["start_s"] - slack <= seconds <= appearance["end_s"] + slack


def _near(position: Any, centre: list[float]) -> bool:
    return math.dist((position.x, position.y, position.z), centre) <= POSITION_TOLERANCE_M


def test_recall_finds_the_red_box_at_its_time_and_place(hour: HourNode) -> None:
    [red] = _appearances(hour, "red object")
    moments = hour.recall(query="red", limit=10).moments
    assert moments, "no moment with a red object"
    assert all(_within(hour, hour.seconds(m.stamp), red) for m in moments), \
        [hour.seconds(m.stamp) for m in moments]
    assert all(m.score > 0 for m in moments) and list(moments) == sorted(moments, key=lambda m: -m.score)
    best = moments[0]
    positions = [p for label, p in zip(best.object_labels, best.object_positions, strict=True) if label == "red object"]
    assert positions and _near(positions[0], red["centre_m"]), (best.object_labels, positions)
    assert best.objects_frame == hour.events["frame_id"] == "odom"  # the fixed frame of the pose topic
    assert best.has_pose and best.pose.header.frame_id == "odom"
    assert math.dist((best.pose.pose.position.x, best.pose.pose.position.y), hour.events["robot_xyz"][:2]) < 1e-6


def test_recall_by_place_separates_the_moved_cylinder(hour: HourNode) -> None:
    left, right = _appearances(hour, "blue object")
    for where, other in ((left, right), (right, left)):
        x, y, z = where["centre_m"]
        moments = hour.recall(query="blue", use_position=True, position=Point(x=x, y=y, z=z), radius_m=0.3,
                              limit=50).moments
        assert moments, f"no blue object near {where['centre_m']}"
        assert all(_within(hour, hour.seconds(m.stamp), where) for m in moments), \
            [hour.seconds(m.stamp) for m in moments]
        assert not any(other["start_s"] + hour.events["period_s"] < hour.seconds(m.stamp) < other["end_s"]
                       - hour.events["period_s"] for m in moments)


def test_recall_time_range_and_bad_requests(hour: HourNode) -> None:
    start_ns = hour.events["start_ns"]
    moments = hour.recall(query="", start=ns_to_stamp(start_ns + 1500 * 10**9, Time),
                          end=ns_to_stamp(start_ns + 2100 * 10**9, Time), limit=100).moments
    # A moment is in the range when the window it describes overlaps it.
    assert moments and all(hour.seconds(m.window_end) >= 1500 and hour.seconds(m.window_start) <= 2100
                           for m in moments)
    for request, field in ((Recall.Request(limit=1000), "limit"),
                           (Recall.Request(use_position=True, position=Point(x=math.nan)), "position"),
                           (Recall.Request(start=ns_to_stamp(start_ns + 10**9, Time), end=ns_to_stamp(start_ns, Time)),
                            "start")):
        response = call_service(hour.client, request, "/oryx/recall", 60.0, Recall)
        assert not response.success and response.error.startswith(field), response.error


def test_ask_when_last_seen_looks_again_at_the_moment(hour: HourNode) -> None:
    [red] = _appearances(hour, "red object")
    response = hour.ask(question="When did you last see the red object?")
    assert response.success, response.error
    evidence = response.evidence
    assert evidence.memory_query == "red"  # "object" is in every colour label: not a word to search for
    assert evidence.moments and _within(hour, hour.seconds(evidence.moments[0].stamp), red)
    # "last": the newest relevant moment comes first (descriptions skipped while the model was busy are missing
    # from the memory, so the newest one stored, not the end of the interval).
    newest_red = max(hour.seconds(m.stamp) for m in hour.recall(query="red", limit=50).moments)
    assert hour.seconds(evidence.moments[0].stamp) == newest_red
    assert [m.stamp.sec for m in evidence.moments] == sorted((m.stamp.sec for m in evidence.moments), reverse=True)
    retrieved = [f for f in evidence.frames if f.reason == EvidenceFrame.REASON_RETRIEVED]
    assert retrieved and all(f.source == EvidenceFrame.SOURCE_MEMORY for f in retrieved)
    assert all(f.has_pose and f.pose.header.frame_id == "odom" and f.pose.pose.position.x == hour.events["robot_xyz"][0]
               for f in retrieved)  # the keyframes were stored with the robot's pose
    assert all(_within(hour, hour.seconds(f.stamp), red) for f in retrieved), \
        f"retrieved {[hour.seconds(f.stamp) for f in retrieved]}, moments " \
        f"{[(hour.seconds(m.window_start), hour.seconds(m.window_end), m.score) for m in evidence.moments]}"
    # 50 minutes of robot time before the newest frame: the whole hour was searched, not the RAM buffer.
    newest = max(hour.seconds(f.stamp) for f in evidence.frames)
    assert newest - red["end_s"] >= 49 * 60
    assert evidence.frames_from_memory == sum(f.source == EvidenceFrame.SOURCE_MEMORY for f in evidence.frames)
    assert response.frames_used == len(evidence.frames) and response.compression == "16x"
    stamps = [hour.seconds(f.stamp) for f in evidence.frames]
    assert stamps == sorted(stamps)


def test_ask_over_a_long_window_reads_ram_and_disk(hour: HourNode) -> None:
    response = hour.ask(question="What changed on the table?", window_s=1800.0, max_frames=12)
    assert response.success, response.error
    sources = {f.source for f in response.evidence.frames}
    assert sources == {EvidenceFrame.SOURCE_MEMORY, EvidenceFrame.SOURCE_BUFFER}, sources
    stamps = [hour.seconds(f.stamp) for f in response.evidence.frames]
    assert len(stamps) <= 12 and min(stamps) >= hour.events["duration_s"] - 1800 - 1
    assert response.evidence.frames_dropped > 0  # the window holds many more keyframes: counted, not silent


def test_a_restarted_node_finds_the_memory_again(hour: HourNode) -> None:
    hour.process.send_signal(signal.SIGINT)
    assert hour.process.wait(timeout=20) == 0
    with open(hour.params.with_suffix(".log"), "a") as log:
        restarted = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file",
                                      str(hour.params)], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert hour.client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=120)
        [red] = _appearances(hour, "red object")
        moments = hour.recall(query="red").moments
        assert moments and _within(hour, hour.seconds(moments[0].stamp), red)
        response = hour.ask(question="When did you last see the red object?")
        assert response.success, response.error  # no frame in RAM: the memory alone answers
        assert {f.source for f in response.evidence.frames} == {EvidenceFrame.SOURCE_MEMORY}
    finally:  # this process is the test's own: the fixture stops only the one it started
        restarted.send_signal(signal.SIGINT)
        try:
            restarted.wait(timeout=20)
        except subprocess.TimeoutExpired:
            restarted.kill()
