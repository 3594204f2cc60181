"""Which frames to show the model for a question: some near the recalled moments, the rest for coverage.

``choose_frames`` is a pure function of stamps, moments and a budget. Relevance first: the moments in score
order (ties keep recall's order, newer first), each taking in turn the free frame nearest the middle of its
window, from inside the window when there is one; further rounds take more frames from inside the windows,
up to ``relevance_share * budget``. Coverage then fills the budget by farthest-point sampling in time (each
frame the one farthest from every frame already chosen, earliest on a tie), so it spreads evenly over what
the retrieved frames left uncovered and includes both ends of the span.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from oryx_ros.memory.records import Moment

FrameReason = Literal["retrieved", "coverage"]


def choose_frames(stamps_ns: Sequence[int], moments: Sequence[Moment], budget: int, *,
                  relevance_share: float = 0.5) -> list[tuple[int, FrameReason]]:
    """(index into ``stamps_ns``, why) for at most ``budget`` frames, sorted by stamp (then index)."""
    if not 0.0 <= relevance_share <= 1.0:
        raise ValueError(f"relevance_share must lie in [0, 1] (got {relevance_share})")
    stamps = np.asarray(stamps_ns, dtype=np.int64).reshape(-1)
    budget = min(int(budget), len(stamps))
    if budget <= 0:
        return []
    free = np.ones(len(stamps), dtype=bool)
    chosen: dict[int, FrameReason] = {}
    relevance_budget = math.floor(relevance_share * budget + 1e-9)
    ranked = sorted(moments, key=lambda moment: -moment.score)
    first_round = True
    while len(chosen) < relevance_budget and ranked:
        taken_this_round = False
        for moment in ranked:
            if len(chosen) >= relevance_budget:
                break
            index = nearest_free_frame(stamps, free, moment, inside_only=not first_round)
            if index is not None:
                chosen[index] = "retrieved"
                free[index] = False
                taken_this_round = True
        if not taken_this_round:
            break
        first_round = False
    for index in farthest_in_time(stamps, free, budget - len(chosen)):
        chosen[index] = "coverage"
    return sorted(chosen.items(), key=lambda item: (int(stamps[item[0]]), item[0]))


def nearest_free_frame(stamps: npt.NDArray[np.int64], free: npt.NDArray[np.bool_], moment: Moment, *,
                       inside_only: bool) -> int | None:
    """The free frame inside ``moment``'s window nearest its middle (lowest index on a tie); failing that,
    unless ``inside_only``, the free frame nearest the window."""
    start, end = moment.entry.window_start_ns, moment.entry.window_end_ns
    middle = start + (end - start) // 2
    candidates = np.flatnonzero(free & (stamps >= start) & (stamps <= end))
    if len(candidates) == 0:
        if inside_only:
            return None
        candidates = np.flatnonzero(free)
        if len(candidates) == 0:
            return None
        gap = np.maximum(start - stamps[candidates], 0) + np.maximum(stamps[candidates] - end, 0)
        candidates = candidates[gap == gap.min()]
    # argmin returns the first minimum: candidates are in index order, so ties go to the lowest index.
    return int(candidates[np.argmin(np.abs(stamps[candidates] - middle))])


def farthest_in_time(stamps: npt.NDArray[np.int64], free: npt.NDArray[np.bool_], count: int) -> list[int]:
    """``count`` free frames by farthest-point sampling in time, away from the frames already taken."""
    picked: list[int] = []
    if count <= 0 or not free.any():
        return picked
    order = np.lexsort((np.arange(len(stamps)), stamps))  # by stamp, then index: ties go to the earliest
    ordered = stamps[order]
    taken = ordered[~free[order]]
    if len(taken):
        distance = np.min(np.abs(ordered[:, None] - taken[None, :]), axis=1)
    else:
        distance = np.full(len(ordered), np.iinfo(np.int64).max, dtype=np.int64)  # nothing yet: the earliest first
    distance[~free[order]] = -1
    for _ in range(min(count, int(free.sum()))):
        k = int(np.argmax(distance))
        picked.append(int(order[k]))
        distance = np.minimum(distance, np.abs(ordered - ordered[k]))
        distance[k] = -1
    return picked
