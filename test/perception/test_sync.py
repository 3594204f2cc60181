"""The synchronizer on crafted stamp sequences: message_filters semantics, overflow, slop boundary,
dead camera → partial sets → recovery, reset, agreement with a reference transcription of
message_filters' Python algorithm on random and adversarial streams, and a bounded matching cost
(counted in operations, never timed)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oryx_ros.perception.sync import ApproximateTimeSynchronizer, feed

MS = 1_000_000


def _stamps(sync_set) -> dict[str, int]:
    return dict(sync_set.stamps_ns)


def test_a_set_is_emitted_when_every_camera_has_a_message_within_slop() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_ns=10)
    assert sync.add("a", 0, "a0") == []
    (result,) = sync.add("b", 5, "b5")
    assert dict(result.items) == {"a": "a0", "b": "b5"}
    assert _stamps(result) == {"a": 0, "b": 5} and result.stamp_ns == 5 and result.spread_ns == 5
    assert not result.partial and sync.stats().full_sets == 1
    assert sync.stats().queued == {"a": 0, "b": 0}  # used messages are removed


def test_only_the_arriving_message_triggers_matching() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_ns=10)
    feed(sync, [("a", 0, "a0"), ("a", 100, "a100")])
    (result,) = sync.add("b", 102, "b102")
    assert _stamps(result) == {"a": 100, "b": 102}
    assert sync.stats().queued == {"a": 1, "b": 0}  # a@0 waits for a partner of its own
    (late,) = sync.add("b", 1, "b1")
    assert _stamps(late) == {"a": 0, "b": 1}


def test_slop_is_a_strict_bound_on_the_spread() -> None:
    at_slop = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_ns=10)
    assert feed(at_slop, [("a", 0, 0), ("b", 10, 0)]) == []
    below = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_ns=10)
    assert len(feed(below, [("a", 0, 0), ("b", 9, 0)])) == 1


def test_candidates_are_tried_nearest_first_in_product_order() -> None:
    # Arriving c@10. Candidates by distance: a = [18 (8), 1 (9)], b = [2 (8), 19 (9)].
    # (a18, b2) spans 16 >= slop; the next combination in product order, (a18, b19), spans 9.
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=5, slop_ns=10)
    feed(sync, [("a", 1, 0), ("a", 18, 0), ("b", 2, 0), ("b", 19, 0)])
    (result,) = sync.add("c", 10, 0)
    assert _stamps(result) == {"a": 18, "b": 19, "c": 10}


def test_queue_overflow_drops_the_oldest_and_counts_it() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=2, slop_ns=10)
    feed(sync, [("a", 0, 0), ("a", 100, 0), ("a", 200, 0)])
    assert sync.stats().dropped_overflow == {"a": 1, "b": 0}
    assert sync.add("b", 1, 0) == []  # a@0 is gone
    assert len(sync.add("b", 101, 0)) == 1


def test_same_stamp_replaces_and_is_counted() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=5, slop_ns=10)
    feed(sync, [("a", 0, "old"), ("a", 0, "new")])
    assert sync.stats().replaced_same_stamp["a"] == 1
    (result,) = sync.add("b", 0, "b")
    assert result.items["a"] == "new"


def _frame_events(cameras, frame_indices, period_ns=100 * MS):
    return [(camera, i * period_ns, (camera, i)) for i in frame_indices for camera in cameras]


def test_dead_camera_gives_partial_sets_then_full_sets_resume() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=10, slop_ns=20 * MS,
                                       dead_camera_timeout_ns=500 * MS)
    healthy = feed(sync, _frame_events("abc", range(5)))
    assert len(healthy) == 5 and not any(s.partial for s in healthy)

    # c stops after frame 4 (400 ms). It is declared dead once another camera is > 500 ms ahead
    # (a@1000); the backlog a/b queued since frame 5 is then matched without it.
    silent = feed(sync, _frame_events("ab", range(5, 16)))
    assert [s.items["a"][1] for s in silent] == list(range(5, 16))
    assert all(s.partial and s.missing == ("c",) and set(s.items) == {"a", "b"} for s in silent)
    assert sync.dead_cameras == {"c"} and sync.stats().dead_cameras == ("c",)

    # c comes back at frame 16: that instant was already emitted as a/b, the next ones are full.
    back = feed(sync, _frame_events("abc", range(16, 21)))
    assert [(s.partial, s.items["a"][1]) for s in back] == [(True, 16)] + [(False, i) for i in range(17, 21)]
    assert sync.dead_cameras == frozenset()
    stats = sync.stats()
    assert (stats.full_sets, stats.partial_sets) == (5 + 4, 11 + 1)
    assert stats.last_stamp_ns == {"a": 2000 * MS, "b": 2000 * MS, "c": 2000 * MS}


def test_a_camera_that_never_starts_is_dead_after_the_timeout() -> None:
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_ns=20 * MS, dead_camera_timeout_ns=250 * MS)
    sets = feed(sync, [("a", i * 100 * MS, i) for i in range(6)])
    # Dead from a@300 (300 ms after the first stamp); a@0..a@300 are then emitted alone.
    assert [s.items["a"] for s in sets] == list(range(6)) and all(s.missing == ("b",) for s in sets)


def test_wall_clock_declares_a_camera_dead_when_stamps_do_not() -> None:
    now = [0]
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_ns=20 * MS,
                                       dead_camera_timeout_ns=1000 * MS, clock=lambda: now[0])
    assert len(feed(sync, [("a", 0, 0), ("b", 0, 0)])) == 1
    now[0] = 2000 * MS  # two seconds of wall time pass, a's stamps barely move (e.g. a stalled sim)
    (result,) = sync.add("a", 10 * MS, 1)
    assert result.missing == ("b",)


def test_reset_forgets_queues_and_stamps_but_keeps_counters() -> None:
    # What the stamp gate does on a confirmed backwards jump (the synchronizer no longer judges stamps).
    sync = ApproximateTimeSynchronizer(["a", "b"], queue_size=10, slop_ns=20 * MS, dead_camera_timeout_ns=500 * MS)
    feed(sync, [("a", 10_000 * MS, 0), ("b", 10_000 * MS, 0), ("a", 10_100 * MS, 0)])
    sync.reset()
    sets = feed(sync, [("a", 0, "new"), ("b", 0, "new")])  # a bag loops back to its start
    assert len(sets) == 1 and not sets[0].partial and sets[0].items == {"a": "new", "b": "new"}
    stats = sync.stats()
    assert stats.resets == 1 and stats.full_sets == 2 and stats.last_stamp_ns == {"a": 0, "b": 0}


def test_old_stamps_are_matched_not_judged() -> None:
    # A camera whose clock lags, or a stale frame, is just an item: no queue is cleared.
    sync = ApproximateTimeSynchronizer(["a", "usb"], queue_size=10, slop_ns=20 * MS)
    feed(sync, [("a", 10_000 * MS + i * 100 * MS, 0) for i in range(3)])
    feed(sync, [("usb", 5_000 * MS + i * 100 * MS, 0) for i in range(3)])  # its own clock, 5 s behind
    assert sync.stats().queued == {"a": 3, "usb": 3} and sync.stats().resets == 0


def test_invalid_configuration_and_input_raise() -> None:
    with pytest.raises(ValueError, match="unique"):
        ApproximateTimeSynchronizer(["a", "a"], 5, 10)
    with pytest.raises(ValueError, match="queue_size"):
        ApproximateTimeSynchronizer(["a"], 0, 10)
    with pytest.raises(ValueError, match="slop_ns"):
        ApproximateTimeSynchronizer(["a"], 5, 0)
    with pytest.raises(ValueError, match="dead_camera_timeout_ns"):
        ApproximateTimeSynchronizer(["a"], 5, 10, dead_camera_timeout_ns=0)
    with pytest.raises(KeyError, match="unknown camera"):
        ApproximateTimeSynchronizer(["a"], 5, 10).add("z", 0, 0)


def _reference_message_filters(cameras, queue_size, slop_ns, events):
    """A direct transcription of message_filters' Python ApproximateTimeSynchronizer.add()."""
    queues = [{} for _ in cameras]
    emitted = []
    for camera, stamp, item in events:
        index = cameras.index(camera)
        my_queue = queues[index]
        my_queue[stamp] = item
        while len(my_queue) > queue_size:
            del my_queue[min(my_queue)]
        search = queues[:index] + queues[index + 1 :]
        stamps = []
        for queue in search:
            topic_stamps = [(s, abs(s - stamp)) for s in queue if abs(s - stamp) <= slop_ns]
            if not topic_stamps:
                break
            stamps.append([s for s, _ in sorted(topic_stamps, key=lambda x: x[1])])
        else:
            for vv in itertools.product(*stamps):
                vv = list(vv)
                vv.insert(index, stamp)
                qt = list(zip(queues, vv, strict=True))
                if max(vv) - min(vv) < slop_ns and all(t in q for q, t in qt):
                    emitted.append([q[t] for q, t in qt])
                    for q, t in qt:
                        del q[t]
                    break
    return emitted


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_message_filters_on_random_streams(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cameras = ["a", "b", "c"]
    # Jittered 10 Hz streams, some frames lost, delivered in a shuffled order within a few frames.
    events = []
    for camera in cameras:
        for i in range(60):
            if rng.random() < 0.1:
                continue
            stamp = i * 100 * MS + int(rng.integers(-15 * MS, 15 * MS))
            events.append((camera, stamp, (camera, i, stamp)))
    arrival = np.array([s for _, s, _ in events]) + rng.integers(0, 250 * MS, len(events))
    events = [events[i] for i in np.argsort(arrival, kind="stable")]

    expected = _reference_message_filters(cameras, 5, 20 * MS, events)
    sync = ApproximateTimeSynchronizer(cameras, 5, 20 * MS)
    got = [[s.items[c] for c in cameras] for s in feed(sync, events)]
    assert got == expected
    assert len(got) > 20  # the streams do synchronise, so the comparison is not vacuous


@settings(max_examples=150, deadline=None)
@given(
    n_cameras=st.integers(2, 4),
    slop=st.integers(1, 12),
    queue_size=st.integers(1, 6),
    raw=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40)), min_size=1, max_size=60),
)
def test_agrees_with_message_filters_on_dense_crafted_stamps(n_cameras, slop, queue_size, raw) -> None:
    # Dense stamps, ties, repeats and small slops: where the feasibility search and the product walk
    # could disagree if the search were not exact.
    cameras = ["a", "b", "c", "d"][:n_cameras]
    events = [(cameras[c % n_cameras], stamp, (k, stamp)) for k, (c, stamp) in enumerate(raw)]
    expected = _reference_message_filters(cameras, queue_size, slop, events)
    got = [[s.items[c] for c in cameras] for s in feed(ApproximateTimeSynchronizer(cameras, queue_size, slop), events)]
    assert got == expected


