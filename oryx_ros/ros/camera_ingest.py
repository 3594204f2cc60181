"""Camera subscriptions → Frames → synchronised sets → FrameBuffer, for a node the caller owns.

``CameraIngest`` is constructed by the node with its camera configs and a FrameBuffer. Per camera it
subscribes to the colour topic (raw Image or CompressedImage), optionally CameraInfo (cached, converted
once per change) and a registered depth topic (paired with colour by stamp). Each message is converted
to numpy once, at this boundary; complete frames go through the synchronizer (a strategy object,
message_filters' approximate policy by default) and every set goes into the buffer with ``add_set``.

Waiting, all bounded in stamp time and counted: a colour image waits up to ``depth_wait_ns`` for its
depth; before a camera's first CameraInfo its frames wait up to ``camera_info_wait_ns`` for it (DDS
does not order messages across topics, so the first images often beat the first CameraInfo).
``flush()`` releases whatever still waits (end of a bag, shutdown).

Decoding is skipped for messages the buffer's rate cap is certain to refuse (a 30 fps camera into a
2 Hz cap would otherwise decode 15 images per one it keeps): such a message goes on undecoded, through
the same pairing and synchronizer, so every set is made exactly as before, and its set is refused by
its stamps alone. Counted per camera as ``skipped_rate_cap``; see ``_rate_capped`` for why it is safe.

A bad message never raises out of a callback: it is counted per camera and reported as a warning at
most once per ``warn_throttle_s`` per camera and kind (with the number suppressed in between).
``stats()`` and ``diagnostic_status()`` give the counters for /diagnostics.

Threading: the callbacks share one MutuallyExclusiveCallbackGroup by default, and the pairing,
synchronizer and buffer hand-off also run under a lock, so a MultiThreadedExecutor or a custom
callback group cannot interleave them. Conversion happens outside that lock (except the rare late decode
of a skipped message, see ``_rate_capped``).
"""

from __future__ import annotations

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
from oryx_ros.perception.frame_buffer import FrameBuffer
from oryx_ros.perception.frames import CameraIntrinsics, Frame
from oryx_ros.perception.image_codec import to_depth_m, to_rgb
from oryx_ros.perception.sync import (
    ApproximateTimeSynchronizer,
    ExactTimeSynchronizer,
    SynchronizerBase,
    SyncSet,
    SyncStats,
)
from oryx_ros.ros.conversions import (
    CameraInfoError,
    camera_info_to_intrinsics,
    depth_to_colour_size,
    header_stamp_ns,
    intrinsics_for_size,
)

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
_PENDING_LIMIT: Final = 30  # per camera and kind; beyond it the oldest is given up (counted)

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

    ``frames`` counts frames handed to the synchronizer, decoded or not. ``skipped_rate_cap`` counts
    colour and depth messages not decoded on arrival because the buffer's rate cap will refuse their set;
    ``decoded_late`` those of them decoded after all, when the set was made, because the buffer no longer
    refused it (expected to stay 0: see ``CameraIngest._rate_capped``).
    """

    images: int = 0
    depth_images: int = 0
    camera_infos: int = 0
    frames: int = 0
    skipped_rate_cap: int = 0
    decoded_late: int = 0
    conversion_errors: int = 0
    colour_without_depth: int = 0
    depth_unmatched: int = 0
    frames_without_camera_info: int = 0
    pending_cleared_on_time_jump: int = 0
    last_stamp_ns: int | None = None
    last_error: str = ""


@dataclass
class IngestStats:
    cameras: dict[str, CameraCounters]
    sync: SyncStats
    sets_stored: int
    sets_skipped: int
    buffer_frames: int
    buffer_bytes: int
    buffer_drops: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Undecoded:
    """A colour or depth message left undecoded: the buffer's rate cap will refuse its set."""

    msg: Any


_Colour = npt.NDArray[np.uint8] | _Undecoded
_Depth = npt.NDArray[np.float32] | _Undecoded


@dataclass(frozen=True)
class _UndecodedFrame:
    """Goes through the synchronizer in place of a Frame when its colour or depth was not decoded."""

    camera: str
    stamp_ns: int
    colour: _Colour
    depth: _Depth | None
    frame_id: str
    intrinsics: CameraIntrinsics | None  # the camera's, not yet brought to the image size


@dataclass
class _Pending:
    colour: deque[tuple[int, _Colour, str]] = field(default_factory=deque)
    depth: deque[tuple[int, _Depth]] = field(default_factory=deque)
    newest_stamp_ns: int | None = None
    # Complete frames (stamp, rgb, frame_id, depth) held until the first CameraInfo.
    awaiting_info: deque[tuple[int, _Colour, str, _Depth | None]] = field(default_factory=deque)
    info_given_up: bool = False


