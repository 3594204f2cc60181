"""The node's side of the long-horizon memory: frames and descriptions in, recalled moments and old frames out.

The RAM buffer stays the fast path for recent frames. Every frame the buffer stores is offered to the
keyframe recorder (non-blocking; it keeps ``memory.keyframe_hz`` per camera, and resizes, encodes and writes
on its own thread); every published description is stored as a memory entry with the scene graph's objects.
A question whose window reaches before the oldest buffered frame, or a recall question ("when did you last
see X?"), gets frames from RAM and disk as they lie: the frames nearest the moments a memory search returns,
plus frames spread evenly over the window (``oryx_ros.memory.selection.choose_frames``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped

from oryx_ros.memory.questions import MemoryLookup, memory_lookup
from oryx_ros.memory.records import MemoryEntry, MemoryObject, Moment, Pose, RecallQuery
from oryx_ros.memory.selection import choose_frames
from oryx_ros.msg import Evidence, EvidenceFrame, MemoryMoment
from oryx_ros.perception.frames import Frame
from oryx_ros.ros.conversions import ns_to_stamp, stamp_to_ns
from oryx_ros.ros.requests import RequestError, escape_prompt_text

NS_PER_S = 1_000_000_000
MAX_RECALL_LIMIT = 100
MOMENTS_IN_PROMPT = 3  # recalled moments written before the question (each a short line)
MOMENT_TEXT_CHARS = 160  # description characters per moment in the prompt
MIN_RELATIVE_SCORE = 0.1  # recalled moments scoring below this share of the best one are not used
RECALL_CANDIDATES = 50  # matches a recall question looks through for the newest relevant ones


@dataclass(frozen=True)
class MemoryFrames:
    """Frames chosen for a question from RAM and memory, and what supports the choice."""

    by_camera: dict[str, list[Frame]]
    sources: dict[int, tuple[str, str]]  # Frame.uid → (EvidenceFrame.SOURCE_*, EvidenceFrame.REASON_*)
    poses: dict[int, Pose | None]  # Frame.uid → robot pose stored with a keyframe
    moments: list[Moment] = field(default_factory=list)
    query: str = ""
    dropped: int = 0  # frames in the window left out by the frame budget


def default_directory(robot: str) -> Path:
    """``$ROS_HOME/oryx_memory/<robot>`` (ROS_HOME defaults to ``~/.ros``, as for ROS logs)."""
    home = Path(os.environ.get("ROS_HOME") or Path.home() / ".ros")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in robot.strip("/")) or "oryx"
    return home / "oryx_memory" / safe


def pose_record(pose: Any, frame_id: str) -> Pose:
    """A 4x4 ``T_world_from_base`` → the store's Pose (position + quaternion xyzw)."""
    from oryx_ros.spatial.geometry import quat_xyzw_from_rotation

    matrix = np.asarray(pose, dtype=np.float64)
    q = quat_xyzw_from_rotation(matrix[:3, :3])
    x, y, z = (float(v) for v in matrix[:3, 3])
    return Pose(x, y, z, float(q[0]), float(q[1]), float(q[2]), float(q[3]), frame_id)


def pose_stamped(pose: Pose, stamp_ns: int) -> PoseStamped:
    message = PoseStamped()
    message.header.frame_id = pose.frame_id
    message.header.stamp = ns_to_stamp(stamp_ns, Time)
    message.pose.position.x, message.pose.position.y, message.pose.position.z = pose.x, pose.y, pose.z
    o = message.pose.orientation
    o.x, o.y, o.z, o.w = pose.qx, pose.qy, pose.qz, pose.qw
    return message


def moment_message(moment: Moment) -> MemoryMoment:
    entry = moment.entry
    message = MemoryMoment(
        stamp=ns_to_stamp(entry.stamp_ns, Time), window_start=ns_to_stamp(entry.window_start_ns, Time),
        window_end=ns_to_stamp(entry.window_end_ns, Time), cameras=list(entry.cameras), description=entry.text,
        score=float(moment.score), has_pose=entry.pose is not None,
        object_labels=[o.label for o in entry.objects],
        object_positions=[Point(x=float(o.x), y=float(o.y), z=float(o.z)) for o in entry.objects],
        objects_frame=entry.objects[0].frame_id if entry.objects else "")
    if entry.pose is not None:
        message.pose = pose_stamped(entry.pose, entry.stamp_ns)
    return message


