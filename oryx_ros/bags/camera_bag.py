"""Write and read multi-camera rosbag2 bags (sqlite3 or mcap) with the ``rosbags`` library (no rclpy).

Topic layout per camera (``namespace`` prefixed), the usual ROS camera-driver names:

    /<camera>/image_raw              sensor_msgs/Image            (or .../image_raw/compressed,
                                                                   sensor_msgs/CompressedImage)
    /<camera>/camera_info            sensor_msgs/CameraInfo
    /<camera>/depth/image_raw        sensor_msgs/Image 16UC1|32FC1 (or .../compressedDepth), registered
                                                                   to the colour camera
    /<camera>/depth/camera_info      sensor_msgs/CameraInfo

Any other message can go into the same bag (``CameraBagWriter.write_message`` with a typestore message,
e.g. ``tf2_msgs/msg/TFMessage``; register custom types in ``writer.typestore`` first).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from oryx_ros.perception.frames import Frame
from oryx_ros.perception.image_codec import depth_m_to_16uc1, numpy_to_compressed, numpy_to_image
from oryx_ros.ros.conversions import (
    camera_info_to_intrinsics,
    header_stamp_ns,
    image_to_frame,
    intrinsics_to_camera_info,
    ns_to_stamp,
)

__all__ = [
    "BagMessage",
    "BagSummary",
    "CameraBagWriter",
    "CameraTopics",
    "bag_topics",
    "camera_topics",
    "read_camera_frames",
    "read_messages",
    "write_camera_bag",
]

_log = logging.getLogger(__name__)

IMAGE: Final = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE: Final = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO: Final = "sensor_msgs/msg/CameraInfo"
STORAGES: Final = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
DEFAULT_STORE: Final = Stores.ROS2_KILTED
Storage = Literal["sqlite3", "mcap"]


@dataclass(frozen=True)
class CameraTopics:
    """The topics of one camera in a bag (see the module docstring)."""

    image: str
    camera_info: str
    depth: str
    depth_info: str


def camera_topics(
    camera: str, *, namespace: str = "", compressed: bool = False, depth_compressed: bool = False
) -> CameraTopics:
    base = f"{namespace.rstrip('/')}/{camera}"
    return CameraTopics(
        image=f"{base}/image_raw" + ("/compressed" if compressed else ""),
        camera_info=f"{base}/camera_info",
        depth=f"{base}/depth/image_raw" + ("/compressedDepth" if depth_compressed else ""),
        depth_info=f"{base}/depth/camera_info",
    )


@dataclass
class BagSummary:
    """What a writer wrote: messages per topic and the span of log times."""

    path: Path
    storage: str
    message_counts: dict[str, int] = field(default_factory=dict)
    start_ns: int | None = None
    end_ns: int | None = None

    @property
    def duration_s(self) -> float:
        return 0.0 if self.start_ns is None or self.end_ns is None else (self.end_ns - self.start_ns) / 1e9


class CameraBagWriter:
    """Context manager writing Frames (colour, optional depth, CameraInfo) and other messages to a bag.

    Frame content is encoded once per frame: colour as ``image_encoding`` (rgb8 or bgr8) or compressed
    (``compression`` = jpeg or png); depth as 16UC1 (millimetres, NaN → 0) or 32FC1 (metres), raw or
    compressedDepth PNG. Log time defaults to the frame stamp.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: Storage = "sqlite3",
        image_encoding: Literal["rgb8", "bgr8"] = "rgb8",
        compression: Literal["jpeg", "png"] | None = None,
        depth_encoding: Literal["16UC1", "32FC1"] = "16UC1",
        depth_compressed: bool = False,
        namespace: str = "",
        typestore: Typestore | None = None,
        write_camera_info: bool = True,
    ) -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        if image_encoding not in ("rgb8", "bgr8"):
            raise ValueError(f"image_encoding must be rgb8 or bgr8, got {image_encoding!r}")
        if compression not in (None, "jpeg", "png"):
            raise ValueError(f"compression must be None, 'jpeg' or 'png', got {compression!r}")
        if depth_encoding not in ("16UC1", "32FC1"):
            raise ValueError(f"depth_encoding must be 16UC1 or 32FC1, got {depth_encoding!r}")
        self.path = Path(path)
        self.storage = storage
        self.image_encoding = image_encoding
        self.compression = compression
        self.depth_encoding = depth_encoding
        self.depth_compressed = depth_compressed
        self.namespace = namespace
        self.write_camera_info = write_camera_info
        self.typestore = typestore if typestore is not None else get_typestore(DEFAULT_STORE)
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Any] = {}
        self._summary = BagSummary(self.path, storage)
        t = self.typestore.types
        self._Image, self._CompressedImage = t[IMAGE], t[COMPRESSED_IMAGE]
        self._CameraInfo, self._Header = t[CAMERA_INFO], t["std_msgs/msg/Header"]
        self._Time = t["builtin_interfaces/msg/Time"]

    def __enter__(self) -> CameraBagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer.close()

    @property
    def summary(self) -> BagSummary:
        return self._summary

    def topics_for(self, camera: str) -> CameraTopics:
        return camera_topics(
            camera, namespace=self.namespace, compressed=self.compression is not None,
            depth_compressed=self.depth_compressed,
        )

    def write_message(self, topic: str, msgtype: str, msg: Any, log_time_ns: int) -> None:
        """Serialise a typestore message (``self.typestore.types[msgtype](...)``) onto ``topic``."""
        connection = self._connection(topic, msgtype)
        self._write(connection, self.typestore.serialize_cdr(msg, msgtype), log_time_ns)

    def write_cdr(self, topic: str, msgtype: str, data: bytes | memoryview, log_time_ns: int) -> None:
        """Write already-serialised CDR bytes (e.g. from ``rclpy.serialization.serialize_message``)."""
        self._write(self._connection(topic, msgtype), data, log_time_ns)

    def _connection(self, topic: str, msgtype: str) -> Any:
        connection = self._connections.get(topic)
        if connection is None:
            connection = self._writer.add_connection(topic, msgtype, typestore=self.typestore)
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise ValueError(f"topic {topic!r} already has type {connection.msgtype}, not {msgtype}")
        return connection

    def _write(self, connection: Any, data: bytes | memoryview, log_time_ns: int) -> None:
        topic = connection.topic
        self._writer.write(connection, int(log_time_ns), data)
        counts = self._summary.message_counts
        counts[topic] = counts.get(topic, 0) + 1
        start, end = self._summary.start_ns, self._summary.end_ns
        self._summary.start_ns = log_time_ns if start is None else min(start, log_time_ns)
        self._summary.end_ns = log_time_ns if end is None else max(end, log_time_ns)

    def write_frame(self, frame: Frame, *, log_time_ns: int | None = None) -> None:
        """Write the colour image, its CameraInfo and, when the frame has depth, depth + CameraInfo."""
        topics = self.topics_for(frame.camera)
        log_time_ns = frame.stamp_ns if log_time_ns is None else log_time_ns
        header = self._Header(stamp=ns_to_stamp(frame.stamp_ns, self._Time),
                              frame_id=frame.frame_id or f"{frame.camera}_optical_frame")
        # CameraInfo first, so a subscriber has the calibration when the first image arrives.
        info = None
        if self.write_camera_info and frame.intrinsics is not None:
            info = intrinsics_to_camera_info(frame.intrinsics, self._CameraInfo, header)
            self.write_message(topics.camera_info, CAMERA_INFO, info, log_time_ns)
        if self.compression is not None:
            msg = numpy_to_compressed(frame.rgb, self.compression, self._CompressedImage, header)
            self.write_message(topics.image, COMPRESSED_IMAGE, msg, log_time_ns)
        else:
            rgb = frame.rgb if self.image_encoding == "rgb8" else np.ascontiguousarray(frame.rgb[..., ::-1])
            msg = numpy_to_image(rgb, self.image_encoding, self._Image, header)
            self.write_message(topics.image, IMAGE, msg, log_time_ns)
        if frame.depth_m is None:
            return
        depth = (
            depth_m_to_16uc1(frame.depth_m)
            if self.depth_encoding == "16UC1"
            else np.asarray(frame.depth_m, dtype=np.float32)
        )
        if self.depth_compressed:
            depth_msg = numpy_to_compressed(depth, "compressedDepth", self._CompressedImage, header)
            self.write_message(topics.depth, COMPRESSED_IMAGE, depth_msg, log_time_ns)
        else:
            depth_msg = numpy_to_image(depth, self.depth_encoding, self._Image, header)
            self.write_message(topics.depth, IMAGE, depth_msg, log_time_ns)
        if info is not None:
            self.write_message(topics.depth_info, CAMERA_INFO, info, log_time_ns)


