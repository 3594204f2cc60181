"""Encoding on arrival, end to end over Fast DDS: the oryx node (tiny random checkpoint), bag replays and this
test's client in separate processes, on a ROS domain of their own.

What is checked is where a question's frames come from (the node's /diagnostics: the last question's
frames encoded vs taken from the token cache, and the encode-ahead counters), never how long anything took.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rclpy
from camera_bag_node import CAMERAS, FPS, FRAMES, TOPICS, domain_env, start_node, stop_node, write_params
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from oryx_ros.bags.camera_bag import write_camera_bag
from oryx_ros.bags.synthetic import DEFAULT_START_NS, make_test_frames
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.ros.client import call_service, collect_messages
from oryx_ros.srv import Ask

pytestmark = pytest.mark.ros

DOMAIN_OFFSET = 160
BAG_SPACING_NS = 10 * 10**9  # each bag continues 10 s after the previous one: new frames, same 60 s window


class Running:
    """The node process and this test's client on their own domain."""

    def __init__(self, process: subprocess.Popen, client: Node, env: dict[str, str], directory: Path) -> None:
        self.process, self.client, self.env, self.directory = process, client, env, directory
        self.bags = 0

    def bag(self, width: int, height: int) -> Path:
        """A new three-camera bag, stamped after the ones before (so its frames are all new to the node)."""
        frames = make_test_frames(CAMERAS, FRAMES, fps=FPS, width=width, height=height,
                                  start_ns=DEFAULT_START_NS + self.bags * BAG_SPACING_NS, seed=self.bags)
        path = self.directory / f"bag{self.bags}"
        write_camera_bag(path, frames)
        self.bags += 1
        return path

    def replay(self, bag: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                                 "--topics", *TOPICS], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def model_status(self, until: Callable[[dict[str, str]], bool] = lambda _v: True, timeout_s: float = 60.0,
                     required: bool = True) -> dict[str, str]:
        """The node's "model" diagnostic values, from the first array after this call that satisfies ``until``
        (or, when not ``required``, the last one within ``timeout_s``)."""
        latest: dict[str, str] = {}

        def satisfied(arrays: list[Any]) -> bool:
            nonlocal latest
            if not arrays:
                return False
            latest = next({kv.key: kv.value for kv in status.values} for status in arrays[-1].status
                          if status.name.endswith(": model"))
            return until(latest)

        arrays = collect_messages(self.client, DiagnosticArray, "/diagnostics", until=satisfied, timeout_s=timeout_s)
        assert satisfied(arrays) or not required, f"the model diagnostics never satisfied the check; last: {latest}"
        return latest

    def ask(self, question: str) -> Ask.Response:
        response = call_service(self.client, Ask.Request(question=question), timeout_s=120)  # the ask.* defaults
        assert response.success, response.error
        return response


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    ensure_tiny_checkpoint()
    directory = tmp_path_factory.mktemp("encode_on_arrival")
    env = domain_env(DOMAIN_OFFSET)
    # Descriptions off: the frames a question uses are the only ones encoded ahead, so the counts are exact.
    process = start_node("node", write_params(directory / "oryx.yaml"), env, output=directory / "node.log",
                         extra_args=("-p", "description.enabled:=false"))
    context = rclpy.Context()
    old_domain = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    try:
        rclpy.init(context=context)
        client = Node("encode_on_arrival_client", context=context)
        assert client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=120), "the node did not start"
        yield Running(process, client, env, directory)
        client.destroy_node()
    finally:
        os.environ["ROS_DOMAIN_ID"] = old_domain
        context.try_shutdown()
        stop_node(process)
        print((directory / "node.log").read_text()[-4000:])


def _int(values: dict[str, str], key: str) -> int:
    return int(values.get(key, 0))


def test_frames_stored_while_idle_are_encoded_and_the_question_takes_them_from_the_cache(running: Running) -> None:
    frames = len(CAMERAS) * FRAMES
    replay = running.replay(running.bag(160, 120))
    output, _ = replay.communicate(timeout=120)
    assert replay.returncode == 0, output
    # Idle: every stored frame is encoded ahead (more, if a question's plan changed while the frames came in:
    # with one frame per camera it is three 1x images), and none was left out for the cache budget.
    status = running.model_status(lambda v: v["encode_ahead"] == "done"
                                  and _int(v, "encode_ahead_frames_encoded") >= frames)
    encoded_ahead = _int(status, "encode_ahead_frames_encoded")
    assert _int(status, "encode_ahead_skipped_budget") == 0 and _int(status, "encode_ahead_preempted") == 0

    response = running.ask("What do the cameras see?")
    assert response.frames_used == frames and response.compression == "4x"
    status = running.model_status(lambda v: "last_ask_frames_from_cache" in v)
    assert (_int(status, "last_ask_frames_encoded"), _int(status, "last_ask_frames_from_cache")) == (0, frames)
    assert _int(status, "encode_ahead_frames_encoded") == encoded_ahead  # nothing new arrived: nothing encoded


def test_a_question_preempts_encoding_ahead_which_then_resumes(running: Running) -> None:
    """A question asked while the node encodes ahead stops that job (the preempted counter) and is answered;
    afterwards the job resumes and the next question again finds every frame in the cache."""
    preempted_before = _int(running.model_status(), "encode_ahead_preempted")
    for _ in range(5):  # each try: a new bag of larger frames, and a question once encoding ahead is seen running
        replay = running.replay(running.bag(640, 480))
        running.model_status(lambda v: v["encode_ahead"] == "running", timeout_s=20, required=False)
        running.ask("What is happening right now?")
        output, _ = replay.communicate(timeout=120)
        assert replay.returncode == 0, output
        if _int(running.model_status(), "encode_ahead_preempted") > preempted_before:
            break
    status = running.model_status()
    assert _int(status, "encode_ahead_preempted") > preempted_before, status
    assert _int(status, "encode_ahead_failed") == 0

    encoded = running.model_status(lambda v: v["encode_ahead"] == "done")
    response = running.ask("And now?")
    status = running.model_status(lambda v: _int(v, "completed") > 0)
    assert _int(status, "last_ask_frames_encoded") == 0, (status, encoded)
    assert _int(status, "last_ask_frames_from_cache") == response.frames_used > len(CAMERAS) * FRAMES
