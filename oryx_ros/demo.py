"""`oryx-ros demo`: the whole product on bundled data, in separate processes over real Fast DDS.

1. generate (or reuse) a small synthetic 3-camera RGB-D scene bag with ground truth,
2. start the oryx node (tiny random checkpoint unless ``--model``),
3. replay the bag into it, paced by its timestamps,
4. ask a question over the ``/oryx/ask`` service, then over the streaming action, then a spatial one,
5. print the answers, their timings and a scene description the node published, and stop the node;
6. hour-scale memory: replay an hour of robot time (sim time, 60x) into a node with a fresh memory, then ask
   what it saw 50 minutes earlier and print the evidence (``--skip-memory`` leaves this part out).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
NODE_READY_TIMEOUT_S = 300.0
DEMO_SEED = 3
DEMO_FRAMES = 8
HOUR_REPLAY_RATE = 60.0


def cache_dir() -> Path:
    from oryx_ros.model.tiny_checkpoint import default_cache_dir

    return default_cache_dir()


def share_file(relative: str) -> Path:
    """A file of config/ from the source tree, or from the installed share directory."""
    candidate = REPO_ROOT / relative
    if candidate.exists():
        return candidate
    from ament_index_python.packages import get_package_share_directory  # full ROS installs only

    return Path(get_package_share_directory("oryx_ros")) / relative


def ensure_demo_scene() -> tuple[Path, Path, list[str]]:
    """The demo bag, its camera parameter file and the topics the node reads; written once, then reused."""

    from oryx_ros.params_file import camera_topics_of, read_parameters
    from oryx_ros.spatial.synthetic_scene import make_scene, write_scene

    out = cache_dir() / "demo-scene-v1"
    bag, cameras = out / "bag", out / "cameras.yaml"
    if not (bag / "metadata.yaml").exists() or not cameras.exists():
        print(f"rendering a synthetic 3-camera RGB-D scene into {out} (once)", file=sys.stderr)
        scene = make_scene(DEMO_SEED, n_cameras=3, noise=None)
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        write_scene(scene, partial, n_frames=DEMO_FRAMES, rate_hz=4.0)
        partial.rename(out)
    return bag, cameras, camera_topics_of(read_parameters(cameras)["cameras"])


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    # Keep the demo's traffic on this machine and off the robot's domain unless the user chose one.
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(share_file("config/fastdds_shm.xml")))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)), flush=True)


def run_demo(model: str, memory: bool = True) -> int:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile

    from oryx_ros.action import Ask as AskAction
    from oryx_ros.msg import SceneDescription
    from oryx_ros.ros.client import call_action, call_service, collect_messages
    from oryx_ros.ros.conversions import stamp_to_ns
    from oryx_ros.srv import Ask

    env = _environment()
    os.environ.update(env)
    _section("data")
    bag, camera_params, topics = ensure_demo_scene()
    print(f"bag: {bag}\ncamera parameters: {camera_params}")

    _section("node")
    overrides = {"description.period_s": 2.0, "description.window_s": 60.0, "buffer.max_rate_hz": 0.0,
                 "qos.sensor_reliable": "true", "qos.sensor_depth": 100, "ask.max_new_tokens": 24,
                 "description.max_new_tokens": 16}
    if model:
        overrides["model.path"] = model
    first_memory = cache_dir() / "demo-memory-scene"
    shutil.rmtree(first_memory, ignore_errors=True)  # each demo starts with an empty memory
    overrides["memory.directory"] = str(first_memory)
    node_cmd = [sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args",
                "--params-file", str(share_file("config/oryx.yaml")), "--params-file", str(camera_params)]
    for name, value in overrides.items():
        node_cmd += ["-p", f"{name}:={value}"]
    print(" ".join(node_cmd[1:]), f"(ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']})")
    node_process = subprocess.Popen(node_cmd, env=env)
    exit_code = 1
    try:
        with rclpy.init():
            client_node = Node("oryx_demo")
            service = client_node.create_client(Ask, "/oryx/ask")
            started = time.monotonic()
            while not service.wait_for_service(timeout_sec=1.0):
                if node_process.poll() is not None:
                    raise RuntimeError(f"the node exited with code {node_process.returncode}")
                if time.monotonic() - started > NODE_READY_TIMEOUT_S:
                    raise TimeoutError("the node did not come up")
            print(f"node ready after {time.monotonic() - started:.1f} s")

            _section("replay")
            replay_cmd = [sys.executable, "-m", "oryx_ros.ros.replay", str(bag), "--wait-subscribers", "1",
                          "--topics", *topics]
            print(" ".join(replay_cmd[1:]))
            subprocess.run(replay_cmd, env=env, check=True)

            _section("service /oryx/ask")
            question = "What objects do the cameras see?"
            response = call_service(client_node, Ask.Request(question=question, window_s=60.0))
            _print_answer(question, response)

            _section("action /oryx/ask (streaming)")
            question = "Describe the scene."
            print(f"Q: {question}\nA (streamed): ", end="", flush=True)
            seen = [0]

            def on_feedback(feedback: AskAction.Feedback) -> None:
                print(feedback.text[seen[0]:], end="", flush=True)
                seen[0] = len(feedback.text)

            _status, result = call_action(client_node, AskAction.Goal(question=question, window_s=60.0),
                                          on_feedback=on_feedback)
            print()
            _print_answer(None, result)

            _section("spatial question (depth + coarse correspondences)")
            question = "Which object is closest to the red box?"
            response = call_service(client_node, Ask.Request(question=question, spatial=True, window_s=60.0))
            _print_answer(question, response)

            _section("scene description (/oryx/scene_description)")
            descriptions = collect_messages(
                client_node, SceneDescription, "/oryx/scene_description",
                QoSProfile(depth=5, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL), timeout_s=60.0)
            if descriptions:
                d = descriptions[-1]
                span = (stamp_to_ns(d.window_end) - stamp_to_ns(d.window_start)) / 1e9
                print(f"{d.text!r}\n({d.frames} frames from {list(d.cameras)} over {span:.1f} s, {d.visual_tokens} "
                      f"visual tokens, {d.compression}, {d.latency_s:.2f} s, model {d.model})")
                exit_code = 0
            else:
                print("no scene description arrived within 60 s")
    finally:
        _stop(node_process)
    if exit_code == 0 and memory:
        exit_code = run_memory_demo(model, env)
    _section("done")
    return exit_code


def hour_parameters(out: Path, memory: dict[str, Any]) -> Path:
    """Node parameters for the hour bag in ``out`` (written by oryx_ros.bags.hour_bag): sim time, descriptions
    with the scene graph every minute of robot time, and ``memory`` (memory.* parameters)."""
    from oryx_ros.params_file import read_parameters, write_params_file

    bag_parameters = read_parameters(out / "cameras.yaml")  # cameras, and the base frame and pose topic
    return write_params_file(out / "node.yaml", {
        "use_sim_time": True, "cameras": bag_parameters["cameras"],
        "buffer": {"window_s": 120.0, "max_rate_hz": 0.0},
        "qos": {"sensor_reliable": True, "sensor_depth": 100},
        "ask": {"max_new_tokens": 16},
        "memory": {"keyframe_hz": 1.0, **memory},
        "description": {"period_s": 60.0, "window_s": 30.0, "max_new_tokens": 8, "max_frames": 4, "spatial": True},
        "spatial": {**bag_parameters["spatial"], "publish_marked_views": False}})


def ensure_hour_bag() -> Path:
    """The hour bag's directory (bag/, events.json, cameras.yaml); written once, then reused."""
    from oryx_ros.bags.hour_bag import write_hour_bag

    out = cache_dir() / "demo-hour-v2"
    if not (out / "bag" / "metadata.yaml").exists():
        print(f"rendering an hour of robot time into {out} (once)", file=sys.stderr)
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        write_hour_bag(partial)
        partial.rename(out)
    return out