def write_camera_bag(
    path: str | Path,
    frames: Iterable[Frame],
    *,
    extra_messages: Iterable[tuple[str, str, Any, int]] = (),
    **writer_options: Any,
) -> BagSummary:
    """Write ``frames`` (any objects with Frame's fields) and ``extra_messages`` as
    ``(topic, msgtype, typestore message, log_time_ns)`` to a new bag; see CameraBagWriter for options.

    Messages go in the order given; rosbag2 readers (rosbags, ``ros2 bag play``, oryx-ros replay)
    deliver them ordered by log time.
    """
    with CameraBagWriter(path, **writer_options) as writer:
        for frame in frames:
            writer.write_frame(frame)
        for topic, msgtype, msg, log_time_ns in extra_messages:
            writer.write_message(topic, msgtype, msg, log_time_ns)
    return writer.summary


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    msg: Any


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """``{topic: (msgtype, message count)}`` from the bag's metadata."""
    with Reader(path) as reader:
        counts: Counter[str] = Counter()
        types: dict[str, str] = {}
        for connection in reader.connections:
            counts[connection.topic] += connection.msgcount
            types[connection.topic] = connection.msgtype
        return {topic: (types[topic], counts[topic]) for topic in sorted(types)}


def read_messages(
    path: str | Path, topics: Iterable[str] | None = None, typestore: Typestore | None = None
) -> Iterator[BagMessage]:
    """Deserialised messages of ``topics`` (all when None) in log-time order."""
    typestore = typestore if typestore is not None else get_typestore(DEFAULT_STORE)
    wanted = None if topics is None else set(topics)
    with Reader(path) as reader:
        connections = [c for c in reader.connections if wanted is None or c.topic in wanted]
        if not connections:
            return
        for connection, log_time_ns, raw in reader.messages(connections=connections):
            yield BagMessage(
                connection.topic, connection.msgtype, log_time_ns,
                typestore.deserialize_cdr(raw, connection.msgtype),
            )


