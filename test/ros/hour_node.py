"""A live node that has lived through an hour of robot time: the hour bag (oryx_ros.bags.hour_bag) replayed in
sim time (``--clock --rate 60``) into a node with ``use_sim_time``, descriptions with the scene graph on, and
the long-horizon memory in a private directory (SQLite) or on a PostgreSQL server (``memory_url``)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from live_node import node_running
from rclpy.node import Node

from oryx_ros.bags.hour_bag import hour_topics, write_hour_bag
from oryx_ros.demo import hour_parameters
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.ros.client import call_service
from oryx_ros.ros.conversions import stamp_to_ns
from oryx_ros.srv import Ask, Recall

NS_PER_S = 1_000_000_000
REPLAY_RATE = 60.0


@dataclass
class HourNode:
    process: subprocess.Popen
    client: Node
    events: dict[str, Any]
    params: Path

    def seconds(self, stamp: Any) -> float:
        """A stamp as seconds into the hour."""
        return (stamp_to_ns(stamp) - self.events["start_ns"]) / NS_PER_S

    def recall(self, **fields: Any) -> Recall.Response:
        response = call_service(self.client, Recall.Request(**fields), "/oryx/recall", 60.0, Recall)
        assert response.success, response.error
        return response

    def ask(self, **fields: Any) -> Ask.Response:
        return call_service(self.client, Ask.Request(**fields), "/oryx/ask", 300.0)


def replay_hour(bag: Path, topics: list[str]) -> None:
    replay = subprocess.run([sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                             "--clock", "--rate", str(REPLAY_RATE), "--topics", *topics],
                            capture_output=True, text=True, timeout=600)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def wait_for_memory(hour: HourNode, until_s: float, timeout_s: float = 60.0) -> None:
    """Until the memory's newest entry is past ``until_s`` into the hour and has stopped changing (the recorder
    writes asynchronously; descriptions the busy model skipped are simply missing, so no exact end is known)."""
    deadline = time.monotonic() + timeout_s
    previous = None
    while time.monotonic() < deadline:
        moments = hour.recall(query="", limit=1).moments
        newest = hour.seconds(moments[0].stamp) if moments else None
        if newest is not None and newest >= until_s and newest == previous:
            return
        previous = newest
        time.sleep(1.5)
    raise AssertionError(f"the memory did not settle past {until_s} s of the hour within {timeout_s} s "
                         f"(newest entry: {previous})")


@contextlib.contextmanager
def hour_node(directory: Path, client_name: str, memory: dict[str, Any]) -> Iterator[HourNode]:
    """The node after the hour was replayed into it."""
    ensure_tiny_checkpoint()
    paths = write_hour_bag(directory / "hour")
    events = json.loads(paths["events"].read_text())
    params = hour_parameters(directory / "hour", memory)
    topics = hour_topics(paths["cameras"].parent)
    with node_running(params, client_name) as (process, client):
        replay_hour(paths["bag"], topics)
        hour = HourNode(process, client, events, params)
        wait_for_memory(hour, events["duration_s"] - 600.0)  # the last ten minutes of the hour are in
        yield hour
