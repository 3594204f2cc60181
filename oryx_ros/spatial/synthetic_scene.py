"""Synthetic multi-camera RGB-D scenes with ground truth, and ``oryx-ros make-scene``.

A solid table block and coloured primitives (boxes, spheres, cylinders) stand on a checkered floor;
3-8 cameras look at the table from around it. Everything is rendered by ray casting with open3d
(``RaycastingScene``): depth is the optical-axis distance, colour is the primitive's albedo with
Lambertian shading. Optional depth noise follows the Kinect axial model of Nguyen, Izadi & Lovell
(3DIMPVT 2012), sigma(z) = 1.2 mm + 1.9 mm * (z - 0.4 m)^2, plus random missing pixels.

Frames: the scene is built in the base frame (REP 103: x forward, y left, z up; floor at z = 0). Each
camera's optical frame is x right, y down, z forward; ``T_base_from_cam`` maps it to the base frame.
Ground truth (objects, boxes and relations computed with :mod:`oryx_ros.spatial.relations`) is a
JSON-able dict. Layouts whose relations would be ambiguous at sensor accuracy (any predicate margin
closer to its threshold than ``ambiguity_margin_m``) or whose objects are seen by fewer than two
cameras are re-drawn, so that the ground truth is well defined.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import open3d as o3d
import yaml

from oryx_ros.params_file import parameters_document
from oryx_ros.perception.frames import CameraIntrinsics, Frame
from oryx_ros.spatial.geometry import look_at_pose, mount_from_pose
from oryx_ros.spatial.relations import Box, RelationParams, compute_relations, relation_margins

_log = logging.getLogger(__name__)

Shape = Literal["box", "sphere", "cylinder"]

DEFAULT_START_NS: Final = 1_700_000_000 * 1_000_000_000
BASE_FRAME: Final = "base_link"
# Saturated albedos whose hue survives shading, named as oryx_ros.spatial.scene_graph.colour_name reads them.
OBJECT_COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (215, 35, 35), "green": (40, 165, 60), "blue": (40, 80, 215), "yellow": (235, 205, 40),
    "purple": (140, 60, 190), "cyan": (40, 190, 200), "pink": (235, 110, 170),
}
TABLE_RGB: Final = (150, 100, 60)  # reads as "brown"
FLOOR_RGB: Final = ((150, 150, 150), (118, 118, 118))  # 0.5 m checker squares
SKY_RGB: Final = (205, 215, 230)
FLOOR_HALF_SIZE_M: Final = 3.0
LIGHT_DIRECTION: Final = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])  # towards the light
AMBIENT: Final = 0.35
MESH_RESOLUTION: Final = 40  # sphere/cylinder facets: the box of the mesh is within 0.3% of the true one


@dataclass(frozen=True)
class Primitive:
    """A ground-truth object; ``centre_m``/``size_m`` are its exact axis-aligned box in the base frame."""

    name: str  # unique, e.g. "red_sphere"
    label: str  # e.g. "red sphere"
    shape: Shape
    centre_m: tuple[float, float, float]
    size_m: tuple[float, float, float]
    rgb: tuple[int, int, int]
    support: str  # "floor" or the name of the primitive it stands on

    @property
    def box(self) -> Box:
        return Box(np.array(self.centre_m), np.array(self.size_m))

    def mesh(self) -> o3d.geometry.TriangleMesh:
        sx, sy, sz = self.size_m
        if self.shape == "box":
            mesh = o3d.geometry.TriangleMesh.create_box(sx, sy, sz)
            mesh.translate((-sx / 2, -sy / 2, -sz / 2))
        elif self.shape == "sphere":
            mesh = o3d.geometry.TriangleMesh.create_sphere(sx / 2, resolution=MESH_RESOLUTION)
        else:
            mesh = o3d.geometry.TriangleMesh.create_cylinder(sx / 2, sz, resolution=MESH_RESOLUTION)
        return mesh.translate(self.centre_m)


@dataclass(frozen=True)
class SceneCamera:
    name: str
    intrinsics: CameraIntrinsics
    T_base_from_cam: npt.NDArray[np.float64]  # (4, 4) optical frame → base frame

    @property
    def frame_id(self) -> str:
        return f"{self.name}_optical_frame"


@dataclass(frozen=True)
class DepthNoise:
    axial: bool = True  # Gaussian noise with the Kinect axial sigma(z)
    dropout: float = 0.02  # fraction of pixels with no return (NaN)

    def sigma_m(self, z_m: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        return 0.0012 + 0.0019 * (np.asarray(z_m, dtype=np.float64) - 0.4) ** 2


@dataclass(frozen=True, eq=False)
class SyntheticScene:
    primitives: list[Primitive]  # index i is ground-truth object i (the table is one of them)
    cameras: list[SceneCamera]
    frames: list[Frame]  # one per camera
    instance_images: dict[str, npt.NDArray[np.int32]]  # camera → (H, W) primitive index, -1 floor/none
    seed: int
    noise: DepthNoise | None
    relation_params: RelationParams = field(default_factory=RelationParams)

    @property
    def T_base_from_cam(self) -> dict[str, npt.NDArray[np.float64]]:  # noqa: N802 (transform naming convention)
        return {camera.name: camera.T_base_from_cam for camera in self.cameras}

    def true_relations(self) -> list[tuple[int, str, int]]:
        """(subject index, predicate, object index) triples over the primitives' true boxes."""
        relations = compute_relations(
            [p.box for p in self.primitives], list(range(len(self.primitives))), self.relation_params,
            viewpoint=BASE_FRAME,
        )
        return [(r.subject_id, r.predicate, r.object_id) for r in relations]

    def ground_truth(self) -> dict[str, Any]:
        """JSON-able ground truth: objects, relations (by object index) and cameras."""
        return {
            "frame_id": BASE_FRAME,
            "conventions": {
                "base_frame": "REP 103: x forward, y left, z up; floor at z = 0",
                "camera_frame": "optical: x right, y down, z forward",
                "mount": "camera optical frame pose in the base frame: x y z qx qy qz qw (metres, ROS xyzw)",
                "relations": "oryx_ros.spatial.relations definitions on the true axis-aligned boxes",
            },
            "seed": self.seed,
            "noise": None if self.noise is None else {"axial_sigma": "1.2 mm + 1.9 mm * (z - 0.4)^2",
                                                      "axial": self.noise.axial, "dropout": self.noise.dropout},
            "objects": [
                {"index": i, "name": p.name, "label": p.label, "shape": p.shape, "centre_m": list(p.centre_m),
                 "size_m": list(p.size_m), "rgb": list(p.rgb), "support": p.support}
                for i, p in enumerate(self.primitives)
            ],
            "relations": [{"subject": s, "predicate": pred, "object": o} for s, pred, o in self.true_relations()],
            "relation_params": {"direction_margin_m": self.relation_params.direction_margin_m,
                                "contact_m": self.relation_params.contact_m, "near_m": self.relation_params.near_m},
            "cameras": {
                camera.name: {
                    "frame_id": camera.frame_id,
                    "width": camera.intrinsics.width,
                    "height": camera.intrinsics.height,
                    "k": camera.intrinsics.k.tolist(),
                    "mount": mount_from_pose(camera.T_base_from_cam),
                }
                for camera in self.cameras
            },
        }


