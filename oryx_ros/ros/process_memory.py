"""Keep the node's resident memory bounded: glibc malloc settings and the process's memory figures.

Why this exists (measured with bench/bench_soak.py, README "Memory bound and soak"): with 3 cameras at
640x480 the node's RSS grew by ~70 MB a minute while the frame buffer and the token cache stayed inside
their budgets. The growth was in glibc's per-thread malloc arenas (/proc/PID/smaps), not in objects kept
alive: the Python heap less the buffer's frames (tracemalloc, which also traces numpy's buffers) stays
flat. Every camera message is a ~0.9 MB buffer allocated on whichever executor or DDS thread received it,
and so are the decoded frames and the inference temporaries. glibc raises its mmap threshold to the size
of each large block freed (up to 32 MB), so after the first frame is dropped every later one comes from
an arena instead of its own mapping; frames kept for the buffer's window then sit between short-lived
blocks and small survivors, and an arena gives memory back only from its top.

:func:`tune_malloc` fixes the mmap threshold (which switches the dynamic raising off) so that every
large block is mmapped and returned to the system when freed, and caps the arenas; it must run before
the executor's threads start (``oryx_ros.ros.node._spin`` calls it first). With it the arenas stay at
tens of MB and the soak's slope is within noise. :func:`release_free_memory` (``malloc_trim``) is not
called by the node, since the soak shows no need for it; it is there for a debugging session. Both are
no-ops off glibc. An operator who sets glibc's own knobs (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``,
``GLIBC_TUNABLES``) keeps them, and ``ORYX_ROS_MALLOC_TUNING=0`` turns this off.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass
from functools import cache
from typing import Final

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
# Blocks from this size up get their own mapping: a camera frame (>= 0.3 MB for 320x240 rgb8) always
# does, small Python objects never do. glibc's own default before its dynamic raising is 128 KiB.
DEFAULT_MMAP_THRESHOLD_BYTES: Final = 256 * 1024
DEFAULT_ARENA_MAX: Final = 2
_OPERATOR_SETTINGS: Final = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
DISABLE_VARIABLE: Final = "ORYX_ROS_MALLOC_TUNING"


@cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return None
    return libc


def tune_malloc(mmap_threshold_bytes: int = DEFAULT_MMAP_THRESHOLD_BYTES,
                arena_max: int = DEFAULT_ARENA_MAX) -> bool:
    """Fix glibc's mmap threshold and cap its arenas; True if applied.

    Call it once, early in the process (before threads allocate). Skipped when the operator set one of
    glibc's variables or ``ORYX_ROS_MALLOC_TUNING=0``.
    """
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return False
    if any(name in os.environ for name in _OPERATOR_SETTINGS):
        log.debug("glibc malloc settings come from the environment; not tuning them")
        return False
    libc = _libc()
    if libc is None:
        return False
    applied = all(libc.mallopt(parameter, value) == 1 for parameter, value in (
        (_M_MMAP_THRESHOLD, int(mmap_threshold_bytes)),
        # Setting it also switches off the dynamic adjustment of the trim threshold; keep glibc's default.
        (_M_TRIM_THRESHOLD, 128 * 1024),
        (_M_ARENA_MAX, int(arena_max)),
    ))
    if not applied:
        log.warning("mallopt refused a setting: process memory may grow with heap fragmentation")
    return applied


def release_free_memory() -> bool:
    """Return free heap memory to the system (glibc ``malloc_trim(0)``); True if some was released."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


@dataclass(frozen=True)
class MemoryStatus:
    rss_bytes: int
    anonymous_bytes: int
    file_bytes: int
    shared_bytes: int


def memory_status(pid: int | str = "self") -> MemoryStatus | None:
    """Resident memory of a process from /proc (None where there is no /proc)."""
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return MemoryStatus(values.get("VmRSS", 0), values.get("RssAnon", 0), values.get("RssFile", 0),
                        values.get("RssShmem", 0))
