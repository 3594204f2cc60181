"""oryx_ros.memory stores: the same tests on SQLite and on a real PostgreSQL server (see conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oryx_ros.memory import MemoryEntry, MemoryObject, MemoryStore, NewKeyframe, Pose, RecallQuery
from oryx_ros.memory.recorder import encode_image

StoreOpener = Callable[..., MemoryStore]  # conftest's open_store

S = 1_000_000_000  # ns per second
T0 = 1_700_000_000 * S


def pose(x: float, y: float, z: float = 0.0, frame: str = "map") -> Pose:
    return Pose(x, y, z, 0.0, 0.0, 0.0, 1.0, frame)


def entry(t_s: float, text: str, cameras: tuple[str, ...] = ("cam0",), *, window_s: float = 1.0,
          pose_: Pose | None = None, objects: tuple[MemoryObject, ...] = ()) -> MemoryEntry:
    stamp = T0 + round(t_s * S)
    return MemoryEntry(stamp, stamp - round(window_s * S), stamp, cameras, text, pose_, objects)


def keyframe(camera: str, t_s: float, size: int = 1000, seed: int = 0) -> NewKeyframe:
    """A keyframe of about ``size`` bytes (random bytes stand for the JPEG; the store does not decode them)."""
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    return NewKeyframe(camera, T0 + round(t_s * S), data, 64, 48, "jpeg", pose(t_s, 0.0))


# Words that make the corpus large enough that FTS5's bm25 gives the query words a positive weight
# (it floors a word found in more than half the rows to ~0, whatever the backend).
FILLER = ["a quiet corridor", "an empty hallway", "a closed door", "the charging dock", "a grey wall",
          "the elevator lobby"]


def ids(moments: list) -> list[int | None]:
    return [moment.entry.id for moment in moments]


def test_restart_finds_keyframes_and_entries(open_store: StoreOpener) -> None:
    store = open_store()
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32] = (255, 0, 0)
    data, width, height = encode_image(rgb, 10_000, "png", 90)
    keyframe_ids = store.add_keyframes([NewKeyframe("cam0", T0, data, width, height, "png", pose(1.0, 2.0)),
                                        keyframe("cam1", 0.5)])
    mug = MemoryObject("mug", 1.0, 2.0, 0.5, "map")
    entry_id = store.add_entry(entry(1.0, "a red mug on the table", ("cam0", "cam1"), pose_=pose(0.0, 0.0),
                                     objects=(mug,)))
    before = store.stats()
    store.close()

    reopened = open_store()
    assert reopened.stats() == before
    assert [k.id for k in reopened.keyframes()] == keyframe_ids
    assert reopened.keyframes(["cam0"])[0].pose == pose(1.0, 2.0)
    assert np.array_equal(reopened.keyframe_rgb(keyframe_ids[0]), rgb)  # PNG: lossless, RGB order kept
    (stored,) = reopened.entries()
    assert stored.id == entry_id and stored.objects == (mug,) and stored.cameras == ("cam0", "cam1")
    assert ids(reopened.recall(RecallQuery("mug"))) == [entry_id]


def test_keyframe_queries_and_nearest(open_store: StoreOpener) -> None:
    store = open_store()
    store.add_keyframes([keyframe(camera, t) for t in (0.0, 1.0, 2.0) for camera in ("cam0", "cam1")])
    assert [k.stamp_ns - T0 for k in store.keyframes(["cam1"], start_ns=T0 + S // 2)] == [S, 2 * S]
    assert [k.camera for k in store.keyframes(end_ns=T0)] == ["cam0", "cam1"]
    nearest = store.nearest_keyframe("cam0", T0 + 1.4 * S, max_gap_ns=S // 2)
    assert nearest is not None and nearest.stamp_ns == T0 + S
    tie = store.nearest_keyframe("cam0", T0 + 1.5 * S, max_gap_ns=S)
    assert tie is not None and tie.stamp_ns == T0 + S  # the earlier one on a tie
    assert store.nearest_keyframe("cam0", T0 + 10 * S, max_gap_ns=S) is None
    assert store.nearest_keyframe("cam9", T0, max_gap_ns=S) is None
    with pytest.raises(KeyError, match="evicted"):
        store.keyframe_rgb(10**9)


def test_recall_ranks_entries_matching_more_words_and_object_labels(open_store: StoreOpener) -> None:
    store = open_store()
    store.add_entries([entry(i, text) for i, text in enumerate(FILLER)])
    both = store.add_entry(entry(10, "a red chair beside the sofa"))
    one = store.add_entry(entry(11, "a red carpet"))
    by_label = store.add_entry(entry(12, "someone walked past", objects=(MemoryObject("chair", 0, 0, 0, "map"),)))
    moments = store.recall(RecallQuery("Where did you see the red chair?"))
    assert ids(moments)[0] == both
    assert set(ids(moments)) == {both, one, by_label}
    assert all(0.0 <= m.score < 1.0 for m in moments)
    assert [m.score for m in moments] == sorted((m.score for m in moments), reverse=True)
    assert store.recall(RecallQuery("giraffe")) == []


def test_recall_ties_go_to_the_newer_entry(open_store: StoreOpener) -> None:
    store = open_store()
    store.add_entries([entry(i, text) for i, text in enumerate(FILLER)])
    older = store.add_entry(entry(20, "a green plant"))
    newer = store.add_entry(entry(30, "a green plant"))
    moments = store.recall(RecallQuery("green plant"))
    assert ids(moments) == [newer, older] and moments[0].score == moments[1].score


def test_recall_without_text_returns_the_most_recent(open_store: StoreOpener) -> None:
    store = open_store()
    added = store.add_entries([entry(i, f"scene {i}") for i in range(20)])
    assert ids(store.recall(RecallQuery(limit=3))) == added[::-1][:3]
    assert ids(store.recall(RecallQuery("?! ...", limit=2))) == added[::-1][:2]  # no words: as if empty


def test_recall_time_filter_overlaps_the_window(open_store: StoreOpener) -> None:
    store = open_store()
    early = store.add_entry(entry(10, "a box", window_s=5))  # window [5, 10] s
    late = store.add_entry(entry(30, "a box", window_s=5))  # window [25, 30] s
    assert ids(store.recall(RecallQuery("box", start_ns=T0 + 9 * S, end_ns=T0 + 12 * S))) == [early]
    assert ids(store.recall(RecallQuery("box", start_ns=T0 + 11 * S))) == [late]
    assert ids(store.recall(RecallQuery("box", end_ns=T0 + 25 * S))) == [late, early]
    assert store.recall(RecallQuery(start_ns=T0 + 11 * S, end_ns=T0 + 24 * S)) == []
    assert [e.id for e in store.entries(start_ns=T0 + 26 * S)] == [late]


def test_recall_camera_filter_matches_any_shared_camera(open_store: StoreOpener) -> None:
    store = open_store()
    front = store.add_entry(entry(1, "a door", ("front",)))
    both = store.add_entry(entry(2, "a door", ("front", "back")))
    back = store.add_entry(entry(3, "a door", ("back",)))
    assert ids(store.recall(RecallQuery("door", cameras=("front",)))) == [both, front]
    assert ids(store.recall(RecallQuery(cameras=("back", "side")))) == [back, both]
    assert store.recall(RecallQuery(cameras=("side",))) == []


def test_recall_radius_matches_pose_or_objects_in_the_same_frame(open_store: StoreOpener) -> None:
    store = open_store()
    at_pose = store.add_entry(entry(1, "kitchen", pose_=pose(10.0, 0.0)))
    with_object = store.add_entry(entry(2, "corridor", pose_=pose(0.0, 0.0),
                                        objects=(MemoryObject("cup", 10.0, 1.0, 0.0, "map"),)))
    other_frame = store.add_entry(entry(3, "kitchen", pose_=pose(10.0, 0.0, frame="odom")))
    store.add_entry(entry(4, "far away", pose_=pose(50.0, 50.0)))
    store.add_entry(entry(5, "no pose"))
    near = RecallQuery(position=(10.0, 0.5, 0.0), radius_m=0.6, frame_id="map")
    assert ids(store.recall(near)) == [with_object, at_pose]
    assert ids(store.recall(RecallQuery(position=(10.0, 0.5, 0.0), radius_m=0.6))) == [other_frame, with_object,
                                                                                        at_pose]
    assert ids(store.recall(RecallQuery("kitchen", position=(10.0, 0.0, 0.0), radius_m=0.0,
                                        frame_id="odom"))) == [other_frame]
    assert store.recall(RecallQuery(position=(10.0, 0.5, 0.0), radius_m=0.4, frame_id="map")) == []


def test_evict_by_age_counts_from_the_newest_stamp(open_store: StoreOpener) -> None:
    store = open_store(max_age_s=10.0)
    store.add_keyframes([keyframe("cam0", t) for t in range(0, 30, 5)])
    store.add_entries([entry(t, "x") for t in range(0, 30, 5)])
    assert store.evict() == 6  # newest is 25 s: everything before 15 s goes (0, 5, 10) x 2 tables
    assert [k.stamp_ns - T0 for k in store.keyframes()] == [15 * S, 20 * S, 25 * S]
    assert [e.stamp_ns - T0 for e in store.entries()] == [15 * S, 20 * S, 25 * S]
    assert store.evict(now_ns=T0 + 30 * S) == 2  # an explicit clock: before 20 s goes
    stats = store.stats()
    assert (stats.keyframes, stats.entries, stats.evicted_keyframes, stats.evicted_entries) == (2, 2, 4, 4)
    assert stats.oldest_ns == T0 + 20 * S and stats.newest_ns == T0 + 25 * S


def test_evict_by_bytes_removes_the_oldest_first(open_store: StoreOpener) -> None:
    store = open_store()
    store.add_keyframes([keyframe("cam0", t, size=10_000, seed=t) for t in range(10)])
    store.add_entry(entry(4.5, "between the frames"))
    per_frame = store.keyframes()[0].nbytes
    store.close()
    store = open_store(max_bytes=5 * per_frame)  # reopen with a smaller budget
    evicted = store.evict()
    stats = store.stats()
    assert stats.bytes <= 5 * per_frame
    assert [k.stamp_ns - T0 for k in store.keyframes()] == [t * S for t in range(5, 10)]  # exactly 5 fit
    assert evicted == 6 and stats.evicted_entries == 1  # the 4.5 s entry is older than the frames kept
    assert store.evict() == 0  # nothing left to do


def test_robots_share_a_store_but_see_their_own_rows(open_store: StoreOpener) -> None:
    one, two = open_store(robot="one"), open_store(robot="two", max_age_s=1.0)
    one.add_keyframes([keyframe("cam0", 0.0)])
    one_entry = one.add_entry(entry(0.0, "a robot arm"))
    two.add_keyframes([keyframe("cam0", 100.0)])
    two_entry = two.add_entry(entry(100.0, "a robot arm"))
    assert ids(one.recall(RecallQuery("arm"))) == [one_entry]
    assert ids(one.recall(RecallQuery("arm", robots=("one", "two")))) == [two_entry, one_entry]
    assert two.evict() == 0  # robot two's age limit does not reach robot one's old rows
    assert len(one.keyframes()) == 1 and one.stats().entries == 1


@pytest.fixture
def filled_store(open_store: StoreOpener) -> MemoryStore:
    store = open_store()
    store.add_entries([entry(i, text) for i, text in enumerate([*FILLER, "NEAR the OR gate", 'a "quoted" col'])])
    return store


# The fixture is made once per backend and shared by the examples (it is only read).
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80) | st.sampled_from(['"', "NEAR(a b)", "a OR", "col:x", "*", "AND NOT", "'; --",
                                                    "(((", "-x", "\\", "red^2", "{a b}: c", "gate OR", "\x00"]))
def test_recall_never_interprets_user_text(filled_store: MemoryStore, text: str) -> None:
    moments = filled_store.recall(RecallQuery(text))
    assert all(0.0 <= m.score < 1.0 for m in moments)
    if text == "gate OR":  # operators are plain words: "or" is a stop word, "gate" finds its entry
        assert [m.entry.text for m in moments] == ["NEAR the OR gate"]


def test_keyframe_rgb_round_trips_jpeg(open_store: StoreOpener) -> None:
    store = open_store()
    rgb = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8), (0, 0), 2.0)
    data, width, height = encode_image(rgb, 10_000, "jpeg", 95)
    (record_id,) = store.add_keyframes([NewKeyframe("cam0", T0, data, width, height, "jpeg")])
    decoded = store.keyframe_rgb(record_id)
    assert decoded.shape == rgb.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - rgb).mean() < 4
