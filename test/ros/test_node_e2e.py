"""End to end over Fast DDS: the oryx node, a bag replay and this test's clients in separate processes.

The node runs the tiny random checkpoint, so the answers' words mean nothing; what is checked is the
contract: fields, counts, streaming, cancellation, periodic descriptions, errors and staying alive.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import rclpy
from action_msgs.msg import GoalStatus
from camera_bag_node import (
    CAMERAS,
    DESCRIPTION_WINDOW_S,
    FRAMES,
    HEIGHT,
    TOPICS,
    WIDTH,
    Bag,
    domain_env,
    private_memory,
    replay_into,
    start_node,
    stop_node,
    write_bag,
    write_params,
)
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile

from oryx_ros.action import Ask as AskAction
from oryx_ros.model.preprocessing import video_frame_size
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.msg import SceneDescription
from oryx_ros.ros.client import call_action, call_service, collect_messages, spin_until_done
from oryx_ros.srv import Ask

pytestmark = pytest.mark.ros

_write_params = write_params


def _replay(bag: Path, wait: bool = True) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                                "--topics", *TOPICS], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
    return process


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Bag:
    return write_bag(tmp_path_factory.mktemp("bag") / "three_cameras")


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen]:
    ensure_tiny_checkpoint()  # written once here, so the node does not race another writer
    params = _write_params(tmp_path_factory.mktemp("params") / "oryx.yaml")
    log = open(params.parent / "node.log", "w+")  # noqa: SIM115 (closed at teardown)
    process = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file",
                                str(params), *private_memory(params)], stdout=log, stderr=subprocess.STDOUT)
    yield process
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.seek(0)
    print(log.read()[-4000:])
    log.close()


@pytest.fixture(scope="module")
def client(node_process: subprocess.Popen) -> Iterator[Node]:
    with rclpy.init():
        node = Node("oryx_test_client")
        service = node.create_client(Ask, "/oryx/ask")
        deadline = time.monotonic() + 120
        while not service.wait_for_service(timeout_sec=0.5):
            assert node_process.poll() is None, "the node exited"
            assert time.monotonic() < deadline, "the node did not come up"
        yield node
        node.destroy_node()


def _ask(client: Node, **fields: object) -> Ask.Response:
    return call_service(client, Ask.Request(**fields), timeout_s=120)


def _tokens_per_frame() -> int:
    width, height = video_frame_size(WIDTH, HEIGHT, "video")
    grid_w, grid_h = width // 16 // 2, height // 16 // 2  # 4x: 2x2 pooling of the 16-px patch grid
    return grid_h * (grid_w + 1) + 1  # rows + a newline per row + image_sep (spec §2.5)


def test_empty_buffer_gives_a_clear_error(client: Node) -> None:
    response = _ask(client, question="What is there?")
    assert not response.success and "no frames buffered" in response.error and response.answer == ""


def test_service_answers_with_frames_tokens_and_compression(client: Node, bag: Bag) -> None:
    _replay(bag.path)
    response = _ask(client, question="What do the cameras see?", window_s=60.0)
    assert response.success, response.error
    assert response.answer and response.error == ""
    assert response.compression == "4x"
    assert response.frames_used == len(CAMERAS) * FRAMES  # 24 frames per camera fit the 4x budget
    per_camera = response.frames_used // len(CAMERAS)
    assert response.visual_tokens == len(CAMERAS) * (2 + per_camera * _tokens_per_frame())
    assert response.latency_s > 0

    # The window is measured back from the newest buffered frame (the bag's stamps are years old).
    short = _ask(client, question="And just now?", window_s=0.35, cameras=["cam1"])
    assert short.success, short.error
    assert 1 <= short.frames_used <= 4  # 10 fps: the frames within 0.35 s of the newest one


def test_unknown_camera_and_bad_mode_are_refused_and_the_node_keeps_serving(client: Node) -> None:
    unknown = _ask(client, question="hi", cameras=["nope"])
    assert not unknown.success and "unknown camera" in unknown.error and "cam0" in unknown.error
    bad_mode = _ask(client, question="hi", mode="telepathy")
    assert not bad_mode.success and "mode must be one of" in bad_mode.error
    empty = _ask(client, question="   ")
    assert not empty.success and "empty" in empty.error
    assert _ask(client, question="still there?").success


def test_action_streams_tokens_in_order(client: Node, bag: Bag) -> None:
    feedback: list[AskAction.Feedback] = []
    status, result = call_action(client, AskAction.Goal(question="Describe it.", max_new_tokens=6),
                                 on_feedback=feedback.append, timeout_s=120)
    assert status == GoalStatus.STATUS_SUCCEEDED and result.success and not result.cancelled
    counts = [f.tokens for f in feedback]
    assert counts[0] == 1 and counts[-1] == 6
    assert all(b - a in (0, 1) for a, b in itertools.pairwise(counts))  # one token at a time
    assert all(b.text.startswith(a.text) for a, b in itertools.pairwise(feedback))
    assert feedback[-1].text == result.answer


def test_action_cancel_stops_generation(client: Node) -> None:
    feedback: list[AskAction.Feedback] = []
    status, result = call_action(client, AskAction.Goal(question="Tell me everything.", max_new_tokens=400),
                                 on_feedback=feedback.append, cancel_after_tokens=3, timeout_s=120)
    assert status == GoalStatus.STATUS_CANCELED and result.cancelled and not result.success
    assert 3 <= feedback[-1].tokens < 400
    assert result.answer == "" or feedback[-1].text.startswith(result.answer[:1])
    assert _ask(client, question="after the cancel").success


def test_periodic_descriptions_cover_the_window(client: Node, bag: Bag) -> None:
    def end_ns(description: SceneDescription) -> int:
        return description.window_end.sec * 10**9 + description.window_end.nanosec

    # The latched description may predate the last frames (questions preempt descriptions); the next ones
    # end at the newest frame.
    received = collect_messages(client, SceneDescription, "/oryx/scene_description",
                                QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL),
                                until=lambda r: any(end_ns(d) == bag.newest_stamp_ns for d in r), timeout_s=60)
    assert received, "no scene description within 60 s"
    description = received[-1]
    start = description.window_start.sec * 10**9 + description.window_start.nanosec
    end = end_ns(description)
    assert end == bag.newest_stamp_ns
    assert bag.oldest_stamp_ns <= start < end
    assert end - start <= DESCRIPTION_WINDOW_S * 1e9
    assert sorted(description.cameras) == CAMERAS
    assert description.compression == "16x" and description.frames > 0 and description.visual_tokens > 0
    assert description.model and description.text and description.latency_s > 0


def test_concurrent_asks_while_frames_stream_in(client: Node, bag: Bag) -> None:
    replay = _replay(bag.path, wait=False)  # the same bag again: stamps already buffered (duplicates)
    outcomes: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def ask_until_answered(index: int) -> None:
        # Each caller retries what the node may rightly say: busy (its queue of 1 is full). Anything else
        # is a failure.
        node = Node(f"oryx_concurrent_{index}", context=client.context)
        outcomes[index] = []
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                response = call_service(node, Ask.Request(question=f"question {index}", window_s=60.0),
                                        timeout_s=120)
                outcomes[index].append("ok" if response.success else response.error)
                if response.success:
                    return
                assert "busy" in response.error, response.error
                time.sleep(0.05)
        except BaseException as error:
            errors.append(error)
        finally:
            node.destroy_node()

    threads = [threading.Thread(target=ask_until_answered, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    output, _ = replay.communicate(timeout=120)
    assert replay.returncode == 0, output
    assert not errors, errors
    assert all(results and results[-1] == "ok" for results in outcomes.values()), outcomes
    # The sensor side kept buffering while the model ran: every replayed frame is there afterwards.
    after = _ask(client, question="after the storm", window_s=60.0)
    assert after.success and after.frames_used == len(CAMERAS) * FRAMES


@contextlib.contextmanager
def _node_on_its_own_domain(command: str, params: Path, domain_offset: int,
                            extra_args: Sequence[str] = ()) -> Iterator[tuple[Node, dict[str, str]]]:
    """A node process and a client node on a domain of their own, apart from the module's node."""
    env = domain_env(domain_offset)
    process = start_node(command, params, env, extra_args=tuple(extra_args))
    context = rclpy.Context()
    old_domain = os.environ["ROS_DOMAIN_ID"]
    os.environ["ROS_DOMAIN_ID"] = env["ROS_DOMAIN_ID"]
    try:
        rclpy.init(context=context)
        node = Node("own_domain_client", context=context)
        yield node, env
        node.destroy_node()
    finally:
        os.environ["ROS_DOMAIN_ID"] = old_domain
        context.try_shutdown()
        stop_node(process)


