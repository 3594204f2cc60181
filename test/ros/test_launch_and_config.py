"""The launch file and the YAML config only set parameters that the node declares.

`launch` cannot be installed here, so the launch file is read as Python source (ast) rather than run.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import yaml

from oryx_ros.ros.parameters import CAMERA_PARAMETERS, PARAMETERS, parameter_table_markdown

REPO = Path(__file__).resolve().parents[2]
BUILTIN = {"use_sim_time"}


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _declared(camera_names: list[str]) -> set[str]:
    names = set(PARAMETERS) | BUILTIN | {"cameras.names"}
    names |= {f"cameras.{camera}.{key}" for camera in camera_names for key in CAMERA_PARAMETERS}
    return names


def test_yaml_config_sets_only_declared_parameters_with_matching_types() -> None:
    document = yaml.safe_load((REPO / "config" / "oryx.yaml").read_text())
    values = _flatten(document["/**"]["ros__parameters"])
    cameras = values["cameras.names"]
    undeclared = set(values) - _declared(cameras)
    assert not undeclared, f"config/oryx.yaml sets undeclared parameters: {sorted(undeclared)}"
    for name, value in values.items():
        if name in PARAMETERS:
            default = PARAMETERS[name][0]
            assert type(value) is type(default), f"{name}: {type(value).__name__} vs {type(default).__name__}"
    # Every camera group the YAML names is complete enough to subscribe.
    for camera in cameras:
        assert values.get(f"cameras.{camera}.image_topic"), camera
        assert len(values.get(f"cameras.{camera}.mount", [0] * 7)) == 7


def test_launch_file_overrides_only_declared_parameters_and_declares_its_arguments() -> None:
    source = (REPO / "launch" / "oryx.launch.py").read_text()
    tree = ast.parse(source)
    overrides = next(node for node in ast.walk(tree) if isinstance(node, ast.Assign)
                     and getattr(node.targets[0], "id", "") == "overrides")
    keys = {key.value for key in overrides.value.keys}
    assert keys and keys <= _declared([]), keys - _declared([])
    declared_arguments = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                          and getattr(call.func, "id", "") == "DeclareLaunchArgument"}
    used_arguments = {call.args[0].value for call in ast.walk(tree) if isinstance(call, ast.Call)
                      and getattr(call.func, "id", "") == "LaunchConfiguration"}
    assert used_arguments <= declared_arguments, used_arguments - declared_arguments
    assert {"params_file", "model_path", "namespace", "use_sim_time", "log_level"} <= declared_arguments
    executables = {kw.value.value for call in ast.walk(tree) if isinstance(call, ast.Call)
                   for kw in call.keywords if kw.arg == "executable"}
    for executable in executables:
        assert (REPO / "nodes" / executable).exists(), executable


def test_readme_documents_every_parameter() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [name for name in [*PARAMETERS, *(f"cameras.<name>.{k}" for k in CAMERA_PARAMETERS)]
               if f"`{name}`" not in readme]
    assert not missing, f"README.md does not document {missing}"
    # Defaults, ranges and read-only flags as declared (regenerate with parameter_table_markdown()).
    assert parameter_table_markdown() in readme, "README's parameter table is out of date"
