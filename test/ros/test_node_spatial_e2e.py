"""Spatial requests end to end: a rendered RGB-D scene bag → the node → scene graph, markers, marked views."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from live_node import scene_node_running
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.msg import SceneGraph
from oryx_ros.params_file import camera_topics_of, read_parameters, write_params_file
from oryx_ros.ros.client import call_service, collect_messages
from oryx_ros.spatial.synthetic_scene import make_scene, write_scene
from oryx_ros.srv import Ask

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "scene"
    write_scene(make_scene(3, n_cameras=3, width=320, height=240), out, n_frames=3, rate_hz=4.0)
    return out


@pytest.fixture(scope="module")
def node_and_client(scene_dir: Path) -> Iterator[tuple[subprocess.Popen, Node]]:
    ensure_tiny_checkpoint()
    cameras = read_parameters(scene_dir / "cameras.yaml")["cameras"]
    # cam2 is declared twice: once with depth (the scene's cameras) and once more as an RGB-only view.
    params = write_params_file(scene_dir / "node.yaml", {
        "cameras": {**cameras, "names": [*cameras["names"], "rgb_only"],
                    "rgb_only": {"image_topic": cameras["cam2"]["image_topic"],
                                 "camera_info_topic": cameras["cam2"]["camera_info_topic"]}},
        "buffer": {"max_rate_hz": 0.0}, "qos": {"sensor_reliable": True, "sensor_depth": 100},
        "ask": {"max_new_tokens": 6},
        "description": {"enabled": True, "spatial": True, "period_s": 1.0, "max_new_tokens": 2,
                        "window_s": 60.0},
        "sync": {"dead_camera_timeout_s": 0.5}})
    with scene_node_running(params, scene_dir / "bag", camera_topics_of(cameras), "spatial_test_client") as running:
        yield running


def _spin_until(node: Node, condition, timeout_s: float = 20.0) -> None:
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    executor.remove_node(node)


def test_descriptions_also_publish_the_scene_graph(node_and_client: tuple[subprocess.Popen, Node]) -> None:
    _, client = node_and_client
    graphs = collect_messages(client, SceneGraph, "/oryx/scene_graph",
                              QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL), timeout_s=60)
    # No spatial request was made yet: this graph comes from a periodic description over all cameras;
    # the RGB-only one is left out of the 3D scene and the three RGB-D views make it.
    assert graphs, "no scene graph published with the descriptions"
    assert graphs[-1].available and graphs[-1].objects and graphs[-1].header.frame_id == "base_link"
    assert all("rgb_only" not in obj.cameras for obj in graphs[-1].objects)


def test_spatial_request_returns_scene_graph_markers_and_marked_views(
        node_and_client: tuple[subprocess.Popen, Node], scene_dir: Path) -> None:
    _, client = node_and_client
    latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
    graphs: list[SceneGraph] = []
    markers: list[MarkerArray] = []
    views: list[Image] = []
    client.create_subscription(SceneGraph, "/oryx/scene_graph", graphs.append, latched)
    client.create_subscription(MarkerArray, "/oryx/markers", markers.append, latched)
    client.create_subscription(Image, "/oryx/marked_views", views.append, 10)

    response = call_service(client, Ask.Request(question="Which object is left of the red one?", spatial=True,
                                                cameras=["cam0", "cam1", "cam2"], window_s=60.0), timeout_s=120)
    assert response.success, response.error
    scene = response.scene
    assert scene.available and scene.header.frame_id == "base_link"
    assert response.frames_used == 3  # one marked view per camera
    truth = json.loads((scene_dir / "ground_truth.json").read_text())
    true_centres = np.array([obj["centre_m"] for obj in truth["objects"]])
    assert len(scene.objects) == len(true_centres)
    for obj in scene.objects:
        centre = np.array([obj.position.x, obj.position.y, obj.position.z])
        assert np.min(np.linalg.norm(true_centres - centre, axis=1)) < 0.03, obj
        assert set(obj.cameras) <= {"cam0", "cam1", "cam2"} and obj.cameras
    geometry = [r for r in scene.relations if r.source == "geometry"]
    assert geometry and all(r.predicate in {"left_of", "right_of", "in_front_of", "behind", "above", "below",
                                            "on", "near"} for r in geometry)
    ids = {obj.id for obj in scene.objects}
    assert all(r.subject_id in ids and r.object_id in ids for r in scene.relations)

    _spin_until(client, lambda: graphs and markers and len(views) >= 3)
    assert graphs and [o.id for o in graphs[-1].objects] == [o.id for o in scene.objects]
    boxes = [m for m in markers[-1].markers if m.type == Marker.CUBE]
    labels = [m for m in markers[-1].markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(boxes) == len(labels) == len(scene.objects)
    assert any(m.type == Marker.LINE_LIST and m.points for m in markers[-1].markers)
    assert {v.header.frame_id for v in views[-3:]} == {"cam0", "cam1", "cam2"}
    assert all(v.encoding == "rgb8" and v.width == 320 and v.height == 240 for v in views[-3:])

    # A second request while nothing moved keeps every object's id.
    again = call_service(client, Ask.Request(question="And now?", spatial=True, cameras=["cam0", "cam1", "cam2"],
                                             window_s=60.0), timeout_s=120)
    assert again.success
    first = {o.id: np.array([o.position.x, o.position.y, o.position.z]) for o in scene.objects}
    for obj in again.scene.objects:
        assert np.linalg.norm(first[obj.id] - [obj.position.x, obj.position.y, obj.position.z]) < 0.02


def test_rgb_only_camera_gets_no_fabricated_3d(node_and_client: tuple[subprocess.Popen, Node]) -> None:
    _, client = node_and_client
    response = call_service(client, Ask.Request(question="Where is the red object?", spatial=True,
                                                cameras=["rgb_only"], window_s=60.0), timeout_s=120)
    assert response.success, response.error  # the question is still answered from the plain views
    assert not response.scene.available and "depth" in response.scene.reason
    assert not response.scene.objects and not response.scene.relations
