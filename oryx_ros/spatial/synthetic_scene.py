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
from collections.abc import Callable, Sequence
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
from oryx_ros.spatial.relations import (
    Box,
    RelationParams,
    compute_relations,
    contacts_from_parts,
    relation_margins,
)

_log = logging.getLogger(__name__)

Shape = Literal["box", "sphere", "cylinder", "furniture"]

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
WALL_RGB: Final = (225, 220, 205)
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
    # furniture only: its rigid parts as axis-aligned boxes (centre, size), e.g. a table's top and legs
    parts: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = ()

    @property
    def box(self) -> Box:
        return Box(np.array(self.centre_m), np.array(self.size_m))

    @property
    def part_boxes(self) -> list[Box]:
        return [Box(np.array(c), np.array(s)) for c, s in self.parts] if self.parts else [self.box]

    def mesh(self) -> o3d.geometry.TriangleMesh:
        sx, sy, sz = self.size_m
        if self.shape == "furniture":
            mesh = o3d.geometry.TriangleMesh()
            for centre, size in self.parts:
                part = o3d.geometry.TriangleMesh.create_box(*size)
                mesh += part.translate(tuple(c - s / 2 for c, s in zip(centre, size, strict=True)))
            return mesh
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
    walls: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = ()  # background boxes

    @property
    def T_base_from_cam(self) -> dict[str, npt.NDArray[np.float64]]:  # noqa: N802 (transform naming convention)
        return {camera.name: camera.T_base_from_cam for camera in self.cameras}

    def true_relations(self) -> list[tuple[int, str, int]]:
        """(subject index, predicate, object index) triples over the primitives' true boxes."""
        contacts = contacts_from_parts([p.part_boxes for p in self.primitives], self.relation_params)
        relations = compute_relations(
            [p.box for p in self.primitives], list(range(len(self.primitives))), self.relation_params,
            viewpoint=BASE_FRAME, contacts=contacts,
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
                 "size_m": list(p.size_m), "rgb": list(p.rgb), "support": p.support,
                 "parts": [{"centre_m": list(c), "size_m": list(sz)} for c, sz in p.parts]}
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


def _unambiguous(a: Primitive, b: Primitive, relation_params: RelationParams, margin_m: float,
                 skip: Sequence[str] = ()) -> bool:
    """No predicate between a and b (either way round) is within ``margin_m`` of its threshold."""
    return all(
        abs(m) >= margin_m - 1e-6  # resting contact has margin exactly contact_m, up to rounding
        for first, second in ((a, b), (b, a))
        for name, m in relation_margins(first.box, second.box, relation_params).items() if name not in skip
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

    def __init__(self, primitives: Sequence[Primitive],
                 walls: Sequence[tuple[tuple[float, float, float], tuple[float, float, float]]] = ()) -> None:
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
        for centre, size in walls:  # background (owner -3 while rendering, -1 in the owner image)
            wall = o3d.geometry.TriangleMesh.create_box(*size)
            wall.translate(tuple(c - sz / 2 for c, sz in zip(centre, size, strict=True)))
            self._owner[self._scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(wall))] = -3

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
        # (the -3 of walls is kept here for the albedo and mapped to -1 below)
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
        albedo[owner == -3] = WALL_RGB
        for index, primitive in enumerate(self.primitives):
            albedo[owner == index] = primitive.rgb
        # Lambertian shading with normals turned towards the camera.
        facing = np.where(np.sum(normals * directions, axis=-1, keepdims=True) > 0, -normals, normals)
        shade = AMBIENT + (1 - AMBIENT) * np.clip(facing @ LIGHT_DIRECTION, 0.0, 1.0)
        rgb = np.where(hit[..., None], albedo * shade[..., None], albedo)
        depth[~hit] = np.nan
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), depth, np.where(owner < 0, -1, owner).astype(np.int32)


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
        scene = _render_scene(primitives, (), cameras, min_px, min(min_views, n_cameras), seed, noise, stamp_ns,
                              relation_params)
        if scene is None:
            continue
        _log.debug("layout accepted after %d attempts", attempt + 1)
        return scene
    raise RuntimeError(f"no valid layout in {layout.max_attempts} attempts; relax LayoutParams")


