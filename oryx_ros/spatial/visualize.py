"""Pictures of a scene result with OpenCV only: the marked views tiled, and an RViz-like 3D view.

``python -m oryx_ros.spatial.visualize OUT_DIR [--seed N] [--noise]`` renders a synthetic scene, runs
:func:`~oryx_ros.spatial.scene_graph.build_scene` and writes ``marked_views.png`` and ``scene_markers.png``
(the pictures in the README).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

from oryx_ros.perception.frames import CameraIntrinsics
from oryx_ros.spatial.correspondences import mark_colour
from oryx_ros.spatial.geometry import Pose, invert_pose, look_at_pose, project_points, transform_points
from oryx_ros.spatial.scene_graph import SceneResult

_FONT: Final = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND_RGB: Final = (48, 48, 48)  # RViz's default background
_GRID_RGB: Final = (110, 110, 110)
# Box edges as pairs of corner indices; corner i has x = bit 0, y = bit 1, z = bit 2 of i (low/high).
_BOX_EDGES: Final = ((0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7))
_RELATION_STYLE: Final[dict[str, tuple[tuple[int, int, int], int]]] = {
    "on": ((255, 230, 60), 3),  # colour (RGB), thickness
    "near": ((170, 170, 170), 1),
}


def _text(image: npt.NDArray[np.uint8], text: str, origin: tuple[int, int], scale: float,
          colour: tuple[int, int, int] = (255, 255, 255), thickness: int = 1) -> None:
    """Text with a dark outline, readable on any background."""
    # The outline is the text stamped at 1 px offsets: a thicker stroke would also advance each glyph more.
    for du, dv in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 2), (2, 0), (0, -2), (-2, 0)):
        cv2.putText(image, text, (origin[0] + du, origin[1] + dv), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    cv2.putText(image, text, origin, _FONT, scale, colour, thickness, cv2.LINE_AA)


def tile_images(
    images: Mapping[str, npt.NDArray[np.uint8]], *, columns: int = 2, tile_width: int = 384
) -> npt.NDArray[np.uint8]:
    """(H, W, 3) RGB mosaic of the views, each resized to ``tile_width`` and captioned with its name."""
    if not images:
        raise ValueError("no images to tile")
    tiles = []
    for name, image in images.items():
        height = round(image.shape[0] * tile_width / image.shape[1])
        tile = cv2.resize(image, (tile_width, height), interpolation=cv2.INTER_AREA)
        _text(tile, name, (6, height - 8), 0.5)
        tiles.append(tile)
    tile_height = max(tile.shape[0] for tile in tiles)
    rows = []
    for start in range(0, len(tiles), columns):
        row = [np.pad(t, ((0, tile_height - t.shape[0]), (0, 0), (0, 0))) for t in tiles[start:start + columns]]
        row += [np.zeros((tile_height, tile_width, 3), np.uint8)] * (columns - len(row))
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


def _project(points_base: npt.NDArray[np.float64], T_cam_from_base: Pose, intrinsics: CameraIntrinsics
             ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    uv, z = project_points(transform_points(T_cam_from_base, points_base), intrinsics)
    return np.rint(np.nan_to_num(uv, nan=-1e6)).astype(np.int64), z


def render_scene_markers(
    result: SceneResult,
    *,
    cameras: Mapping[str, Pose] | None = None,
    size: tuple[int, int] = (960, 640),
    eye_m: Sequence[float] | None = None,
    target_m: Sequence[float] | None = None,
) -> npt.NDArray[np.uint8]:
    """(H, W, 3) RGB perspective picture of what RViz shows for the scene graph: the objects' fused points,
    their boxes and id labels, ``on``/``near`` relation lines, the base frame axes and the cameras.

    Positions are in ``result.frame_id``; ``cameras`` maps names to ``T_frame_from_cam`` (optional).
    """
    width, height = size
    centres = np.array([o.position for o in result.objects]).reshape(-1, 3)
    # Default view: from behind-right of the base frame's origin, looking between it and the objects.
    middle = 0.8 * centres.mean(axis=0) if len(centres) else np.array([1.0, 0.0, 0.0])
    target = np.asarray(target_m if target_m is not None else middle)
    eye = np.asarray(eye_m if eye_m is not None else target + np.array([-1.5, -1.1, 2.4]))
    focal = 0.7 * width
    intrinsics = CameraIntrinsics(width, height, np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]]))
    T_cam_from_base = invert_pose(look_at_pose(eye, target))
    image = np.full((height, width, 3), _BACKGROUND_RGB, dtype=np.uint8)

    # Floor grid (z = 0) every 0.5 m, and the base frame's axes (x red, y green, z blue, as in RViz).
    span = np.arange(-1.0, 4.01, 0.5)
    for value in span:
        along_y = np.array([[value, -2.5, 0], [value, 2.5, 0]])
        along_x = np.array([[-1.0, value - 1.5, 0], [4.0, value - 1.5, 0]])
        for line in (along_y, along_x):
            (a, b), z = _project(line, T_cam_from_base, intrinsics)
            if np.all(z > 0):
                cv2.line(image, tuple(a), tuple(b), _GRID_RGB, 1, cv2.LINE_AA)
    axes = np.array([[0, 0, 0], [0.4, 0, 0], [0, 0.4, 0], [0, 0, 0.4]], dtype=np.float64)
    uv, _ = _project(axes, T_cam_from_base, intrinsics)
    for tip, colour in zip(uv[1:], ((230, 50, 50), (50, 200, 50), (60, 110, 255)), strict=True):
        cv2.line(image, tuple(uv[0]), tuple(tip), colour, 3, cv2.LINE_AA)
    _text(image, result.frame_id, (int(uv[0][0]) + 6, int(uv[0][1]) + 18), 0.5)

    for name, T_frame_from_cam in (cameras or {}).items():
        # A small frustum: optical centre and the four corners of a 0.15 m deep image plane.
        corners = np.array(
            [[0, 0, 0], [-0.1, -0.075, 0.15], [0.1, -0.075, 0.15], [0.1, 0.075, 0.15], [-0.1, 0.075, 0.15]]
        )
        uv, z = _project(transform_points(T_frame_from_cam, corners), T_cam_from_base, intrinsics)
        if np.all(z > 0):
            for i in range(1, 5):
                cv2.line(image, tuple(uv[0]), tuple(uv[i]), (200, 200, 255), 1, cv2.LINE_AA)
                cv2.line(image, tuple(uv[i]), tuple(uv[1 + i % 4]), (200, 200, 255), 1, cv2.LINE_AA)
            _text(image, name, (int(uv[0][0]) + 5, int(uv[0][1]) - 5), 0.45, (200, 200, 255))

    # Fused points of every object, far to near, in their measured colours.
    if result.instances:
        points = np.concatenate([d.instance.points_m for d in result.instances]).astype(np.float64)
        colours = np.concatenate([d.instance.colours_rgb for d in result.instances])
        uv, z = _project(points, T_cam_from_base, intrinsics)
        inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        order = np.argsort(-z[inside])
        u, v, c = uv[inside][order, 0], uv[inside][order, 1], colours[inside][order]
        for du, dv in ((0, 0), (1, 0), (0, 1), (1, 1)):
            image[np.clip(v + dv, 0, height - 1), np.clip(u + du, 0, width - 1)] = c

    by_id = {o.id: o for o in result.objects}
    for relation in result.relations:
        style = _RELATION_STYLE.get(relation.predicate)
        if style is None or (relation.predicate == "near" and relation.subject_id > relation.object_id):
            continue
        line = np.array([by_id[relation.subject_id].position, by_id[relation.object_id].position])
        (a, b), z = _project(line, T_cam_from_base, intrinsics)
        if np.all(z > 0):
            cv2.line(image, tuple(a), tuple(b), style[0], style[1], cv2.LINE_AA)

    label_anchors: list[tuple[int, npt.NDArray[np.int64], tuple[int, int, int]]] = []
    for obj in result.objects:
        centre, half = np.array(obj.position), 0.5 * np.array(obj.size)
        corners = np.array([[centre[k] + (half[k] if (i >> k) & 1 else -half[k]) for k in range(3)] for i in range(8)])
        uv, z = _project(corners, T_cam_from_base, intrinsics)
        if not np.all(z > 0):
            continue
        colour = mark_colour(obj.id)
        for i, j in _BOX_EDGES:
            cv2.line(image, tuple(uv[i]), tuple(uv[j]), colour, 2, cv2.LINE_AA)
        above = np.array([[centre[0], centre[1], centre[2] + half[2] + 0.03]])
        (top,), _ = _project(above, T_cam_from_base, intrinsics)
        label_anchors.append((obj.id, top, colour))

    # Labels last, so that no line crosses them; each takes the nearest free spot above or beside its
    # box, with a leader line when it had to move.
    by_id = {o.id: o for o in result.objects}
    taken: list[tuple[int, int, int, int]] = []  # label rectangles (x0, y0, x1, y1)
    placed: list[tuple[str, int, int, int, npt.NDArray[np.int64], tuple[int, int, int]]] = []
    for object_id, top, colour in sorted(label_anchors, key=lambda item: item[1][1]):
        label = f"{object_id}: {by_id[object_id].label}"
        (tw, th), _ = cv2.getTextSize(label, _FONT, 0.55, 1)
        spots = [
            (int(top[0]) - tw // 2 + dx * (tw // 2 + 12), int(top[1]) - dy * (th + 10))
            for dy in range(8) for dx in (0, -1, 1)
        ]

        def free(x0: int, y1: int, tw: int = tw, th: int = th) -> bool:
            inside = x0 >= 0 and x0 + tw < width and th + 4 <= y1 < height
            return inside and not any(
                x0 < r[2] + 6 and x0 + tw + 6 > r[0] and y1 - th - 6 < r[3] and y1 + 6 > r[1] for r in taken
            )

        x0, y1 = next((spot for spot in spots if free(*spot)), spots[0])
        taken.append((x0, y1 - th, x0 + tw, y1))
        placed.append((label, x0, y1, tw, top, colour))
    for _, x0, y1, tw, top, colour in placed:
        foot = (x0 + tw // 2, y1 + 3)
        if abs(foot[0] - int(top[0])) + abs(foot[1] - int(top[1])) > 6:
            cv2.line(image, (int(top[0]), int(top[1])), foot, colour, 1, cv2.LINE_AA)
    for label, x0, y1, _, _, colour in placed:
        _text(image, label, (x0, y1), 0.55, colour)

    # Legend.
    _text(image, f"scene graph in {result.frame_id}: {len(result.objects)} objects, {len(result.relations)} relations",
          (12, 24), 0.6)
    y = 50
    for predicate, (colour, thickness) in _RELATION_STYLE.items():
        cv2.line(image, (14, y - 5), (54, y - 5), colour, thickness, cv2.LINE_AA)
        _text(image, predicate, (62, y), 0.5, colour)
        y += 22
    return image


def save_png(path: str | Path, rgb: npt.NDArray[np.uint8]) -> Path:
    """Write an RGB image as a maximally compressed PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    from oryx_ros.spatial.scene_graph import build_scene
    from oryx_ros.spatial.synthetic_scene import DepthNoise, make_scene

    parser = argparse.ArgumentParser(prog="python -m oryx_ros.spatial.visualize", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory for marked_views.png and scene_markers.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise", action="store_true")
    parser.add_argument("--tile-width", type=int, default=384, help="width of each view in the mosaic")
    args = parser.parse_args(argv)
    scene = make_scene(args.seed, noise=DepthNoise() if args.noise else None)
    result = build_scene(scene.frames, scene.T_base_from_cam)
    mosaic = save_png(args.out / "marked_views.png", tile_images(result.marked_views, tile_width=args.tile_width))
    markers = save_png(args.out / "scene_markers.png", render_scene_markers(result, cameras=scene.T_base_from_cam))
    for path in (mosaic, markers):
        print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
