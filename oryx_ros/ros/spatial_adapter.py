"""The node's side of spatial requests: camera mounts and robot poses in, scene + marked views out.

Owns the instance tracker, so ids stay stable across successive requests while objects stay put, and the
recent robot poses (nav_msgs/Odometry or geometry_msgs/PoseStamped) when a pose topic is configured.

Every camera's newest frame goes to the scene: RGB-D views are fused, a view without depth gets marks by
projection when its mount (``cameras.<name>.mount``, set to something other than the default) and its
CameraInfo are known, and is listed as left out with the reason otherwise. With ``spatial.model_labels``
the marked objects are named by the model (:meth:`SpatialAdapter.label_question`, then
:meth:`SpatialAdapter.with_labels`), the colour word staying as the fallback.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from oryx_ros.model.engine import VisualInput
from oryx_ros.perception.frames import Frame
from oryx_ros.perception.image_codec import numpy_to_image
from oryx_ros.ros.conversions import stamp_to_ns
from oryx_ros.ros.parameters import CAMERA_PARAMETERS, NodeConfig
from oryx_ros.spatial.correspondences import InstanceTracker
from oryx_ros.spatial.geometry import pose_from_xyz_quat
from oryx_ros.spatial.prompting import label_question, parse_model_relations, parse_object_labels
from oryx_ros.spatial.relations import SpatialRelation
from oryx_ros.spatial.scene_graph import (
    SceneInputError,
    SceneParams,
    SceneResult,
    build_scene,
    mentioned_ids,
    with_model_labels,
)

Pose = npt.NDArray[np.float64]
POSE_HISTORY = 2000  # poses kept for matching frame stamps (~40 s of 50 Hz odometry)
# cameras.<name>.mount left at its default (identity: the optical z axis pointing up from the base origin)
# means "not given": an RGB-only view is then left out rather than marked by a wrong projection.
DEFAULT_MOUNT = tuple(float(v) for v in CAMERA_PARAMETERS["mount"][0])
LABEL_TOKENS_PER_MARK = 8  # "12: office chair\n" is about 6 tokens


class SpatialAdapter:
    def __init__(self, config: NodeConfig, log: Any) -> None:
        # mount: x y z qx qy qz qw of the camera optical frame in the base frame (ROS quaternion order)
        self.T_base_from_cam = {name: pose_from_xyz_quat(m[:3], m[3:]) for name, m in config.mounts.items()}
        self.mount_given = {name: tuple(m) != DEFAULT_MOUNT for name, m in config.mounts.items()}
        self.params = SceneParams()
        self.model_labels = "auto"
        self.tiny_model = not config.model_path  # the bundled tiny random model: its answers are noise
        self.label_questions = 0  # label generations run (diagnostics)
        self.apply_settings(config)
        self.tracker = InstanceTracker()
        self.log = log
        self._pose_stamps: list[int] = []
        self._poses: list[Pose] = []
        self._lock = threading.Lock()

    def apply_settings(self, config: NodeConfig) -> None:
        """The run-time ``spatial.*`` parameters (at start and whenever one is set)."""
        params = self.params
        relations = dataclasses.replace(params.relations, per_object=config.relations_per_object,
                                        inverse=config.relations_inverse)
        self.params = dataclasses.replace(
            params, base_frame=config.base_frame, viewpoint_camera=config.viewpoint, relations=relations,
            marks=dataclasses.replace(params.marks, max_marks=config.max_objects))
        self.model_labels = config.model_labels

    @property
    def labels_enabled(self) -> bool:
        """Whether spatial requests ask the model to name the marked objects (``spatial.model_labels``)."""
        return self.model_labels == "on" or (self.model_labels == "auto" and not self.tiny_model)

    # ------------------------------------------------------------------------------------------ poses
    def subscribe_pose(self, node: Node, topic: str, pose_type: str) -> Any:
        """Subscribe ``node`` to the robot's poses on ``topic`` (``pose_type`` odometry or pose)."""
        if pose_type == "odometry":
            from nav_msgs.msg import Odometry

            return node.create_subscription(Odometry, topic, lambda m: self._add_pose(m.header, m.pose.pose), 50)
        from geometry_msgs.msg import PoseStamped

        return node.create_subscription(PoseStamped, topic, lambda m: self._add_pose(m.header, m.pose), 50)

    def _add_pose(self, header: Header, pose: Any) -> None:
        p, q = pose.position, pose.orientation
        T_world_from_base = pose_from_xyz_quat((p.x, p.y, p.z), (q.x, q.y, q.z, q.w))
        stamp_ns = stamp_to_ns(header.stamp)
        with self._lock:
            if header.frame_id and header.frame_id != self.params.world_frame:
                self.params = dataclasses.replace(self.params, world_frame=header.frame_id)
            index = bisect.bisect(self._pose_stamps, stamp_ns)
            self._pose_stamps.insert(index, stamp_ns)
            self._poses.insert(index, T_world_from_base)
            if len(self._poses) > POSE_HISTORY:
                del self._pose_stamps[0], self._poses[0]

    def pose_at(self, stamp_ns: int, max_gap_ns: int) -> tuple[Pose, str] | None:
        """(T_world_from_base, world frame) of the pose nearest ``stamp_ns``, None when none is that close."""
        with self._lock:
            i = bisect.bisect(self._pose_stamps, stamp_ns)
            near = [j for j in (i - 1, i) if 0 <= j < len(self._poses)]
            if not near:
                return None
            nearest = min(near, key=lambda j: abs(self._pose_stamps[j] - stamp_ns))
            if abs(self._pose_stamps[nearest] - stamp_ns) > max_gap_ns:
                return None
            return self._poses[nearest], self.params.world_frame

    def _poses_for(self, frames: Sequence[Frame]) -> Mapping[int, Pose] | None:
        """The pose nearest in time to each frame's stamp; None when no pose topic has spoken."""
        with self._lock:
            if not self._poses:
                return None
            poses = {}
            for frame in frames:
                i = bisect.bisect(self._pose_stamps, frame.stamp_ns)
                nearest = min((j for j in (i - 1, i) if 0 <= j < len(self._poses)),
                              key=lambda j: abs(self._pose_stamps[j] - frame.stamp_ns))
                poses[frame.stamp_ns] = self._poses[nearest]
            return poses

    # ------------------------------------------------------------------------------------------ scene
    def build(self, by_camera: Mapping[str, Sequence[Frame]], viewpoint: str | None = None) -> SceneResult:
        """The scene from the newest frame of each camera (one view per camera).

        ``viewpoint``: a camera name whose levelled view the relations use, "" = the base frame, None =
        ``spatial.viewpoint``. RGB-only cameras get projected marks when their mount was given, else they
        are left out (``SceneResult.views_left_out``); with no RGB-D camera at all the result is
        unavailable, with the reason, and nothing is guessed. Inputs that cannot make a scene (a viewpoint
        camera with no frame and no mount) also give an unavailable result with the reason.
        """
        latest = [frames[-1] for frames in by_camera.values() if frames]
        mounts = {name: T for name, T in self.T_base_from_cam.items()
                  if self.mount_given.get(name, True) or any(f.camera == name and f.depth_m is not None
                                                             for f in latest)}
        params = self.params if viewpoint is None else dataclasses.replace(self.params, viewpoint_camera=viewpoint)
        try:
            scene = build_scene(latest, mounts, self._poses_for(latest), params, self.tracker)
        except SceneInputError as error:
            self.log.warning(f"no 3D scene: {error}", throttle_duration_sec=60.0)
            return SceneResult(False, str(error), params.base_frame, params.base_frame)
        if scene.views_left_out:
            self.log.info(f"views left out of the 3D scene: {scene.views_left_out}", throttle_duration_sec=60.0)
        return scene

    # ----------------------------------------------------------------------------------------- labels
    @staticmethod
    def label_question(scene: SceneResult) -> str:
        return label_question(scene.marked_ids)

    @staticmethod
    def label_max_new_tokens(scene: SceneResult) -> int:
        return LABEL_TOKENS_PER_MARK * len(scene.marked_ids) + 8

    def with_labels(self, scene: SceneResult, answer: str) -> SceneResult:
        """The scene with the names parsed from the model's answer to :meth:`label_question`."""
        names = parse_object_labels(answer, scene.marked_ids)
        self.log.debug(f"object names from the model: {names} (answer {answer[:200]!r})")
        return with_model_labels(scene, names) if names else scene

    @staticmethod
    def prompt(question: str, scene: SceneResult) -> str:
        return f"{scene.prompt}\n{question}" if scene.prompt else question

    @staticmethod
    def visuals(scene: SceneResult, cached: bool = False) -> list[VisualInput]:
        """The marked views as the model's input. Marked views are new pixels nearly every request, so they
        are not cached (keys=None), unless ``cached``: when the same views serve two generations (the
        label question, then the question), keyed by their pixels, the second reuses the first's ViT tokens."""
        return [VisualInput(frames=[view], label=f"Camera {name}",
                            keys=[("marked", name, hashlib.blake2b(view.tobytes(), digest_size=16).hexdigest())]
                            if cached else None)
                for name, view in scene.marked_views.items()]

    @staticmethod
    def model_relations(answer: str, scene: SceneResult) -> list[SpatialRelation]:
        return parse_model_relations(answer, scene.marked_ids).relations

    @staticmethod
    def mentioned_ids(text: str, scene: SceneResult) -> list[int]:
        """Marked ids that ``text`` (an answer or a question) refers to, by number or by label."""
        return mentioned_ids(text, scene)

    @staticmethod
    def marked_view_messages(scene: SceneResult, header: Header) -> list[Image]:
        messages = []
        for name, view in scene.marked_views.items():
            message = numpy_to_image(view, "rgb8", Image, header=Header(stamp=header.stamp, frame_id=name))
            messages.append(message)
        return messages