def _render_scene(primitives: list[Primitive], walls: Sequence[Any], cameras: list[SceneCamera], min_px: int,
                  min_views: int, seed: int, noise: DepthNoise | None, stamp_ns: int,
                  relation_params: RelationParams) -> SyntheticScene | None:
    """Render every camera; the scene (depth noise added) if each primitive shows ``min_px`` pixels in at
    least ``min_views`` views, else None (the caller draws another layout)."""
    renderer = Renderer(primitives, walls)
    rendered = {camera.name: renderer.render(camera) for camera in cameras}
    views_seeing = np.zeros(len(primitives), dtype=np.int64)
    for _, _, owner in rendered.values():
        views_seeing += np.bincount(owner[owner >= 0], minlength=len(primitives)) >= min_px
    if np.any(views_seeing < min_views):
        return None
    noise_rng = np.random.default_rng([seed, 1])
    frames = []
    for camera in cameras:
        rgb, depth, _ = rendered[camera.name]
        if noise is not None:
            depth = add_depth_noise(depth, noise, noise_rng)
        frames.append(Frame(camera.name, stamp_ns, rgb, depth, camera.intrinsics, camera.frame_id))
    instance_images = {name: owner for name, (_, _, owner) in rendered.items()}
    return SyntheticScene(primitives, cameras, frames, instance_images, seed, noise, relation_params, tuple(walls))


# ---------------------------------------------------------------------------------------------------------
# Furniture scenes
# ---------------------------------------------------------------------------------------------------------

# Furniture albedos, named as a person would ("brown" table, "beige" shelf, "grey" chair).
FURNITURE_RGB: Final[dict[str, tuple[int, int, int]]] = {
    "table": (150, 100, 60), "shelf": (215, 195, 150), "chair": (110, 110, 115),
}
# Small objects of the furniture scenes (orange as in the sphere; no beige/brown/grey: furniture).
FURNITURE_OBJECT_COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "red": (215, 35, 35), "green": (40, 165, 60), "blue": (40, 80, 215), "yellow": (235, 205, 40),
    "purple": (140, 60, 190), "orange": (240, 125, 25), "pink": (235, 110, 170), "cyan": (40, 190, 200),
}
WALL_X_M: Final = 3.2  # the wall's face (a vertical background plane facing -x)


def _furniture(name: str, parts: Sequence[tuple[Sequence[float], Sequence[float]]]) -> Primitive:
    """A piece of furniture from its part boxes given as (low corner, high corner)."""
    boxes = tuple((tuple(float((lo + hi) / 2) for lo, hi in zip(low, high, strict=True)),
                   tuple(float(hi - lo) for lo, hi in zip(low, high, strict=True))) for low, high in parts)
    low = np.min([np.array(c) - np.array(s) / 2 for c, s in boxes], axis=0)
    high = np.max([np.array(c) + np.array(s) / 2 for c, s in boxes], axis=0)
    centre = tuple(float(v) for v in (low + high) / 2)
    size = tuple(float(v) for v in high - low)
    return Primitive(name, f"{name}", "furniture", centre, size, FURNITURE_RGB[name], "floor", boxes)


def table_with_legs(x: float, y: float, size: tuple[float, float, float] = (1.0, 0.65, 0.72)) -> Primitive:
    """A table: a 4 cm top and four 5 cm square legs, 3 cm in from the corners."""
    sx, sy, height = size
    top = ((x - sx / 2, y - sy / 2, height - 0.04), (x + sx / 2, y + sy / 2, height))
    legs = []
    for cx in (x - sx / 2 + 0.055, x + sx / 2 - 0.055):
        for cy in (y - sy / 2 + 0.055, y + sy / 2 - 0.055):
            legs.append(((cx - 0.025, cy - 0.025, 0.0), (cx + 0.025, cy + 0.025, height - 0.04)))
    return _furniture("table", [top, *legs])