class CameraIngest:
    """Subscribes to the configured cameras on ``node`` and fills ``buffer`` with synchronised sets."""

    def __init__(
        self,
        node: Node,
        cameras: Sequence[CameraConfig],
        buffer: FrameBuffer,
        *,
        synchronizer: SynchronizerBase[Frame] | None = None,
        qos: QoSProfile = qos_profile_sensor_data,
        camera_info_qos: QoSProfile | None = None,
        callback_group: CallbackGroup | None = None,
        depth_slop_ns: int = DEFAULT_DEPTH_SLOP_NS,
        depth_wait_ns: int = DEFAULT_DEPTH_WAIT_NS,
        camera_info_wait_ns: int = DEFAULT_CAMERA_INFO_WAIT_NS,
        warn_throttle_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        skip_rate_capped: bool = True,
    ) -> None:
        """
        Args:
            node: the node that owns the subscriptions (and whose logger reports problems).
            cameras: camera configs; names must be unique.
            buffer: where synchronised sets go.
            synchronizer: strategy over the camera names; default ApproximateTimeSynchronizer with 20 ms
                slop, queue 10, dead-camera timeout 1 s and the buffer's time-jump threshold.
            qos: for image and depth subscriptions (sensor-data QoS by default; use RELIABLE with a deep
                history to receive every message of a replayed bag).
            camera_info_qos: for CameraInfo (defaults to ``qos``).
            callback_group: for all subscriptions (default: one mutually exclusive group).
            depth_slop_ns: largest colour/depth stamp difference that still pairs.
            depth_wait_ns: how long (stamp time) a colour image waits for its depth.
            camera_info_wait_ns: how long (stamp time) frames of a camera with a CameraInfo topic wait
                for its first CameraInfo before they go on without intrinsics.
            warn_throttle_s: at most one warning per camera and kind in this many seconds.
            clock: monotonic seconds, for warning throttling.
            skip_rate_capped: leave undecoded the messages whose set the buffer's rate cap will refuse
                (no effect without a cap); False decodes every message (the stored sets are the same).
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
        # Items are Frames, or _UndecodedFrames for messages left undecoded (see _rate_capped).
        self._sync: SynchronizerBase[Any] = synchronizer or ApproximateTimeSynchronizer(
            names, DEFAULT_QUEUE_SIZE, DEFAULT_SLOP_NS,
            dead_camera_timeout_ns=DEFAULT_DEAD_CAMERA_TIMEOUT_NS,
            time_jump_threshold_ns=buffer.time_jump_threshold_ns,
        )
        if set(self._sync.cameras) != set(names):
            raise ValueError(f"synchronizer cameras {self._sync.cameras} differ from the configs {names}")
        self._depth_slop_ns = int(depth_slop_ns)
        self._depth_wait_ns = int(depth_wait_ns)
        self._camera_info_wait_ns = int(camera_info_wait_ns)
        self._warn_throttle_s = float(warn_throttle_s)
        self._clock = clock
        self._skip_rate_capped = bool(skip_rate_capped)
        self._max_set_lead_ns = _max_set_lead_ns(self._sync)
        self._lock = threading.Lock()
        self._counters = {name: CameraCounters() for name in names}
        self._intrinsics: dict[str, CameraIntrinsics | None] = dict.fromkeys(names)
        self._info_key: dict[str, tuple[Any, ...] | None] = dict.fromkeys(names)
        self._pending = {name: _Pending() for name in names}
        self._sets_stored = 0
        self._errors_reported = 0
        self._sets_skipped = 0
        self._last_warning: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        group = callback_group or MutuallyExclusiveCallbackGroup()
        info_qos = camera_info_qos or qos
        self._subscriptions = []
        for camera in cameras:
            self._subscriptions.append(node.create_subscription(
                CompressedImage if camera.compressed else Image, camera.image_topic,
                self._callback(camera.name, "image", self._on_image), qos, callback_group=group,
            ))
            if camera.camera_info_topic:
                self._subscriptions.append(node.create_subscription(
                    CameraInfo, camera.camera_info_topic,
                    self._callback(camera.name, "camera_info", self._on_camera_info), info_qos,
                    callback_group=group,
                ))
            if camera.depth_topic:
                self._subscriptions.append(node.create_subscription(
                    CompressedImage if camera.depth_compressed else Image, camera.depth_topic,
                    self._callback(camera.name, "depth", self._on_depth), qos, callback_group=group,
                ))

    # --- public -----------------------------------------------------------------------------------

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._configs)

    @property
    def synchronizer(self) -> SynchronizerBase[Any]:
        return self._sync

    def flush(self) -> None:
        """Release frames still waiting for depth or CameraInfo (e.g. at the end of a bag, at shutdown)."""
        with self._lock:
            for name, pending in self._pending.items():
                while pending.colour:
                    self._counters[name].colour_without_depth += 1
                    self._emit(name, *pending.colour.popleft(), None)
                while pending.awaiting_info:
                    self._finish(name, *pending.awaiting_info.popleft())

    def destroy(self) -> None:
        """Remove the subscriptions from the node."""
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()

    def stats(self) -> IngestStats:
        with self._lock:
            counters = {name: CameraCounters(**vars(c)) for name, c in self._counters.items()}
            sync = self._sync.stats()
            sets_stored, sets_skipped = self._sets_stored, self._sets_skipped
        return IngestStats(
            cameras=counters, sync=sync, sets_stored=sets_stored, sets_skipped=sets_skipped,
            buffer_frames=len(self._buffer), buffer_bytes=self._buffer.total_bytes(),
            buffer_drops=self._buffer.drop_counts(),
        )

    def diagnostic_status(self) -> tuple[int, str, list[tuple[str, str]]]:
        """``(level, message, key/values)`` for a diagnostic_msgs/DiagnosticStatus (level 0 OK, 1 WARN).

        WARN while a camera is dead, or when messages were dropped as malformed since the previous call
        (so one bad message does not keep the status at WARN forever; the totals are in the values).
        """
        stats = self.stats()
        values: list[tuple[str, str]] = [
            ("sets stored", str(stats.sets_stored)),
            ("sets skipped by buffer", str(stats.sets_skipped)),
            ("full sets", str(stats.sync.full_sets)),
            ("partial sets", str(stats.sync.partial_sets)),
            ("dead cameras", ",".join(stats.sync.dead_cameras)),
            ("buffer frames", str(stats.buffer_frames)),
            ("buffer bytes", str(stats.buffer_bytes)),
        ]
        values += [(f"buffer dropped {reason}", str(n)) for reason, n in stats.buffer_drops.items()]
        for name, c in stats.cameras.items():
            values += [(f"{name} {key}", str(value)) for key, value in vars(c).items()]
            values += [
                (f"{name} sync dropped (queue overflow)", str(stats.sync.dropped_overflow.get(name, 0))),
            ]
        problems = []
        if stats.sync.dead_cameras:
            problems.append(f"dead cameras: {', '.join(stats.sync.dead_cameras)}")
        errors = sum(c.conversion_errors for c in stats.cameras.values())
        with self._lock:
            new_errors, self._errors_reported = errors - self._errors_reported, errors
        if new_errors:
            problems.append(f"{new_errors} conversion errors since the last report")
        level = DIAG_WARN if problems else DIAG_OK
        return level, "; ".join(problems) or "all cameras streaming", values

    # --- callbacks --------------------------------------------------------------------------------

    def _callback(self, camera: str, kind: str, handler: Callable[[str, Any], None]) -> Callable[[Any], None]:
        def callback(msg: Any) -> None:
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
        intrinsics = camera_info_to_intrinsics(msg)  # only when the calibration changed
        with self._lock:
            self._intrinsics[camera], self._info_key[camera] = intrinsics, key
            pending = self._pending[camera]
            while pending.awaiting_info:
                self._finish(camera, *pending.awaiting_info.popleft())

    def _on_image(self, camera: str, msg: Any) -> None:
        stamp_ns = header_stamp_ns(msg)
        skip = self._rate_capped(camera, stamp_ns, pairing_slop_ns=0)
        with self._lock:
            self._counters[camera].images += 1
            self._counters[camera].skipped_rate_cap += int(skip)
        rgb: _Colour = _Undecoded(msg) if skip else to_rgb(msg)
        config = self._configs[camera]
        frame_id = config.frame_id if config.frame_id is not None else str(msg.header.frame_id)
        with self._lock:
            if config.depth_topic is None:
                self._emit(camera, stamp_ns, rgb, frame_id, None)
                return
            pending = self._pending[camera]
            self._advance(camera, stamp_ns)
            match = self._take_nearest(pending.depth, stamp_ns)
            if match is not None:
                self._emit(camera, stamp_ns, rgb, frame_id, match)
                return
            pending.colour.append((stamp_ns, rgb, frame_id))
            if len(pending.colour) > _PENDING_LIMIT:
                self._counters[camera].colour_without_depth += 1
                self._emit(camera, *pending.colour.popleft(), None)

    def _on_depth(self, camera: str, msg: Any) -> None:
        stamp_ns = header_stamp_ns(msg)
        # Depth pairs with colour up to depth_slop away, and the frame takes the colour's stamp.
        skip = self._rate_capped(camera, stamp_ns, pairing_slop_ns=self._depth_slop_ns)
        with self._lock:
            self._counters[camera].depth_images += 1
            self._counters[camera].skipped_rate_cap += int(skip)
        depth_m: _Depth = _Undecoded(msg) if skip else to_depth_m(msg)
        with self._lock:
            pending = self._pending[camera]
            self._advance(camera, stamp_ns)
            best = None
            for index, (colour_stamp, _, _) in enumerate(pending.colour):
                gap = abs(colour_stamp - stamp_ns)
                if gap <= self._depth_slop_ns and (best is None or gap < best[1]):
                    best = (index, gap)
            if best is not None:
                colour_stamp, rgb, frame_id = pending.colour[best[0]]
                del pending.colour[best[0]]
                # Colour that came before the matched one will not get depth any more: keep stamp order.
                while pending.colour and pending.colour[0][0] < colour_stamp:
                    self._counters[camera].colour_without_depth += 1
                    self._emit(camera, *pending.colour.popleft(), None)
                self._emit(camera, colour_stamp, rgb, frame_id, depth_m)
                return
            pending.depth.append((stamp_ns, depth_m))
            if len(pending.depth) > _PENDING_LIMIT:
                pending.depth.popleft()
                self._counters[camera].depth_unmatched += 1

    def _rate_capped(self, camera: str, stamp_ns: int, *, pairing_slop_ns: int) -> bool:
        """Whether every set a message of ``camera`` stamped ``stamp_ns`` can end up in is certain to be
        refused by the buffer's rate cap, so that decoding it would be wasted.

        Why it is safe: a set's stamp is its newest member's (sync.SyncSet.stamp_ns) and the
        synchronizer groups stamps less than its slop apart, so a frame stamped t lands in a set stamped
        t .. t + _max_set_lead_ns (a depth image becomes part of a colour frame up to ``pairing_slop_ns``
        away). When all of that lies in ``FrameBuffer.rate_capped_span_ns`` (newest stored set + the
        camera's minimum interval; a set is capped by its strictest member), ``add_set`` would refuse the
        set. The message still goes on, undecoded, so pairing and matching are exactly as with decoding,
        and when its set is made ``_store`` has the buffer confirm the refusal by stamps alone
        (``skip_rate_capped_set``, counted as ``add_set`` counts it). Should the buffer no longer refuse
        it (the newest set evicted or cleared meanwhile), the message is decoded then (``decoded_late``):
        no set that would have been stored is lost. Never without a cap (the span is None). Not caught:
        a malformed message skipped this way, since it is never decoded.
        """
        if not self._skip_rate_capped or self._max_set_lead_ns is None:
            return False
        span = self._buffer.rate_capped_span_ns(camera)
        if span is None:
            return False
        start_ns, end_ns = span
        return start_ns <= stamp_ns - pairing_slop_ns and stamp_ns + pairing_slop_ns + self._max_set_lead_ns < end_ns

    # --- internals (lock held) --------------------------------------------------------------------

    def _take_nearest(self, queue: deque[tuple[int, _Depth]], stamp_ns: int) -> _Depth | None:
        best = None
        for index, (stamp, _) in enumerate(queue):
            gap = abs(stamp - stamp_ns)
            if gap <= self._depth_slop_ns and (best is None or gap < best[1]):
                best = (index, gap)
        if best is None:
            return None
        depth_m = queue[best[0]][1]
        del queue[best[0]]
        return depth_m

    def _advance(self, camera: str, stamp_ns: int) -> None:
        """Give up on pending items that are too old to pair, given a new stamp from this camera."""
        pending, counters = self._pending[camera], self._counters[camera]
        newest = pending.newest_stamp_ns
        threshold = self._buffer.time_jump_threshold_ns
        if newest is not None and threshold is not None and stamp_ns < newest - threshold:
            counters.pending_cleared_on_time_jump += len(pending.colour) + len(pending.depth)
            pending.colour.clear()
            pending.depth.clear()
            newest = None
        pending.newest_stamp_ns = stamp_ns if newest is None else max(newest, stamp_ns)
        horizon = pending.newest_stamp_ns - self._depth_wait_ns
        while pending.colour and pending.colour[0][0] < horizon:
            counters.colour_without_depth += 1
            self._emit(camera, *pending.colour.popleft(), None)
        while pending.depth and pending.depth[0][0] < horizon:
            pending.depth.popleft()
            counters.depth_unmatched += 1

    def _emit(self, camera: str, stamp_ns: int, rgb: _Colour, frame_id: str, depth_m: _Depth | None) -> None:
        """A complete colour (+ depth) frame: on to the synchronizer, or held for the first CameraInfo."""
        pending = self._pending[camera]
        waits_for_info = (
            self._configs[camera].camera_info_topic is not None
            and self._intrinsics[camera] is None
            and not pending.info_given_up
        )
        if not waits_for_info:
            self._finish(camera, stamp_ns, rgb, frame_id, depth_m)
            return
        pending.awaiting_info.append((stamp_ns, rgb, frame_id, depth_m))
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
                self._finish(camera, *pending.awaiting_info.popleft())

    def _finish(self, camera: str, stamp_ns: int, rgb: _Colour, frame_id: str, depth_m: _Depth | None) -> None:
        counters = self._counters[camera]
        intrinsics = self._intrinsics[camera]
        item: Frame | _UndecodedFrame
        if isinstance(rgb, _Undecoded) or isinstance(depth_m, _Undecoded):
            item = _UndecodedFrame(camera, stamp_ns, rgb, depth_m, frame_id, intrinsics)
        else:
            try:
                item = _frame(camera, stamp_ns, rgb, frame_id, depth_m, intrinsics)
            except ValueError as err:
                self._record_error(camera, "pairing", err, locked=True)
                return
        if intrinsics is None:
            counters.frames_without_camera_info += 1
        counters.frames += 1
        counters.last_stamp_ns = stamp_ns
        for sync_set in self._sync.add(camera, stamp_ns, item):
            self._store(sync_set)

    def _store(self, sync_set: SyncSet[Frame | _UndecodedFrame]) -> None:
        """Hand a set to the buffer; one with undecoded members is refused by its stamps alone."""
        items, missing = dict(sync_set.items), sync_set.missing
        if any(isinstance(item, _UndecodedFrame) for item in items.values()):
            if self._buffer.skip_rate_capped_set(sync_set.stamps_ns):
                self._sets_skipped += 1
                return
            for camera, item in list(items.items()):  # the buffer would store it after all: decode now
                if isinstance(item, _UndecodedFrame):
                    frame = self._decode_late(item)
                    if frame is None:
                        del items[camera]
                        missing += (camera,)
                    else:
                        items[camera] = frame
            if not items:
                return
        set_id = self._buffer.add_set(items.values(), missing=missing)
        if set_id is None:
            self._sets_skipped += 1
        else:
            self._sets_stored += 1

    def _decode_late(self, item: _UndecodedFrame) -> Frame | None:
        """Decode what was left undecoded (under the lock: rare, see _rate_capped); None on bad input."""
        parts = (item.colour, item.depth)
        try:
            rgb = to_rgb(item.colour.msg) if isinstance(item.colour, _Undecoded) else item.colour
            depth_m = to_depth_m(item.depth.msg) if isinstance(item.depth, _Undecoded) else item.depth
            frame = _frame(item.camera, item.stamp_ns, rgb, item.frame_id, depth_m, item.intrinsics)
        except Exception as err:  # bad input surfaces here instead of in the callback: same handling
            self._record_error(item.camera, "image", err, unexpected=not isinstance(err, ValueError), locked=True)
            return None
        self._counters[item.camera].decoded_late += sum(isinstance(part, _Undecoded) for part in parts)
        return frame

    def _record_error(
        self, camera: str, kind: str, err: BaseException, *, unexpected: bool = False, locked: bool = False,
        count: bool = True,
    ) -> None:
        """Count a dropped message (``count``) and warn, at most once per throttle period per camera/kind."""
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


def _max_set_lead_ns(synchronizer: SynchronizerBase[Any]) -> int | None:
    """Most a set's stamp (its newest member's) can exceed a member's stamp; None when not known."""
    if len(synchronizer.cameras) == 1 or isinstance(synchronizer, ExactTimeSynchronizer):
        return 0
    if isinstance(synchronizer, ApproximateTimeSynchronizer):
        return synchronizer.slop_ns - 1  # a set's stamps span strictly less than the slop
    return None
