"""Start-up errors of the oryx node: one line naming the parameter and the fix, not a traceback.

Cheap settings are checked before anything big is loaded (:func:`check_model_settings`: dtype, device,
attention backend, CUDA, the checkpoint directory and its ``config.json``); what only the loader finds
(a truncated shard, tensors that do not match, a pickled ViT file) becomes the same kind of error through
:func:`explain_load_error`. :func:`report` logs the line at ERROR and the traceback at DEBUG; then the
plain node exits 1 and the lifecycle node's configure fails while the node stays up.

bfloat16 and float16 are allowed on CPU: torch runs both there (float16 slowly on most CPUs).
No ROS imports here (the parameter checks are imported lazily from ``parameters``, which imports this).
"""

from __future__ import annotations

import importlib.util
import json
import traceback
from pathlib import Path
from typing import Any

DEBUG_HINT = "run with --ros-args --log-level oryx:=debug for the details"


class StartupError(ValueError):
    """A setting the node cannot start with; ``str()`` is one line naming ``parameter`` and the fix."""

    def __init__(self, message: str, parameter: str = "") -> None:
        super().__init__(" ".join(message.split()))  # always one line
        self.parameter = parameter


def report(logger: Any, error: BaseException) -> None:
    """Log ``error`` as one line at ERROR and its traceback (with causes) at DEBUG."""
    logger.error(str(error))
    logger.debug("".join(traceback.format_exception(error)).rstrip())


def check_model_settings(path: str, device: str, dtype: str, attn_implementation: str,
                         resize_backend: str = "fast") -> None:
    """Refuse model settings that cannot work, before loading anything (raises :class:`StartupError`).

    ``path`` empty means the bundled tiny checkpoint, which is not checked.
    """
    from oryx_ros.ros.parameters import check_parameter  # parameters imports this module

    for name, value in (("model.dtype", dtype), ("model.device", device),
                        ("model.attn_implementation", attn_implementation),
                        ("model.resize_backend", resize_backend)):
        problem = check_parameter(name, value, lambda _name: None, 0)
        if problem:
            raise StartupError(problem, name)
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise StartupError("model.attn_implementation flash_attention_2 needs the flash-attn package, which is not "
                           "installed: install flash-attn or set model.attn_implementation:=sdpa",
                           "model.attn_implementation")
    if path:
        _check_checkpoint_directory(path)
    if device != "cpu":
        _check_cuda(device)
    if attn_implementation == "flash_attention_2":
        if device == "cpu":
            raise StartupError("model.attn_implementation flash_attention_2 runs on CUDA only: set model.device "
                               "to cuda or set model.attn_implementation:=sdpa", "model.attn_implementation")
        if dtype == "float32":
            raise StartupError("model.attn_implementation flash_attention_2 needs 16-bit weights: set "
                               "model.dtype:=bfloat16 (or float16) or model.attn_implementation:=sdpa",
                               "model.attn_implementation")


def explain_load_error(error: BaseException, path: str, device: str) -> StartupError | None:
    """The one-line :class:`StartupError` for an error of the checkpoint loader; None for an unexpected
    one (a bug: it keeps its traceback)."""
    import torch

    from oryx_ros.model.loading import CheckpointMismatchError, CorruptWeightsError, PickledWeightsError

    where = _where(path)
    if isinstance(error, PickledWeightsError):
        return StartupError(f"model.allow_pickle is false and the Oryx-ViT weights {error.path} are a pickled file: "
                            "set model.allow_pickle:=true (read with torch.load(weights_only=True)) or convert the "
                            "file to safetensors", "model.allow_pickle")
    if isinstance(error, CheckpointMismatchError):
        counts = ", ".join(f"{len(names)} {kind}" for kind, names in (
            ("missing", error.missing), ("unexpected", error.unexpected), ("mis-shaped", error.mismatched)) if names)
        example = [*error.missing, *error.unexpected, *error.mismatched][:1]
        hint = error.hint or "it is not a complete, unmodified Oryx checkpoint"
        return StartupError(f"{where} does not match the Oryx model ({counts} tensors, e.g. "
                            f"{', '.join(example)}): {hint}; {DEBUG_HINT} (every tensor named)", "model.path")
    if isinstance(error, CorruptWeightsError):
        return StartupError(f"{where}: {error.path.name} is truncated or not a safetensors file ({error.reason}): "
                            "download or convert the checkpoint again", "model.path")
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return StartupError(f"model.device {device!r} ran out of GPU memory loading {path}: set model.dtype:=bfloat16, "
                            "model.device:=auto to spread it over all GPUs, or use a smaller checkpoint",
                            "model.device")
    if isinstance(error, (OSError, ValueError)):
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        return StartupError(f"{where} cannot be loaded: {first_line}; fix the checkpoint directory or point "
                            f"model.path at a complete one ({DEBUG_HINT})", "model.path")
    return None


def _check_checkpoint_directory(path: str) -> None:
    directory = Path(path)
    if not directory.exists():
        raise StartupError(f"{_where(path)} does not exist: set model.path to an Oryx checkpoint directory "
                           "(config.json, *.safetensors, tokenizer files), or leave it empty for the tiny demo model",
                           "model.path")
    if not directory.is_dir():
        raise StartupError(f"{_where(path)} is a file: set model.path to the checkpoint directory that holds it",
                           "model.path")
    config = directory / "config.json"
    if not config.is_file():
        raise StartupError(f"{_where(path)} has no config.json: set model.path to the checkpoint directory itself "
                           "(the one holding config.json and the weights)", "model.path")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise StartupError(f"{_where(path)}: config.json cannot be read ({error}): download the checkpoint again",
                           "model.path") from error


def _check_cuda(device: str) -> None:
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = ("this torch build has no CUDA" if torch.version.cuda is None
               else "torch.cuda.is_available() is False: check the driver and CUDA_VISIBLE_DEVICES")
        raise StartupError(f"model.device is {device!r} but there is no usable GPU ({why}): set model.device:=cpu "
                           "or run where a GPU is visible", "model.device")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise StartupError(f"model.device is {device!r} but only {count} GPU(s) are visible (cuda:0 to "
                           f"cuda:{count - 1}): pick one of those or check CUDA_VISIBLE_DEVICES", "model.device")


def _where(path: str) -> str:
    return f"model.path {path!r}"
