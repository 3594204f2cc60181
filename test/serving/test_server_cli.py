"""`oryx-ros serve` as a process: prints its URL on stdout, serves, and stops on SIGTERM/SIGINT with exit 0 and
no traceback."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx
import pytest
from ray_server import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM], ids=["SIGTERM"])
def test_serve_cli_starts_and_stops_cleanly(stop_signal):
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rcli", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    env.pop("ORYX_SERVE_API_KEY", None)
    process = subprocess.Popen([sys.executable, "-m", "oryx_ros.cli", "serve", "--port", str(port), "--num-cpus",
                                "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = _first_line(process, deadline_s=240)
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert "Traceback" not in stderr
        assert "TINY RANDOM-WEIGHT" in stderr and "stopped in" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        shutil.rmtree(temp_dir, ignore_errors=True)


def _first_line(process: subprocess.Popen, deadline_s: float) -> str:
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if selector.select(timeout=1.0):
            line = process.stdout.readline()
            if line:
                return line.strip()
        if process.poll() is not None:
            raise AssertionError(f"serve exited early ({process.returncode}): {process.stderr.read()[-2000:]}")
    raise AssertionError(f"serve printed no URL within {deadline_s} s")
