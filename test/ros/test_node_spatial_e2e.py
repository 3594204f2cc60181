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
from oryx_ros.msg import SceneGraph, SceneObject
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
    # cam2 is declared three times: with depth (the scene's cameras), as an RGB-only view without a mount
    # (left out of the 3D scene) and as an RGB-only view with cam2's mount (marked by projection).
    rgb = {"image_topic": cameras["cam2"]["image_topic"], "camera_info_topic": cameras["cam2"]["camera_info_topic"]}
    params = write_params_file(scene_dir / "node.yaml", {
        "cameras": {**cameras, "names": [*cameras["names"], "rgb_only", "rgb_mounted"], "rgb_only": rgb,
                    "rgb_mounted": {**rgb, "mount": list(cameras["cam2"]["mount"])}},  # a copy: no YAML alias
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
    # the RGB-only one without a mount is left out of the 3D scene, saying why, the mounted one is marked
    # by projection, and the three RGB-D views make it.
    assert graphs, "no scene graph published with the descriptions"
    graph = graphs[-1]
    assert graph.available and graph.objects and graph.header.frame_id == "base_link"
    assert all("rgb_only" not in obj.cameras for obj in graph.objects)
    assert list(graph.views_left_out) == ["rgb_only"] and "mount" in graph.views_left_out_reasons[0]
    assert list(graph.projected_views) == ["rgb_mounted"]
    assert any("rgb_mounted" in obj.cameras for obj in graph.objects)


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
                                            "on", "in", "under", "near"} for r in geometry)
    # The tiny random model names nothing (spatial.model_labels auto = off for it): colour words, said so.
    for obj in scene.objects:
        assert obj.colour and obj.label == f"{obj.colour} object"
        assert obj.label_source == SceneObject.LABEL_SOURCE_COLOUR
    assert not scene.views_left_out and not scene.projected_views
    ids = {obj.id for obj in scene.objects}
    assert all(r.subject_id in ids and r.object_id in ids for r in scene.relations)

    _spin_until(client, lambda: graphs and markers and len(views) >= 3)
    assert graphs and [o.id for o in graphs[-1].objects] == [o.id for o in scene.objects]
    boxes = [m for m in markers[-1].markers if m.type == Marker.CUBE]
    labels = [m for m in markers[-1].markers if m.ns == "labels"]
    assert len(boxes) == len(labels) == len(scene.objects)
    assert any(m.type == Marker.LINE_LIST and m.points for m in markers[-1].markers)
    drawn = "\n".join(m.text for m in markers[-1].markers if m.ns == "relation_labels").split("\n")
    assert sorted(drawn) == sorted(f"{r.subject_id} {r.predicate.replace('_', ' ')} {r.object_id}"
                                   for r in scene.relations)  # the markers draw what was published
    # Descriptions (every second, over all cameras) publish their marked views too, rgb_mounted included.
    assert {"cam0", "cam1", "cam2"} <= {v.header.frame_id for v in views} <= {"cam0", "cam1", "cam2", "rgb_mounted"}
    assert all(v.encoding == "rgb8" and v.width == 320 and v.height == 240 for v in views)

    # A second request while nothing moved keeps every object's id.
    again = call_service(client, Ask.Request(question="And now?", spatial=True, cameras=["cam0", "cam1", "cam2"],
                                             window_s=60.0), timeout_s=120)
    assert again.success
    first = {o.id: np.array([o.position.x, o.position.y, o.position.z]) for o in scene.objects}
    for obj in again.scene.objects:
        assert np.linalg.norm(first[obj.id] - [obj.position.x, obj.position.y, obj.position.z]) < 0.02


def test_viewpoint_and_rgb_only_views_in_a_request(node_and_client: tuple[subprocess.Popen, Node]) -> None:
    _, client = node_and_client
    response = call_service(client, Ask.Request(question="What is left of the red object?", spatial=True,
                                                cameras=["cam0", "cam1", "cam2", "rgb_only", "rgb_mounted"],
                                                window_s=60.0, viewpoint="cam0"), timeout_s=120)
    assert response.success, response.error
    scene = response.scene
    assert response.frames_used == 4  # the mounted RGB-only view is marked too; rgb_only is left out
    assert list(scene.projected_views) == ["rgb_mounted"] and list(scene.views_left_out) == ["rgb_only"]
    geometry = [r for r in scene.relations if r.source == "geometry"]
    assert geometry and all(r.viewpoint.endswith("_level") for r in geometry)
    red = [obj.id for obj in scene.objects if obj.colour == "red"]
    if len(red) == 1:  # "the red object" is tied to its mark by the colour label
        assert list(scene.question_ids) == red
    bad = call_service(client, Ask.Request(question="Where?", spatial=True, viewpoint="moon"), timeout_s=60)
    assert not bad.success and bad.error.startswith("viewpoint") and "'moon'" in bad.error


def test_rgb_only_camera_gets_no_fabricated_3d(node_and_client: tuple[subprocess.Popen, Node]) -> None:
    _, client = node_and_client
    response = call_service(client, Ask.Request(question="Where is the red object?", spatial=True,
                                                cameras=["rgb_only"], window_s=60.0), timeout_s=120)
    assert response.success, response.error  # the question is still answered from the plain views
    assert not response.scene.available and "depth" in response.scene.reason
    assert not response.scene.objects and not response.scene.relations
