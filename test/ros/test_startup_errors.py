"""Start-up errors: one ERROR line naming the parameter and the fix, no traceback.

The plain node exits 1; the lifecycle node's configure fails and the node stays up, answering lifecycle
requests. The checks themselves (:func:`check_model_settings`, :func:`explain_load_error`) are tested
without a node first.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from oryx_ros.model.loading import VIT_PREFIX, CheckpointMismatchError, CorruptWeightsError, PickledWeightsError
from oryx_ros.model.tiny_checkpoint import SHARD_NAMES, TOKENIZER_FILES, ensure_tiny_checkpoint
from oryx_ros.ros.startup import StartupError, check_model_settings, explain_load_error

# ------------------------------------------------------------------------------------ without a node
GOOD = {"path": "", "device": "cpu", "dtype": "float32", "attn_implementation": "sdpa"}


def _refusal(**changes: str) -> StartupError:
    with pytest.raises(StartupError) as caught:
        check_model_settings(**{**GOOD, **changes})
    assert "\n" not in str(caught.value)
    return caught.value


@pytest.mark.parametrize(("changes", "parameter", "phrase"), [
    ({"dtype": "int8"}, "model.dtype", "float32"),
    ({"device": "gpu"}, "model.device", "cuda:N"),
    ({"device": "cuda:x"}, "model.device", "cuda:N"),
    ({"device": "cuda:"}, "model.device", "cuda:N"),
    ({"attn_implementation": "flash"}, "model.attn_implementation", "sdpa"),
    ({"resize_backend": "nearest"}, "model.resize_backend", "exact"),
    ({"path": "/no/such/checkpoint"}, "model.path", "does not exist"),
])
def test_malformed_settings_are_refused_naming_the_parameter(changes: dict, parameter: str, phrase: str) -> None:
    error = _refusal(**changes)
    assert error.parameter == parameter and str(error).startswith(parameter) and phrase in str(error)


def test_checkpoint_directory_is_checked_before_loading(tmp_path: Path) -> None:
    (tmp_path / "weights.safetensors").write_bytes(b"")
    assert "is a file" in str(_refusal(path=str(tmp_path / "weights.safetensors")))
    assert "no config.json" in str(_refusal(path=str(tmp_path)))
    (tmp_path / "config.json").write_text("{not json")
    assert "config.json cannot be read" in str(_refusal(path=str(tmp_path)))


def test_cuda_devices_need_a_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0", "auto"):
        error = _refusal(device=device)
        assert error.parameter == "model.device" and "model.device:=cpu" in str(error)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "only 1 GPU(s)" in str(_refusal(device="cuda:2"))
    check_model_settings(**{**GOOD, "device": "cuda:0"})


def test_flash_attention_needs_the_package_cuda_and_16_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "flash_attn" else
                        real_find_spec(name))
    assert "not installed" in str(_refusal(attn_implementation="flash_attention_2"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "flash_attn" else
                        real_find_spec(name))
    assert "CUDA only" in str(_refusal(attn_implementation="flash_attention_2"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "16-bit" in str(_refusal(attn_implementation="flash_attention_2", device="cuda"))
    check_model_settings(path="", device="cuda", dtype="bfloat16", attn_implementation="flash_attention_2")


def test_good_settings_pass_16_bit_included_on_cpu() -> None:
    for dtype in ("float32", "bfloat16", "float16"):
        check_model_settings(**{**GOOD, "dtype": dtype, "path": str(ensure_tiny_checkpoint())})


def test_loader_errors_become_one_line() -> None:
    mismatch = CheckpointMismatchError(missing=["b.weight", "a.weight"], unexpected=["extra.weight"])
    error = explain_load_error(mismatch, "/ckpt", "cpu")
    assert error is not None and error.parameter == "model.path" and "\n" not in str(error)
    assert "2 missing, 1 unexpected tensors, e.g. a.weight" in str(error) and "--log-level oryx:=debug" in str(error)
    pickled = explain_load_error(PickledWeightsError(Path("/ckpt/vit.pth")), "/ckpt", "cpu")
    assert pickled is not None and pickled.parameter == "model.allow_pickle" and "model.allow_pickle:=true" in str(
        pickled)
    corrupt = explain_load_error(CorruptWeightsError(Path("/ckpt/model.safetensors"), "header too large"), "/ckpt",
                                 "cpu")
    assert corrupt is not None and "model.safetensors is truncated" in str(corrupt)
    assert explain_load_error(RuntimeError("a bug"), "/ckpt", "cpu") is None  # keeps its traceback


# ---------------------------------------------------------------------------------- real processes
def _checkpoint(tmp_path: Path, case: str) -> Path:
    """A broken copy of the tiny checkpoint (one model.safetensors; the tokenizer files linked)."""
    tiny = ensure_tiny_checkpoint()
    target = tmp_path / case
    if case == "missing_dir":
        return target
    target.mkdir()
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        (target / name).symlink_to(tiny / name)
    config = json.loads((tiny / "config.json").read_text())
    tensors: dict[str, torch.Tensor] = {}
    for shard in SHARD_NAMES:
        tensors.update(load_file(str(tiny / shard)))
    if case == "mismatched_tensors":
        del tensors["lm_head.weight"]
        tensors["model.extra.weight"] = torch.zeros(2)
    if case == "pickled_vit":
        vit = {name[len(VIT_PREFIX):]: tensors.pop(name) for name in list(tensors) if name.startswith(VIT_PREFIX)}
        torch.save(vit, target / "oryx_vit.pth")
        config["mm_vision_tower"] = f"oryx_vit:{target / 'oryx_vit.pth'}"
    if case != "no_config":
        (target / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(target / "model.safetensors"))
    if case == "truncated":
        weights = target / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return target


# (case, parameters after --ros-args beyond the params file, parameter the error names)
CHECKPOINT_CASES = ["missing_dir", "no_config", "truncated", "mismatched_tensors", "pickled_vit"]
PARAMETER_CASES = {
    "dtype_int8": (["model.dtype:=int8"], "model.dtype"),
    "device_gpu": (["model.device:=gpu"], "model.device"),
    "device_cuda_x": (["model.device:=cuda:x"], "model.device"),
    "device_cuda_without_cuda": (["model.device:=cuda"], "model.device"),
    "device_auto_without_cuda": (["model.device:=auto"], "model.device"),
    "flash_attention_not_installed": (["model.attn_implementation:=flash_attention_2"], "model.attn_implementation"),
    "duplicate_cameras": (["cameras.names:=[cam0,cam0]"], "cameras.names"),
    "bad_mount": (["cameras.cam0.mount:=[1.0,2.0]"], "cameras.cam0.mount"),
}


def _overrides(tmp_path: Path, case: str) -> tuple[list[str], str]:
    if case in CHECKPOINT_CASES:
        return [f"model.path:={_checkpoint(tmp_path, case)}"], ("model.allow_pickle" if case == "pickled_vit"
                                                                 else "model.path")
    return PARAMETER_CASES[case]


def _assert_one_error_line(output: str, parameter: str) -> None:
    errors = [line for line in output.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and parameter in errors[0], output
    assert "Traceback" not in output, output


@pytest.mark.ros
@pytest.mark.parametrize("case", [*CHECKPOINT_CASES, *PARAMETER_CASES])
def test_plain_node_exits_1_with_one_error_line(tmp_path: Path, case: str) -> None:
    from test_node_e2e import _write_params

    overrides, parameter = _overrides(tmp_path, case)
    if case.endswith("without_cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if case == "flash_attention_not_installed" and importlib.util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    # `python -m oryx_ros.ros.node` for one case, `oryx-ros node` for the others: the same main().
    command = ["oryx_ros.ros.node"] if case == "dtype_int8" else ["oryx_ros.cli", "node"]
    arguments = [item for override in overrides for item in ("-p", override)]
    result = subprocess.run([sys.executable, "-m", *command, "--ros-args", "--params-file",
                             str(_write_params(tmp_path / "oryx.yaml")), *arguments],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    _assert_one_error_line(result.stderr, parameter)
    assert "Traceback" not in result.stdout


@pytest.mark.ros
def test_lifecycle_node_with_bad_camera_parameters_exits_1(tmp_path: Path) -> None:
    from test_node_e2e import _write_params

    result = subprocess.run([sys.executable, "-m", "oryx_ros.cli", "lifecycle-node", "--ros-args", "--params-file",
                             str(_write_params(tmp_path / "oryx.yaml")), "-p", "cameras.names:=[cam0,cam0]"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    _assert_one_error_line(result.stderr, "cameras.names")


@pytest.mark.ros
@pytest.mark.parametrize(("offset", "case"), [(71, "dtype_int8"), (72, "truncated")])
def test_lifecycle_configure_fails_and_the_node_stays_up(tmp_path: Path, offset: int, case: str) -> None:
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rcl_interfaces.msg import Log
    from rclpy.qos import QoSDurabilityPolicy, QoSProfile
    from test_node_e2e import _node_on_its_own_domain, _write_params

    from oryx_ros.ros.client import collect_messages, spin_until_done

    overrides, parameter = _overrides(tmp_path, case)
    extra = [item for override in overrides for item in ("-p", override)]
    with _node_on_its_own_domain("lifecycle-node", _write_params(tmp_path / "oryx.yaml"), offset, extra) as (node, _):
        change = node.create_client(ChangeState, "/oryx/change_state")
        get_state = node.create_client(GetState, "/oryx/get_state")
        assert change.wait_for_service(timeout_sec=60), "no lifecycle services"

        def call(client: Any, request: Any) -> Any:
            future = client.call_async(request)
            spin_until_done(node, future, 120)
            return future.result()

        for _attempt in range(2):  # fails each time, and the node answers after each
            assert not call(change, ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
                            ).success
            assert call(get_state, GetState.Request()).current_state.id == State.PRIMARY_STATE_UNCONFIGURED

        def errors(logs: list[Log]) -> list[str]:
            return [log.msg for log in logs if log.level >= Log.ERROR and log.name == "oryx"]

        # /rosout keeps the node's recent messages (transient local) for a late subscriber like this one.
        latched = QoSProfile(depth=1000, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        logs = collect_messages(node, Log, "/rosout", latched, until=lambda logs: len(errors(logs)) >= 2, timeout_s=10)
        assert len(errors(logs)) == 2 and all(parameter in e and "\n" not in e for e in errors(logs)), errors(logs)

