"""The node's process-memory bound: glibc malloc tuning (oryx_ros.ros.process_memory).

Each check runs in a fresh interpreter, since mallopt settings are per process and must be applied before
the allocations they govern. No timings are asserted; the soak benchmark (bench/bench_soak.py) measures
the slope over minutes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from oryx_ros.ros import process_memory

REPO_ROOT = Path(__file__).resolve().parents[2]
GLIBC = sys.platform.startswith("linux") and process_memory._libc() is not None \
    and hasattr(process_memory._libc(), "gnu_get_libc_version")
needs_glibc = pytest.mark.skipif(not GLIBC, reason="glibc malloc only")

# Camera-sized blocks (a 640x480 rgb8 frame is 0.92 MB) freed from several threads while small, long-lived
# objects are allocated between them: the pattern of the node's subscription and inference threads.
CHURN = textwrap.dedent("""
    import json, sys, threading
    from oryx_ros.ros.process_memory import memory_status, tune_malloc
    applied = tune_malloc() if sys.argv[1] == "tuned" else False
    keep, lock = [], threading.Lock()
    def churn(seed):
        blocks = []
        for i in range(300):
            blocks.append(bytearray(921_600 + 4096 * ((seed + i) % 7)))
            with lock:
                keep.append(bytes(64 + i % 200))  # small survivors between the big blocks
            if len(blocks) > 40:
                del blocks[: len(blocks) - 20]
    before = memory_status().rss_bytes
    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"applied": applied, "retained_mb": (memory_status().rss_bytes - before) / 2**20}))
""")


def _run(code: str, *args: str, **env: str) -> dict:
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_",
                                "GLIBC_TUNABLES", process_memory.DISABLE_VARIABLE)}
    environment.update(env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environment.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=environment,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


APPLY = ("import json; from oryx_ros.ros.process_memory import tune_malloc; "
         "print(json.dumps({'applied': tune_malloc()}))")


@needs_glibc
def test_tuning_applies_on_glibc_and_yields_to_the_operator() -> None:
    assert _run(APPLY)["applied"] is True
    assert _run(APPLY, ORYX_ROS_MALLOC_TUNING="0")["applied"] is False
    assert _run(APPLY, MALLOC_ARENA_MAX="4")["applied"] is False


@needs_glibc
def test_camera_sized_blocks_are_given_back_once_freed() -> None:
    """With the tuning, freeing ~1 MB blocks returns their memory (they are mmapped), whatever small
    objects were allocated between them; glibc's default raises its mmap threshold after the first free
    and keeps such blocks in its arenas, where small survivors pin them."""
    tuned = _run(CHURN, "tuned")
    assert tuned["applied"] is True
    # 4 threads x 300 blocks of ~0.9 MB went through; only the small survivors (~60 KB) remain.
    assert tuned["retained_mb"] < 16, tuned


def test_memory_status_reads_this_process() -> None:
    status = process_memory.memory_status()
    if status is None:
        pytest.skip("no /proc")
    assert status.rss_bytes >= status.anonymous_bytes > 0


def test_the_action_server_forgets_finished_goals(ros_context: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """rclpy keeps a finished goal's handle and result for ``result_timeout`` (900 s by default on Humble
    and Jazzy): the node sets it short, so a goal every few seconds keeps only a minute's worth."""
    from rclpy.node import Node

    from oryx_ros.ros import node as node_module

    passed: dict[str, Any] = {}
    real_server = node_module.ActionServer

    def recording_server(*args: Any, **kwargs: Any) -> Any:
        passed.update(kwargs)
        return real_server(*args, **kwargs)

    monkeypatch.setattr(node_module, "ActionServer", recording_server)
    monkeypatch.setattr(node_module.OryxCore, "_load_model", lambda self: None)  # no checkpoint needed here
    monkeypatch.setattr(node_module.OryxCore, "_load_spatial", lambda self: None)
    node = Node("oryx_memory_test", context=ros_context)
    core = node_module.OryxCore(node)
    try:
        core.configure()
        assert 0 < passed["result_timeout"] <= 60
    finally:
        core.cleanup()
        node.destroy_node()