def default_intrinsics(width: int = 640, height: int = 480) -> CameraIntrinsics:
    """Kinect/PrimeSense-like pinhole: fx = fy = 525 px at 640x480, scaled with the width."""
    if width < 16 or height < 16:
        raise ValueError(f"image size {width}x{height} is too small")
    focal = 525.0 * width / 640.0
    k = np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0], [0.0, 0.0, 1.0]])
    return CameraIntrinsics(width, height, k, np.zeros(5))


# ---------------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayoutParams:
    table_centre_xy_m: tuple[float, float] = (1.6, 0.0)
    table_size_m: tuple[float, float, float] = (1.0, 0.7, 0.55)
    table_objects: int = 3
    floor_objects: int = 2
    stacked_pair: bool = True  # a small object on a larger box on the floor
    min_gap_m: float = 0.10  # between object footprints (keeps instances apart for clustering)
    edge_inset_m: float = 0.06  # table objects stay this far inside the table top
    floor_ring_m: tuple[float, float] = (0.15, 0.5)  # floor objects' gap to the table
    camera_radius_m: float = 1.9
    camera_height_m: float = 1.5
    target_height_m: float = 0.35
    ambiguity_margin_m: float = 0.03  # see the module docstring
    tries_per_object: int = 300  # random spots tried for one object before the layout is drawn again
    max_attempts: int = 200