def _age_text(age_ns: int) -> str:
    seconds = max(0, round(age_ns / NS_PER_S))
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


class MemoryAdapter:
    """Owns the store and the keyframe recorder of one node."""

    def __init__(self, config: Any, robot: str, pose_at: Callable[[int], Pose | None] | None, log: Any) -> None:
        from oryx_ros.memory import KeyframeRecorder, open_memory_store

        self.log = log
        self.robot = config.memory_robot or robot
        self.directory = Path(config.memory_directory) if config.memory_directory else default_directory(self.robot)
        self.url = config.memory_url
        self._pose_at = pose_at
        self.store = open_memory_store(config.memory_url, directory=self.directory, robot=self.robot,
                                       max_bytes=int(config.memory_max_megabytes * 1024 * 1024),
                                       max_age_s=config.memory_max_age_h * 3600.0,
                                       embedding_model_path=config.memory_embedding_model or None)
        self.recorder = KeyframeRecorder(self.store, keyframe_hz=config.memory_keyframe_hz,
                                         max_pixels=config.memory_max_pixels, encoding=config.memory_encoding,
                                         quality=config.memory_quality, pose_at=pose_at)
        self.recalls = 0
        self.questions_from_memory = 0
        stats = self.store.stats()
        where = self.url.split("@")[-1] if self.url else str(self.directory)
        log.info(f"memory: {stats.keyframes} keyframes and {stats.entries} entries found in {where} "
                 f"(robot {self.robot!r})")

    # ---------------------------------------------------------------------------------------- settings
    def apply_settings(self, config: Any) -> None:
        self.recorder.keyframe_hz = config.memory_keyframe_hz
        self.recorder.quality = config.memory_quality
        self.store.set_budgets(int(config.memory_max_megabytes * 1024 * 1024), config.memory_max_age_h * 3600.0)

    def close(self) -> None:
        self.recorder.close(timeout_s=1.0)
        self.store.close()

    # ------------------------------------------------------------------------------------------ writing
    def offer(self, frame: Frame) -> None:
        """Camera threads: a frame the RAM buffer stored (the recorder keeps keyframes of them)."""
        self.recorder.offer(frame)

    def record_description(self, text: str, frames: Sequence[Frame], scene: Any | None) -> None:
        """A published description → a memory entry (with the scene's objects when it has them)."""
        stamps = [frame.stamp_ns for frame in frames]
        if not stamps:
            return
        objects: tuple[MemoryObject, ...] = ()
        if scene is not None and getattr(scene, "available", False):
            objects = tuple(MemoryObject(label=o.label, x=float(o.position[0]), y=float(o.position[1]),
                                         z=float(o.position[2]), frame_id=scene.frame_id)
                            for o in scene.objects)
        end = max(stamps)
        entry = MemoryEntry(stamp_ns=end, window_start_ns=min(stamps), window_end_ns=end,
                            cameras=tuple(dict.fromkeys(frame.camera for frame in frames)), text=text,
                            pose=self._pose_at(end) if self._pose_at else None, objects=objects)
        self.recorder.add_entry(entry)

    # ------------------------------------------------------------------------------------------ reading
    def span_ns(self) -> tuple[int | None, int | None]:
        stats = self.store.stats()
        return stats.oldest_ns, stats.newest_ns

    @staticmethod
    def lookup(question: str) -> MemoryLookup:
        return memory_lookup(question)

    def recall(self, request: Any, max_query_chars: int) -> list[Moment]:
        """srv/Recall → moments (raises RequestError naming the field)."""
        query = request.query
        if len(query) > max_query_chars:
            raise RequestError(f"query: {len(query)} characters, the limit is {max_query_chars} "
                               "(ask.max_question_chars)", field="query")
        start = stamp_to_ns(request.start) or None
        end = stamp_to_ns(request.end) or None
        if start is not None and end is not None and start > end:
            raise RequestError("start: start is after end", field="start")
        position = None
        radius = float(request.radius_m)
        if request.use_position:
            values = (request.position.x, request.position.y, request.position.z, radius)
            if not all(math.isfinite(v) for v in values):
                raise RequestError("position: position and radius_m must be finite", field="position")
            if radius <= 0:
                raise RequestError("radius_m: must be > 0 with use_position", field="radius_m")
            position = (float(request.position.x), float(request.position.y), float(request.position.z))
        limit = int(request.limit) or 10
        if limit > MAX_RECALL_LIMIT:
            raise RequestError(f"limit: at most {MAX_RECALL_LIMIT}, got {limit}", field="limit")
        self.recalls += 1
        return self.store.recall(RecallQuery(text=query, start_ns=start, end_ns=end, position=position,
                                             radius_m=radius if position else 0.0,
                                             cameras=tuple(dict.fromkeys(request.cameras)), limit=limit))

    def frames_for_question(self, lookup: MemoryLookup, cameras: Sequence[str], start_ns: int, end_ns: int,
                            ram_frames: Mapping[str, Sequence[Frame]], budget: int, recall_moments: int,
                            relevance_share: float) -> MemoryFrames:
        """Frames for a question over [start_ns, end_ns]: RAM frames where RAM has them, keyframes from the
        store before that, chosen by relevance to the recalled moments plus even coverage; ``budget`` frames
        at most, spread over the cameras."""
        moments: list[Moment] = []
        if lookup.text and recall_moments > 0:
            # A recall question ("when did you last see X?") wants the newest good matches, not only the best
            # scored: search wider, keep the relevant ones, then take the newest.
            limit = max(recall_moments, RECALL_CANDIDATES) if lookup.recall else recall_moments
            moments = self.store.recall(RecallQuery(text=lookup.text, start_ns=start_ns, end_ns=end_ns,
                                                    cameras=tuple(cameras), limit=limit))
            # A moment matching one common word of several scores far below the best: no evidence of it.
            best = max((m.score for m in moments), default=0.0)
            moments = [m for m in moments if m.score >= MIN_RELATIVE_SCORE * best]
            if lookup.recall:
                moments = sorted(moments, key=lambda m: -m.entry.stamp_ns)[:recall_moments]
        by_camera: dict[str, list[Frame]] = {}
        sources: dict[int, tuple[str, str]] = {}
        poses: dict[int, Pose | None] = {}
        dropped = from_memory = 0
        shares = _shares(len(cameras), budget)
        for camera, share in zip(cameras, shares, strict=True):
            ram = sorted(ram_frames.get(camera, ()), key=lambda f: f.stamp_ns)
            ram_start = ram[0].stamp_ns if ram else end_ns + 1
            stored = self.store.keyframes([camera], start_ns, min(end_ns, ram_start - 1))  # RAM has the rest
            candidates: list[Any] = [*stored, *ram]
            if not candidates:
                by_camera[camera] = []
                continue
            stamps = [c.stamp_ns for c in candidates]
            mine = [m for m in moments if not m.entry.cameras or camera in m.entry.cameras]
            picks = choose_frames(stamps, mine, share, relevance_share=relevance_share)
            dropped += len(candidates) - len(picks)
            chosen: list[Frame] = []
            for index, reason in picks:
                item = candidates[index]
                reason = EvidenceFrame.REASON_RETRIEVED if reason == "retrieved" else EvidenceFrame.REASON_COVERAGE
                if isinstance(item, Frame):
                    frame, source, pose = item, EvidenceFrame.SOURCE_BUFFER, None
                else:
                    frame = Frame(camera=camera, stamp_ns=item.stamp_ns, rgb=self.store.keyframe_rgb(item.id))
                    source, pose = EvidenceFrame.SOURCE_MEMORY, item.pose
                    from_memory += 1
                sources[frame.uid] = (source, reason)
                poses[frame.uid] = pose
                chosen.append(frame)
            by_camera[camera] = sorted(chosen, key=lambda f: f.stamp_ns)
        if not any(by_camera.values()):
            raise RequestError(f"cameras: no frames of {list(cameras)} in the window, neither buffered nor in "
                               "memory", field="cameras")
        if from_memory:
            self.questions_from_memory += 1
        return MemoryFrames(by_camera={c: f for c, f in by_camera.items() if f}, sources=sources, poses=poses,
                            moments=moments, query=lookup.text, dropped=dropped)

    @staticmethod
    def prompt_with_moments(question: str, moments: Sequence[Moment], newest_ns: int) -> str:
        """The question with the best recalled moments written before it (when, which cameras, what)."""
        if not moments:
            return question
        lines = ["Memory search results (most relevant first):"]
        for rank, moment in enumerate(moments[:MOMENTS_IN_PROMPT], start=1):
            entry = moment.entry
            text, _ = escape_prompt_text(" ".join(entry.text.split())[:MOMENT_TEXT_CHARS])
            objects = ", ".join(dict.fromkeys(o.label for o in entry.objects))
            lines.append(f"[{rank}] {_age_text(newest_ns - entry.stamp_ns)} before the newest frame, cameras "
                         f"{', '.join(entry.cameras)}: {text}" + (f" (objects: {objects})" if objects else ""))
        return "\n".join(lines) + "\n" + question

    def diagnostics(self) -> dict[str, Any]:
        stats = self.store.stats()
        values: dict[str, Any] = {
            "memory store": self.url.split("@")[-1] if self.url else str(self.directory / "memory.sqlite3"),
            "memory keyframes": stats.keyframes, "memory entries": stats.entries,
            "memory bytes": stats.bytes,
            "memory span s": round((stats.newest_ns - stats.oldest_ns) / NS_PER_S, 1)
            if stats.oldest_ns is not None and stats.newest_ns is not None else 0.0,
            "memory evicted keyframes": stats.evicted_keyframes, "memory disk full events": stats.disk_full_events,
            "memory recalls": self.recalls, "memory questions answered from disk": self.questions_from_memory,
        }
        values.update({f"memory recorder {name}": value for name, value in self.recorder.counters().items()})
        return values


