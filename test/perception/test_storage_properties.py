"""Property-based: the stamp gate, the frame buffer and the synchronizer wired as CameraIngest wires
them (gate → store on arrival → synchronizer → set index), fed random event sequences: normal frames,
future / zero / non-normalised / duplicate / stale / out-of-order stamps, bag loops and /clock going
back, with the clock known or not. Invariants are checked after EVERY event."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from oryx_ros.perception.frame_buffer import FrameBuffer
from oryx_ros.perception.frames import Frame
from oryx_ros.perception.stamp_gate import StampGate
from oryx_ros.perception.sync import ApproximateTimeSynchronizer

S = 1_000_000_000
MS = 1_000_000
PERIOD = 100 * MS
FRAME_BYTES = 4 * 4 * 3
ANOMALIES = ("future", "zero", "nanosec", "duplicate", "stale")


@dataclass
class Pipeline:
    cameras: list[str]
    budget_frames: int
    rate_cap_hz: float | None
    queue_size: int = 4
    buffer: FrameBuffer = field(init=False)
    gate: StampGate = field(default_factory=StampGate)
    accepted: set[tuple[str, int]] = field(default_factory=set)
    jumps_seen: int = 0

    def __post_init__(self) -> None:
        self.buffer = FrameBuffer(memory_budget_bytes=self.budget_frames * FRAME_BYTES, window_ns=5 * S,
                                  rate_cap_hz=self.rate_cap_hz)
        self.sync = ApproximateTimeSynchronizer(self.cameras, self.queue_size, 20 * MS,
                                                dead_camera_timeout_ns=1 * S)

    def message(self, camera: str, sec: int, nanosec: int, now_ns: int | None) -> None:
        result = self.gate.check(camera, sec, nanosec, now_ns)
        if not result.accepted:
            return
        if result.jump:
            self.forget()
        self.accepted.add((camera, result.stamp_ns))
        frame = Frame(camera, result.stamp_ns, np.zeros((4, 4, 3), np.uint8))
        stored = self.buffer.add(frame)
        for sync_set in self.sync.add(camera, result.stamp_ns, stored or frame):
            if not self.buffer.refuse_rate_capped_set(sync_set.stamps_ns):
                self.buffer.add_set(sync_set.items.values(), missing=sync_set.missing)

    def clock_jump(self) -> None:
        self.gate.on_clock_jump()
        self.forget()

    def forget(self) -> None:
        self.buffer.clear("time_jump")
        self.sync.reset()
        self.jumps_seen += 1


@st.composite
def scenarios(draw):
    n_cameras = draw(st.integers(1, 3))
    cameras = ["a", "b", "c"][:n_cameras]
    clock_known = draw(st.booleans())
    budget = draw(st.integers(2, 40))
    rate = draw(st.sampled_from([None, 4.0]))
    phases = draw(st.lists(st.integers(0, 99), min_size=n_cameras, max_size=n_cameras))
    kinds = st.sampled_from(["normal"] * 6 + ["ooo", "jump", "clock_jump", *ANOMALIES])
    events = draw(st.lists(st.tuples(kinds, st.integers(0, n_cameras - 1), st.integers(1, 40)), max_size=80))
    return cameras, clock_known, budget, rate, phases, events


def _stored(buffer: FrameBuffer) -> dict[int, Frame]:
    return {frame.uid: frame for frame in buffer.query()}


def _check_invariants(pipeline: Pipeline) -> None:
    buffer = pipeline.buffer
    frames = buffer.query()
    # Budgets held, and the books agree with the contents.
    assert buffer.total_bytes() == sum(f.nbytes for f in frames) <= buffer.memory_budget_bytes
    assert len(buffer) == len(frames) == sum(s.count for s in buffer.camera_stats().values())
    reference = buffer.reference_stamp_ns()
    if frames:
        assert all(f.stamp_ns >= reference - buffer.window_ns for f in frames)
    # Per-camera time order, one frame per stamp; only stamps the gate accepted, never <= 0.
    for camera in pipeline.cameras:
        stamps = [f.stamp_ns for f in buffer.query([camera])]
        assert stamps == sorted(set(stamps))
        assert all(s > 0 and (camera, s) in pipeline.accepted for s in stamps)
    # Sets only index stored frames; the synchronizer's queues stay bounded.
    stored = {f.uid for f in frames}
    for frame_set in buffer.query_sets():
        assert {f.uid for f in frame_set.frames.values()} <= stored
    assert all(n <= pipeline.queue_size for n in pipeline.sync.stats().queued.values())


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_storage_invariants_hold_after_every_event(scenario) -> None:
    cameras, clock_known, budget, rate, phases, events = scenario
    pipeline = Pipeline(cameras, budget, rate)
    clock = {camera: 100_000 * S + phase * MS for camera, phase in zip(cameras, phases, strict=True)}
    last_sent: dict[str, int] = {}

    def now() -> int | None:
        return max(clock.values()) + 500 * MS if clock_known else 0

    def send(camera: str, stamp_ns: int) -> None:
        last_sent[camera] = stamp_ns
        pipeline.message(camera, stamp_ns // S, stamp_ns % S, now())

    normals = dict.fromkeys(cameras, 0)  # normal frames since the last jump

    def normal(camera: str) -> None:
        clock[camera] += PERIOD
        normals[camera] += 1
        send(camera, clock[camera])

    unconfirmed_at_last_jump = 0
    for kind, index, amount in events:
        camera = cameras[index]
        before = _stored(pipeline.buffer)
        drops_before = pipeline.buffer.drop_counts()
        jumps_before = pipeline.jumps_seen
        # Judged against its second-newest stamp, a camera is on solid ground after two normal frames.
        had_history = normals[camera] >= 2
        if kind == "normal":
            normal(camera)
        elif kind == "ooo":  # out of order within the jump threshold (maybe behind the window)
            send(camera, max(1, clock[camera] - amount * 70 * MS - 1))
        elif kind == "future":
            send(camera, clock[camera] + 3600 * S)
        elif kind == "zero":
            pipeline.message(camera, 0, 0, now())
        elif kind == "nanosec":
            pipeline.message(camera, clock[camera] // S, S + amount, now())
        elif kind == "duplicate":
            if camera in last_sent:
                send(camera, last_sent[camera])
        elif kind == "stale":  # one frame released late, 10 s old
            send(camera, clock[camera] - 10 * S)
        elif kind in ("jump", "clock_jump"):  # the bag loops: every camera 500 s back
            for name in clock:
                clock[name] -= 500 * S
            known = {name for name, _ in pipeline.accepted}
            if kind == "clock_jump":
                pipeline.clock_jump()
            normals.update(dict.fromkeys(cameras, 0))
            for _ in range(3):  # then the cameras stream on the new base
                for name in cameras:
                    normal(name)
                    _check_invariants(pipeline)
            if known:  # recovery: confirmed, and only the new base is stored (nothing stale is left)
                assert pipeline.jumps_seen > jumps_before
                stamps = [f.stamp_ns for f in pipeline.buffer.query()]
                assert stamps and max(stamps) <= max(clock.values()) and min(stamps) > max(clock.values()) - 10 * S
            unconfirmed_at_last_jump = pipeline.gate.counts()["time_jump_unconfirmed"]
            continue
        _check_invariants(pipeline)
        after = _stored(pipeline.buffer)
        unconfirmed = pipeline.gate.counts()["time_jump_unconfirmed"]
        if pipeline.jumps_seen > jumps_before:
            # No wipe from one message: a jump is confirmed only after two earlier unconfirmed stamps.
            assert unconfirmed - unconfirmed_at_last_jump >= 2
            unconfirmed_at_last_jump = unconfirmed
            normals.update(dict.fromkeys(cameras, 0))
            continue
        if kind in ("zero", "nanosec") or (kind == "future" and clock_known) or (kind in ("stale", "duplicate")
                                                                                and had_history):
            assert after == before  # a quarantined stamp changes nothing
        # Otherwise frames leave only by the budget or the window.
        drops = pipeline.buffer.drop_counts()
        evicted = sum(drops[r] - drops_before[r] for r in ("evicted_memory", "evicted_window"))
        assert drops["time_jump"] == drops_before["time_jump"]
        assert len(set(before) - set(after)) <= evicted  # (a new frame may be evicted at once)
