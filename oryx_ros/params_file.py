"""ROS 2 parameter files of the oryx node (``--params-file``, ``ros2 launch ... params_file:=``).

Plain YAML, no ROS: the demo, the scene generator, the benchmarks and the tests write and read them here,
in the one layout ``/**: {ros__parameters: {...}}`` that applies to the node under any name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def parameters_document(parameters: dict[str, Any]) -> dict[str, Any]:
    """A parameter file's content for any node name: ``{"/**": {"ros__parameters": parameters}}``."""
    return {"/**": {"ros__parameters": parameters}}


def camera_groups(names: Sequence[str]) -> dict[str, Any]:
    """``cameras`` parameters for RGB cameras on ``/<name>/image_raw`` with ``/<name>/camera_info``."""
    groups: dict[str, Any] = {"names": list(names)}
    for name in names:
        groups[name] = {"image_topic": f"/{name}/image_raw", "camera_info_topic": f"/{name}/camera_info"}
    return groups


def write_params_file(path: Path, parameters: dict[str, Any]) -> Path:
    """Write ``parameters`` (nested by dotted name's parts) as a parameter file; returns ``path``."""
    path.write_text(yaml.safe_dump(parameters_document(parameters), sort_keys=False))
    return path


def read_parameters(path: Path) -> dict[str, Any]:
    """The ``ros__parameters`` of a parameter file written by :func:`write_params_file`."""
    return yaml.safe_load(path.read_text())["/**"]["ros__parameters"]


def camera_topics_of(cameras: dict[str, Any]) -> list[str]:
    """Every topic the ``cameras`` parameters name (image, CameraInfo, depth), in camera order."""
    return [cameras[name][key] for name in cameras["names"]
            for key in ("image_topic", "camera_info_topic", "depth_topic") if cameras[name].get(key)]