def evidence_message(used: Mapping[str, Sequence[Frame]], chosen: MemoryFrames | None,
                     pose_at: Callable[[int], Pose | None] | None, dropped: int = 0) -> Evidence:
    """Evidence for the frames the model used (by camera), oldest first, with the chosen frames' sources."""
    frames = sorted((frame for camera_frames in used.values() for frame in camera_frames),
                    key=lambda f: (f.stamp_ns, f.camera))
    evidence = Evidence(frames_dropped=dropped)
    for frame in frames:
        source, reason = (chosen.sources.get(frame.uid) if chosen else None) or (
            EvidenceFrame.SOURCE_BUFFER, EvidenceFrame.REASON_COVERAGE)
        pose = chosen.poses.get(frame.uid) if chosen else None
        if pose is None and pose_at is not None:
            pose = pose_at(frame.stamp_ns)
        item = EvidenceFrame(camera=frame.camera, stamp=ns_to_stamp(frame.stamp_ns, Time), source=source,
                             reason=reason, has_pose=pose is not None)
        if pose is not None:
            item.pose = pose_stamped(pose, frame.stamp_ns)
        evidence.frames.append(item)
    if chosen is not None:
        evidence.moments = [moment_message(m) for m in chosen.moments]
        evidence.memory_query = chosen.query
        evidence.frames_from_memory = sum(1 for f in evidence.frames if f.source == EvidenceFrame.SOURCE_MEMORY)
    return evidence


def _shares(cameras: int, budget: int) -> list[int]:
    """``budget`` frames spread over ``cameras`` (at least one each)."""
    base, extra = divmod(max(budget, cameras), cameras)
    return [base + (1 if i < extra else 0) for i in range(cameras)]

