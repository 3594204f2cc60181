"""The node as a thin client of a fleet server (``model.backend: remote``), end to end.

A real local Ray serves the tiny checkpoint (``oryx-ros serve``'s deployment); two node processes, two robots
in their own namespaces, are fed the same three-camera bag over Fast DDS and ask through the server: service
answers, streamed and cancelled action goals, two robots asking at once, and a server that is down.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from camera_bag_node import replay_into, start_node, stop_node, write_bag, write_params
from ray_server import free_port, ray_server
from rclpy.node import Node

from oryx_ros.action import Ask as AskAction
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.params_file import read_parameters, write_params_file
from oryx_ros.ros.client import call_action, call_service, spin_until_done
from oryx_ros.srv import Ask

pytestmark = pytest.mark.ros

ROBOTS = ("robot1", "robot2")


def _remote_params(directory: Path, endpoint: str) -> Path:
    base = read_parameters(write_params(directory / "base.yaml"))
    return write_params_file(directory / "remote.yaml", {
        **base, "model": {"backend": "remote", "endpoint": endpoint, "timeout_s": 120.0}})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """Ray serving the tiny model; two robots' nodes using it, with the bag replayed into both."""
    ensure_tiny_checkpoint()
    directory = tmp_path_factory.mktemp("fleet")
    bag = write_bag(directory / "bag")
    with ray_server(num_replicas=1) as endpoint:
        params = _remote_params(directory, endpoint)
        env = dict(os.environ)
        processes = [start_node("node", params, env, output=directory / f"{robot}.log",
                                extra_args=("-r", f"__ns:=/{robot}")) for robot in ROBOTS]
        try:
            with rclpy.init():
                client = Node("fleet_test_client")
                for robot in ROBOTS:
                    assert client.create_client(Ask, f"/{robot}/oryx/ask").wait_for_service(timeout_sec=120), robot
                replay_into(env, bag.path, "--wait-subscribers", str(len(ROBOTS)))  # both robots see it all
                yield client
                client.destroy_node()
        finally:
            for process in processes:
                stop_node(process)
            for robot in ROBOTS:
                print(robot, (directory / f"{robot}.log").read_text()[-3000:])


def test_service_answers_through_the_server(fleet: Node) -> None:
    response = call_service(fleet, Ask.Request(question="What do the cameras see?", window_s=60.0),
                            "/robot1/oryx/ask", 300.0)
    assert response.success, response.error
    assert response.answer and response.frames_used > 0 and response.visual_tokens > 0
    assert len(response.evidence.frames) == response.frames_used


def test_action_streams_and_cancels_through_the_server(fleet: Node) -> None:
    feedback: list[AskAction.Feedback] = []
    status, result = call_action(fleet, AskAction.Goal(question="Describe the scene.", window_s=60.0,
                                                       max_new_tokens=64), "/robot2/oryx/ask",
                                 on_feedback=feedback.append)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success, result.error
    assert feedback and feedback[-1].text == result.answer
    status, result = call_action(fleet, AskAction.Goal(question="Describe the scene.", window_s=60.0,
                                                       max_new_tokens=256), "/robot2/oryx/ask",
                                 cancel_after_tokens=2)
    assert status == GoalStatus.STATUS_CANCELED and result.cancelled


def test_two_robots_ask_at_once(fleet: Node) -> None:
    clients = {robot: fleet.create_client(Ask, f"/{robot}/oryx/ask") for robot in ROBOTS}
    futures = {robot: clients[robot].call_async(Ask.Request(question=f"What does {robot} see?", window_s=60.0))
               for robot in ROBOTS}  # both requests are in flight before either is answered
    for robot, future in futures.items():
        spin_until_done(fleet, future, 300.0)
        response = future.result()
        assert response is not None and response.success, (robot, response and response.error)


def test_a_server_that_is_down_gives_a_clear_error(fleet: Node, tmp_path: Path) -> None:
    params = _remote_params(tmp_path, f"http://127.0.0.1:{free_port()}")
    process = start_node("node", params, dict(os.environ), output=tmp_path / "node.log",
                         extra_args=("-r", "__ns:=/robot3", "-p", "model.timeout_s:=5.0"))
    try:
        assert fleet.create_client(Ask, "/robot3/oryx/ask").wait_for_service(timeout_sec=120)
        # robot3 and the fleet's two robots all subscribe: wait for the three, so robot3 gets the frames too
        replay_into(dict(os.environ), write_bag(tmp_path / "bag").path, "--wait-subscribers", str(len(ROBOTS) + 1))
        response = call_service(fleet, Ask.Request(question="anything?", window_s=60.0), "/robot3/oryx/ask", 120.0)
        assert not response.success and response.error.startswith("model server: "), response.error
        assert "unreachable" in response.error, response.error
        assert process.poll() is None  # the node keeps serving
    finally:
        stop_node(process)
        print((tmp_path / "node.log").read_text()[-3000:])
