"""The first check every colour and depth message passes, on its raw header stamp, before any decoding.

A sensor, a clock or a bag can send stamps that must not be trusted. ``StampGate.check`` quarantines
them, counted per camera and reason, so they are never stored, never reach the synchronizer and never
move any notion of "now":

- ``nanosec_not_normalised``: ``nanosec >= 1e9`` (builtin_interfaces/Time allows it in the field);
- ``nonpositive``: a stamp ``<= 0`` (an unset header);
- ``future``: later than the node's clock (sim or wall) plus ``future_tolerance_ns``. Skipped while the
  clock is not known (``now_ns`` None or 0: sim time before the first /clock). A bag replayed without
  sim time has stamps in the PAST of the wall clock, which is fine;
- ``duplicate``: the same camera, stream and stamp as a recently accepted message (the buffer also
  refuses duplicates, beyond this bounded memory);
- ``time_jump_unconfirmed``: see below.

Backwards time jumps. A stamp older than its camera's reference by more than
``time_jump_threshold_ns`` is never trusted on its own. The reference is the camera's SECOND-newest
accepted stamp (its newest while only one is known), so one outlier that got through (a future stamp
while the clock was unknown) does not turn the camera's normal stamps into a "jump". Such a stamp is a
candidate for a new time base; the jump is confirmed (``GateResult.jump``: clear memory, reset the
synchronizer, then store this message) when either

- the node reports that ``/clock`` went back (``on_clock_jump``), or
- the new base is seen consistently: at least ``CONFIRM_MESSAGES`` distinct candidate stamps, all within
  the threshold of each other, supported by at least min(2, cameras heard from) cameras. Supporters are
  the candidates' cameras and cameras whose latest accepted stamp is on the new base (e.g. a camera
  that started there); cameras heard from are those and the cameras accepted on the old base since the
  first candidate (a camera silent since then is dead and does not count). A normal message from a
  camera withdraws that camera's candidates. So a late single stale frame, or a stale burst from one
  camera while another streams on, is never a jump, while a lone live camera whose bag looped is
  confirmed after three frames.

Candidates are not held: the (at most two per camera) messages before the confirmation are lost and
counted. Out-of-order stamps within the threshold are normal and accepted.

Not thread-safe: the caller (CameraIngest) calls it under its own lock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

__all__ = [
    "DEFAULT_FUTURE_TOLERANCE_NS",
    "DEFAULT_TIME_JUMP_THRESHOLD_NS",
    "QUARANTINE_REASONS",
    "GateResult",
    "StampGate",
]

NS_PER_S: Final = 1_000_000_000
# 2 s: well above NTP-synced skew and the lag of a sim-time node behind /clock at 40 Hz (25 ms) or even
# 1 Hz, yet a future stamp beyond it is flagged within two seconds of the clock.
DEFAULT_FUTURE_TOLERANCE_NS: Final = 2 * NS_PER_S
# Stamps this much older than a camera's reference are a candidate backwards time jump (looping bag,
# sim reset); anything closer is ordinary out-of-order delivery.
DEFAULT_TIME_JUMP_THRESHOLD_NS: Final = 3 * NS_PER_S
CONFIRM_MESSAGES: Final = 3
CONFIRM_CAMERAS: Final = 2
DUPLICATE_MEMORY: Final = 256  # accepted stamps remembered per camera and stream
_CANDIDATE_LIMIT: Final = 64

QUARANTINE_REASONS: Final = ("nanosec_not_normalised", "nonpositive", "future", "duplicate", "time_jump_unconfirmed")


@dataclass(frozen=True)
class GateResult:
    """What to do with one message: store it (``accepted``) or not (``reason`` says why).

    ``jump`` is True on the message that confirmed a backwards time jump: the caller clears what it
    remembers of the old time base first, then stores this message.
    """

    stamp_ns: int
    reason: str | None = None
    jump: bool = False

    @property
    def accepted(self) -> bool:
        return self.reason is None


@dataclass
class _CameraState:
    top: list[int] = field(default_factory=list)  # the two newest accepted stamps, newest first
    last_stamp_ns: int | None = None  # the latest accepted (by arrival) and when: the gate's message count
    last_seq: int = -1
    recent: dict[str, tuple[deque[int], set[int]]] = field(default_factory=dict)  # stream -> accepted stamps

    def reference_ns(self) -> int | None:
        return self.top[-1] if self.top else None

    def accept(self, stream: str, stamp_ns: int) -> None:
        self.top = sorted({*self.top, stamp_ns}, reverse=True)[:2]
        order, members = self.recent.setdefault(stream, (deque(), set()))
        order.append(stamp_ns)
        members.add(stamp_ns)
        if len(order) > DUPLICATE_MEMORY:
            members.discard(order.popleft())

    def is_duplicate(self, stream: str, stamp_ns: int) -> bool:
        entry = self.recent.get(stream)
        return entry is not None and stamp_ns in entry[1]


class StampGate:
    """Quarantines untrustworthy stamps and confirms backwards time jumps (see the module docstring)."""

    def __init__(
        self,
        *,
        future_tolerance_ns: int = DEFAULT_FUTURE_TOLERANCE_NS,
        time_jump_threshold_ns: int = DEFAULT_TIME_JUMP_THRESHOLD_NS,
    ) -> None:
        if time_jump_threshold_ns <= 0:
            raise ValueError(f"time_jump_threshold_ns must be positive, got {time_jump_threshold_ns}")
        self.future_tolerance_ns = future_tolerance_ns  # validated by the setter
        self.time_jump_threshold_ns = int(time_jump_threshold_ns)
        self._cameras: dict[str, _CameraState] = {}
        self._candidates: list[tuple[str, int]] = []  # (camera, stamp) of a possible new time base
        self._seq = 0  # messages checked
        self._first_candidate_seq = 0
        self._counts: dict[str, dict[str, int]] = {}  # camera -> reason -> count
        self._time_jumps = 0
        self._clock_jumps = 0

    @property
    def future_tolerance_ns(self) -> int:
        return self._future_tolerance_ns

    @future_tolerance_ns.setter
    def future_tolerance_ns(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"future_tolerance_ns must be >= 0, got {value}")
        self._future_tolerance_ns = int(value)

    # --- checking ---------------------------------------------------------------------------------

    def check(self, camera: str, sec: int, nanosec: int, now_ns: int | None = None, *,
              stream: str = "image") -> GateResult:
        """Judge one message of ``camera`` by its raw header stamp (``sec``, ``nanosec``).

        ``now_ns`` is the node's clock (sim or wall); None or 0 while it is not known. ``stream`` tells
        a camera's colour and depth apart (they share stamps, and a time base).
        """
        self._seq += 1
        sec, nanosec = int(sec), int(nanosec)
        stamp_ns = sec * NS_PER_S + nanosec
        if not 0 <= nanosec < NS_PER_S:
            return self._quarantine(camera, stamp_ns, "nanosec_not_normalised")
        if stamp_ns <= 0:
            return self._quarantine(camera, stamp_ns, "nonpositive")
        if now_ns and stamp_ns > now_ns + self._future_tolerance_ns:
            return self._quarantine(camera, stamp_ns, "future")
        state = self._cameras.setdefault(camera, _CameraState())
        reference = state.reference_ns()
        if reference is not None and stamp_ns < reference - self.time_jump_threshold_ns:
            return self._candidate(camera, stream, stamp_ns)
        # This camera is on its current time base: what it offered as a new base was stale frames.
        self._withdraw_candidates(camera)
        if state.is_duplicate(stream, stamp_ns):
            return self._quarantine(camera, stamp_ns, "duplicate")
        state.accept(stream, stamp_ns)
        state.last_stamp_ns, state.last_seq = stamp_ns, self._seq
        return GateResult(stamp_ns)

    def on_clock_jump(self) -> None:
        """The node's /clock went back (sim reset, looping bag with --clock): every stamp base is new."""
        self._clock_jumps += 1
        self._time_jumps += 1
        self._cameras.clear()
        self._forget_candidates()

    # --- reporting --------------------------------------------------------------------------------

    def counts(self, camera: str | None = None) -> dict[str, int]:
        """Quarantined messages by reason, of ``camera`` (all cameras when None)."""
        per_camera = self._counts.values() if camera is None else [self._counts.get(camera, {})]
        return {reason: sum(c.get(reason, 0) for c in per_camera) for reason in QUARANTINE_REASONS}

    @property
    def time_jumps(self) -> int:
        """Backwards jumps confirmed, by stamps or by /clock."""
        return self._time_jumps

    @property
    def clock_jumps(self) -> int:
        return self._clock_jumps

    def reference_stamp_ns(self, camera: str) -> int | None:
        """The stamp a camera's next stamps are compared with for jumps (its second-newest accepted)."""
        state = self._cameras.get(camera)
        return None if state is None else state.reference_ns()

    # --- internals --------------------------------------------------------------------------------

    def _quarantine(self, camera: str, stamp_ns: int, reason: str) -> GateResult:
        per_camera = self._counts.setdefault(camera, {})
        per_camera[reason] = per_camera.get(reason, 0) + 1
        return GateResult(stamp_ns, reason=reason)

    def _forget_candidates(self) -> None:
        self._candidates.clear()

    def _withdraw_candidates(self, camera: str) -> None:
        if any(name == camera for name, _ in self._candidates):
            self._candidates = [(name, stamp) for name, stamp in self._candidates if name != camera]
            if not self._candidates:
                self._forget_candidates()

    def _candidate(self, camera: str, stream: str, stamp_ns: int) -> GateResult:
        threshold = self.time_jump_threshold_ns
        # Keep the candidates consistent with this one: all within the threshold of each other.
        others = sorted((c for c in self._candidates if c != (camera, stamp_ns) and abs(c[1] - stamp_ns) <= threshold),
                        key=lambda c: abs(c[1] - stamp_ns))
        while others and max(stamp_ns, *(s for _, s in others)) - min(stamp_ns, *(s for _, s in others)) > threshold:
            others.pop()  # the one farthest from the newest candidate
        if not others:  # a new group of candidates starts here
            self._first_candidate_seq = self._seq
        self._candidates = [*others[: _CANDIDATE_LIMIT - 1], (camera, stamp_ns)]
        low, high = min(s for _, s in self._candidates), max(s for _, s in self._candidates)
        supporters = {name for name, _ in self._candidates}
        heard = set(supporters)
        for name, state in self._cameras.items():
            if name in supporters or state.last_stamp_ns is None:
                continue
            if high - threshold <= state.last_stamp_ns <= low + threshold:
                supporters.add(name)  # already on the new base
                heard.add(name)
            elif state.last_seq >= self._first_candidate_seq:
                heard.add(name)  # alive on the old base
        if len(self._candidates) < CONFIRM_MESSAGES or len(supporters) < min(CONFIRM_CAMERAS, len(heard)):
            return self._quarantine(camera, stamp_ns, "time_jump_unconfirmed")
        # Confirmed: the candidates are the new time base of their cameras; the other supporters are on
        # it already; every other camera starts afresh.
        new_top: dict[str, list[int]] = {}
        for name, stamp in self._candidates:
            new_top.setdefault(name, []).append(stamp)
        self._cameras = {name: state for name, state in self._cameras.items() if name in supporters}
        for name, stamps in new_top.items():
            state = self._cameras[name] = _CameraState()
            state.top = sorted(set(stamps), reverse=True)[:2]
        self._cameras[camera].accept(stream, stamp_ns)
        self._cameras[camera].last_stamp_ns, self._cameras[camera].last_seq = stamp_ns, self._seq
        self._forget_candidates()
        self._time_jumps += 1
        return GateResult(stamp_ns, jump=True)
