"""Test-wide environment: ROS traffic stays on this machine, on a domain of its own for each run.

Child processes (replay, node, clients) inherit these variables, so a test run never talks to another
run or to a robot on the network.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config) -> None:
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    # Domain ids 1..101 stay clear of the default 0 and of Fast DDS's port limit (232).
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
    # Nodes keep their memory under $ROS_HOME (~/.ros by default): never the developer's own during tests.
    os.environ["ROS_HOME"] = tempfile.mkdtemp(prefix="oryx_ros_test_ros_home_")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # Child processes must import this checkout (and the generated interfaces already on the path).
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