_replay_into = replay_into


def test_lifecycle_node_loads_on_configure_and_subscribes_on_activate(tmp_path: Path, bag: Bag) -> None:
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    with _node_on_its_own_domain("lifecycle-node", _write_params(tmp_path / "oryx.yaml"), 50) as (node, env):
        change = node.create_client(ChangeState, "/oryx/change_state")
        assert change.wait_for_service(timeout_sec=60), "no lifecycle services"
        ask = node.create_client(Ask, "/oryx/ask")
        assert not ask.wait_for_service(timeout_sec=1.0), "unconfigured node must not serve /oryx/ask yet"

        def transition(transition_id: int) -> bool:
            future = change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
            spin_until_done(node, future, 120)
            return future.result().success

        assert transition(Transition.TRANSITION_CONFIGURE)
        assert ask.wait_for_service(timeout_sec=30)
        assert transition(Transition.TRANSITION_ACTIVATE)
        _replay_into(env, bag.path)
        response = call_service(node, Ask.Request(question="configured?", window_s=60.0), timeout_s=120)
        assert response.success and response.frames_used == len(CAMERAS) * FRAMES, response.error
        assert transition(Transition.TRANSITION_DEACTIVATE)
        assert node.count_publishers("/cam0/image_raw") == 0
        assert transition(Transition.TRANSITION_CLEANUP)

        def serves_ask() -> bool:
            return any(name == "/oryx/ask" for name, _ in node.get_service_names_and_types_by_node("oryx", "/"))

        deadline = time.monotonic() + 10
        while serves_ask() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not serves_ask()