def _random_size(rng: np.random.Generator, shape: Shape) -> tuple[float, float, float]:
    if shape == "box":
        return (float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.08, 0.2)), float(rng.uniform(0.08, 0.22)))
    if shape == "sphere":
        d = float(rng.uniform(0.08, 0.16))
        return (d, d, d)
    d = float(rng.uniform(0.07, 0.14))
    return (d, d, float(rng.uniform(0.1, 0.24)))


def _footprint_gap(a: Primitive, b: Primitive) -> float:
    separation = np.maximum(0.0, np.maximum(a.box.low[:2] - b.box.high[:2], b.box.low[:2] - a.box.high[:2]))
    return float(np.linalg.norm(separation)) if np.any(separation > 0) else -1.0


class _RejectedLayoutError(Exception):
    """A sampled layout breaks a constraint; draw another."""


def _unambiguous(a: Primitive, b: Primitive, relation_params: RelationParams, margin_m: float) -> bool:
    """No predicate between a and b (either way round) is within ``margin_m`` of its threshold."""
    return all(
        abs(m) >= margin_m - 1e-9  # resting contact has margin exactly contact_m, up to rounding
        for first, second in ((a, b), (b, a))
        for m in relation_margins(first.box, second.box, relation_params).values()
    )


def _sample_layout(
    rng: np.random.Generator, params: LayoutParams, relation_params: RelationParams, colours: list[str]
) -> list[Primitive]:
    """Place the table, then each object in turn at a random spot that keeps its distance from the others
    and leaves no relation ambiguous; raises _RejectedLayoutError when an object finds no such spot."""
    tx, ty = params.table_centre_xy_m
    tsx, tsy, tsz = params.table_size_m
    table = Primitive("table", "table", "box", (tx, ty, tsz / 2), (tsx, tsy, tsz), TABLE_RGB, "floor")
    placed: list[Primitive] = [table]
    colour_iter = iter(colours)
    shapes: tuple[Shape, ...] = ("box", "sphere", "cylinder")

    def fits(candidates: Sequence[Primitive]) -> bool:
        for index, candidate in enumerate(candidates):
            earlier = candidates[:index]
            if not all(_unambiguous(candidate, o, relation_params, params.ambiguity_margin_m) for o in earlier):
                return False
            for other in placed:
                if other.name != "table" and _footprint_gap(candidate, other) < params.min_gap_m:
                    return False
                if not _unambiguous(candidate, other, relation_params, params.ambiguity_margin_m):
                    return False
        return True

    def random_shape() -> tuple[Shape, tuple[float, float, float]]:
        shape = shapes[int(rng.integers(3))]
        return shape, _random_size(rng, shape)

    def on_table(shape: Shape, size: tuple[float, float, float], colour: str) -> list[Primitive]:
        half = np.array(size[:2]) / 2 + params.edge_inset_m
        xy = (rng.uniform(tx - tsx / 2 + half[0], tx + tsx / 2 - half[0]),
              rng.uniform(ty - tsy / 2 + half[1], ty + tsy / 2 - half[1]))
        return [_primitive(colour, shape, size, xy, tsz, "table")]

    def on_floor(shape: Shape, size: tuple[float, float, float], colour: str) -> list[Primitive]:
        gap = rng.uniform(*params.floor_ring_m)
        side = int(rng.integers(4))  # which side of the table
        along = rng.uniform(-0.5, 0.5)
        if side < 2:
            sign = 1 if side == 0 else -1
            xy = (tx + sign * (tsx / 2 + gap + size[0] / 2), ty + along * (tsy + 0.4))
        else:
            sign = 1 if side == 2 else -1
            xy = (tx + along * (tsx + 0.4), ty + sign * (tsy / 2 + gap + size[1] / 2))
        return [_primitive(colour, shape, size, xy, 0.0, "floor")]

    def stacked(base_size: tuple[float, float, float], top: tuple[Shape, tuple[float, float, float]],
                colours_pair: tuple[str, str]) -> list[Primitive]:
        (base,) = on_floor("box", base_size, colours_pair[0])
        offset = rng.uniform(-0.01, 0.01, size=2)  # centred: the pair is neither left nor right of itself
        top_xy = np.array(base.centre_m[:2]) + offset
        return [base, _primitive(colours_pair[1], top[0], top[1], top_xy, base_size[2], base.name)]

    jobs: list[tuple[str, tuple]] = []
    jobs += [("table", (*random_shape(), next(colour_iter))) for _ in range(params.table_objects)]
    jobs += [("floor", (*random_shape(), next(colour_iter))) for _ in range(params.floor_objects)]
    if params.stacked_pair:
        base_size = (float(rng.uniform(0.24, 0.32)), float(rng.uniform(0.24, 0.32)), float(rng.uniform(0.15, 0.25)))
        top_shape = shapes[int(rng.integers(3))]
        d = float(rng.uniform(0.08, 0.14))
        top_size = {"box": (d, float(rng.uniform(0.08, 0.14)), float(rng.uniform(0.08, 0.2))),
                    "sphere": (d, d, d), "cylinder": (d, d, float(rng.uniform(0.1, 0.24)))}[top_shape]
        jobs.append(("stack", (base_size, (top_shape, top_size), (next(colour_iter), next(colour_iter)))))
    makers = {"table": on_table, "floor": on_floor, "stack": stacked}
    for kind, arguments in jobs:
        for _ in range(params.tries_per_object):
            candidates = makers[kind](*arguments)
            if kind != "table" and any(_footprint_gap(c, table) < params.floor_ring_m[0] for c in candidates[:1]):
                continue
            if fits(candidates):
                placed.extend(candidates)
                break
        else:
            raise _RejectedLayoutError
    return placed