def read_camera_frames(
    path: str | Path, cameras: Iterable[str], *, namespace: str = "", typestore: Typestore | None = None
) -> list[Frame]:
    """Frames of ``cameras`` from a bag in CameraBagWriter's layout (raw or compressed topics).

    Depth is paired with colour by identical header stamp; intrinsics are the latest CameraInfo at or
    before the colour message. Colour frames whose depth message is missing are returned without depth.
    """
    names = list(cameras)
    by_topic: dict[str, tuple[str, str]] = {}
    for name in names:
        for compressed in (False, True):
            topics = camera_topics(name, namespace=namespace, compressed=compressed, depth_compressed=compressed)
            by_topic[topics.image] = (name, "image")
            by_topic[topics.depth] = (name, "depth")
            by_topic[topics.camera_info] = (name, "info")
    colour: list[tuple[str, Any]] = []
    depth: dict[tuple[str, int], Any] = {}
    info_at: dict[str, list[tuple[int, Any]]] = {name: [] for name in names}
    for message in read_messages(path, by_topic, typestore):
        name, kind = by_topic[message.topic]
        if kind == "image":
            colour.append((name, message.msg))
        elif kind == "depth":
            depth[(name, header_stamp_ns(message.msg))] = message.msg
        else:
            info_at[name].append((header_stamp_ns(message.msg), message.msg))
    frames = []
    for name, msg in colour:
        stamp_ns = header_stamp_ns(msg)
        infos = [info for t, info in info_at[name] if t <= stamp_ns]
        intrinsics = camera_info_to_intrinsics(infos[-1]) if infos else None
        frames.append(image_to_frame(msg, name, depth_msg=depth.get((name, stamp_ns)), intrinsics=intrinsics))
    frames.sort(key=lambda frame: (frame.stamp_ns, frame.camera))
    return frames