def test_use_sim_time_stamps_outputs_with_the_bag_clock(tmp_path: Path, bag: Bag) -> None:
    params = _write_params(tmp_path / "oryx.yaml")
    with _node_on_its_own_domain("node", params, 100, ["-p", "use_sim_time:=true",
                                                       "-p", "description.period_s:=0.2"]) as (node, env):
        assert node.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=120)
        _replay_into(env, bag.path, "--clock", "100")
        descriptions = collect_messages(node, SceneDescription, "/oryx/scene_description",
                                        QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL),
                                        timeout_s=30)
        assert descriptions, "no description: the node's timers should run on the replayed /clock"
        stamp = descriptions[-1].header.stamp.sec * 10**9 + descriptions[-1].header.stamp.nanosec
        # Sim time follows the bag (its stamps are from 2023), not this machine's wall clock.
        assert bag.oldest_stamp_ns <= stamp <= bag.newest_stamp_ns + 2 * 10**9
        response = call_service(node, Ask.Request(question="sim time?", window_s=60.0), timeout_s=120)
        assert response.success and response.frames_used == len(CAMERAS) * FRAMES, response.error


def test_diagnostics_report_cameras_buffer_and_model(client: Node, bag: Bag) -> None:
    from diagnostic_msgs.msg import DiagnosticArray

    arrays = collect_messages(client, DiagnosticArray, "/diagnostics", timeout_s=10)
    assert arrays, "no /diagnostics within 10 s"
    statuses = {status.name.split(": ", 1)[1]: {kv.key: kv.value for kv in status.values}
                for status in arrays[-1].status}
    assert {f"camera {c}" for c in CAMERAS} | {"frame buffer", "model", "synchronizer"} <= set(statuses)
    for camera in CAMERAS:
        assert statuses[f"camera {camera}"]["topic"] == f"/{camera}/image_raw"
        assert int(statuses[f"camera {camera}"]["frames"]) >= FRAMES
    assert int(statuses["frame buffer"]["frames"]) == len(CAMERAS) * FRAMES
    # The bag was replayed twice: the second pass repeats stamps already buffered, which the stamp gate
    # quarantines as duplicates (counted per camera) before anything is decoded.
    assert all(int(statuses["synchronizer"][f"{c} quarantined duplicate"]) > 0 for c in CAMERAS)
    model = statuses["model"]
    assert model["model"].startswith("tiny-oryx") and int(model["completed"]) > 0
    assert int(model["rejected_busy"]) >= 0 and float(model["last_latency_s"]) > 0
    assert int(model["token_cache_hits"]) > 0  # frames are encoded once and reused across questions
