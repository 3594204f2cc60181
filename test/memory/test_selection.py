"""choose_frames: budget, validity, relevance near the top moments, coverage spread (hypothesis, bounded)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from oryx_ros.memory import MemoryEntry, Moment, choose_frames

BOUNDED = settings(max_examples=200, deadline=None, derandomize=True)


def moment(start: int, end: int, score: float) -> Moment:
    return Moment(MemoryEntry(end, start, end, ("cam0",), "x"), score)


stamps_strategy = st.lists(st.integers(0, 10_000), min_size=0, max_size=60)
moment_strategy = st.builds(lambda a, length, score: moment(a, a + length, score), st.integers(-500, 10_500),
                            st.integers(0, 3000), st.floats(0.0, 1.0))


@BOUNDED
@given(stamps=stamps_strategy, moments=st.lists(moment_strategy, max_size=6), budget=st.integers(-2, 70),
       share=st.floats(0.0, 1.0))
def test_never_over_budget_unique_valid_sorted_and_deterministic(stamps: list[int], moments: list[Moment],
                                                                 budget: int, share: float) -> None:
    chosen = choose_frames(stamps, moments, budget, relevance_share=share)
    indices = [i for i, _ in chosen]
    assert len(chosen) == max(0, min(budget, len(stamps)))  # the budget is used whenever frames allow
    assert len(set(indices)) == len(indices) and all(0 <= i < len(stamps) for i in indices)
    assert [(stamps[i], i) for i in indices] == sorted((stamps[i], i) for i in indices)
    assert sum(reason == "retrieved" for _, reason in chosen) <= share * max(budget, 0) + 1e-9
    assert chosen == choose_frames(stamps, moments, budget, relevance_share=share)


@BOUNDED
@given(stamps=stamps_strategy.filter(bool), moments=st.lists(moment_strategy, min_size=1, max_size=6),
       budget=st.integers(2, 40))
def test_the_top_moment_gets_its_nearest_frame(stamps: list[int], moments: list[Moment], budget: int) -> None:
    assume(min(budget, len(stamps)) >= 2)  # half the budget holds at least one retrieved frame
    chosen = dict(choose_frames(stamps, moments, budget, relevance_share=0.5))
    top = max(moments, key=lambda m: m.score)  # the first of equals, as sorted() keeps them
    top = next(m for m in moments if m.score == top.score)
    start, end = top.entry.window_start_ns, top.entry.window_end_ns
    middle = start + (end - start) // 2
    inside = [i for i, s in enumerate(stamps) if start <= s <= end]
    if inside:
        best = min(abs(stamps[i] - middle) for i in inside)
        assert any(chosen.get(i) == "retrieved" and abs(stamps[i] - middle) == best for i in inside)
    else:
        gap = min(max(start - s, 0) + max(s - end, 0) for s in stamps)
        assert any(reason == "retrieved" and max(start - stamps[i], 0) + max(stamps[i] - end, 0) == gap
                   for i, reason in chosen.items())


@BOUNDED
@given(count=st.integers(2, 200), step=st.integers(1, 1000), budget=st.integers(2, 30))
def test_coverage_spreads_over_the_span(count: int, step: int, budget: int) -> None:
    stamps = [i * step for i in range(count)]
    chosen = [stamps[i] for i, reason in choose_frames(stamps, [], budget)]
    assert all(reason == "coverage" for _, reason in choose_frames(stamps, [], budget))
    assert chosen[0] == stamps[0] and chosen[-1] == stamps[-1]  # both ends
    if budget < count:
        span = stamps[-1] - stamps[0]
        largest_gap = max(b - a for a, b in itertools.pairwise(chosen))
        # Farthest-point sampling keeps every gap within twice the even spacing (plus one frame step).
        assert largest_gap <= 2 * span / (budget - 1) + step


def test_relevance_first_then_coverage_example() -> None:
    stamps = list(range(0, 100, 5))  # 20 frames, 0..95
    moments = [moment(40, 50, 0.9), moment(80, 82, 0.5)]
    chosen = choose_frames(stamps, moments, 6, relevance_share=0.5)
    retrieved = [stamps[i] for i, reason in chosen if reason == "retrieved"]
    coverage = [stamps[i] for i, reason in chosen if reason == "coverage"]
    # 45: middle of the top window; 80: the second moment's only frame; 40: round 2 (40 and 50 tie: lower index)
    assert retrieved == [40, 45, 80]
    assert coverage == [0, 20, 60]  # farthest from what is taken: 0 (40 away), then 20 and 60 (20 away, earlier first)
    assert choose_frames(stamps, moments, 0) == [] and choose_frames([], moments, 5) == []
    with pytest.raises(ValueError, match="relevance_share"):
        choose_frames(stamps, moments, 4, relevance_share=1.5)
