"""An hour of robot time with known events, as a small RGB-D bag, and ``oryx-ros make-hour-bag``.

Two cameras look at a table (the synthetic renderer of :mod:`oryx_ros.spatial.synthetic_scene`). Over one hour
of stamps, one set every ``period_s``:

* a green sphere stays on the table the whole hour;
* a red box (the "toolbox") is on the table from 5 to 10 minutes, then gone;
* a blue cylinder appears on the floor left of the table at 20 minutes and is moved to the right at 40 minutes.

The robot stands still at ``ROBOT_XY`` in the ``odom`` frame (nav_msgs/Odometry on ``/odom`` with every set), so
memory positions are in ``odom``: the table's objects at their base-frame place plus ``ROBOT_XY``.

Replayed with ``oryx-ros replay BAG --clock --rate 60`` into a node with ``use_sim_time``, the hour passes in a
minute; at the end, the red box was last seen 50 minutes of robot time earlier. ``events.json`` holds the
ground truth: each object's intervals and positions in the base frame.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from oryx_ros.perception.frames import Frame

NS_PER_S: Final = 1_000_000_000
HOUR_S: Final = 3600.0
START_NS: Final = 1_700_000_000 * NS_PER_S
TABLE_CENTRE: Final = (1.6, 0.0)
TABLE_SIZE: Final = (1.0, 0.7, 0.55)
ODOM_TOPIC: Final = "/odom"
FIXED_FRAME: Final = "odom"
ROBOT_XY: Final = (10.0, 5.0)  # where the robot stands in odom, facing +x (no rotation)


@dataclass(frozen=True)
class Appearance:
    """One object at one place for a time interval [start_s, end_s) of the hour."""

    label: str  # as the node's colour labels read it, e.g. "red object"
    colour: str
    shape: str
    size_m: tuple[float, float, float]
    centre_xy_m: tuple[float, float]
    on_table: bool
    start_s: float
    end_s: float

    def centre_m(self) -> tuple[float, float, float]:
        base_z = TABLE_SIZE[2] if self.on_table else 0.0
        return (*self.centre_xy_m, round(base_z + self.size_m[2] / 2, 4))


EVENTS: Final[tuple[Appearance, ...]] = (
    Appearance("green object", "green", "sphere", (0.18, 0.18, 0.18), (1.4, 0.18), True, 0.0, HOUR_S + 1),
    Appearance("red object", "red", "box", (0.26, 0.2, 0.16), (1.78, -0.14), True, 300.0, 600.0),
    Appearance("blue object", "blue", "cylinder", (0.18, 0.18, 0.28), (1.6, 0.62), False, 1200.0, 2400.0),
    Appearance("blue object", "blue", "cylinder", (0.18, 0.18, 0.28), (1.6, -0.62), False, 2400.0, HOUR_S + 1),
)


def _layout_at(t_s: float) -> tuple[Appearance, ...]:
    return tuple(event for event in EVENTS if event.start_s <= t_s < event.end_s)


def hour_frames(period_s: float = 20.0, width: int = 256, height: int = 192, seed: int = 5,
                duration_s: float = HOUR_S) -> tuple[list[Frame], Any]:
    """Frames of both cameras every ``period_s`` over ``duration_s``, and the rendered scene of the first
    layout (for its cameras). Each distinct layout is rendered once and its images reused at every stamp."""
    from oryx_ros.spatial.synthetic_scene import OBJECT_COLOURS as COLOURS
    from oryx_ros.spatial.synthetic_scene import (
        TABLE_RGB,
        LayoutParams,
        Primitive,
        Renderer,
        default_intrinsics,
        make_cameras,
    )

    rng = np.random.default_rng(seed)
    placement = LayoutParams(table_centre_xy_m=TABLE_CENTRE, camera_radius_m=1.5, camera_height_m=1.3)
    cameras = make_cameras(2, default_intrinsics(width, height), placement, rng)
    table = Primitive("table", "table", "box", (TABLE_CENTRE[0], TABLE_CENTRE[1], TABLE_SIZE[2] / 2), TABLE_SIZE,
                      TABLE_RGB, "floor")
    rendered: dict[tuple[Appearance, ...], dict[str, tuple[Any, Any]]] = {}
    frames: list[Frame] = []
    steps = int(duration_s // period_s) + 1
    for step in range(steps):
        t_s = step * period_s
        layout = _layout_at(t_s)
        if layout not in rendered:
            primitives = [table] + [
                Primitive(f"{e.colour}_{e.shape}", f"{e.colour} {e.shape}", e.shape, e.centre_m(), e.size_m,
                          COLOURS[e.colour], "table" if e.on_table else "floor")  # type: ignore[arg-type]
                for e in layout]
            renderer = Renderer(primitives)
            rendered[layout] = {camera.name: renderer.render(camera)[:2] for camera in cameras}
        stamp_ns = START_NS + round(t_s * NS_PER_S)
        for camera in cameras:
            rgb, depth = rendered[layout][camera.name]
            frames.append(Frame(camera.name, stamp_ns, rgb, depth, camera.intrinsics, camera.frame_id))
    return frames, cameras


def events_truth(period_s: float) -> dict[str, Any]:
    """Ground truth: each appearance's interval and centre, in the fixed frame (odom) the memory uses."""
    def fixed(centre: tuple[float, float, float]) -> list[float]:
        return [round(centre[0] + ROBOT_XY[0], 4), round(centre[1] + ROBOT_XY[1], 4), centre[2]]

    return {
        "start_ns": START_NS, "duration_s": HOUR_S, "period_s": period_s, "frame_id": FIXED_FRAME,
        "robot_xyz": [*ROBOT_XY, 0.0],
        "appearances": [{"label": e.label, "colour": e.colour, "shape": e.shape, "centre_m": fixed(e.centre_m()),
                         "start_s": e.start_s, "end_s": min(e.end_s, HOUR_S)} for e in EVENTS],
    }


