"""Shared by the benchmarks: batch sizing for timed loops, and waiting for a child process's line."""

from __future__ import annotations

import select
import subprocess
import time
from collections.abc import Callable

# A case: run(n) performs n calls and returns the seconds they took (set-up stays outside the clock).
Runner = Callable[[int], float]


def calls_per_batch(run: Runner, batch_s: float) -> int:
    """Calls that take about ``batch_s`` (after one warm-up call: allocator, threads, per-size caches)."""
    run(1)
    n = 1
    while (elapsed := run(n)) < batch_s / 4 and n < 1_000_000:
        n *= 4 if elapsed < batch_s / 40 else 2
    return max(1, round(n * batch_s / max(elapsed, 1e-9)))


def alternating_batches(run: Runner, reference: Runner, repeats: int, batch_s: float
                        ) -> tuple[list[float], list[float]]:
    """Seconds per call of the case and of its reference, from ``repeats`` batches of each, alternating, so
    that a change in the machine's load hits both alike."""
    n, n_reference = calls_per_batch(run, batch_s), calls_per_batch(reference, batch_s)
    case_s, reference_s = [], []
    for _ in range(repeats):
        reference_s.append(reference(n_reference) / n_reference)
        case_s.append(run(n) / n)
    return case_s, reference_s


def wait_for_line(process: subprocess.Popen[str], expected: str, timeout_s: float) -> None:
    """Read the child's stdout until the line ``expected`` (a receiver saying READY)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"receiver exited (rc {process.wait()}) before printing {expected}")
        if line.strip() == expected:
            return
    raise TimeoutError(f"receiver did not print {expected} within {timeout_s:.0f} s")