def _primitive(colour: str, shape: Shape, size: tuple[float, float, float], xy: Sequence[float], base_z: float,
               support: str) -> Primitive:
    return Primitive(f"{colour}_{shape}", f"{colour} {shape}", shape,
                     (float(xy[0]), float(xy[1]), base_z + size[2] / 2), size, OBJECT_COLOURS[colour], support)


def make_cameras(
    n_cameras: int, intrinsics: CameraIntrinsics, params: LayoutParams, rng: np.random.Generator
) -> list[SceneCamera]:
    """Cameras on a circle around the table, the first one on the robot's side (looking along +x)."""
    if not 1 <= n_cameras <= 8:
        raise ValueError(f"n_cameras must be 1..8, got {n_cameras}")
    tx, ty = params.table_centre_xy_m
    cameras = []
    for index in range(n_cameras):
        azimuth = math.pi + 2 * math.pi * index / n_cameras + rng.uniform(-0.15, 0.15)
        radius = params.camera_radius_m + rng.uniform(-0.1, 0.1)
        height = params.camera_height_m + rng.uniform(-0.1, 0.1)
        eye = (tx + radius * math.cos(azimuth), ty + radius * math.sin(azimuth), height)
        target = (tx + rng.uniform(-0.1, 0.1), ty + rng.uniform(-0.1, 0.1), params.target_height_m)
        cameras.append(SceneCamera(f"cam{index}", intrinsics, look_at_pose(eye, target)))
    return cameras


# ---------------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------------


