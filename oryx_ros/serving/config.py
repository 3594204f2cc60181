"""``config/serve.yaml`` → :class:`ServeConfig`: what the fleet server loads, how it scales, what it accepts.

Plain YAML (no ROS), grouped by concern: ``model``, ``replicas``, ``limits``, ``http``. Every key has a
default here, so a file only names what it changes; an unknown key is an error (a typo must not fall back
to a default silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import yaml

DEVICES_PREFIXES: Final = ("cpu", "cuda")
DTYPES: Final = ("auto", "float32", "bfloat16", "float16")
RESIZE_BACKENDS: Final = ("fast", "exact")


class ServeConfigError(ValueError):
    """The serve configuration is malformed; the message names the key."""


@dataclass(frozen=True)
class ModelSection:
    path: str = ""  # checkpoint directory; "" = the tiny random checkpoint (tests and demos only)
    device: str = "cpu"  # 'cpu', 'cuda', 'cuda:1' (one device per replica)
    dtype: str = "auto"  # 'auto' = float32 on CPU, bfloat16 on CUDA (OryxEngine.from_pretrained's default)
    token_cache_megabytes: float = 1024.0  # per replica; frames are keyed by their content
    max_context: int = 0  # 0 = the checkpoint's tokenizer_model_max_length
    default_max_new_tokens: int = 128  # when a request gives no max_tokens
    resize_backend: str = "fast"  # bicubic resize of preprocessing ('exact' = Pillow itself)
    name: str = ""  # the model id clients see; "" = the checkpoint directory's name


@dataclass(frozen=True)
class ReplicaSection:
    num_replicas: int = 1  # fixed replica count, used when autoscaling is off (max_replicas 0)
    min_replicas: int = 1  # autoscaling lower bound
    max_replicas: int = 0  # autoscaling upper bound; 0 = no autoscaling
    target_ongoing_requests: float = 1.0  # autoscaling target per replica (one engine answers one at a time)
    max_ongoing_requests: int = 4  # a replica queues at most this many; the rest wait at the proxy
    num_gpus: float = 0.0  # GPUs per replica (1 for a 7B model in bf16 on a 24 GB card)
    num_cpus: float = 1.0  # CPUs per replica


@dataclass(frozen=True)
class LimitSection:
    max_body_bytes: int = 64 * 1024 * 1024  # 413 above this (checked from Content-Length, then while reading)
    max_images: int = 64  # 400 above this, counted before anything is decoded
    max_image_pixels: int = 4096 * 2304  # per image, read from its PNG/JPEG header before decoding
    max_new_tokens: int = 2048  # a request's max_tokens is capped here (400 above it)


@dataclass(frozen=True)
class HttpSection:
    host: str = "127.0.0.1"  # loopback by default: serving a fleet is an explicit choice (--host 0.0.0.0)
    port: int = 8000
    api_key_env: str = "ORYX_SERVE_API_KEY"  # when this variable is set, requests need "Bearer <its value>"
    request_timeout_s: float = 0.0  # Serve proxy's per-request limit; 0 = none (streams may be long)


@dataclass(frozen=True)
class ServeConfig:
    model: ModelSection = field(default_factory=ModelSection)
    replicas: ReplicaSection = field(default_factory=ReplicaSection)
    limits: LimitSection = field(default_factory=LimitSection)
    http: HttpSection = field(default_factory=HttpSection)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def autoscaling(self) -> bool:
        return self.replicas.max_replicas > 0

    def with_overrides(self, overrides: Mapping[str, Any]) -> ServeConfig:
        """A copy with ``{"section.key": value}`` (or nested ``{"section": {...}}``) applied and validated."""
        document = dataclasses.asdict(self)
        _merge(document, _nested(overrides), "")
        return config_from_dict(document)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_serve_config(path: str | Path | None) -> ServeConfig:
    """The config in ``path`` (None = every default). Raises :class:`ServeConfigError` for bad content."""
    if path is None:
        return ServeConfig()
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise ServeConfigError(f"cannot read serve config {path}: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ServeConfigError(f"serve config {path} is not valid YAML: {err}") from err
    return config_from_dict(document or {})


def config_from_dict(document: Mapping[str, Any]) -> ServeConfig:
    """Build and validate a :class:`ServeConfig` from nested mappings (the YAML's layout)."""
    if not isinstance(document, Mapping):
        raise ServeConfigError(f"the serve config must be a mapping, got {type(document).__name__}")
    sections: dict[str, Any] = {}
    for section in fields(ServeConfig):
        values = document.get(section.name) or {}
        if not isinstance(values, Mapping):
            raise ServeConfigError(f"{section.name} must be a mapping, got {type(values).__name__}")
        section_type = section.default_factory  # type: ignore[misc]
        sections[section.name] = section_type(**_typed_values(section.name, section_type, values))
    unknown = sorted(set(document) - set(sections))
    if unknown:
        raise ServeConfigError(f"unknown section(s) {unknown}; expected {sorted(sections)}")
    return ServeConfig(**sections)


def _typed_values(section: str, section_type: type, values: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields(section_type)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ServeConfigError(f"unknown key(s) {[f'{section}.{k}' for k in unknown]}; expected {sorted(known)}")
    typed: dict[str, Any] = {}
    for name, value in values.items():
        default = known[name].default
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ServeConfigError(f"{section}.{name} must be {kind.__name__}, got {value!r}")
        typed[name] = value
    return typed


def _validate(config: ServeConfig) -> None:
    model, replicas, limits, http = config.model, config.replicas, config.limits, config.http
    problems = []
    if not model.device.startswith(DEVICES_PREFIXES):
        problems.append(f"model.device must be 'cpu' or 'cuda[:N]', got {model.device!r}")
    if model.dtype not in DTYPES:
        problems.append(f"model.dtype must be one of {DTYPES}, got {model.dtype!r}")
    if model.resize_backend not in RESIZE_BACKENDS:
        problems.append(f"model.resize_backend must be one of {RESIZE_BACKENDS}, got {model.resize_backend!r}")
    if model.token_cache_megabytes < 0 or model.max_context < 0 or model.default_max_new_tokens < 1:
        problems.append("model.token_cache_megabytes and model.max_context must be >= 0, "
                        "model.default_max_new_tokens >= 1")
    if replicas.num_replicas < 1 or replicas.min_replicas < 0 or replicas.max_ongoing_requests < 1:
        problems.append("replicas.num_replicas and replicas.max_ongoing_requests must be >= 1, "
                        "replicas.min_replicas >= 0")
    if replicas.max_replicas and replicas.max_replicas < max(replicas.min_replicas, 1):
        problems.append(f"replicas.max_replicas ({replicas.max_replicas}) must be >= min_replicas "
                        f"({replicas.min_replicas}) and >= 1, or 0 for a fixed count")
    if replicas.target_ongoing_requests <= 0 or replicas.num_gpus < 0 or replicas.num_cpus < 0:
        problems.append("replicas.target_ongoing_requests must be > 0; num_gpus and num_cpus >= 0")
    if replicas.num_gpus > 0 and not model.device.startswith("cuda"):
        problems.append(f"replicas.num_gpus is {replicas.num_gpus} but model.device is {model.device!r}")
    if min(limits.max_body_bytes, limits.max_images, limits.max_image_pixels, limits.max_new_tokens) < 1:
        problems.append("every limits.* value must be >= 1")
    if model.default_max_new_tokens > limits.max_new_tokens:
        problems.append(f"model.default_max_new_tokens ({model.default_max_new_tokens}) exceeds "
                        f"limits.max_new_tokens ({limits.max_new_tokens})")
    if not 0 <= http.port <= 65535 or http.request_timeout_s < 0:
        problems.append(f"http.port must be in 0..65535 and http.request_timeout_s >= 0, got {http.port}, "
                        f"{http.request_timeout_s}")
    if problems:
        raise ServeConfigError("; ".join(problems))


def _nested(overrides: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            nested.setdefault(section, {}).update(value)
    return nested


def _merge(document: dict[str, Any], overrides: Mapping[str, Any], where: str) -> None:
    for key, value in overrides.items():
        if key not in document:
            raise ServeConfigError(f"unknown key {where}{key}")
        if isinstance(value, Mapping):
            _merge(document[key], value, f"{where}{key}.")
        else:
            document[key] = value
