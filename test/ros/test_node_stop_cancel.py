"""Clean stop and prompt cancel, on node processes over Fast DDS (tiny random checkpoint).

SIGINT or SIGTERM at any stage (model loading, idle, streaming an action, describing) ends the node with
exit code 0 and no traceback; a streaming goal gets its result first. A cancelled goal ends as cancelled
whether it was queued (it never starts) or in the vision pass (no token is generated), and the node logs
it as a cancel. Only behaviour is asserted, never durations (bench/bench_stop_cancel.py measures those).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from camera_bag_node import Bag, domain_env, replay_into, start_node, stop_node, write_bag, write_params
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionClient
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from oryx_ros.action import Ask as AskAction
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.ros.client import call_action, collect_messages
from oryx_ros.srv import Ask

pytestmark = pytest.mark.ros

UNCLEAN = ("Traceback", "terminate called", "never retrieved")
SHUTTING_DOWN = "the node is shutting down"
LONG = 4000  # tokens: far more than a test lets the tiny model generate


@dataclass
class Run:
    process: subprocess.Popen
    log: Path
    client: Node

    def text(self) -> str:
        return self.log.read_text()

    def exits_cleanly(self, signal_number: int | None = None) -> None:
        if signal_number is not None:
            self.process.send_signal(signal_number)
        assert self.process.wait(timeout=20) == 0, self.text()[-3000:]
        assert not [line for line in self.text().splitlines() if any(word in line for word in UNCLEAN)], \
            self.text()[-3000:]


@contextlib.contextmanager
def node_run(directory: Path, domain_offset: int, bag: Bag | None = None, ready: bool = True,
             extra_args: tuple[str, ...] = ()) -> Iterator[Run]:
    """A node process and a client on a domain of their own; the bag replayed into it when given."""
    ensure_tiny_checkpoint()  # written here, not by the node
    env = domain_env(domain_offset)
    log = directory / "node.log"
    process = start_node("node", write_params(directory / "oryx.yaml"), env, output=log, extra_args=extra_args)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    client = Node("stop_cancel_client", context=context)
    try:
        if ready:
            assert client.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=120), log.read_text()
        if bag is not None:
            replay_into(env, bag.path)
        yield Run(process, log, client)
    finally:
        client.destroy_node()
        context.try_shutdown()
        if process.poll() is None:
            stop_node(process)


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Bag:
    return write_bag(tmp_path_factory.mktemp("bag") / "three_cameras")


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60.0, spin: Any = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        if spin is not None:
            spin.spin_once(timeout_sec=0.02)
        else:
            time.sleep(0.02)


# ------------------------------------------------------------------------------------------- stopping
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_idle_node_exits_0_on_a_signal(tmp_path: Path, signal_number: int) -> None:
    with node_run(tmp_path, 120 + signal_number) as run:
        # The service answers before the constructor has finished (subscriptions, timers): wait until the
        # node is up, else this is the model-loading case below.
        _wait_for(lambda: "listening to" in run.text())
        run.exits_cleanly(signal_number)
        assert "stopping" in run.text()


def test_a_signal_during_model_loading_exits_0(tmp_path: Path) -> None:
    with node_run(tmp_path, 130, ready=False) as run:
        _wait_for(lambda: "TINY RANDOM" in run.text())  # logged just before the checkpoint loads
        run.exits_cleanly(signal.SIGINT)
        assert "listening to" not in run.text()  # stopped before the node came up


def test_a_streaming_goal_gets_its_result_before_the_node_exits(tmp_path: Path, bag: Bag) -> None:
    with node_run(tmp_path, 131, bag) as run:
        feedback: list[AskAction.Feedback] = []

        def on_feedback(message: AskAction.Feedback) -> None:
            if not feedback:
                run.process.send_signal(signal.SIGINT)  # while the answer streams
            feedback.append(message)

        status, result = call_action(run.client, AskAction.Goal(question="Stream on.", max_new_tokens=LONG),
                                     on_feedback=on_feedback, timeout_s=60)
        assert status == GoalStatus.STATUS_ABORTED and result.cancelled and not result.success
        assert result.error == SHUTTING_DOWN and 1 <= feedback[-1].tokens < LONG
        run.exits_cleanly()
        assert f"'Stream on.' cancelled ({SHUTTING_DOWN})" in run.text()


def test_sigterm_while_describing_exits_0(tmp_path: Path, bag: Bag) -> None:
    args = ("-p", f"description.max_new_tokens:={LONG}", "-p", "description.period_s:=0.2")
    with node_run(tmp_path, 132, bag, extra_args=args) as run:
        def describing(arrays: list[DiagnosticArray]) -> bool:
            return any(status.name.endswith(": model") and status.message == "busy"
                       for array in arrays for status in array.status)

        assert describing(collect_messages(run.client, DiagnosticArray, "/diagnostics", until=describing,
                                           timeout_s=30))
        run.exits_cleanly(signal.SIGTERM)


# ------------------------------------------------------------------------------------------ cancelling
@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory, bag: Bag) -> Iterator[Run]:
    # Nothing encoded ahead: the vision-pass cancel below must meet a real vision pass.
    no_background = ("-p", "description.enabled:=false", "-p", "model.encode_on_arrival:=false")
    with node_run(tmp_path_factory.mktemp("serving"), 133, bag, extra_args=no_background) as run:
        yield run
        run.exits_cleanly(signal.SIGINT)


class Goals:
    """Action goals sent from one client, spun by one executor."""

    def __init__(self, client: Node) -> None:
        self.action = ActionClient(client, AskAction, "/oryx/ask")
        assert self.action.wait_for_server(timeout_sec=30)
        self.executor = SingleThreadedExecutor(context=client.context)
        self.executor.add_node(client)

    def send(self, question: str, feedback: list[Any], **fields: Any) -> tuple[Any, Any]:
        sent = self.action.send_goal_async(AskAction.Goal(question=question, window_s=60.0, **fields),
                                           feedback_callback=lambda message: feedback.append(message.feedback))
        self.wait(sent.done)
        handle = sent.result()
        assert handle.accepted
        return handle, handle.get_result_async()

    def wait(self, condition: Callable[[], bool]) -> None:
        _wait_for(condition, spin=self.executor)

    def close(self) -> None:
        self.executor.remove_node(self.action._node)
        self.action.destroy()


def _completed_jobs(client: Node) -> int:
    """The worker's completed jobs, from a /diagnostics array published after this call."""
    arrays = collect_messages(client, DiagnosticArray, "/diagnostics", until=lambda a: len(a) >= 2, timeout_s=10)
    values = {kv.key: kv.value for status in arrays[-1].status if status.name.endswith(": model")
              for kv in status.values}
    return int(values["completed"])


