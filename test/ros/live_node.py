"""A live oryx node for tests: one node process on the tiny random checkpoint over Fast DDS, with three
RGB-D cameras fed from a rendered scene bag (stamped in 2023, replayed without use_sim_time) and one RGB
camera, ``probe``, that the test publishes itself; plus the test's client view of it (:class:`Live`).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from camera_bag_node import private_memory
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from oryx_ros.action import Ask as AskAction
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.msg import SceneDescription, SceneGraph
from oryx_ros.params_file import camera_topics_of, read_parameters, write_params_file
from oryx_ros.perception.image_codec import numpy_to_image
from oryx_ros.ros.client import call_action, call_service, spin_until_done
from oryx_ros.ros.conversions import ns_to_stamp, stamp_to_ns
from oryx_ros.spatial.synthetic_scene import make_scene, write_scene
from oryx_ros.srv import Ask

SCENE_CAMERAS = ["cam0", "cam1", "cam2"]
SCENE_FRAMES, SCENE_RATE_HZ = 3, 4.0
PROBE_TOPIC = "/probe/image_raw"
RELIABLE = QoSProfile(depth=20, reliability=QoSReliabilityPolicy.RELIABLE)


class Live:
    """The node under test and this test's view of it."""

    def __init__(self, process: subprocess.Popen, client: Node, scene_newest_ns: int) -> None:
        self.process, self.client, self.scene_newest_ns = process, client, scene_newest_ns
        self.probe_pub = client.create_publisher(Image, PROBE_TOPIC, RELIABLE)
        self.probe_stamp_ns = scene_newest_ns  # the probe continues the bag's (old) time base
        self.descriptions: list[SceneDescription] = []
        self.graphs: list[SceneGraph] = []
        self.views: list[Image] = []
        client.create_subscription(SceneDescription, "/oryx/scene_description", self.descriptions.append, RELIABLE)
        client.create_subscription(SceneGraph, "/oryx/scene_graph", self.graphs.append, RELIABLE)
        client.create_subscription(Image, "/oryx/marked_views", self.views.append, RELIABLE)
        self.diagnostics: list[DiagnosticArray] = []
        client.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self._executor = SingleThreadedExecutor(context=client.context)
        self._executor.add_node(client)

    # ----------------------------------------------------------------------------------- plumbing
    def spin(self, seconds: float, until: Callable[[], bool] = lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            self._executor.spin_once(timeout_sec=0.05)
        return until()

    def _call(self, service_type: Any, name: str, request: Any) -> Any:
        self._executor.remove_node(self.client)
        try:
            client = self.client.create_client(service_type, name)
            assert client.wait_for_service(timeout_sec=30), name
            future = client.call_async(request)
            spin_until_done(self.client, future, 60)
            self.client.destroy_client(client)
            return future.result()
        finally:
            self._executor.add_node(self.client)

    def set(self, name: str, value: Any) -> SetParametersResult:
        message = Parameter(name, value=value).to_parameter_msg()
        return self._call(SetParameters, "/oryx/set_parameters", SetParameters.Request(parameters=[message])).results[0]

    def set_ok(self, name: str, value: Any) -> None:
        result = self.set(name, value)
        assert result.successful, f"{name}={value!r}: {result.reason}"

    def get(self, name: str) -> Any:
        value = self._call(GetParameters, "/oryx/get_parameters", GetParameters.Request(names=[name])).values[0]
        return parameter_value_to_python(value)

    def ask(self, **fields: Any) -> Ask.Response:
        self._executor.remove_node(self.client)
        try:
            return call_service(self.client, Ask.Request(**fields), timeout_s=120)
        finally:
            self._executor.add_node(self.client)

    def action(self, **fields: Any) -> tuple[int, AskAction.Result, list[AskAction.Feedback]]:
        feedback: list[AskAction.Feedback] = []
        self._executor.remove_node(self.client)
        try:
            status, result = call_action(self.client, AskAction.Goal(**fields), on_feedback=feedback.append,
                                         timeout_s=120)
        finally:
            self._executor.add_node(self.client)
        return status, result, feedback

    def statuses(self, until: Callable[[dict[str, Any]], bool] = lambda s: True, timeout_s: float = 20.0
                 ) -> dict[str, Any]:
        """The newest /diagnostics published after this call, as {component: (level, message, {key: value})},
        once ``until`` holds. (Messages still queued from before the call are ignored by their stamp.)"""
        since_ns = time.time_ns()
        latest: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal latest
            fresh = published_after(self.diagnostics, since_ns)
            if not fresh:
                return False
            latest = {status.name.split(": ", 1)[1]: (status.level[0] if isinstance(status.level, bytes)
                                                      else status.level, status.message,
                                                      {kv.key: kv.value for kv in status.values})
                      for status in fresh[-1].status}
            self.diagnostics.clear()
            return until(latest)

        assert self.spin(timeout_s, ready), f"diagnostics never satisfied the check; last: {latest}"
        return latest

    def in_effect(self, key: str, value: str, timeout_s: float = 10.0) -> None:
        self.statuses(lambda s: s["parameters in effect"][2].get(key) == value, timeout_s)

    def next_description(self, timeout_s: float = 30.0,
                         check: Callable[[SceneDescription], bool] = lambda d: True) -> SceneDescription:
        """The second description published after now: the first may have started before the call."""
        since_ns = time.time_ns()

        def ready() -> bool:
            fresh = published_after(self.descriptions, since_ns)
            return len(fresh) >= 2 and check(fresh[-1])

        assert self.spin(timeout_s, ready), f"no matching description within {timeout_s} s: {self.descriptions[-1:]}"
        return published_after(self.descriptions, since_ns)[-1]

    def publish_probe(self, count: int = 1, stamp_ns: int | None = None, rate_hz: float = 10.0) -> None:
        for _ in range(count):
            if stamp_ns is None:
                self.probe_stamp_ns += int(1e9 / rate_hz)
            stamp = stamp_ns if stamp_ns is not None else self.probe_stamp_ns
            image = np.full((120, 160, 3), (stamp // 10**8) % 250, dtype=np.uint8)
            self.probe_pub.publish(numpy_to_image(image, "rgb8", Image,
                                                  header=Header(stamp=ns_to_stamp(stamp, Time), frame_id="probe")))
            self.spin(1.0 / rate_hz)

    def probe_counter(self, key: str) -> int:
        return int(self.statuses()["camera probe"][2].get(key, 0))


def published_after(messages: list[Any], since_ns: int) -> list[Any]:
    """The messages stamped (by the node's clock: wall time here) after ``since_ns``."""
    return [m for m in messages if stamp_to_ns(m.header.stamp) > since_ns]



@contextlib.contextmanager
def live_node(directory: Path, client_name: str, extra_cameras: dict[str, dict[str, Any]] | None = None
              ) -> Iterator[Live]:
    """Start the node (scene cameras + ``probe`` + ``extra_cameras``), replay the scene into it, yield the
    client's view; SIGINT and the node's log tail (printed) at the end."""
    ensure_tiny_checkpoint()
    scene_dir = directory / "scene"
    scene = make_scene(3, n_cameras=3, width=320, height=240)
    write_scene(scene, scene_dir, n_frames=SCENE_FRAMES, rate_hz=SCENE_RATE_HZ)
    scene_newest_ns = scene.frames[0].stamp_ns + (SCENE_FRAMES - 1) * round(1e9 / SCENE_RATE_HZ)
    cameras = read_parameters(scene_dir / "cameras.yaml")["cameras"]
    params = write_params_file(scene_dir / "node.yaml", {
        "cameras": {**cameras, "names": [*SCENE_CAMERAS, "probe", *(extra_cameras or {})],
                    "probe": {"image_topic": PROBE_TOPIC}, **(extra_cameras or {})},
        "buffer": {"max_rate_hz": 0.0}, "qos": {"sensor_reliable": True, "sensor_depth": 100},
        "ask": {"max_new_tokens": 4, "default_window_s": 60.0},
        "description": {"period_s": 0.5, "max_new_tokens": 2, "window_s": 60.0, "spatial": False}})
    topics = camera_topics_of({**cameras, "names": SCENE_CAMERAS})
    with scene_node_running(params, scene_dir / "bag", topics, client_name) as (process, client):
        yield Live(process, client, scene_newest_ns)


@contextlib.contextmanager
def scene_node_running(params: Path, bag: Path, topics: list[str], client_name: str
                       ) -> Iterator[tuple[subprocess.Popen, Node]]:
    """The node process with ``params`` (and a memory store of its own), ready and fed ``topics`` of ``bag``;
    and a client node. At the end: SIGINT, and the tail of the node's log printed."""
    with node_running(params, client_name, private_memory(params)) as (process, client):
        replay = subprocess.run([sys.executable, "-m", "oryx_ros.ros.replay", str(bag),
                                 "--wait-subscribers", "1", "--topics", *topics],
                                capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        yield process, client


@contextlib.contextmanager
def node_running(params: Path, client_name: str, ros_args: tuple[str, ...] = ()
                 ) -> Iterator[tuple[subprocess.Popen, Node]]:
    """The node process with ``params`` once its ``/oryx/ask`` service is up, and a client node (in rclpy's
    default context). At the end: SIGINT, and the tail of the node's log printed (pytest shows it on a
    failure)."""
    log = open(params.with_suffix(".log"), "a+")  # noqa: SIM115 (closed at the end)
    process = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file",
                                str(params), *ros_args], stdout=log, stderr=subprocess.STDOUT)
    with rclpy.init():
        client = Node(client_name)
        try:
            assert client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=120), "node did not start"
            yield process, client
        finally:
            client.destroy_node()
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
            if process.poll() is None:
                process.kill()
            log.seek(0)
            print(log.read()[-6000:])
            log.close()