def chair(x: float, y: float) -> Primitive:
    """A chair: a 42 cm seat at 45 cm, four 4 cm legs and a back on its -y side."""
    half, seat = 0.21, 0.45
    parts = [((x - half, y - half, seat - 0.04), (x + half, y + half, seat))]
    for cx in (x - half + 0.03, x + half - 0.03):
        for cy in (y - half + 0.03, y + half - 0.03):
            parts.append(((cx - 0.02, cy - 0.02, 0.0), (cx + 0.02, cy + 0.02, seat - 0.04)))
    parts.append(((x - half, y - half, seat), (x + half, y - half + 0.04, seat + 0.42)))
    return _furniture("chair", parts)


def shelf(x_back: float, y_low: float, boards_z: Sequence[float] = (0.08, 0.5, 0.95)) -> Primitive:
    """An open shelf, 35 cm deep and 90 cm wide, its back edge at ``x_back``: two 2.5 cm sides and
    2.5 cm boards whose tops are at ``boards_z``, open towards -x."""
    depth, width, t = 0.35, 0.9, 0.025
    x0, y1 = x_back - depth, y_low + width
    top = max(boards_z)
    parts = [((x0, y_low, 0.0), (x_back, y_low + t, top)), ((x0, y1 - t, 0.0), (x_back, y1, top))]
    parts += [((x0, y_low + t, z - t), (x_back, y1 - t, z)) for z in boards_z]
    return _furniture("shelf", parts)


