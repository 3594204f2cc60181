"""The node's side of spatial requests: camera mounts and robot poses in, scene + marked views out.

Owns the instance tracker, so ids stay stable across successive requests while objects stay put, and the
recent robot poses (nav_msgs/Odometry or geometry_msgs/PoseStamped) when a pose topic is configured.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from oryx_ros.model.engine import VisualInput
from oryx_ros.perception.frames import Frame
from oryx_ros.perception.image_codec import numpy_to_image
from oryx_ros.ros.conversions import stamp_to_ns
from oryx_ros.ros.parameters import NodeConfig
from oryx_ros.spatial.correspondences import InstanceTracker, MarkParams
from oryx_ros.spatial.geometry import pose_from_xyz_quat
from oryx_ros.spatial.prompting import parse_mentioned_ids, parse_model_relations
from oryx_ros.spatial.relations import SpatialRelation
from oryx_ros.spatial.scene_graph import SceneParams, SceneResult, build_scene

Pose = npt.NDArray[np.float64]
POSE_HISTORY = 2000  # poses kept for matching frame stamps (~40 s of 50 Hz odometry)


class SpatialAdapter:
    def __init__(self, config: NodeConfig, log: Any) -> None:
        # mount: x y z qx qy qz qw of the camera optical frame in the base frame (ROS quaternion order)
        self.T_base_from_cam = {name: pose_from_xyz_quat(m[:3], m[3:]) for name, m in config.mounts.items()}
        self.params = SceneParams(marks=MarkParams(max_marks=config.max_objects), base_frame=config.base_frame)
        self.tracker = InstanceTracker()
        self.log = log
        self._pose_stamps: list[int] = []
        self._poses: list[Pose] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ poses
    def subscribe_pose(self, node: Node, config: NodeConfig, group: CallbackGroup) -> Any:
        if config.pose_type == "odometry":
            from nav_msgs.msg import Odometry

            return node.create_subscription(Odometry, config.pose_topic,
                                            lambda m: self._add_pose(m.header, m.pose.pose), 50, callback_group=group)
        from geometry_msgs.msg import PoseStamped

        return node.create_subscription(PoseStamped, config.pose_topic, lambda m: self._add_pose(m.header, m.pose),
                                        50, callback_group=group)

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
    def build(self, by_camera: Mapping[str, Sequence[Frame]]) -> SceneResult:
        """The scene from the newest frame of each RGB-D camera (one view per camera).

        RGB-only cameras are left out of the 3D scene (logged); with no RGB-D camera at all the result is
        unavailable, with the reason, and nothing is guessed.
        """
        latest = [frames[-1] for frames in by_camera.values() if frames]
        rgbd = [f for f in latest if f.depth_m is not None and f.intrinsics is not None]
        if rgbd and len(rgbd) < len(latest):
            skipped = sorted(f.camera for f in latest if f not in rgbd)
            self.log.info(f"3D scene from {[f.camera for f in rgbd]}; without depth or CameraInfo, not used: {skipped}",
                          throttle_duration_sec=60.0)
        views = rgbd or latest
        return build_scene(views, self.T_base_from_cam, self._poses_for(views), self.params, self.tracker)

    @staticmethod
    def prompt(question: str, scene: SceneResult) -> str:
        return f"{scene.prompt}\n{question}" if scene.prompt else question

    @staticmethod
    def visuals(scene: SceneResult) -> list[VisualInput]:
        # Marked views are new pixels every request, so they are not cached (keys=None).
        return [VisualInput(frames=[view], label=f"Camera {name}") for name, view in scene.marked_views.items()]

    @staticmethod
    def model_relations(answer: str, scene: SceneResult) -> list[SpatialRelation]:
        return parse_model_relations(answer, scene.marked_ids).relations

    @staticmethod
    def mentioned_ids(answer: str, scene: SceneResult) -> list[int]:
        return list(parse_mentioned_ids(answer, scene.marked_ids).ids)

    @staticmethod
    def marked_view_messages(scene: SceneResult, header: Header) -> list[Image]:
        messages = []
        for name, view in scene.marked_views.items():
            message = numpy_to_image(view, "rgb8", Image, header=Header(stamp=header.stamp, frame_id=name))
            messages.append(message)
        return messages
