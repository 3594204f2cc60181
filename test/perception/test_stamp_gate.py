"""StampGate: each quarantine reason, counted per camera; the clock unknown before the first /clock; a bag
replayed in the past of the wall clock; single stale frames and outliers are never a jump; a looped bag
is confirmed from several cameras, or from the one live camera; /clock going back confirms at once."""

from __future__ import annotations

import pytest

from oryx_ros.perception.stamp_gate import QUARANTINE_REASONS, StampGate

S = 1_000_000_000
MS = 1_000_000
NOW = 1_700_000_000 * S  # the wall clock, 2023


def _check(gate: StampGate, camera: str, stamp_ns: int, now_ns: int | None = NOW, stream: str = "image"):
    return gate.check(camera, stamp_ns // S, stamp_ns % S, now_ns, stream=stream)


def test_each_bad_stamp_is_quarantined_with_its_reason_and_counted_per_camera() -> None:
    gate = StampGate()
    assert gate.check("a", 100, 1_500_000_000, NOW).reason == "nanosec_not_normalised"
    assert gate.check("a", 0, 0, NOW).reason == "nonpositive"
    assert gate.check("b", -5, 0, NOW).reason == "nonpositive"
    assert _check(gate, "a", NOW + 3 * S).reason == "future"
    assert _check(gate, "a", NOW + 1 * S).accepted  # within the 2 s tolerance
    assert _check(gate, "a", NOW + 1 * S).reason == "duplicate"
    assert _check(gate, "a", NOW + 1 * S, stream="depth").accepted  # registered depth shares the stamp
    assert gate.counts("a") == {**dict.fromkeys(QUARANTINE_REASONS, 0), "nanosec_not_normalised": 1,
                                "nonpositive": 1, "future": 1, "duplicate": 1}
    assert gate.counts("b")["nonpositive"] == 1 and gate.counts()["nonpositive"] == 2
    gate.future_tolerance_ns = 5 * S  # settable at run time
    assert _check(gate, "a", NOW + 3 * S).accepted
    with pytest.raises(ValueError):
        gate.future_tolerance_ns = -1


def test_future_check_waits_for_a_known_clock_and_past_stamps_are_fine() -> None:
    gate = StampGate()
    # Sim time before the first /clock reads 0 (or the clock is not given): no future check.
    assert _check(gate, "a", 5000 * S, now_ns=0).accepted
    assert _check(gate, "b", 5000 * S, now_ns=None).accepted
    # A bag replayed without use_sim_time: stamps years behind the wall clock are fine.
    for i in range(50):
        assert _check(gate, "c", 1_600_000_000 * S + i * 100 * MS).accepted


def test_a_single_stale_frame_is_quarantined_and_never_a_jump() -> None:
    gate = StampGate()
    for i in range(30):
        for camera in "abc":
            assert _check(gate, camera, 1000 * S + i * 100 * MS + ord(camera)).accepted
        if i % 10 == 5:  # a stale frame released late, 10 s old, now and then
            assert _check(gate, "a", 990 * S + i * MS).reason == "time_jump_unconfirmed"
    assert gate.time_jumps == 0 and gate.counts("a")["time_jump_unconfirmed"] == 3
    # Out of order within the threshold is ordinary.
    assert _check(gate, "b", 1001 * S + 1).accepted


def test_a_looped_bag_is_confirmed_by_several_cameras() -> None:
    gate = StampGate()
    for i in range(50):
        for camera in "abc":
            _check(gate, camera, 1000 * S + i * 100 * MS)
    results = []
    for i in range(3):  # the bag starts again: a and b first, c still on the old base for a moment
        results.append(_check(gate, "a", 1000 * S + i * 100 * MS + 1))
        if i == 0:
            assert _check(gate, "c", 1004 * S + 950 * MS).accepted  # c is still on the old base
        results.append(_check(gate, "b", 1000 * S + i * 100 * MS + 2))
    assert [r.reason for r in results[:2]] == ["time_jump_unconfirmed"] * 2
    assert results[2].jump and results[2].accepted and gate.time_jumps == 1
    assert all(r.accepted and not r.jump for r in results[3:])  # the new base is trusted from then on
    assert _check(gate, "c", 1000 * S + 50 * MS).accepted  # c joins the new base


def test_a_lone_live_camera_confirms_its_own_jump() -> None:
    gate = StampGate()
    for i in range(20):
        _check(gate, "a", 1000 * S + i * 100 * MS)
        if i < 3:
            _check(gate, "dead", 1000 * S + i * 100 * MS)  # a camera that stopped long ago
    results = [_check(gate, "a", 10 * S + i * 100 * MS) for i in range(4)]
    assert [r.reason for r in results[:2]] == ["time_jump_unconfirmed"] * 2
    assert results[2].jump and results[3].accepted and not results[3].jump


def test_stale_frames_of_one_camera_among_live_ones_are_not_a_jump() -> None:
    gate = StampGate()
    for i in range(20):
        _check(gate, "a", 1000 * S + i * 100 * MS)
        _check(gate, "b", 1000 * S + i * 100 * MS)
    # Three frames of a 10 s old burst from "a" while "b" streams on: one camera is not enough.
    for i in range(3):
        assert _check(gate, "a", 990 * S + i * 100 * MS).reason == "time_jump_unconfirmed"
        assert _check(gate, "b", 1002 * S + i * 100 * MS).accepted
    assert gate.time_jumps == 0


def test_one_outlier_that_got_through_does_not_turn_normal_stamps_into_a_jump() -> None:
    gate = StampGate()
    for i in range(5):
        _check(gate, "a", 1000 * S + i * 100 * MS, now_ns=0)
    assert _check(gate, "a", 5000 * S, now_ns=0).accepted  # clock unknown: a future stamp gets through
    for i in range(5, 20):  # the camera's next, normal stamps are judged against its second-newest
        assert _check(gate, "a", 1000 * S + i * 100 * MS, now_ns=0).accepted
    assert gate.time_jumps == 0


def test_clock_going_back_confirms_at_once() -> None:
    gate = StampGate()
    for i in range(10):
        _check(gate, "a", 1000 * S + i * 100 * MS)
        _check(gate, "b", 1000 * S + i * 100 * MS)
    gate.on_clock_jump()
    assert _check(gate, "a", 1 * S).accepted and _check(gate, "b", 1 * S).accepted
    assert gate.time_jumps == 1 and gate.clock_jumps == 1 and gate.counts()["time_jump_unconfirmed"] == 0


def test_invalid_configuration_raises() -> None:
    with pytest.raises(ValueError):
        StampGate(time_jump_threshold_ns=0)
    with pytest.raises(ValueError):
        StampGate(future_tolerance_ns=-1)


def test_a_camera_that_starts_on_the_new_base_supports_the_jump() -> None:
    gate = StampGate()
    for i in range(10):
        _check(gate, "a", 1000 * S + i * 100 * MS)
    assert _check(gate, "a", 10 * S).reason == "time_jump_unconfirmed"
    assert _check(gate, "new", 10 * S + 5 * MS).accepted  # no history: accepted, and on a's new base
    assert _check(gate, "a", 10 * S + 100 * MS).reason == "time_jump_unconfirmed"
    assert _check(gate, "a", 10 * S + 200 * MS).jump
    assert _check(gate, "new", 10 * S + 105 * MS).accepted  # kept its state through the confirmation
    assert _check(gate, "new", 10 * S + 105 * MS).reason == "duplicate"