class Renderer:
    """Ray-casts one layout (primitives + floor) for any camera."""

    def __init__(self, primitives: Sequence[Primitive]) -> None:
        self.primitives = list(primitives)
        self._scene = o3d.t.geometry.RaycastingScene()
        self._owner: dict[int, int] = {}  # geometry id → primitive index (-1 = floor)
        floor = o3d.geometry.TriangleMesh.create_box(2 * FLOOR_HALF_SIZE_M, 2 * FLOOR_HALF_SIZE_M, 0.01)
        centre_x = primitives[0].centre_m[0] if primitives else 0.0
        floor.translate((centre_x - FLOOR_HALF_SIZE_M, -FLOOR_HALF_SIZE_M, -0.01))  # top face at z = 0
        self._owner[self._scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(floor))] = -1
        for index, primitive in enumerate(self.primitives):
            mesh = o3d.t.geometry.TriangleMesh.from_legacy(primitive.mesh())
            self._owner[self._scene.add_triangles(mesh)] = index

    def render(
        self, camera: SceneCamera
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32], npt.NDArray[np.int32]]:
        """(H, W, 3) RGB, (H, W) depth in metres along the optical axis (NaN = nothing hit), (H, W) owner."""
        k = camera.intrinsics
        u, v = np.meshgrid(np.arange(k.width, dtype=np.float64), np.arange(k.height, dtype=np.float64))
        # Ray through each pixel centre with optical-frame z = 1, so t_hit is the depth z itself.
        directions_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
        rotation, origin = camera.T_base_from_cam[:3, :3], camera.T_base_from_cam[:3, 3]
        directions = directions_cam @ rotation.T
        rays = np.concatenate([np.broadcast_to(origin, directions.shape), directions], axis=-1).astype(np.float32)
        hits = self._scene.cast_rays(o3d.core.Tensor(rays))
        depth = hits["t_hit"].numpy().astype(np.float32)
        geometry = hits["geometry_ids"].numpy().astype(np.int64)
        normals = hits["primitive_normals"].numpy().astype(np.float64)
        hit = np.isfinite(depth)
        owner = np.full(depth.shape, -2, dtype=np.int32)  # -2: nothing hit
        lookup = np.full(max(self._owner) + 1, -2, dtype=np.int32)
        for geometry_id, index in self._owner.items():
            lookup[geometry_id] = index
        owner[hit] = lookup[geometry[hit]]
        # Albedo per pixel: primitive colour, the floor's checker, or the sky.
        albedo = np.empty((*depth.shape, 3), dtype=np.float64)
        albedo[:] = SKY_RGB
        points = origin + directions * np.where(hit, depth, 0.0)[..., None]
        floor = owner == -1
        checker = ((np.floor(points[..., 0] / 0.5) + np.floor(points[..., 1] / 0.5)) % 2).astype(np.int64)
        albedo[floor] = np.array(FLOOR_RGB, dtype=np.float64)[checker[floor]]
        for index, primitive in enumerate(self.primitives):
            albedo[owner == index] = primitive.rgb
        # Lambertian shading with normals turned towards the camera.
        facing = np.where(np.sum(normals * directions, axis=-1, keepdims=True) > 0, -normals, normals)
        shade = AMBIENT + (1 - AMBIENT) * np.clip(facing @ LIGHT_DIRECTION, 0.0, 1.0)
        rgb = np.where(hit[..., None], albedo * shade[..., None], albedo)
        depth[~hit] = np.nan
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), depth, np.where(owner == -2, -1, owner).astype(np.int32)