def _adversarial_queues(per_camera: int) -> tuple[list[tuple[str, int, int]], int]:
    """Stamps for which the product order reaches its first combination within slop late: every
    candidate of "a" but the farthest is on the far side of the arriving c@0 from all of "b"'s."""
    slop = 1000
    a = [501 + i for i in range(per_camera - 1)] + [-999]
    b = [-501 - i for i in range(per_camera)]  # those beyond -1000 are queued but no candidates
    return [("a", s, s) for s in a] + [("b", s, s) for s in b], slop


def test_one_add_stays_cheap_for_any_stamps_and_the_largest_queue() -> None:
    # queue_size 1000 (the parameter's maximum), 3 cameras, stamps crafted so message_filters' product walk
    # visits ~250 000 combinations before the first one within slop. Counted, not timed.
    events, slop = _adversarial_queues(1000)
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=1000, slop_ns=slop)
    assert feed(sync, events) == []  # nothing matches without c
    before = sync.stats().match_steps
    (result,) = sync.add("c", 0, 0)
    steps = sync.stats().match_steps - before
    queued = len(events)
    assert _stamps(result)["c"] == 0 and _stamps(result)["a"] == -999  # the first feasible in product order
    assert max(_stamps(result).values()) - min(_stamps(result).values()) < slop
    # (2 * cameras + 1) sweeps of the candidates plus collecting them: linear in what is queued.
    assert steps <= 10 * queued, steps


def test_adversarial_match_equals_the_product_walk() -> None:
    events, slop = _adversarial_queues(120)  # small enough for the reference's product walk
    full = [*events, ("c", 0, 0)]
    expected = _reference_message_filters(["a", "b", "c"], 1000, slop, full)
    got = [[s.items[c] for c in "abc"] for s in feed(ApproximateTimeSynchronizer(["a", "b", "c"], 1000, slop), full)]
    assert got == expected and len(got) == 1