def _odometry(typestore: Any, stamp_ns: int) -> Any:
    from oryx_ros.ros.conversions import ns_to_stamp

    types = typestore.types
    header = types["std_msgs/msg/Header"](stamp=ns_to_stamp(stamp_ns, types["builtin_interfaces/msg/Time"]),
                                          frame_id=FIXED_FRAME)
    pose = types["geometry_msgs/msg/Pose"](
        position=types["geometry_msgs/msg/Point"](x=ROBOT_XY[0], y=ROBOT_XY[1], z=0.0),
        orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    covariance = np.zeros(36, dtype=np.float64)
    twist = types["geometry_msgs/msg/Twist"](linear=types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                             angular=types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0))
    return types["nav_msgs/msg/Odometry"](
        header=header, child_frame_id="base_link",
        pose=types["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=covariance),
        twist=types["geometry_msgs/msg/TwistWithCovariance"](twist=twist, covariance=covariance.copy()))


def write_hour_bag(out_dir: str | Path, period_s: float = 20.0, width: int = 256, height: int = 192
                   ) -> dict[str, Path]:
    """``out_dir``/bag (2 RGB-D cameras with CameraInfo), ``events.json`` and ``cameras.yaml``."""
    import yaml

    from oryx_ros.bags.camera_bag import camera_topics, write_camera_bag
    from oryx_ros.params_file import parameters_document
    from oryx_ros.spatial.geometry import mount_from_pose

    out = Path(out_dir)
    bag_path = out / "bag"
    if bag_path.exists():
        raise FileExistsError(f"{bag_path} already exists; rosbag2 writes a new directory")
    out.mkdir(parents=True, exist_ok=True)
    from rosbags.typesys import get_typestore

    from oryx_ros.bags.camera_bag import DEFAULT_STORE

    frames, cameras = hour_frames(period_s, width, height)
    typestore = get_typestore(DEFAULT_STORE)
    # The pose just before each set, so that the node knows it when the frames arrive.
    odometry = [(ODOM_TOPIC, "nav_msgs/msg/Odometry", _odometry(typestore, stamp - 1_000_000), stamp - 1_000_000)
                for stamp in sorted({frame.stamp_ns for frame in frames})]
    write_camera_bag(bag_path, frames, extra_messages=odometry, depth_encoding="16UC1", typestore=typestore)
    (out / "events.json").write_text(json.dumps(events_truth(period_s), indent=1))
    config: dict[str, Any] = {"names": [camera.name for camera in cameras]}
    for camera in cameras:
        topics = camera_topics(camera.name)
        config[camera.name] = {"image_topic": topics.image, "camera_info_topic": topics.camera_info,
                               "depth_topic": topics.depth, "frame_id": camera.frame_id,
                               "mount": [round(v, 6) for v in mount_from_pose(camera.T_base_from_cam)]}
    (out / "cameras.yaml").write_text(
        "# Node parameters for the cameras of the hour bag (merge into config/oryx.yaml).\n"
        + yaml.safe_dump(parameters_document({"cameras": config, "spatial": {
            "base_frame": "base_link", "pose_topic": ODOM_TOPIC, "pose_type": "odometry"}}), sort_keys=False))
    return {"bag": bag_path, "events": out / "events.json", "cameras": out / "cameras.yaml"}


def hour_topics(out_dir: str | Path) -> list[str]:
    """Every topic of the hour bag in ``out_dir`` that the node reads: the cameras' and the odometry."""
    from oryx_ros.params_file import camera_topics_of, read_parameters

    return [*camera_topics_of(read_parameters(Path(out_dir) / "cameras.yaml")["cameras"]), ODOM_TOPIC]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oryx-ros make-hour-bag", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="output directory (bag/, events.json, cameras.yaml)")
    parser.add_argument("--period-s", type=float, default=20.0, help="seconds of robot time between camera sets")
    args = parser.parse_args(argv)
    paths = write_hour_bag(args.out, args.period_s)
    for what, path in paths.items():
        print(f"{what}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
