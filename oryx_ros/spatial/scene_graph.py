"""One entry point from synchronised RGB-D frames to a 3D scene graph and coarse-correspondence marks.

:func:`build_scene` fuses the views in a common frame, segments object instances, gives them stable
ids, draws the numbered marks on every view, and computes geometric relations in the robot's base
frame. It never invents 3D: without one RGB-D view with intrinsics the result says so (``available=False``
with a ``reason``) and carries no objects, marks or relations. A view without depth gets marks by
projecting the fused cloud into it when its mount and intrinsics are known; otherwise it is listed in
``views_left_out`` with the reason.

Frames: cameras are placed by static mounts ``T_base_from_cam`` (camera optical frame: x right, y down,
z forward → base frame, REP 103: x forward, y left, z up). With ``T_world_from_base`` (odometry), the
views are fused in the world frame (z up) so that frames taken while the robot moves line up, object
positions are reported in it, and relations are computed in the base frame at the newest frame's stamp.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from oryx_ros.perception.frames import Frame
from oryx_ros.spatial.colour_names import colour_name, robust_colour
from oryx_ros.spatial.correspondences import (
    InstanceTracker,
    Mark,
    MarkParams,
    draw_marks,
    place_marks,
    prominence_order,
    select_prominent,
)
from oryx_ros.spatial.geometry import (
    Pose,
    PosedView,
    check_pose,
    invert_pose,
    level_pose_of_camera,
    project_points,
    transform_points,
)
from oryx_ros.spatial.prompting import multiview_prompt, parse_label_mentions, parse_mentioned_ids
from oryx_ros.spatial.relations import (
    Box,
    RelationParams,
    SceneObject,
    SpatialRelation,
    compute_relations,
    contacts_from_points,
)
from oryx_ros.spatial.segmentation import (
    Instance,
    SegmentationParams,
    SupportPlane,
    _label_views,
    segment_instances,
)

__all__ = ["SceneInputError", "SceneParams", "SceneResult", "build_scene", "colour_name", "mentioned_ids",
           "with_model_labels"]

_log = logging.getLogger(__name__)


class SceneInputError(ValueError):
    """Inputs that cannot describe one scene (no frames, a camera without extrinsics, a missing pose)."""


@dataclass(frozen=True)
class SceneParams:
    segmentation: SegmentationParams = field(default_factory=SegmentationParams)
    marks: MarkParams = field(default_factory=MarkParams)
    relations: RelationParams = field(default_factory=RelationParams)
    base_frame: str = "base_link"  # REP 103 frame of the robot; the viewpoint of left/right/front/behind
    world_frame: str = "odom"  # REP 105 frame of T_world_from_base, when given
    # Whose left/right/front/behind the relations use: "" = the robot base at the newest stamp, or a
    # camera name = that camera's view levelled (see geometry.level_pose_of_camera), as in its image.
    viewpoint_camera: str = ""


@dataclass(frozen=True, eq=False)
class InstanceDetail:
    """Everything known about one object beyond its SceneObject (for debugging and visualisation)."""

    id: int
    instance: Instance  # points, colours and box in the common frame, per-view visible pixel counts
    box_in_viewpoint: Box  # the box used for relations, in the base frame
    marked: bool  # carries a badge in the marked views
    prominence_rank: int  # 0 = most prominent


@dataclass(frozen=True, eq=False)
class SceneResult:
    available: bool  # False when 3D was not possible; then everything below is empty
    reason: str  # why not available ("" when available)
    frame_id: str  # frame of SceneObject positions (world frame with odometry, else the base frame)
    viewpoint: str  # frame of the relations' left/right/front/behind (base frame, or "<camera frame>_level")
    objects: list[SceneObject] = field(default_factory=list)  # by id
    relations: list[SpatialRelation] = field(default_factory=list)
    marked_views: dict[str, npt.NDArray[np.uint8]] = field(default_factory=dict)  # view key → (H, W, 3) RGB
    marks: dict[str, list[Mark]] = field(default_factory=dict)  # view key → badges drawn there
    instances: list[InstanceDetail] = field(default_factory=list)  # by id
    # view key → (H, W) int32 id of the object seen at each pixel (0 = none), for every object
    id_images: dict[str, npt.NDArray[np.int32]] = field(default_factory=dict)
    planes: list[SupportPlane] = field(default_factory=list)  # removed support planes (floor, table tops)
    prompt: str = ""  # explanation of the marks to put before the question
    counts: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    # Views without depth: marked by projecting the fused objects into them (their mount is known) ...
    projected_views: list[str] = field(default_factory=list)
    # ... or left out of the scene, camera → why (no mount, no CameraInfo)
    views_left_out: dict[str, str] = field(default_factory=dict)

    @property
    def marked_ids(self) -> list[int]:
        return [detail.id for detail in self.instances if detail.marked]

    @property
    def labels(self) -> dict[int, str]:
        return {obj.id: obj.label for obj in self.objects}


def with_model_labels(scene: SceneResult, names: Mapping[int, str]) -> SceneResult:
    """The scene with the objects in ``names`` (id → name given by the model, see
    ``prompting.parse_object_labels``) labelled by it; the others keep their colour label. The colour stays
    in ``SceneObject.colour``, and the prompt lists the names beside the marked ids."""
    objects = [dataclasses.replace(obj, label=names[obj.id], label_source="model") if obj.id in names else obj
               for obj in scene.objects]
    model_labels = {obj.id: obj.label for obj in objects if obj.label_source == "model"}
    prompt = multiview_prompt(list(scene.marked_views), scene.marked_ids, labels=model_labels) if scene.marked_views \
        else scene.prompt
    return dataclasses.replace(scene, objects=objects, prompt=prompt)


def mentioned_ids(text: str, scene: SceneResult) -> list[int]:
    """Marked ids that ``text`` (an answer or a question) refers to, in order: by number ("object 3",
    ``prompting.parse_mentioned_ids``), then by label ("the mug", "the red object",
    ``prompting.parse_label_mentions``) where the words pick exactly one marked object."""
    marked = scene.marked_ids
    ids = list(parse_mentioned_ids(text, marked).ids)
    marked_set = set(marked)
    labels = {obj.id: obj.label for obj in scene.objects if obj.id in marked_set}
    colours = {obj.id: obj.colour for obj in scene.objects if obj.id in marked_set}
    ids += [i for i in parse_label_mentions(text, labels, colours) if i not in ids]
    return ids


def _view_keys(frames: Sequence[Frame]) -> list[str]:
    """One name per frame: the camera, or camera@stamp_ns for a camera that gives several frames."""
    cameras = [frame.camera for frame in frames]
    repeated = {camera for camera in cameras if cameras.count(camera) > 1}
    keys = [f"{f.camera}@{f.stamp_ns}" if f.camera in repeated else f.camera for f in frames]
    if len(set(keys)) != len(keys):
        raise SceneInputError(f"the same camera and stamp appear twice among the frames: {sorted(keys)}")
    return keys


def _world_from_base_for(
    frame: Frame, T_world_from_base: Pose | Mapping[int, Pose] | None
) -> Pose | None:
    if T_world_from_base is None:
        return None
    if isinstance(T_world_from_base, Mapping):
        if frame.stamp_ns not in T_world_from_base:
            raise SceneInputError(f"no T_world_from_base for stamp {frame.stamp_ns} (camera {frame.camera!r})")
        return check_pose(T_world_from_base[frame.stamp_ns], f"T_world_from_base[{frame.stamp_ns}]")
    return check_pose(T_world_from_base, "T_world_from_base")


def _viewpoint(
    frames: Sequence[Frame],
    views: Sequence[PosedView],
    T_world_from_base: Pose | Mapping[int, Pose] | None,
    params: SceneParams,
    T_base_from_cam: Mapping[str, npt.ArrayLike],
) -> tuple[Pose, str]:
    """(T_view_from_common, viewpoint name) for the relations (see SceneParams.viewpoint_camera)."""
    newest = max(frames, key=lambda f: f.stamp_ns)
    T_world_from_newest_base = _world_from_base_for(newest, T_world_from_base)
    if params.viewpoint_camera:
        own = [(v.frame.stamp_ns, i) for i, v in enumerate(views) if v.frame.camera == params.viewpoint_camera]
        if own:
            view = views[max(own)[1]]  # its newest frame
            name = f"{view.frame.frame_id or params.viewpoint_camera}_level"
            return invert_pose(level_pose_of_camera(view.T_common_from_cam)), name
        if params.viewpoint_camera not in T_base_from_cam:
            raise SceneInputError(f"viewpoint camera {params.viewpoint_camera!r} gave no frame and has no mount")
        # Not among the frames: its mount on the base at the newest frame's stamp.
        T_common_from_cam = check_pose(T_base_from_cam[params.viewpoint_camera],
                                       f"T_base_from_cam[{params.viewpoint_camera!r}]")
        if T_world_from_newest_base is not None:
            T_common_from_cam = T_world_from_newest_base @ T_common_from_cam
        return invert_pose(level_pose_of_camera(T_common_from_cam)), f"{params.viewpoint_camera}_level"
    if T_world_from_newest_base is None:
        return np.eye(4), params.base_frame
    return invert_pose(T_world_from_newest_base), params.base_frame


def _box_in_viewpoint(instance: Instance, T_view_from_common: Pose) -> Box:
    """The instance's box in the viewpoint frame: its points' extent along the viewpoint's axes, with the
    support-snapped bottom/top carried over when the two frames share the z axis (a yawed base)."""
    points = transform_points(T_view_from_common, instance.points_m)
    low, high = points.min(axis=0), points.max(axis=0)
    if abs(T_view_from_common[2, 2] - 1.0) < 1e-6:
        low[2] = instance.bbox_min_m[2] + T_view_from_common[2, 3]
        high[2] = instance.bbox_max_m[2] + T_view_from_common[2, 3]
    return Box.from_corners(low, high)


def build_scene(
    frames: Sequence[Frame],
    T_base_from_cam: Mapping[str, npt.ArrayLike],
    T_world_from_base: Pose | Mapping[int, Pose] | None = None,
    params: SceneParams | None = None,
    tracker: InstanceTracker | None = None,
) -> SceneResult:
    """Objects, relations and marked views from synchronised RGB-D frames.

    ``T_base_from_cam``: camera name → 4x4 static mount (camera optical frame → base frame).
    ``T_world_from_base``: None (the robot did not move: fuse in the base frame), one 4x4 pose for all
    frames, or a mapping stamp_ns → 4x4 pose per frame. ``tracker`` keeps ids stable between calls
    (pass the same one every time); without it ids are 1..N in order of prominence.
    """
    params = params or SceneParams()
    if not frames:
        raise SceneInputError("build_scene needs at least one frame")
    common_frame = params.base_frame if T_world_from_base is None else params.world_frame
    keys = _view_keys(frames)
    depth_frames = [f for f in frames if f.depth_m is not None and f.intrinsics is not None]
    if not depth_frames:
        reasons = []
        for frame in frames:
            inputs = (("depth", frame.depth_m), ("intrinsics", frame.intrinsics))
            missing = [what for what, value in inputs if value is None]
            reasons.append(f"camera {frame.camera!r} has no {' and no '.join(missing)}")
        reason = "; ".join(reasons) + ": a 3D scene needs at least one RGB-D camera with CameraInfo"
        _log.info("scene unavailable: %s", reason)
        return SceneResult(False, reason, common_frame, params.base_frame)
    views: list[PosedView] = []
    projected: list[PosedView] = []  # without depth: objects are projected into them
    left_out: dict[str, str] = {}
    for key, frame in zip(keys, frames, strict=True):
        if frame.depth_m is None or frame.intrinsics is None:
            if frame.intrinsics is None:
                left_out[key] = "no depth and no CameraInfo: the objects cannot be projected into it"
                continue
            if frame.camera not in T_base_from_cam:
                left_out[key] = "no depth and no mount (T_base_from_cam): the objects cannot be projected into it"
                continue
        if frame.camera not in T_base_from_cam:
            raise SceneInputError(f"no T_base_from_cam for camera {frame.camera!r} (known: {sorted(T_base_from_cam)})")
        T_base_from_this_cam = check_pose(T_base_from_cam[frame.camera], f"T_base_from_cam[{frame.camera!r}]")
        T_world_from_this_base = _world_from_base_for(frame, T_world_from_base)
        T_common_from_cam = (
            T_base_from_this_cam if T_world_from_this_base is None else T_world_from_this_base @ T_base_from_this_cam
        )
        view = PosedView(key, frame, T_common_from_cam)
        (views if frame.depth_m is not None and frame.intrinsics is not None else projected).append(view)
    for key, why in left_out.items():
        _log.info("view %s left out of the scene: %s", key, why)

    segmentation = segment_instances(views, params.segmentation)
    timings = dict(segmentation.timings_s)
    start = time.perf_counter()
    instances = segmentation.instances
    visible = [instance.visible_px for instance in instances]
    order = prominence_order(visible)
    tracker = tracker or InstanceTracker()
    ids_in_order = tracker.assign(np.array([instances[i].centre_m for i in order]).reshape(-1, 3))
    id_of = dict(zip(order, ids_in_order, strict=True))
    marked = select_prominent(visible, params.marks.max_marks)
    counts = dict(segmentation.counts)
    counts["marked_objects"] = len(marked)
    counts["visible_objects_not_marked"] = sum(1 for v in visible if v) - len(marked)  # beyond max_marks

    T_view_from_common, viewpoint = _viewpoint(frames, views + projected, T_world_from_base, params,
                                               T_base_from_cam)
    boxes = [_box_in_viewpoint(instance, T_view_from_common) for instance in instances]

    label_images = dict(segmentation.label_images)
    label_images.update(_project_into_views(projected, segmentation, params.segmentation))
    visible_projected = {
        view.key: np.bincount(label_images[view.key].ravel(), minlength=len(instances) + 1)[1:] for view in projected
    }
    all_views = sorted(views + projected, key=lambda v: keys.index(v.key))
    id_lut = np.zeros(len(instances) + 1, dtype=np.int32)
    for index, object_id in id_of.items():
        id_lut[index + 1] = object_id
    id_images = {key: id_lut[labels] for key, labels in label_images.items()}
    instance_to_mark = {index: id_of[index] for index in marked}
    marks = {view.key: place_marks(label_images[view.key], instance_to_mark, params.marks) for view in all_views}
    marked_views = {view.key: draw_marks(view.frame.rgb, marks[view.key]) for view in all_views}
    timings["marks"] = time.perf_counter() - start

    start = time.perf_counter()
    by_id = sorted(range(len(instances)), key=lambda i: id_of[i])
    # Support contact is judged in the common frame (z up), from the objects' points.
    common_boxes = [Box.from_corners(instances[i].bbox_min_m, instances[i].bbox_max_m) for i in by_id]
    contacts = contacts_from_points([instances[i].points_m for i in by_id], common_boxes, params.relations)
    relations = compute_relations(
        [boxes[i] for i in by_id], [id_of[i] for i in by_id], params.relations, viewpoint=viewpoint,
        contacts=contacts,
    )
    timings["relations"] = time.perf_counter() - start

    view_order = [view.key for view in all_views]
    objects: list[SceneObject] = []
    details: list[InstanceDetail] = []
    rank_of = {index: rank for rank, index in enumerate(order)}
    marked_set = set(marked)
    for index in by_id:
        instance = instances[index]
        seen_in = tuple(key for key in view_order if key in instance.visible_px or (
            key in visible_projected and visible_projected[key][index] >= params.segmentation.min_visible_px))
        seen_with_depth = sum(1 for key in instance.visible_px)
        # Seen from more cameras and backed by more points = more likely a real, well-measured object.
        support = min(1.0, instance.n_points / (4.0 * params.segmentation.min_instance_points))
        confidence = 0.5 * seen_with_depth / len(views) + 0.5 * support
        colour = colour_name(robust_colour(instance.colours_rgb))
        objects.append(
            SceneObject(
                id=id_of[index],
                label=f"{colour} object",
                position=tuple(float(c) for c in instance.centre_m),
                size=tuple(float(c) for c in instance.size_m),
                confidence=float(confidence),
                points=instance.n_points,
                cameras=seen_in,
                colour=colour,
                label_source="colour",
            )
        )
        details.append(InstanceDetail(id_of[index], instance, boxes[index], index in marked_set, rank_of[index]))
    marked_ids = [id_of[i] for i in marked]
    return SceneResult(
        available=True,
        reason="",
        frame_id=common_frame,
        viewpoint=viewpoint,
        objects=objects,
        relations=relations,
        marked_views=marked_views,
        marks=marks,
        instances=details,
        id_images=id_images,
        planes=segmentation.planes,
        prompt=multiview_prompt(view_order, marked_ids),
        counts=counts,
        timings_s=timings,
        projected_views=[view.key for view in projected],
        views_left_out=left_out,
    )


def _project_into_views(
    views: Sequence[PosedView], segmentation: Any, params: SegmentationParams
) -> dict[str, npt.NDArray[np.int32]]:
    """Label images for views without depth: the fused cloud (objects, planes and background) is
    splatted into each view with a z-buffer, which stands in for its depth; then the objects are
    labelled as in a depth view (visible where they are the nearest surface)."""
    if not views:
        return {}
    fused = segmentation.fused_points_m
    points = np.concatenate([inst.points_m for inst in segmentation.instances] or [np.zeros((0, 3))])
    labels = np.concatenate([np.full(inst.n_points, inst.index, np.int64) for inst in segmentation.instances]
                            or [np.zeros(0, np.int64)])
    rendered = []
    for view in views:
        intrinsics = view.frame.intrinsics
        assert intrinsics is not None
        height, width = view.frame.rgb.shape[:2]
        cloud = np.concatenate([fused, points]).astype(np.float64)
        uv, z = project_points(transform_points(invert_pose(view.T_common_from_cam), cloud), intrinsics)
        with np.errstate(invalid="ignore"):
            ok = (z > params.min_depth_m) & np.all(np.isfinite(uv), axis=1)
        u = np.rint(uv[ok, 0]).astype(np.int64)
        v = np.rint(uv[ok, 1]).astype(np.int64)
        z = z[ok]
        depth = np.full((height, width), np.inf)
        radius = np.ceil(0.5 * intrinsics.fx * params.voxel_size_m / z).astype(np.int64) + 1
        for du in range(-int(radius.max(initial=0)), int(radius.max(initial=0)) + 1):
            for dv in range(-int(radius.max(initial=0)), int(radius.max(initial=0)) + 1):
                reach = np.maximum(abs(du), abs(dv)) <= radius
                uu, vv = u[reach] + du, v[reach] + dv
                inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
                np.minimum.at(depth, (vv[inside], uu[inside]), z[reach][inside])
        depth[~np.isfinite(depth)] = np.nan
        frame = dataclasses.replace(view.frame, depth_m=depth.astype(np.float32))
        rendered.append(PosedView(view.key, frame, view.T_common_from_cam))
    return _label_views(rendered, points, labels, params)