def make_furniture_scene(
    seed: int = 0,
    *,
    n_cameras: int = 4,
    width: int = 640,
    height: int = 480,
    noise: DepthNoise | None = None,
    relation_params: RelationParams | None = None,
    stamp_ns: int = DEFAULT_START_NS,
    max_attempts: int = 200,
) -> SyntheticScene:
    """A room corner: a wall (x = WALL_X_M), a table with legs, a chair, a shelf against the wall, and six
    objects: two on the table, one on each of the shelf's upper boards, one on the floor against the wall,
    one on the floor under the table. Positions are jittered by the seed; cameras stand on an arc facing
    the wall. Layouts with an ambiguous box relation or an object seen by fewer than two cameras are
    drawn again (as in :func:`make_scene`)."""
    relation_params = relation_params or RelationParams()
    rng = np.random.default_rng([seed, 7])
    intrinsics = default_intrinsics(width, height)
    min_px = max(20, width * height // 1000)
    walls = (((WALL_X_M + 0.05, -0.4, 1.0), (0.1, 5.0, 2.0)),)
    shapes: tuple[Shape, ...] = ("box", "sphere", "cylinder")
    for attempt in range(max_attempts):
        colours = list(rng.permutation(list(FURNITURE_OBJECT_COLOURS)))
        tx, ty = 1.95 + rng.uniform(-0.1, 0.1), 0.55 + rng.uniform(-0.1, 0.1)
        table = table_with_legs(tx, ty)
        seat = chair(1.35 + rng.uniform(-0.1, 0.1), -0.55 + rng.uniform(-0.08, 0.08))
        shelf_y = -1.75 + rng.uniform(-0.1, 0.05)
        rack = shelf(WALL_X_M - 0.08, shelf_y)
        placed = [table, seat, rack]

        def small(shape: Shape, limit: float = 0.16) -> tuple[float, float, float]:
            sx, sy, sz = _random_size(rng, shape)
            sx, sz = min(sx, limit), min(sz, limit + 0.04)
            return {"box": (sx, min(sy, limit), sz), "sphere": (sx, sx, sx), "cylinder": (sx, sx, sz)}[shape]

        def on_table() -> tuple[Shape, tuple[float, float, float], tuple[float, float], float, str]:
            shape = shapes[int(rng.integers(3))]
            size = small(shape)
            xy = (tx + rng.uniform(-0.5 + size[0] / 2 + 0.06, 0.5 - size[0] / 2 - 0.06),  # noqa: B023
                  ty + rng.uniform(-0.325 + size[1] / 2 + 0.06, 0.325 - size[1] / 2 - 0.06))  # noqa: B023
            return shape, size, xy, 0.72, "table"

        def on_board(board_z: float, y_offset: float) -> Callable[[], tuple]:
            def sample() -> tuple[Shape, tuple[float, float, float], tuple[float, float], float, str]:
                shape: Shape = ("box", "cylinder")[int(rng.integers(2))]  # flat bottoms on a board
                size = small(shape, 0.14)
                size = (size[0], size[1], min(size[2], 0.3 if board_z < 0.9 else 0.2))
                xy = (WALL_X_M - 0.255 + rng.uniform(-0.01, 0.01), shelf_y + y_offset + rng.uniform(-0.06, 0.06))  # noqa: B023
                return shape, size, xy, board_z, "shelf"
            return sample

        def against_wall() -> tuple[Shape, tuple[float, float, float], tuple[float, float], float, str]:
            size = (float(rng.uniform(0.12, 0.2)), float(rng.uniform(0.12, 0.25)), float(rng.uniform(0.15, 0.3)))
            return "box", size, (WALL_X_M - size[0] / 2, float(rng.uniform(-0.55, 0.0))), 0.0, "floor"

        def under_table() -> tuple[Shape, tuple[float, float, float], tuple[float, float], float, str]:
            shape = shapes[int(rng.integers(3))]
            size = small(shape)
            return shape, size, (tx + rng.uniform(-0.25, 0.25), ty + rng.uniform(-0.06, 0.06)), 0.0, "floor"  # noqa: B023

        primitives = list(placed)
        jobs = [on_table, on_table, on_board(0.5, 0.25), on_board(0.95, 0.65), against_wall, under_table]
        for job in jobs:
            for _ in range(200):
                shape, size, xy, base_z, support = job()
                candidate = _object(colours[-1], shape, size, xy, base_z, support)
                if all(_footprint_gap(candidate, other) >= 0.08 for other in primitives[3:]) and all(
                        _unambiguous(candidate, other, relation_params, 0.03, skip=("on",)) for other in primitives):
                    colours.pop()
                    primitives.append(candidate)
                    break
            else:
                break
        if len(primitives) < len(placed) + len(jobs):
            continue
        cameras = _arc_cameras(n_cameras, intrinsics, rng)
        scene = _render_scene(primitives, walls, cameras, min_px, min(2, n_cameras), seed, noise, stamp_ns,
                              relation_params)
        if scene is None:
            continue
        _log.debug("furniture layout accepted after %d attempts", attempt + 1)
        return scene
    raise RuntimeError(f"no valid furniture layout in {max_attempts} attempts")


def _object(colour: str, shape: Shape, size: tuple[float, float, float], xy: Sequence[float],
            base_z: float, support: str) -> Primitive:
    return Primitive(f"{colour}_{shape}", f"{colour} {shape}", shape,
                     (float(xy[0]), float(xy[1]), base_z + size[2] / 2), size, FURNITURE_OBJECT_COLOURS[colour],
                     support)


def _arc_cameras(n_cameras: int, intrinsics: CameraIntrinsics, rng: np.random.Generator) -> list[SceneCamera]:
    """Cameras on an arc of 140 degrees facing the wall (+x), around the room corner's middle."""
    if not 1 <= n_cameras <= 8:
        raise ValueError(f"n_cameras must be 1..8, got {n_cameras}")
    centre = np.array([2.3, -0.35])
    cameras = []
    for index in range(n_cameras):
        fraction = 0.5 if n_cameras == 1 else index / (n_cameras - 1)
        azimuth = math.pi + math.radians(-70 + 140 * fraction) + rng.uniform(-0.08, 0.08)
        radius = 2.1 + rng.uniform(-0.1, 0.1)
        eye = (centre[0] + radius * math.cos(azimuth), centre[1] + radius * math.sin(azimuth),
               1.45 + rng.uniform(-0.1, 0.1))
        target = (centre[0] + rng.uniform(-0.1, 0.1), centre[1] + rng.uniform(-0.1, 0.1), 0.45)
        cameras.append(SceneCamera(f"cam{index}", intrinsics, look_at_pose(eye, target)))
    return cameras


def rerender(scene: SyntheticScene, stamp_ns: int, rng: np.random.Generator) -> list[Frame]:
    """New frames of the same (static) scene at ``stamp_ns``, with fresh noise."""
    renderer = Renderer(scene.primitives, scene.walls)
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