def test_a_queued_goal_is_cancelled_without_waiting_and_never_starts(serving: Run) -> None:
    completed_before = _completed_jobs(serving.client)
    goals = Goals(serving.client)
    try:
        running_feedback: list[Any] = []
        queued_feedback: list[Any] = []
        running, running_result = goals.send("Keep talking.", running_feedback, max_new_tokens=LONG)
        goals.wait(lambda: bool(running_feedback))  # the model is busy with it
        queued, queued_result = goals.send("Queued.", queued_feedback, max_new_tokens=8)
        queued.cancel_goal_async()
        goals.wait(queued_result.done)
        assert not running_result.done()  # the cancel did not wait for the running job
        assert queued_result.result().status == GoalStatus.STATUS_CANCELED
        assert queued_result.result().result.cancelled and queued_feedback == []

        running.cancel_goal_async()
        goals.wait(running_result.done)
        assert running_result.result().status == GoalStatus.STATUS_CANCELED
        assert running_feedback[-1].tokens < LONG
    finally:
        goals.close()
    assert _completed_jobs(serving.client) == completed_before + 1  # the running job only: the queued never ran
    log = serving.text()
    assert "'Queued.' cancelled after" in log and "'Keep talking.' cancelled after" in log
    assert "failed" not in log


def test_a_goal_cancelled_in_the_vision_pass_generates_nothing(serving: Run) -> None:
    goals = Goals(serving.client)
    try:
        feedback: list[Any] = []
        # All 72 frames of the bag: preprocessing and the ViT pass take far longer than a cancel's trip.
        handle, result = goals.send("Look closely.", feedback, max_new_tokens=LONG)
        handle.cancel_goal_async()
        goals.wait(result.done)
    finally:
        goals.close()
    assert result.result().status == GoalStatus.STATUS_CANCELED
    assert result.result().result.cancelled and result.result().result.answer == "" and feedback == []
    assert "'Look closely.' cancelled after" in serving.text()
