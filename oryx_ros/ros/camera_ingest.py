"""Camera subscriptions → stamp gate → Frames stored per camera → synchronised sets indexed, for a node
the caller owns.

``CameraIngest`` is constructed by the node with its camera configs and a FrameBuffer. Per camera it
subscribes to the colour topic (raw Image or CompressedImage), optionally CameraInfo (cached, converted
once per change) and a registered depth topic (paired with colour by stamp).

Every colour and depth message first passes the StampGate on its raw header stamp (future, zero,
non-normalised, duplicate and unconfirmed-backwards stamps are quarantined, counted per camera and
reason; a confirmed backwards jump clears the buffer, the synchronizer and what waits for pairing).
Complete frames are then STORED PER CAMERA ON ARRIVAL (``FrameBuffer.add``), whatever the other
cameras do, and go on to the synchronizer (message_filters' approximate policy by default), whose sets
are indexed in the buffer (``FrameBuffer.add_set``). A camera out of phase, a lost frame or a dead
camera therefore never stops the others being stored.

Decoding only what is stored: the buffer says by the stamp alone whether it would store a frame
(``refuse_by_stamp``): colour is asked on arrival (its stamp is the frame's), depth once paired. A
frame the per-camera rate cap refuses goes to the synchronizer undecoded and is decoded only if a set
with it is admitted (``decoded_late``); otherwise never (``skipped_rate_cap`` counts the messages left
undecoded). So a 30 fps camera into a 2 Hz cap decodes about 2 images a second, not 30.

Waiting, all bounded in stamp time and counted: a colour image waits up to ``depth_wait_ns`` for its
depth; before a camera's first CameraInfo its frames wait up to ``camera_info_wait_ns`` for it (DDS
does not order messages across topics, so the first images often beat the first CameraInfo).
``flush()`` releases whatever still waits (end of a bag, shutdown).

A bad message never raises out of a callback: it is counted per camera and reason (images by the
codec error's ``reason``, CameraInfo by CameraInfoError's) and reported as a warning at most once per
``warn_throttle_s`` per camera and kind (with the number suppressed in between). ``stats()`` and
``diagnostic_status()`` give the counters for /diagnostics; the status is WARN naming the cameras'
phase offsets when cameras stream but no synchronised set formed for ``no_set_warn_s``.

Threading: by default each camera's subscriptions get a MutuallyExclusiveCallbackGroup of their own,
so with a MultiThreadedExecutor a slow or huge decode in one camera never stalls another. Gate, pairing,
synchronizer and the buffer hand-off run under one short lock; decoding never does.

With ``workers=True`` (what the node uses) the callbacks only hand the message to its camera's bounded
queue, and a worker thread per camera does everything above in arrival order. The executor then takes
each message off DDS at once: rclpy's executor takes one message per subscription per wait cycle and
checks a busy callback group lazily, in a fixed order, so with slow callbacks in per-camera groups the
history (sensor-data QoS: KEEP_LAST 5) of the cameras listed last overflowed first. Each subscription
then has a group of its own (its messages stay in order; the camera's worker keeps the camera's order).
A message the full queue has to give up is counted per camera and kind (``queue_overflow``), so every
message DDS delivered is either processed or counted.

Given a ``side_node`` (what the node does) the subscriptions are not on the node's executor at all but
on a hidden helper node spun by a SingleThreadedExecutor on a thread of its own (``SideNode``): rclpy's
MultiThreadedExecutor costs about 5 ms of CPU a message here, and 4 RGB-D cameras at 15 Hz then lost
10-45 % of their messages even to bare counting callbacks (bench/bench_ingest_rgbd.py).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from oryx_ros.bags.camera_bag import camera_topics
from oryx_ros.perception import image_codec
from oryx_ros.perception.frame_buffer import FrameBuffer
from oryx_ros.perception.frames import CameraIntrinsics, Frame
from oryx_ros.perception.image_codec import to_depth_m, to_rgb
from oryx_ros.perception.stamp_gate import QUARANTINE_REASONS, StampGate
from oryx_ros.perception.sync import ApproximateTimeSynchronizer, SyncSet, SyncStats
from oryx_ros.ros.conversions import (
    CameraInfoError,
    camera_info_to_intrinsics,
    depth_to_colour_size,
    intrinsics_for_size,
)
from oryx_ros.ros.side_node import SideNode

__all__ = ["CameraConfig", "CameraCounters", "CameraIngest", "IngestStats"]

_NS_PER_S: Final = 1_000_000_000
# Defaults for the synchronizer the ingest builds when none is injected.
DEFAULT_SLOP_NS: Final = 20_000_000  # 20 ms: well under half a 30 fps frame period
DEFAULT_QUEUE_SIZE: Final = 10
DEFAULT_DEAD_CAMERA_TIMEOUT_NS: Final = 1 * _NS_PER_S
# Depth ↔ colour pairing: registered depth usually carries the colour stamp exactly; allow driver jitter.
DEFAULT_DEPTH_SLOP_NS: Final = 10_000_000
# A colour image waits this long (in stamp time) for its depth before it goes on without it.
DEFAULT_DEPTH_WAIT_NS: Final = 500_000_000
# Before a camera's first CameraInfo, frames wait this long (stamp time) for it; after that they go on
# without intrinsics until it comes (DDS does not order messages across topics, and a slow transport
# can deliver the first CameraInfo well after the first images).
DEFAULT_CAMERA_INFO_WAIT_NS: Final = 1_000_000_000
# Cameras streaming this long (arrival time) without a synchronised set make the status WARN.
DEFAULT_NO_SET_WARN_S: Final = 5.0
_PENDING_LIMIT: Final = 30  # per camera and kind; beyond it the oldest is given up (counted)
# Per-camera hand-off queue (workers=True): 2 s of colour + depth + CameraInfo at 15 Hz, about 46 MB of
# 640x480 RGB-D per camera at most; beyond it the oldest message is given up (counted in queue_overflow).
DEFAULT_WORKER_QUEUE: Final = 90
_RECENT_STAMPS: Final = 32  # per camera, for the phase offsets in diagnostics

# diagnostic_msgs/DiagnosticStatus levels (kept as ints so this module needs no diagnostic_msgs).
DIAG_OK: Final = 0
DIAG_WARN: Final = 1


@dataclass(frozen=True)
class CameraConfig:
    """One camera: its name (the key everywhere downstream) and topics.

    ``frame_id`` overrides the colour header's frame_id (the camera's optical frame, REP 103).
    ``depth_topic`` must be registered to the colour camera (e.g. ``aligned_depth_to_color``).
    """

    name: str
    image_topic: str
    compressed: bool = False
    camera_info_topic: str | None = None
    depth_topic: str | None = None
    depth_compressed: bool = False
    frame_id: str | None = None

    @classmethod
    def standard(
        cls, name: str, *, namespace: str = "", compressed: bool = False, depth: bool = False,
        depth_compressed: bool = False, frame_id: str | None = None,
    ) -> CameraConfig:
        """The usual driver layout (oryx_ros.bags.camera_bag.camera_topics): ``/<name>/image_raw``,
        ``/<name>/camera_info`` and, with ``depth``, ``/<name>/depth/image_raw``."""
        topics = camera_topics(name, namespace=namespace, compressed=compressed, depth_compressed=depth_compressed)
        return cls(
            name=name, image_topic=topics.image, compressed=compressed, camera_info_topic=topics.camera_info,
            depth_topic=topics.depth if depth else None, depth_compressed=depth_compressed, frame_id=frame_id,
        )


@dataclass
class CameraCounters:
    """Per-camera ingest counters (messages in, frames out, and everything that went wrong).

    ``frames`` counts complete frames past the gate and pairing (stored or not). ``stored`` those the
    buffer stored on arrival. ``skipped_rate_cap`` counts frames left undecoded because the buffer's
    per-camera rate cap refused them; ``decoded_late`` those of them decoded after all, as members of
    an admitted set. ``quarantined`` counts messages the stamp gate refused, by reason;
    ``rejected_images`` and ``rejected_camera_infos`` messages that failed to convert, by reason
    (``conversion_errors`` is their total). ``queue_overflow`` counts messages the camera's hand-off
    queue gave up (workers only), by kind; they are not in ``images``, ``depth_images``, ``camera_infos``.
    """

    images: int = 0
    depth_images: int = 0
    camera_infos: int = 0
    frames: int = 0
    stored: int = 0
    skipped_rate_cap: int = 0
    decoded_late: int = 0
    conversion_errors: int = 0
    colour_without_depth: int = 0
    depth_unmatched: int = 0
    frames_without_camera_info: int = 0
    pending_cleared_on_time_jump: int = 0
    last_stamp_ns: int | None = None
    last_error: str = ""
    quarantined: dict[str, int] = field(default_factory=dict)
    rejected_images: dict[str, int] = field(default_factory=dict)
    rejected_camera_infos: dict[str, int] = field(default_factory=dict)
    queue_overflow: dict[str, int] = field(default_factory=dict)  # by kind: image, depth, camera_info

    def copy(self) -> CameraCounters:
        values = {key: dict(value) if isinstance(value, dict) else value for key, value in vars(self).items()}
        return CameraCounters(**values)


@dataclass
class IngestStats:
    cameras: dict[str, CameraCounters]
    sync: SyncStats
    sets_stored: int
    sets_skipped: int
    buffer_frames: int
    buffer_bytes: int
    buffer_drops: dict[str, int] = field(default_factory=dict)
    time_jumps: int = 0


@dataclass(frozen=True)
class _Parts:
    """A complete frame whose colour (and depth) may still be undecoded messages."""

    camera: str
    stamp_ns: int
    colour: Any  # the decoded RGB array, or the colour message left undecoded
    depth: Any | None  # the depth message (decoded once the frame is stored, or its set admitted)
    frame_id: str
    intrinsics: CameraIntrinsics | None  # the camera's, not yet brought to the image size
    epoch: int  # time base it was gated in (see CameraIngest._epoch)


@dataclass
class _Pending:
    colour: deque[tuple[int, Any, str]] = field(default_factory=deque)  # (stamp, rgb or msg, frame_id)
    depth: deque[tuple[int, Any]] = field(default_factory=deque)  # (stamp, msg)
    newest_stamp_ns: int | None = None
    # Complete frames (stamp, rgb or colour msg, frame_id, depth msg) held until the first CameraInfo.
    awaiting_info: deque[tuple[int, Any, str, Any | None]] = field(default_factory=deque)
    info_given_up: bool = False

    def clear(self) -> int:
        dropped = len(self.colour) + len(self.depth) + len(self.awaiting_info)
        self.colour.clear()
        self.depth.clear()
        self.awaiting_info.clear()
        self.newest_stamp_ns = None
        return dropped


class CameraIngest:
    """Subscribes to the configured cameras on ``node``, stores their frames in ``buffer`` on arrival
    and indexes synchronised sets of them."""

    def __init__(
        self,
        node: Node,
        cameras: Sequence[CameraConfig],
        buffer: FrameBuffer,
        *,
        synchronizer: ApproximateTimeSynchronizer[Any] | None = None,
        gate: StampGate | None = None,
        now_ns: Callable[[], int | None] = time.time_ns,
        qos: QoSProfile = qos_profile_sensor_data,
        camera_info_qos: QoSProfile | None = None,
        callback_group: CallbackGroup | None = None,
        depth_slop_ns: int = DEFAULT_DEPTH_SLOP_NS,
        depth_wait_ns: int = DEFAULT_DEPTH_WAIT_NS,
        camera_info_wait_ns: int = DEFAULT_CAMERA_INFO_WAIT_NS,
        warn_throttle_s: float = 5.0,
        no_set_warn_s: float = DEFAULT_NO_SET_WARN_S,
        clock: Callable[[], float] = time.monotonic,
        skip_rate_capped: bool = True,
        max_decode_pixels: int | None = None,
        workers: bool = False,
        worker_queue: int = DEFAULT_WORKER_QUEUE,
        on_stored: Callable[[Frame], None] | None = None,
        side_node: SideNode | None = None,
    ) -> None:
        """
        Args:
            node: the node that owns the subscriptions (and whose logger reports problems).
            cameras: camera configs; names must be unique.
            buffer: where frames and sets go.
            synchronizer: strategy over the camera names; default ApproximateTimeSynchronizer with 20 ms
                slop, queue 10 and dead-camera timeout 1 s.
            gate: the stamp gate (default: StampGate() with its default tolerance and jump threshold).
            now_ns: the node's clock in ns (sim or wall); returning None or 0 means not known yet (sim
                time before the first /clock), and then future stamps are not checked.
            qos: for image and depth subscriptions (sensor-data QoS by default; use RELIABLE with a deep
                history to receive every message of a replayed bag).
            camera_info_qos: for CameraInfo (defaults to ``qos``).
            callback_group: for all subscriptions; default one mutually exclusive group per camera.
            depth_slop_ns: largest colour/depth stamp difference that still pairs.
            depth_wait_ns: how long (stamp time) a colour image waits for its depth.
            camera_info_wait_ns: how long (stamp time) frames of a camera with a CameraInfo topic wait
                for its first CameraInfo before they go on without intrinsics.
            warn_throttle_s: at most one warning per camera and kind in this many seconds.
            no_set_warn_s: cameras streaming this long without a synchronised set make the status WARN.
            clock: monotonic seconds, for warning throttling and the no-set warning.
            skip_rate_capped: leave undecoded the frames the buffer's rate cap refuses, until a set
                needs them; False decodes every frame (the stored frames and sets are the same).
            max_decode_pixels: largest image area decoded (``max_pixels`` of the codec); default the
                codec's. Settable at run time (attribute of the same name).
            on_stored: called (on the camera's thread, must not block) with every frame the buffer stores,
                e.g. the long-horizon memory's keyframe recorder.
            workers: callbacks only queue the message; one thread per camera processes its messages in
                arrival order (see the module docstring). False processes in the callback (deterministic
                for tests driving a SingleThreadedExecutor).
            worker_queue: messages queued per camera (workers only) before the oldest is given up.
            side_node: subscribe on this hidden helper node (:class:`~oryx_ros.ros.side_node.SideNode`,
                spun by a SingleThreadedExecutor on a thread of its own), not on ``node``'s executor (see the
                module docstring); the caller closes it after :meth:`destroy`.
        """
        names = [camera.name for camera in cameras]
        if not names:
            raise ValueError("CameraIngest needs at least one camera")
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        self._node = node
        self._logger = node.get_logger()
        self._configs = {camera.name: camera for camera in cameras}
        self._buffer = buffer
        self._on_stored = on_stored
        # Items are stored Frames, or _Parts left undecoded (refused by the per-camera rate cap).
        self._sync: ApproximateTimeSynchronizer[Any] = synchronizer or ApproximateTimeSynchronizer(
            names, DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_NS, dead_camera_timeout_ns=DEFAULT_DEAD_CAMERA_TIMEOUT_NS,
        )
        if set(self._sync.cameras) != set(names):
            raise ValueError(f"synchronizer cameras {self._sync.cameras} differ from the configs {names}")
        self._gate = gate or StampGate()
        self._now_ns = now_ns
        self._depth_slop_ns = int(depth_slop_ns)
        self._depth_wait_ns = int(depth_wait_ns)
        self._camera_info_wait_ns = int(camera_info_wait_ns)
        self._warn_throttle_s = float(warn_throttle_s)
        self._no_set_warn_s = float(no_set_warn_s)
        self._clock = clock
        self._skip_rate_capped = bool(skip_rate_capped)
        self.max_decode_pixels = max_decode_pixels  # via the setter
        self._lock = threading.Lock()
        self._epoch = 0  # bumped when a time jump is confirmed: frames gated before it are dropped
        self._counters = {name: CameraCounters() for name in names}
        self._intrinsics: dict[str, CameraIntrinsics | None] = dict.fromkeys(names)
        self._info_key: dict[str, tuple[Any, ...] | None] = dict.fromkeys(names)
        self._pending = {name: _Pending() for name in names}
        self._recent_stamps = {name: deque(maxlen=_RECENT_STAMPS) for name in names}
        self._last_frame_at: dict[str, float | None] = dict.fromkeys(names)
        self._streaming_since: float | None = None
        self._last_set_at: float | None = None
        self._sets_stored = 0
        self._sets_skipped = 0
        self._errors_reported = 0
        self._quarantined_reported = 0
        self._last_warning: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        if worker_queue < 1:
            raise ValueError(f"worker_queue must be positive, got {worker_queue}")
        self._workers = {name: _Worker(self, name, worker_queue) for name in names} if workers else {}
        info_qos = camera_info_qos or qos
        self._subscriber = side_node.node if side_node is not None else node
        resolve = side_node.resolve if side_node is not None else str
        self._subscriptions = []
        for camera in cameras:
            camera_group = callback_group or MutuallyExclusiveCallbackGroup()

            def group(camera_group: CallbackGroup = camera_group) -> CallbackGroup:
                # Workers keep the camera's order, so each subscription may have a group of its own.
                return callback_group or (MutuallyExclusiveCallbackGroup() if workers else camera_group)

            self._subscriptions.append(self._subscriber.create_subscription(
                CompressedImage if camera.compressed else Image, resolve(camera.image_topic),
                self._callback(camera.name, "image", self._on_image), qos, callback_group=group(),
            ))
            if camera.camera_info_topic:
                self._subscriptions.append(self._subscriber.create_subscription(
                    CameraInfo, resolve(camera.camera_info_topic),
                    self._callback(camera.name, "camera_info", self._on_camera_info), info_qos,
                    callback_group=group(),
                ))
            if camera.depth_topic:
                self._subscriptions.append(self._subscriber.create_subscription(
                    CompressedImage if camera.depth_compressed else Image, resolve(camera.depth_topic),
                    self._callback(camera.name, "depth", self._on_depth), qos, callback_group=group(),
                ))
        for worker in self._workers.values():
            worker.start()

    # --- public -----------------------------------------------------------------------------------

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._configs)

    @property
    def subscriber(self) -> Node:
        """The node that holds the camera subscriptions (the side node's, if one was given)."""
        return self._subscriber

    @property
    def synchronizer(self) -> ApproximateTimeSynchronizer[Any]:
        return self._sync

    @property
    def gate(self) -> StampGate:
        return self._gate

    @property
    def future_tolerance_ns(self) -> int:
        """How far past the node's clock a stamp may be before it is quarantined as ``future``."""
        return self._gate.future_tolerance_ns

    @future_tolerance_ns.setter
    def future_tolerance_ns(self, value: int) -> None:
        with self._lock:
            self._gate.future_tolerance_ns = value

    @property
    def max_decode_pixels(self) -> int:
        """Largest image area (pixels) decoded; larger images are rejected from their header."""
        return self._max_decode_pixels

    @max_decode_pixels.setter
    def max_decode_pixels(self, value: int | None) -> None:
        value = _default_max_pixels() if value is None else int(value)
        if value <= 0:
            raise ValueError(f"max_decode_pixels must be positive, got {value}")
        self._max_decode_pixels = value

    def on_clock_jump(self) -> None:
        """The node's /clock went back: forget the old time base (buffer, synchronizer, pairing)."""
        with self._lock:
            self._gate.on_clock_jump()
            self._forget_time_base("/clock went back")

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until the workers processed every queued message (at once without workers); False if
        some were still queued after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        return all(worker.wait_idle(deadline) for worker in self._workers.values())

    def flush(self) -> None:
        """Release frames still waiting for depth or CameraInfo (e.g. at the end of a bag, at shutdown),
        after the workers processed what was queued."""
        self.wait_idle()
        ready: list[_Parts] = []
        with self._lock:
            for name, pending in self._pending.items():
                while pending.colour:
                    self._counters[name].colour_without_depth += 1
                    self._emit(name, *pending.colour.popleft(), None, ready)
                while pending.awaiting_info:
                    self._ready(name, *pending.awaiting_info.popleft(), ready)
        self._process(ready)

    def destroy(self) -> None:
        """Remove the subscriptions from the node that holds them."""
        for subscription in self._subscriptions:
            self._subscriber.destroy_subscription(subscription)
        self._subscriptions.clear()
        for worker in self._workers.values():
            worker.stop()

    def stats(self) -> IngestStats:
        with self._lock:
            counters = {name: c.copy() for name, c in self._counters.items()}
            sync = self._sync.stats()
            sets_stored, sets_skipped = self._sets_stored, self._sets_skipped
            time_jumps = self._gate.time_jumps
        return IngestStats(
            cameras=counters, sync=sync, sets_stored=sets_stored, sets_skipped=sets_skipped,
            buffer_frames=len(self._buffer), buffer_bytes=self._buffer.total_bytes(),
            buffer_drops=self._buffer.drop_counts(), time_jumps=time_jumps,
        )

    def diagnostic_status(self) -> tuple[int, str, list[tuple[str, str]]]:
        """``(level, message, key/values)`` for a diagnostic_msgs/DiagnosticStatus (level 0 OK, 1 WARN).

        WARN while a camera is dead; when cameras stream but no synchronised set formed for
        ``no_set_warn_s`` (naming each camera's phase offset); when messages were dropped as malformed or
        stamps quarantined since the previous call (so one bad message does not keep the status at WARN
        forever; the totals are in the values).
        """
        stats = self.stats()
        values: list[tuple[str, str]] = [
            ("sets stored", str(stats.sets_stored)),
            ("sets skipped by buffer", str(stats.sets_skipped)),
            ("full sets", str(stats.sync.full_sets)),
            ("partial sets", str(stats.sync.partial_sets)),
            ("dead cameras", ",".join(stats.sync.dead_cameras)),
            ("time jumps", str(stats.time_jumps)),
            ("buffer frames", str(stats.buffer_frames)),
            ("buffer bytes", str(stats.buffer_bytes)),
        ]
        values += [(f"buffer dropped {reason}", str(n)) for reason, n in stats.buffer_drops.items()]
        for name, c in stats.cameras.items():
            for key, value in vars(c).items():
                if isinstance(value, dict):
                    values += [(f"{name} {key} {reason}", str(n)) for reason, n in sorted(value.items())]
                else:
                    values.append((f"{name} {key}", str(value)))
            values.append((f"{name} sync dropped (queue overflow)", str(stats.sync.dropped_overflow.get(name, 0))))
        problems = []
        if stats.sync.dead_cameras:
            problems.append(f"dead cameras: {', '.join(stats.sync.dead_cameras)}")
        no_sets = self._no_set_problem()
        if no_sets:
            problems.append(no_sets)
        errors = sum(c.conversion_errors for c in stats.cameras.values())
        quarantined = {reason: sum(c.quarantined.get(reason, 0) for c in stats.cameras.values())
                       for reason in QUARANTINE_REASONS}
        with self._lock:
            new_errors, self._errors_reported = errors - self._errors_reported, errors
            total = sum(quarantined.values())
            new_quarantined, self._quarantined_reported = total - self._quarantined_reported, total
        if new_errors:
            problems.append(f"{new_errors} conversion errors since the last report")
        if new_quarantined:
            reasons = ", ".join(f"{reason} {n}" for reason, n in quarantined.items() if n)
            problems.append(f"{new_quarantined} stamps quarantined since the last report (totals: {reasons})")
        level = DIAG_WARN if problems else DIAG_OK
        return level, "; ".join(problems) or "all cameras streaming", values

    # --- callbacks --------------------------------------------------------------------------------

    def _callback(self, camera: str, kind: str, handler: Callable[[str, Any], None]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
            worker = self._workers.get(camera)
            if worker is not None:
                worker.put(kind, process, msg)
            else:
                process(msg)

        def process(msg: Any) -> None:
            try:
                handler(camera, msg)
            except ValueError as err:  # ImageConversionError, CameraInfoError: bad input
                self._record_error(camera, kind, err)
            except Exception as err:  # a sensor callback must never take the node down
                self._record_error(camera, kind, err, unexpected=True)

        return callback

    def _on_camera_info(self, camera: str, msg: Any) -> None:
        key = (msg.width, msg.height, tuple(msg.k), tuple(msg.d), msg.distortion_model, msg.binning_x,
               msg.binning_y, msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height)
        with self._lock:
            self._counters[camera].camera_infos += 1
            if key == self._info_key[camera]:
                return
        intrinsics = camera_info_to_intrinsics(msg)  # only when the calibration changed; a bad one raises
        ready: list[_Parts] = []
        with self._lock:
            self._intrinsics[camera], self._info_key[camera] = intrinsics, key
            pending = self._pending[camera]
            while pending.awaiting_info:
                self._ready(camera, *pending.awaiting_info.popleft(), ready)
        self._process(ready)

    def _on_image(self, camera: str, msg: Any) -> None:
        config = self._configs[camera]
        frame_id = config.frame_id if config.frame_id is not None else str(msg.header.frame_id)
        with self._lock:
            self._counters[camera].images += 1
            stamp_ns = self._gate_message(camera, msg, "image")
            epoch = self._epoch
        if stamp_ns is None:
            return
        colour: Any = msg
        if not (self._skip_rate_capped and self._buffer.refuse_by_stamp(camera, stamp_ns, count=False) == "rate_cap"):
            colour = _decode_with_limit(to_rgb, msg, self._max_decode_pixels)  # outside the lock; bad input raises
        ready: list[_Parts] = []
        with self._lock:
            if epoch != self._epoch:  # a time jump was confirmed meanwhile: this frame is of the old base
                self._counters[camera].pending_cleared_on_time_jump += 1
                return
            if config.depth_topic is None:
                self._emit(camera, stamp_ns, colour, frame_id, None, ready)
            else:
                pending = self._pending[camera]
                self._advance(camera, stamp_ns, ready)
                depth = self._take_nearest(pending.depth, stamp_ns)
                if depth is not None:
                    self._emit(camera, stamp_ns, colour, frame_id, depth, ready)
                else:
                    pending.colour.append((stamp_ns, colour, frame_id))
                    if len(pending.colour) > _PENDING_LIMIT:
                        self._counters[camera].colour_without_depth += 1
                        self._emit(camera, *pending.colour.popleft(), None, ready)
        self._process(ready)

    def _on_depth(self, camera: str, msg: Any) -> None:
        ready: list[_Parts] = []
        with self._lock:
            self._counters[camera].depth_images += 1
            stamp_ns = self._gate_message(camera, msg, "depth")
            if stamp_ns is None:
                return
            pending = self._pending[camera]
            self._advance(camera, stamp_ns, ready)
            best = None
            for index, (colour_stamp, _, _) in enumerate(pending.colour):
                gap = abs(colour_stamp - stamp_ns)
                if gap <= self._depth_slop_ns and (best is None or gap < best[1]):
                    best = (index, gap)
            if best is not None:
                colour_stamp, colour, frame_id = pending.colour[best[0]]
                del pending.colour[best[0]]
                # Colour that came before the matched one will not get depth any more: keep stamp order.
                while pending.colour and pending.colour[0][0] < colour_stamp:
                    self._counters[camera].colour_without_depth += 1
                    self._emit(camera, *pending.colour.popleft(), None, ready)
                self._emit(camera, colour_stamp, colour, frame_id, msg, ready)
            else:
                pending.depth.append((stamp_ns, msg))
                if len(pending.depth) > _PENDING_LIMIT:
                    pending.depth.popleft()
                    self._counters[camera].depth_unmatched += 1
        self._process(ready)

    # --- internals (lock held) --------------------------------------------------------------------

    def _gate_message(self, camera: str, msg: Any, stream: str) -> int | None:
        """The message's stamp when the gate accepts it, else None (counted)."""
        stamp = msg.header.stamp
        result = self._gate.check(camera, stamp.sec, stamp.nanosec, self._now_ns(), stream=stream)
        if not result.accepted:
            reasons = self._counters[camera].quarantined
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
            return None
        if result.jump:
            self._forget_time_base(f"camera {camera!r} confirmed a backwards time jump")
        return result.stamp_ns

    def _forget_time_base(self, why: str) -> None:
        cleared = self._buffer.clear("time_jump")
        self._sync.reset()
        for name, pending in self._pending.items():
            self._counters[name].pending_cleared_on_time_jump += pending.clear()
            self._recent_stamps[name].clear()
        self._epoch += 1
        self._logger.warning(f"time jumped back ({why}): cleared {cleared} stored frames")

    def _take_nearest(self, queue: deque[tuple[int, Any]], stamp_ns: int) -> Any | None:
        best = None
        for index, (stamp, _) in enumerate(queue):
            gap = abs(stamp - stamp_ns)
            if gap <= self._depth_slop_ns and (best is None or gap < best[1]):
                best = (index, gap)
        if best is None:
            return None
        depth = queue[best[0]][1]
        del queue[best[0]]
        return depth

    def _advance(self, camera: str, stamp_ns: int, ready: list[_Parts]) -> None:
        """Give up on pending items that are too old to pair, given a new stamp from this camera."""
        pending, counters = self._pending[camera], self._counters[camera]
        newest = pending.newest_stamp_ns
        pending.newest_stamp_ns = stamp_ns if newest is None else max(newest, stamp_ns)
        horizon = pending.newest_stamp_ns - self._depth_wait_ns
        while pending.colour and pending.colour[0][0] < horizon:
            counters.colour_without_depth += 1
            self._emit(camera, *pending.colour.popleft(), None, ready)
        while pending.depth and pending.depth[0][0] < horizon:
            pending.depth.popleft()
            counters.depth_unmatched += 1

    def _emit(self, camera: str, stamp_ns: int, colour: Any, frame_id: str, depth: Any | None,
              ready: list[_Parts]) -> None:
        """A complete colour (+ depth) frame: ready to store, or held for the first CameraInfo."""
        pending = self._pending[camera]
        waits_for_info = (
            self._configs[camera].camera_info_topic is not None
            and self._intrinsics[camera] is None
            and not pending.info_given_up
        )
        if not waits_for_info:
            self._ready(camera, stamp_ns, colour, frame_id, depth, ready)
            return
        pending.awaiting_info.append((stamp_ns, colour, frame_id, depth))
        newest = max(stamp for stamp, *_ in pending.awaiting_info)
        if pending.awaiting_info[0][0] < newest - self._camera_info_wait_ns:
            pending.info_given_up = True
            self._record_error(
                camera, "camera_info",
                CameraInfoError(f"no CameraInfo on {self._configs[camera].camera_info_topic} within "
                                f"{self._camera_info_wait_ns / _NS_PER_S:.1f} s: frames go on without intrinsics"),
                locked=True, count=False,
            )
            while pending.awaiting_info:
                self._ready(camera, *pending.awaiting_info.popleft(), ready)

    def _ready(self, camera: str, stamp_ns: int, colour: Any, frame_id: str, depth: Any | None,
               ready: list[_Parts]) -> None:
        intrinsics = self._intrinsics[camera]
        if intrinsics is None:
            self._counters[camera].frames_without_camera_info += 1
        ready.append(_Parts(camera, stamp_ns, colour, depth, frame_id, intrinsics, self._epoch))

    # --- storing (called without the lock) --------------------------------------------------------

    def _process(self, ready: list[_Parts]) -> None:
        """Store each complete frame on arrival (decoding it outside the lock), then hand it to the
        synchronizer, and index the sets it completes."""
        for parts in ready:
            refusal = self._buffer.refuse_by_stamp(parts.camera, parts.stamp_ns)
            item: Frame | _Parts | None = None
            if refusal in ("duplicate", "too_old"):
                pass  # a set with it would be refused the same way: nothing to decode or match
            elif refusal == "rate_cap" and self._skip_rate_capped:
                item = parts
            else:
                item = self._decode(parts)
            sets: list[SyncSet[Any]] = []
            with self._lock:
                if parts.epoch != self._epoch:
                    self._counters[parts.camera].pending_cleared_on_time_jump += 1
                    continue
                counters = self._counters[parts.camera]
                counters.frames += 1
                counters.last_stamp_ns = parts.stamp_ns
                now = self._clock()
                if all(at is None or now - at > self._no_set_warn_s for at in self._last_frame_at.values()):
                    self._streaming_since = now  # (re)started streaming
                self._last_frame_at[parts.camera] = now
                self._recent_stamps[parts.camera].append(parts.stamp_ns)
                if refusal == "rate_cap" and isinstance(item, _Parts):
                    counters.skipped_rate_cap += _undecoded_messages(item)
                elif refusal is None and isinstance(item, Frame):
                    stored = self._buffer.add(item)
                    counters.stored += int(stored is not None)
                    if stored is not None and self._on_stored is not None:
                        self._on_stored(stored)
                    item = stored or item
                if item is not None:
                    sets = self._sync.add(parts.camera, parts.stamp_ns, item)
                if sets:
                    self._last_set_at = now
                epoch = self._epoch
            for sync_set in sets:
                self._store_set(sync_set, epoch)

    def _store_set(self, sync_set: SyncSet[Frame | _Parts], epoch: int) -> None:
        """Index a set in the buffer; members left undecoded are decoded now, if the set is admitted.
        ``epoch``: the time base the set was made in (a jump confirmed meanwhile makes it stale)."""
        if self._buffer.refuse_rate_capped_set(sync_set.stamps_ns):
            with self._lock:
                self._sets_skipped += 1
            return
        frames: list[Frame] = []
        missing = sync_set.missing
        for camera, item in sync_set.items.items():
            if isinstance(item, _Parts):
                frame = self._decode(item)
                if frame is None:
                    missing += (camera,)
                    continue
                with self._lock:
                    self._counters[camera].decoded_late += _undecoded_messages(item)
                item = frame
            frames.append(item)
        with self._lock:
            if not frames or epoch != self._epoch:
                return
            set_id = self._buffer.add_set(frames, missing=missing)
            if set_id is None:
                self._sets_skipped += 1
            else:
                self._sets_stored += 1

    def _decode(self, parts: _Parts) -> Frame | None:
        """The Frame of ``parts``, or None on bad input (counted by reason and reported)."""
        try:
            rgb = parts.colour if isinstance(parts.colour, np.ndarray) else \
                _decode_with_limit(to_rgb, parts.colour, self._max_decode_pixels)
        except Exception as err:
            self._record_error(parts.camera, "image", err, unexpected=not isinstance(err, ValueError))
            return None
        try:
            depth_m = None if parts.depth is None else _decode_with_limit(to_depth_m, parts.depth,
                                                                           self._max_decode_pixels)
        except Exception as err:
            self._record_error(parts.camera, "depth", err, unexpected=not isinstance(err, ValueError))
            return None
        try:
            return _frame(parts.camera, parts.stamp_ns, rgb, parts.frame_id, depth_m, parts.intrinsics)
        except ValueError as err:
            self._record_error(parts.camera, "pairing", err)
            return None

    # --- diagnostics ------------------------------------------------------------------------------

    def _no_set_problem(self) -> str | None:
        """The WARN text when cameras stream but no set formed for ``no_set_warn_s``, else None."""
        with self._lock:
            now = self._clock()
            streaming = [name for name in self._sync.cameras
                         if (at := self._last_frame_at[name]) is not None and now - at <= self._no_set_warn_s]
            since = max(t for t in (self._streaming_since, self._last_set_at) if t is not None) \
                if self._streaming_since is not None else None
            if len(streaming) < 2 or since is None or now - since <= self._no_set_warn_s:
                return None
            reference = streaming[0]
            offsets = []
            for name in streaming[1:]:
                offset = _phase_offset_ns(self._recent_stamps[name], self._recent_stamps[reference])
                if offset is not None:
                    offsets.append(f"{name} {offset / 1e6:+.0f} ms")
        slop = f" (slop {self._sync.slop_ns / 1e6:g} ms)"
        return (f"cameras stream but no synchronized set formed in the last {self._no_set_warn_s:g} s: "
                f"offsets vs {reference}: {', '.join(offsets)}{slop}")

    def _record_error(
        self, camera: str, kind: str, err: BaseException, *, unexpected: bool = False, locked: bool = False,
        count: bool = True,
    ) -> None:
        """Count a dropped message (``count``, by reason) and warn, at most once per throttle period per
        camera/kind."""
        if locked:
            self._record_error_locked(camera, kind, err, unexpected, count)
        else:
            with self._lock:
                self._record_error_locked(camera, kind, err, unexpected, count)

    def _record_error_locked(
        self, camera: str, kind: str, err: BaseException, unexpected: bool, count: bool
    ) -> None:
        counters = self._counters[camera]
        if count:
            counters.conversion_errors += 1
            reason = str(getattr(err, "reason", type(err).__name__))
            by_reason = counters.rejected_camera_infos if kind == "camera_info" else counters.rejected_images
            by_reason[reason] = by_reason.get(reason, 0) + 1
        counters.last_error = f"{kind}: {type(err).__name__}: {err}"
        key = (camera, kind)
        now = self._clock()
        last = self._last_warning.get(key)
        if last is not None and now - last < self._warn_throttle_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        suppressed = self._suppressed.pop(key, 0)
        self._last_warning[key] = now
        note = f" ({suppressed} more since the last warning)" if suppressed else ""
        what = f"dropped a {kind} message: " if count else ""
        text = f"camera {camera!r}: {what}{type(err).__name__}: {err}{note}"
        if unexpected:
            self._logger.error(text)
        else:
            self._logger.warning(text)


class _Worker:
    """One camera's hand-off queue and the thread that processes it in arrival order (drops the oldest
    when full, counted per kind in the camera's ``queue_overflow``)."""

    def __init__(self, ingest: CameraIngest, camera: str, limit: int) -> None:
        self._ingest, self._camera, self._limit = ingest, camera, limit
        self._queue: deque[tuple[str, Callable[[Any], None], Any]] = deque()
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"oryx-ingest-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, kind: str, process: Callable[[Any], None], msg: Any) -> None:
        with self._changed:
            if self._stopping:
                return
            if len(self._queue) >= self._limit:
                given_up, _, _ = self._queue.popleft()
                with self._ingest._lock:
                    overflow = self._ingest._counters[self._camera].queue_overflow
                    overflow[given_up] = overflow.get(given_up, 0) + 1
            self._queue.append((kind, process, msg))
            self._changed.notify_all()

    def wait_idle(self, deadline: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: (not self._queue and not self._busy) or self._stopping,
                                          timeout=max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        with self._changed:
            self._stopping = True
            self._queue.clear()
            self._changed.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()
                self._changed.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                _, process, msg = self._queue.popleft()
                self._busy = True
            process(msg)  # counts and reports its own errors; never raises


def _default_max_pixels() -> int:
    return int(getattr(image_codec, "MAX_DECODE_PIXELS", 1 << 62))


def _decode_with_limit(decode: Callable[..., Any], msg: Any, max_pixels: int) -> Any:
    # The codec takes max_pixels= once its limits land; until then it decodes without one.
    if "max_pixels" in inspect.signature(decode).parameters:
        return decode(msg, max_pixels=max_pixels)
    return decode(msg)


def _undecoded_messages(parts: _Parts) -> int:
    return int(not isinstance(parts.colour, np.ndarray)) + int(parts.depth is not None)


def _phase_offset_ns(stamps: Sequence[int], reference: Sequence[int]) -> int | None:
    """Signed offset of the newest of ``stamps`` from the nearest ``reference`` stamp."""
    if not stamps or not reference:
        return None
    newest = stamps[-1]
    return min((newest - r for r in reference), key=abs)


def _frame(
    camera: str, stamp_ns: int, rgb: npt.NDArray[np.uint8], frame_id: str, depth_m: npt.NDArray[np.float32] | None,
    intrinsics: CameraIntrinsics | None,
) -> Frame:
    """The Frame, with depth and intrinsics brought to the image size (ValueError when they do not fit)."""
    height, width = rgb.shape[:2]
    if depth_m is not None:
        depth_m = depth_to_colour_size(depth_m, width, height)
    if intrinsics is not None:
        intrinsics = intrinsics_for_size(intrinsics, width, height)
    return Frame(camera=camera, stamp_ns=stamp_ns, rgb=rgb, depth_m=depth_m, intrinsics=intrinsics, frame_id=frame_id)
