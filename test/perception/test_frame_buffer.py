"""FrameBuffer: memory budget (fair across cameras), rate cap, a window measured from a robust newest
stamp, out-of-order, duplicates, clearing on a confirmed jump, downscaling with intrinsics, query order,
synchronised sets as an index over stored frames, nearest frames where no set formed, refusing frames
and sets by their stamps, and a concurrency smoke test."""

from __future__ import annotations

import itertools
import math
import threading

import numpy as np
import pytest

from oryx_ros.perception.frame_buffer import MAX_MODEL_PIXELS, FrameBuffer, fit_to_max_pixels
from oryx_ros.perception.frames import CameraIntrinsics, Frame

MS = 1_000_000
S = 1_000_000_000


def _frame(camera: str = "a", stamp_ns: int = 0, *, width: int = 8, height: int = 6, depth: bool = False,
           intrinsics: CameraIntrinsics | None = None) -> Frame:
    rgb = np.full((height, width, 3), stamp_ns // MS % 256, dtype=np.uint8)
    depth_m = np.full((height, width), 1.5, dtype=np.float32) if depth else None
    return Frame(camera=camera, stamp_ns=stamp_ns, rgb=rgb, depth_m=depth_m, intrinsics=intrinsics)


FRAME_BYTES = 8 * 6 * 3


def test_memory_budget_evicts_oldest_and_counts() -> None:
    buffer = FrameBuffer(memory_budget_bytes=5 * FRAME_BYTES, window_ns=None)
    for i in range(10):
        buffer.add(_frame("a", i * 100 * MS))
    assert buffer.total_bytes() == 5 * FRAME_BYTES
    assert [f.stamp_ns for f in buffer.query()] == [i * 100 * MS for i in range(5, 10)]
    assert buffer.drop_counts()["evicted_memory"] == 5


def test_memory_budget_is_shared_fairly_between_cameras() -> None:
    # Camera "big" has frames four times the size of "small"'s, at the same rate.
    buffer = FrameBuffer(memory_budget_bytes=40 * FRAME_BYTES, window_ns=None)
    for i in range(100):
        buffer.add(_frame("big", i * 100 * MS, width=16, height=12))
        buffer.add(_frame("small", i * 100 * MS))
    stats = buffer.camera_stats()
    assert buffer.total_bytes() <= 40 * FRAME_BYTES
    assert abs(stats["big"].nbytes - stats["small"].nbytes) <= 4 * FRAME_BYTES  # at most one big frame apart
    assert stats["small"].count > stats["big"].count  # so the small camera keeps more history
    assert stats["big"].newest_stamp_ns == stats["small"].newest_stamp_ns == 99 * 100 * MS


def test_single_frame_over_budget_is_refused() -> None:
    buffer = FrameBuffer(memory_budget_bytes=FRAME_BYTES - 1)
    assert buffer.add(_frame()) is None
    assert buffer.drop_counts()["over_budget"] == 1 and len(buffer) == 0


def test_rate_cap_skips_frames_closer_than_one_period() -> None:
    buffer = FrameBuffer(rate_cap_hz={"a": 10.0}, window_ns=None)
    period = round(S / 30)
    for i in range(30):
        buffer.add(_frame("a", i * period))
        buffer.add(_frame("b", i * period))  # not in the dict: uncapped
    stored = [f.stamp_ns for f in buffer.query(["a"])]
    assert all(b - a >= 90 * MS for a, b in itertools.pairwise(stored))  # 1/rate less 10 % tolerance
    assert len(stored) == 10 and buffer.drop_counts("a")["rate_cap"] == 20
    assert len(buffer.query(["b"])) == 30 and buffer.drop_counts("b")["rate_cap"] == 0
    assert buffer.camera_stats()["a"].rate_hz == pytest.approx(10.0, rel=0.05)


def test_window_evicts_old_frames_and_refuses_late_ones() -> None:
    buffer = FrameBuffer(window_ns=1 * S)
    for i in range(31):
        buffer.add(_frame("a", i * 100 * MS))
    # Measured from the robust newest stamp, the second-newest (2.9 s): the horizon is 1.9 s.
    assert buffer.reference_stamp_ns() == 2900 * MS
    stamps = [f.stamp_ns for f in buffer.query()]
    assert stamps[0] == 1900 * MS and stamps[-1] == 3 * S and len(stamps) == 12
    assert buffer.drop_counts()["evicted_window"] == 19
    assert buffer.add(_frame("b", 1500 * MS)) is None  # 1.5 s late: outside the window
    assert buffer.drop_counts()["too_old"] == 1


def test_one_outlier_stamp_neither_moves_the_window_nor_evicts() -> None:
    # A frame stamped an hour ahead (one that got past the stamp gate while the clock was unknown).
    buffer = FrameBuffer(window_ns=10 * S)
    for i in range(20):
        buffer.add(_frame("a", 100 * S + i * 100 * MS))
    buffer.add(_frame("b", 3700 * S))
    assert len(buffer) == 21 and buffer.drop_counts()["evicted_window"] == 0
    assert buffer.reference_stamp_ns() == 100 * S + 1900 * MS
    assert buffer.add(_frame("a", 102 * S)) is not None and buffer.drop_counts()["too_old"] == 0


def test_out_of_order_frames_are_inserted_in_order_and_duplicates_dropped() -> None:
    buffer = FrameBuffer()
    for stamp in (300, 100, 200):
        buffer.add(_frame("a", stamp * MS))
    assert buffer.add(_frame("a", 200 * MS)) is None
    assert buffer.add(_frame("b", 200 * MS)) is not None  # same stamp, other camera: fine
    assert [(f.camera, f.stamp_ns // MS) for f in buffer.query()] == [("a", 100), ("a", 200), ("b", 200), ("a", 300)]
    assert buffer.drop_counts() == {**dict.fromkeys(buffer.drop_counts(), 0), "duplicate": 1}


def test_old_stamps_never_clear_the_buffer_only_a_confirmed_jump_does() -> None:
    buffer = FrameBuffer(window_ns=None)
    for i in range(5):
        buffer.add(_frame("a", 100 * S + i * S))
        buffer.add_set([_frame("b", 100 * S + i * S)])
    buffer.add(_frame("a", 1 * S))  # a stale frame, or the first of a looped bag: the gate judges, not add()
    assert len(buffer) == 11 and buffer.time_jumps == 0 and buffer.drop_counts()["time_jump"] == 0
    assert buffer.clear("time_jump") == 11  # the stamp gate confirmed the jump
    assert len(buffer) == 0 and buffer.set_count() == 0 and buffer.time_jumps == 1
    assert buffer.drop_counts()["time_jump"] == 11 and buffer.drop_counts("b")["time_jump"] == 5
    with pytest.raises(ValueError, match="unknown drop reason"):
        buffer.clear("whatever")


def test_a_camera_with_a_lagging_clock_is_not_a_time_jump() -> None:
    buffer = FrameBuffer(window_ns=None)
    for i in range(5):  # camera "usb" stamps with its own clock, 10 s behind
        buffer.add(_frame("a", 100 * S + i * S))
        buffer.add(_frame("usb", 90 * S + i * S))
    assert len(buffer) == 10 and buffer.time_jumps == 0


def test_fit_to_max_pixels_keeps_aspect_under_the_area() -> None:
    assert fit_to_max_pixels(1280, 720) == (1280, 720)
    for width, height in [(4000, 3000), (3840, 2160), (1537, 1537), (10000, 10)]:
        new_w, new_h = fit_to_max_pixels(width, height)
        assert new_w * new_h <= MAX_MODEL_PIXELS
        assert new_w * new_h >= 0.99 * MAX_MODEL_PIXELS or min(new_w, new_h) < 100
        assert math.isclose(new_w / new_h, width / height, rel_tol=0.02)


def test_large_frames_are_downscaled_with_intrinsics_and_nearest_depth() -> None:
    width, height = 400, 300
    k = np.array([[320.0, 0, 199.5], [0, 320.0, 149.5], [0, 0, 1]])
    intrinsics = CameraIntrinsics(width, height, k)
    rng = np.random.default_rng(0)
    depth = rng.choice(np.array([1.0, 2.0, 3.0, np.nan], np.float32), size=(height, width))
    frame = Frame("a", 0, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), depth, intrinsics)
    buffer = FrameBuffer(max_pixels=100 * 100)
    stored = buffer.add(frame)
    assert stored is not None and stored.uid == frame.uid
    h, w = stored.rgb.shape[:2]
    assert w * h <= 100 * 100 and (w, h) == (115, 86)
    assert stored.depth_m.shape == (h, w)
    values = stored.depth_m[~np.isnan(stored.depth_m)]
    assert set(np.unique(values)) <= {1.0, 2.0, 3.0}  # nearest: no blended depths
    assert np.isnan(stored.depth_m).any()
    assert (stored.intrinsics.width, stored.intrinsics.height) == (w, h)
    assert stored.intrinsics.fx == pytest.approx(320.0 * w / width)
    assert stored.nbytes == w * h * 3 + w * h * 4 and buffer.total_bytes() == stored.nbytes


def test_stored_arrays_are_read_only() -> None:
    buffer = FrameBuffer()
    stored = buffer.add(_frame(depth=True))
    with pytest.raises(ValueError):
        stored.rgb[0, 0, 0] = 1
    with pytest.raises(ValueError):
        stored.depth_m[0, 0] = 1


def test_query_filters_by_camera_and_inclusive_window_in_time_order() -> None:
    buffer = FrameBuffer()
    for i in range(10):
        for camera in ("b", "a", "c"):
            buffer.add(_frame(camera, i * 100 * MS + {"a": 1, "b": 2, "c": 3}[camera]))
    frames = buffer.query(cameras=["c", "a"], start_ns=200 * MS + 1, end_ns=400 * MS + 3)
    assert [(f.camera, f.stamp_ns) for f in frames] == [
        (camera, i * 100 * MS + offset) for i in (2, 3, 4) for camera, offset in (("a", 1), ("c", 3))
    ]
    assert buffer.query(cameras=["nope"]) == []
    assert buffer.latest_stamp_ns("a") == 900 * MS + 1 and buffer.latest_stamp_ns() == 900 * MS + 3


def test_sets_keep_ids_and_report_evictions() -> None:
    buffer = FrameBuffer(memory_budget_bytes=8 * FRAME_BYTES, window_ns=None)
    ids = [buffer.add_set([_frame(c, i * 100 * MS + j) for j, c in enumerate("abc")]) for i in range(2)]
    partial = buffer.add_set([_frame("a", 200 * MS), _frame("b", 200 * MS)], missing=("c",))
    assert None not in ids and partial is not None and len({*ids, partial}) == 3
    sets = buffer.query_sets()
    assert [s.set_id for s in sets] == [*ids, partial]
    assert sets[0].complete and not sets[2].complete and sets[2].missing == ("c",)
    assert sets[1].stamp_ns == 100 * MS + 2  # the newest member's stamp
    # Three more frames over the budget: a@0, then b@1 (a, b fullest), then c@2 (all equal, oldest):
    # the whole first set goes.
    newest = buffer.add_set([_frame(c, 300 * MS) for c in "abc"])
    assert [s.set_id for s in buffer.query_sets()] == [ids[1], partial, newest]
    assert buffer.drop_counts()["evicted_memory"] == 3 and len(buffer) == 8
    # One more frame of a: a is fullest, its oldest (a@100, in set 2) goes and set 2 is incomplete.
    buffer.add(_frame("a", 400 * MS))
    second = buffer.query_sets()[0]
    assert second.set_id == ids[1] and not second.complete and set(second.frames) == {"b", "c"}
    assert [s.set_id for s in buffer.query_sets(complete_only=True)] == [newest]
    # Sets left without frames of the requested cameras are omitted (the partial set has no c).
    assert [s.set_id for s in buffer.query_sets(start_ns=150 * MS, cameras=["c"])] == [newest]


def test_set_rate_cap_keeps_sets_whole() -> None:
    buffer = FrameBuffer(rate_cap_hz=5.0, window_ns=None)
    for i in range(10):  # 10 Hz sets with jittered members
        buffer.add_set([_frame("a", i * 100 * MS + 3 * MS), _frame("b", i * 100 * MS - 2 * MS)])
    sets = buffer.query_sets()
    assert len(sets) == 5 and all(s.complete for s in sets)
    assert buffer.sets_refused_rate_cap == 5 and len(buffer) == 10
    assert buffer.drop_counts()["rate_cap"] == 0  # frames refused with their set were never offered


def test_sets_index_stored_frames_and_store_members_the_camera_cap_refused() -> None:
    buffer = FrameBuffer(rate_cap_hz=2.0, window_ns=None)  # per camera: 450 ms apart
    stored = buffer.add(_frame("a", 0))
    assert buffer.add(_frame("a", 100 * MS)) is None  # refused on arrival by a's cap
    # A set of a@0 (already stored: linked, not duplicated) and b@5 (new: stored).
    first = buffer.add_set([_frame("a", 0), _frame("b", 5 * MS)])
    (frame_set,) = buffer.query_sets()
    assert frame_set.set_id == first and frame_set.frames["a"] is stored and len(buffer) == 2
    # An admitted set stores a member the per-camera cap refuses (a@700 is 100 ms after a@600).
    buffer.add(_frame("a", 600 * MS))
    assert buffer.add_set([_frame("a", 700 * MS), _frame("b", 700 * MS)]) is not None
    assert [f.stamp_ns // MS for f in buffer.query(["a"])] == [0, 600, 700]
    assert buffer.drop_counts("a")["rate_cap"] == 1 and buffer.drop_counts("a")["duplicate"] == 0


def test_nearest_frames_where_no_set_formed() -> None:
    buffer = FrameBuffer(window_ns=None)
    for i in range(10):  # three 10 Hz cameras far out of phase: the synchronizer would make no set
        for camera, phase in (("a", 0), ("b", 48), ("c", 97)):
            buffer.add(_frame(camera, i * 100 * MS + phase * MS))
    nearest = buffer.nearest_frames(500 * MS)
    assert {c: f.stamp_ns // MS for c, f in nearest.frames.items()} == {"a": 500, "b": 548, "c": 497}
    assert nearest.spread_ns == 51 * MS
    only = buffer.nearest_frames(10 * S, cameras=["c", "nope"])
    assert {c: f.stamp_ns // MS for c, f in only.frames.items()} == {"c": 997} and only.spread_ns == 0
    assert buffer.nearest_frames(0, cameras=[]).frames == {}


def test_add_set_rejects_two_frames_of_one_camera() -> None:
    with pytest.raises(ValueError, match="one frame per camera"):
        FrameBuffer().add_set([_frame("a", 0), _frame("a", 1)])


@pytest.mark.parametrize(
    "kwargs",
    [{"memory_budget_bytes": 0}, {"window_ns": 0}, {"rate_cap_hz": 0.0}, {"rate_cap_hz": {"a": -1.0}},
     {"max_pixels": 0}],
)
def test_invalid_configuration_raises(kwargs) -> None:
    with pytest.raises(ValueError):
        FrameBuffer(**kwargs)


def test_concurrent_adds_and_queries_keep_the_buffer_consistent() -> None:
    buffer = FrameBuffer(memory_budget_bytes=50 * FRAME_BYTES, window_ns=2 * S, rate_cap_hz=200.0)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(camera: str) -> None:
        try:
            for i in range(400):
                buffer.add(_frame(camera, i * 10 * MS))
                if i % 3 == 0:
                    buffer.add_set([_frame(camera + "_set", i * 10 * MS)])
        except BaseException as err:  # any failure must reach the assertion
            errors.append(err)

    def reader() -> None:
        try:
            while not stop.is_set():
                frames = buffer.query()
                keys = [(f.stamp_ns, f.camera) for f in frames]
                assert keys == sorted(keys)
                buffer.query_sets()
                buffer.camera_stats()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(c,)) for c in ("a", "b")] + [threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads[:2]:
        thread.join(timeout=30)
    stop.set()
    threads[2].join(timeout=30)
    assert not errors, errors
    assert buffer.total_bytes() == sum(f.nbytes for f in buffer.query()) <= 50 * FRAME_BYTES
    assert sum(s.count for s in buffer.camera_stats().values()) == len(buffer)


def test_refuse_by_stamp_is_exactly_what_add_refuses_and_counts_it() -> None:
    def buffer_with_frames() -> FrameBuffer:
        buffer = FrameBuffer(rate_cap_hz={"a": 5.0}, window_ns=2 * S)  # a: 180 ms apart
        for stamp in (1000, 1500, 2000, 2600):
            buffer.add(_frame("a", stamp * MS))
            buffer.add(_frame("b", stamp * MS))
        return buffer

    for camera, stamp, reason in [
        ("a", 2000, "duplicate"), ("a", 500, "too_old"), ("a", 2100, "rate_cap"), ("a", 2300, None),
        ("b", 2100, None), ("c", 2100, None),
    ]:
        by_stamp, by_frame = buffer_with_frames(), buffer_with_frames()
        assert by_stamp.refuse_by_stamp(camera, stamp * MS) == reason
        assert (by_frame.add(_frame(camera, stamp * MS)) is None) == (reason is not None)
        assert by_stamp.drop_counts(camera) == by_frame.drop_counts(camera)
        assert len(by_stamp) == 8  # refusing by stamp stores nothing


def test_refuse_rate_capped_set_is_exactly_what_add_set_refuses() -> None:
    def capped() -> FrameBuffer:
        """a capped at 5 Hz (180 ms with the tolerance), b at 10 Hz (90 ms), c uncapped; a set at 1002 ms."""
        buffer = FrameBuffer(rate_cap_hz={"a": 5.0, "b": 10.0}, window_ns=None)
        assert buffer.add_set([_frame("a", 1000 * MS), _frame("b", 1002 * MS), _frame("c", 990 * MS)]) is not None
        return buffer

    for members, stamp_ns, refused in [
        ("a", 1002 * MS, True), ("ac", 1182 * MS - 1, True), ("abc", 1182 * MS - 1, True),
        ("a", 1182 * MS, False), ("b", 1092 * MS - 1, True), ("bc", 1092 * MS, False), ("c", 1003 * MS, False),
    ]:
        stamps = {camera: stamp_ns - i * MS for i, camera in enumerate(members)}  # the newest is the stamp
        by_stamps, by_frames = capped(), capped()
        assert by_stamps.refuse_rate_capped_set(stamps) is refused
        assert (by_frames.add_set([_frame(c, t) for c, t in stamps.items()]) is None) is refused
        assert by_stamps.sets_refused_rate_cap == by_frames.sets_refused_rate_cap == int(refused)
        assert by_stamps.set_count() == 1 and len(by_stamps) == 3
    with pytest.raises(ValueError, match="at least one"):
        capped().refuse_rate_capped_set({})
