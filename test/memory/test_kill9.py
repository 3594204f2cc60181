"""SIGKILL of a process that is recording: the file reopens intact and has all but the last moments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from oryx_ros.memory.sqlite_store import SQLiteMemoryStore

WRITER = Path(__file__).with_name("memory_writer.py")
# What a kill may lose: the recorder commits every 0.2 s (commit_interval_s); 1 s leaves room for a loaded
# machine's scheduling. Stamps are the writer's wall clock, so this compares stamps, not durations here.
MAX_LOSS_NS = 1_000_000_000


def record_then_kill(directory: Path, lines_before_kill: int) -> int:
    """Run the writer until it has offered ``lines_before_kill`` frames, SIGKILL it; the last stamp offered."""
    writer = subprocess.Popen([sys.executable, str(WRITER), str(directory)], stdout=subprocess.PIPE, text=True,
                              bufsize=1)
    assert writer.stdout is not None
    offered: list[int] = []
    try:
        while len(offered) < lines_before_kill:
            line = writer.stdout.readline()
            assert line, f"the writer exited early (rc {writer.poll()})"
            offered.append(int(line.split()[1]))
        os.kill(writer.pid, signal.SIGKILL)
        offered += [int(line.split()[1]) for line in writer.stdout.read().splitlines() if line.startswith("offered")]
    finally:
        writer.kill()
        writer.wait()
    assert writer.returncode == -signal.SIGKILL
    return offered[-1]


def test_sigkill_while_recording_loses_at_most_the_last_commit(tmp_path: Path) -> None:
    newest_before = None
    for round_, lines in enumerate((60, 87)):  # twice: the second run appends to the file the first left
        last_offered = record_then_kill(tmp_path, lines)
        store = SQLiteMemoryStore(tmp_path, max_bytes=0, max_age_s=0)
        try:
            assert store.integrity_check() == "ok"
            keyframes = store.keyframes()
            newest = keyframes[-1].stamp_ns
            assert last_offered - MAX_LOSS_NS <= newest <= last_offered, f"round {round_}"
            if newest_before is not None:
                assert keyframes[0].stamp_ns <= newest_before < newest  # the first run's frames are still there
            assert store.entries()  # entries survived too
            store.keyframe_rgb(keyframes[-1].id)  # and the newest image decodes
            newest_before = newest
        finally:
            store.close()