def add_depth_noise(
    depth_m: npt.NDArray[np.float32], noise: DepthNoise, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Depth with axial Gaussian noise (sigma grows with z²) and random missing pixels (NaN)."""
    noisy = depth_m.astype(np.float64)
    if noise.axial:
        noisy = noisy + rng.normal(size=noisy.shape) * noise.sigma_m(np.nan_to_num(noisy, nan=0.0))
    if noise.dropout > 0:
        noisy[rng.random(noisy.shape) < noise.dropout] = np.nan
    return noisy.astype(np.float32)


def make_scene(
    seed: int = 0,
    *,
    n_cameras: int = 4,
    width: int = 640,
    height: int = 480,
    noise: DepthNoise | None = None,
    layout: LayoutParams | None = None,
    relation_params: RelationParams | None = None,
    stamp_ns: int = DEFAULT_START_NS,
    min_views: int = 2,
    min_visible_px: int | None = None,
) -> SyntheticScene:
    """A random (seeded) table scene rendered from ``n_cameras`` cameras; see the module docstring.

    Every object is seen by at least ``min_views`` cameras with ``min_visible_px`` pixels each
    (default: 0.1% of the image), else the layout is drawn again.
    """
    layout = layout or LayoutParams()
    relation_params = relation_params or RelationParams()
    rng = np.random.default_rng(seed)
    intrinsics = default_intrinsics(width, height)
    min_px = max(20, width * height // 1000) if min_visible_px is None else min_visible_px
    n_objects = layout.table_objects + layout.floor_objects + (2 if layout.stacked_pair else 0)
    if n_objects > len(OBJECT_COLOURS):
        raise ValueError(f"{n_objects} objects but only {len(OBJECT_COLOURS)} distinct colours")
    for attempt in range(layout.max_attempts):
        colours = list(rng.permutation(list(OBJECT_COLOURS)))
        try:
            primitives = _sample_layout(rng, layout, relation_params, colours)
        except _RejectedLayoutError:
            continue
        cameras = make_cameras(n_cameras, intrinsics, layout, rng)
        renderer = Renderer(primitives)
        rendered = {camera.name: renderer.render(camera) for camera in cameras}
        views_seeing = np.zeros(len(primitives), dtype=np.int64)
        for _, _, owner in rendered.values():
            counts = np.bincount(owner[owner >= 0], minlength=len(primitives))
            views_seeing += counts >= min_px
        if np.any(views_seeing < min(min_views, n_cameras)):
            continue
        _log.debug("layout accepted after %d attempts", attempt + 1)
        noise_rng = np.random.default_rng([seed, 1])
        frames = []
        for camera in cameras:
            rgb, depth, _ = rendered[camera.name]
            if noise is not None:
                depth = add_depth_noise(depth, noise, noise_rng)
            frames.append(Frame(camera.name, stamp_ns, rgb, depth, camera.intrinsics, camera.frame_id))
        instance_images = {name: owner for name, (_, _, owner) in rendered.items()}
        return SyntheticScene(primitives, cameras, frames, instance_images, seed, noise, relation_params)
    raise RuntimeError(f"no valid layout in {layout.max_attempts} attempts; relax LayoutParams")


def rerender(scene: SyntheticScene, stamp_ns: int, rng: np.random.Generator) -> list[Frame]:
    """New frames of the same (static) scene at ``stamp_ns``, with fresh noise."""
    renderer = Renderer(scene.primitives)
    frames = []
    for camera in scene.cameras:
        rgb, depth, _ = renderer.render(camera)
        if scene.noise is not None:
            depth = add_depth_noise(depth, scene.noise, rng)
        frames.append(Frame(camera.name, stamp_ns, rgb, depth, camera.intrinsics, camera.frame_id))
    return frames


# ---------------------------------------------------------------------------------------------------------
# Bag + files
# ---------------------------------------------------------------------------------------------------------


def camera_config(scene: SyntheticScene) -> dict[str, Any]:
    """ROS parameters for the oryx node's cameras (the ``cameras:`` group of config/oryx.yaml)."""
    from oryx_ros.bags.camera_bag import camera_topics

    cameras: dict[str, Any] = {"names": [camera.name for camera in scene.cameras]}
    for camera in scene.cameras:
        topics = camera_topics(camera.name)
        cameras[camera.name] = {
            "image_topic": topics.image,
            "camera_info_topic": topics.camera_info,
            "depth_topic": topics.depth,
            "frame_id": camera.frame_id,
            "mount": [round(v, 6) for v in mount_from_pose(camera.T_base_from_cam)],
        }
    return parameters_document({"cameras": cameras, "spatial": {"base_frame": BASE_FRAME}})


def _tf_static_message(scene: SyntheticScene, typestore: Any, stamp_ns: int) -> Any:
    from oryx_ros.ros.conversions import ns_to_stamp

    types = typestore.types
    transforms = []
    for camera in scene.cameras:
        x, y, z, qx, qy, qz, qw = mount_from_pose(camera.T_base_from_cam)
        header = types["std_msgs/msg/Header"](
            stamp=ns_to_stamp(stamp_ns, types["builtin_interfaces/msg/Time"]), frame_id=BASE_FRAME
        )
        transform = types["geometry_msgs/msg/Transform"](
            translation=types["geometry_msgs/msg/Vector3"](x=x, y=y, z=z),
            rotation=types["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw),
        )
        stamped = types["geometry_msgs/msg/TransformStamped"]
        transforms.append(stamped(header=header, child_frame_id=camera.frame_id, transform=transform))
    return types["tf2_msgs/msg/TFMessage"](transforms=transforms)


def write_scene(
    scene: SyntheticScene,
    out_dir: str | Path,
    *,
    n_frames: int = 5,
    rate_hz: float = 5.0,
    storage: Literal["sqlite3", "mcap"] = "sqlite3",
) -> dict[str, Path]:
    """Write ``out_dir``/bag (rosbag2: per camera rgb8 image, 32FC1 depth, CameraInfo; /tf_static with the
    mounts), ``ground_truth.json`` and ``cameras.yaml`` (node parameters for these cameras).

    The scene is static; each of the ``n_frames`` stamps is a new render with fresh depth noise.
    """
    from rosbags.typesys import get_typestore

    from oryx_ros.bags.camera_bag import DEFAULT_STORE, write_camera_bag

    if n_frames < 1 or rate_hz <= 0:
        raise ValueError(f"need n_frames >= 1 and rate_hz > 0, got {n_frames}, {rate_hz}")
    out = Path(out_dir)
    bag_path = out / "bag"
    if bag_path.exists():
        raise FileExistsError(f"{bag_path} already exists; rosbag2 writes a new directory")
    out.mkdir(parents=True, exist_ok=True)
    start_ns = scene.frames[0].stamp_ns
    period_ns = round(1e9 / rate_hz)
    rng = np.random.default_rng([scene.seed, 2])
    frames = list(scene.frames)
    for index in range(1, n_frames):
        frames += rerender(scene, start_ns + index * period_ns, rng)
    typestore = get_typestore(DEFAULT_STORE)
    tf_static = ("/tf_static", "tf2_msgs/msg/TFMessage", _tf_static_message(scene, typestore, start_ns), start_ns)
    write_camera_bag(bag_path, frames, extra_messages=[tf_static], storage=storage, depth_encoding="32FC1",
                     typestore=typestore)
    truth_path = out / "ground_truth.json"
    truth_path.write_text(json.dumps(scene.ground_truth(), indent=1))
    config_path = out / "cameras.yaml"
    config_path.write_text(
        "# Node parameters for the cameras of this synthetic scene (merge into config/oryx.yaml).\n"
        "# mount: camera optical frame (x right, y down, z forward) in base_link: x y z qx qy qz qw.\n"
        + yaml.safe_dump(camera_config(scene), sort_keys=False)
    )
    return {"bag": bag_path, "ground_truth": truth_path, "cameras": config_path}


def main(argv: Sequence[str] | None = None) -> int:
    """``oryx-ros make-scene OUT [--noise] [--cameras 4] [--seed N]``."""
    parser = argparse.ArgumentParser(prog="oryx-ros make-scene", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (bag/, ground_truth.json, cameras.yaml)")
    parser.add_argument("--noise", action="store_true", help="Kinect-like depth noise and 2%% dropout")
    parser.add_argument("--cameras", type=int, default=4, help="number of cameras around the table (1-8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=5, help="stamps written to the bag")
    parser.add_argument("--rate-hz", type=float, default=5.0)
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    scene = make_scene(args.seed, n_cameras=args.cameras, width=args.width, height=args.height,
                       noise=DepthNoise() if args.noise else None)
    paths = write_scene(scene, args.out, n_frames=args.frames, rate_hz=args.rate_hz, storage=args.storage)
    names = ", ".join(p.label for p in scene.primitives)
    print(f"scene seed {args.seed}: {len(scene.primitives)} objects ({names}), {len(scene.cameras)} cameras")
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