def run_memory_demo(model: str, env: dict[str, str]) -> int:
    """Part 6: an hour of robot time in a minute, then "when did you last see the red object?"."""
    import json

    import rclpy
    from rclpy.node import Node

    from oryx_ros.bags.hour_bag import hour_topics
    from oryx_ros.ros.client import call_service, describe_evidence, describe_moment
    from oryx_ros.srv import Ask, Recall

    _section("hour-scale memory: one hour of robot time, replayed at 60x in sim time")
    out = ensure_hour_bag()
    events = json.loads((out / "events.json").read_text())
    memory_dir = cache_dir() / "demo-memory"
    shutil.rmtree(memory_dir, ignore_errors=True)  # a fresh memory, so the demo shows this replay only
    params = hour_parameters(out, {"directory": str(memory_dir)})
    node_cmd = [sys.executable, "-m", "oryx_ros.cli", "node", "--ros-args", "--params-file", str(params)]
    if model:
        node_cmd += ["-p", f"model.path:={model}"]
    for appearance in events["appearances"]:
        print(f"   truth: {appearance['label']:<12} at {appearance['centre_m']} m in {events['frame_id']!r}, minutes "
              f"{appearance['start_s'] / 60:.0f}-{appearance['end_s'] / 60:.0f}")
    node_process = subprocess.Popen(node_cmd, env=env)
    try:
        with rclpy.init():
            client_node = Node("oryx_demo_memory")
            if not client_node.create_client(Ask, "/oryx/ask").wait_for_service(timeout_sec=NODE_READY_TIMEOUT_S):
                raise TimeoutError("the node did not come up")
            topics = hour_topics(out)
            replay_cmd = [sys.executable, "-m", "oryx_ros.ros.replay", str(out / "bag"), "--wait-subscribers", "1",
                          "--clock", "--rate", str(HOUR_REPLAY_RATE), "--topics", *topics]
            print(" ".join(replay_cmd[1:]))
            started = time.monotonic()
            subprocess.run(replay_cmd, env=env, check=True)
            print(f"replayed 60 min of robot time in {time.monotonic() - started:.0f} s")
            time.sleep(2.0)  # the recorder commits at most every 0.5 s

            question = "When did you last see the red object?"
            response = call_service(client_node, Ask.Request(question=question))
            _print_answer(question, response)
            print(describe_evidence(response.evidence, events["start_ns"]))
            recall = call_service(client_node, Recall.Request(query="blue", limit=3), "/oryx/recall", 60.0, Recall)
            print("/oryx/recall 'blue':")
            for moment in recall.moments:
                print("   " + describe_moment(moment, events["start_ns"]))
            return 0 if response.success and response.evidence.moments else 1
    finally:
        _stop(node_process)


def _stop(node_process: subprocess.Popen) -> None:
    """SIGINT (the node's orderly stop), then SIGKILL if it has not exited within 20 s."""
    node_process.send_signal(signal.SIGINT)
    try:
        node_process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        node_process.kill()


def _print_answer(question: str | None, response: Any) -> None:
    from oryx_ros.ros.client import describe_result

    if question:
        print(f"Q: {question}")
    if not response.success:
        print(f"error: {response.error}")
        return
    if question:
        print(f"A: {response.answer}")
    print(describe_result(response, max_relations=12))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oryx-ros demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="Oryx checkpoint directory (default: tiny random checkpoint)")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the hour-scale memory part")
    args = parser.parse_args(argv)
    return run_demo(args.model, memory=not args.skip_memory)


if __name__ == "__main__":
    sys.exit(main())
