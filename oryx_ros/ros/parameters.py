"""Every ROS parameter of the oryx node, declared in one place with descriptors and ranges.

Parameters are grouped by concern as in ``config/oryx.yaml``. Cameras are a list of names
(``cameras.names``) plus one group of parameters per name (``cameras.<name>.image_topic`` ...),
since ROS parameters cannot hold a list of structures.

Every parameter either takes effect at run time or is declared read-only (``ros2 param set`` then
refuses it, with the reason "read-only"): read-only are those that would need new subscriptions, a new
model, a new buffer or a new worker (the camera groups, ``buffer.*``, ``model.*``, ``planner.*``,
``ask.queue_size``, ``sync.queue_size``, ``qos.*``, ``spatial.pose_*``; ``model.encode_on_arrival`` is
the one run-time ``model.*`` parameter). The others are applied by
the node when set (``OryxCore._apply_parameter_change``) or read each time they are used. Values the
descriptors' ranges cannot express are checked by :func:`check_parameter` (at start-up and on every set).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from oryx_ros.model.resampling import RESIZE_BACKENDS
from oryx_ros.perception import image_codec
from oryx_ros.ros.camera_ingest import CameraConfig
from oryx_ros.ros.requests import MAX_FRAMES, MAX_NEW_TOKENS, MAX_QUESTION_CHARS, MODES
from oryx_ros.ros.startup import StartupError

# Largest decoded image area by default: the codec's limit once it has one, else 4K UHD-ish (4096x2304).
DEFAULT_MAX_DECODE_PIXELS = int(getattr(image_codec, "MAX_DECODE_PIXELS", 4096 * 2304))
DEVICES_HINT = "cpu, cuda, cuda:N, or auto (spread over all GPUs, for 34B/32B)"
DEVICE_PATTERN = re.compile(r"cpu|cuda(:[0-9]+)?|auto")
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
MODEL_LABELS = ("auto", "on", "off")


@dataclass(frozen=True)
class NodeConfig:
    cameras: list[CameraConfig]
    # Pose of each camera's optical frame (z forward, x right, y down) in the base frame:
    # x, y, z in metres and a quaternion qx, qy, qz, qw (ROS order, as static_transform_publisher).
    mounts: dict[str, tuple[float, ...]]
    sync_slop_s: float
    sync_queue_size: int
    dead_camera_timeout_s: float
    buffer_window_s: float
    buffer_max_rate_hz: float
    buffer_max_megabytes: float
    model_path: str
    model_device: str
    model_dtype: str
    attn_implementation: str
    token_cache_megabytes: float
    allow_pickle: bool
    resize_backend: str
    min_frames_at_4x: int
    max_frames_4x: int
    max_frames_16x: int
    max_context_tokens: int
    default_mode: str
    default_window_s: float
    max_new_tokens: int
    queue_size: int
    deadline_s: float
    description_enabled: bool
    description_period_s: float
    description_window_s: float
    description_prompt: str
    description_mode: str
    description_max_frames: int
    description_max_new_tokens: int
    description_spatial: bool
    base_frame: str
    pose_topic: str
    pose_type: str
    max_objects: int
    publish_marked_views: bool
    sensor_qos_reliable: bool
    sensor_qos_depth: int
    max_question_chars: int = MAX_QUESTION_CHARS
    max_decode_pixels: int = DEFAULT_MAX_DECODE_PIXELS
    future_tolerance_s: float = 2.0
    encode_on_arrival: bool = True
    viewpoint: str = ""
    relations_per_object: int = 0
    relations_inverse: bool = True
    model_labels: str = "auto"
    model_backend: str = "local"
    model_endpoint: str = ""
    model_api_key_env: str = "ORYX_API_KEY"
    model_timeout_s: float = 60.0
    model_fallback_local: bool = False
    memory_enabled: bool = True
    memory_url: str = ""
    memory_directory: str = ""
    memory_robot: str = ""
    memory_keyframe_hz: float = 1.0
    memory_max_pixels: int = 640 * 480
    memory_encoding: str = "jpeg"
    memory_quality: int = 90
    memory_max_megabytes: float = 4096.0
    memory_max_age_h: float = 24.0
    memory_embedding_model: str = ""
    memory_ask_max_frames: int = 32
    memory_recall_moments: int = 3
    extra: dict[str, Any] = field(default_factory=dict)


# Why a read-only parameter is read-only (ros2 param describe shows it as additional_constraints).
FIXED_SUBSCRIPTIONS = "read-only: changing it needs new subscriptions; set it at launch"
FIXED_MODEL = "read-only: changing it needs the model loaded again; set it at launch"
FIXED_STORAGE = "read-only: changing it needs a new frame buffer / worker queue; set it at launch"
FIXED_MEMORY = "read-only: changing it needs the memory store opened again; set it at launch"
BACKENDS = ("local", "remote")
KEYFRAME_ENCODINGS = ("jpeg", "png")


def _float(description: str, low: float, high: float, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high)], **kwargs)


def _int(description: str, low: int, high: int, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description,
                               integer_range=[IntegerRange(from_value=low, to_value=high, step=1)], **kwargs)


def _text(description: str, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, **kwargs)


def _fixed(why: str) -> dict[str, Any]:
    return {"read_only": True, "additional_constraints": why}


# name -> (default, descriptor). Read-only where changing it would need new subscriptions, a new model or
# a new buffer; every other parameter takes effect at run time (see the module docstring).
PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "sync.slop_s": (0.05, _float("approximate-time sync: max stamp spread within a camera set, seconds", 0.0, 10.0)),
    "sync.queue_size": (10, _int("approximate-time sync: messages kept per camera while matching", 1, 1000,
                                 **_fixed(FIXED_STORAGE))),
    "sync.dead_camera_timeout_s": (1.0, _float(
        "emit partial sets when a camera has been silent this long, seconds (0 = never)", 0.0, 3600.0)),
    "buffer.window_s": (120.0, _float("frames older than this behind the newest frame are forgotten, seconds",
                                      0.1, 86400.0, **_fixed(FIXED_STORAGE))),
    "buffer.max_rate_hz": (2.0, _float("stored frames per second per camera (0 = every synchronized set)",
                                       0.0, 1000.0, **_fixed(FIXED_STORAGE))),
    "buffer.max_megabytes": (1024.0, _float("memory budget of the frame buffer, MB", 1.0, 1.0e6,
                                            **_fixed(FIXED_STORAGE))),
    "model.path": ("", _text("Oryx checkpoint directory; empty = the bundled tiny random model (demo only)",
                             **_fixed(FIXED_MODEL))),
    "model.device": ("cpu", _text(f"torch device: {DEVICES_HINT}", **_fixed(FIXED_MODEL))),
    "model.dtype": ("float32", _text(f"weights dtype: {', '.join(DTYPES)}", **_fixed(FIXED_MODEL))),
    "model.attn_implementation": ("sdpa", _text(f"attention: {', '.join(ATTENTION)}", **_fixed(FIXED_MODEL))),
    "model.token_cache_megabytes": (256.0, _float("per-frame visual-token cache budget, MB", 0.0, 1.0e6,
                                                   **_fixed(FIXED_MODEL))),
    "model.encode_on_arrival": (True, _text(
        "while the model is idle, encode newly stored frames into the token cache at the compressions the ask.* "
        "and description.* windows would use (lowest priority: a question or description preempts it)")),
    "model.allow_pickle": (False, _text("allow loading a pickled .pth ViT file (weights_only); off = safetensors only",
                                        **_fixed(FIXED_MODEL))),
    "model.resize_backend": ("fast", _text(
        f"preprocessing resize: {', '.join(RESIZE_BACKENDS)} (exact = Pillow bicubic, bit-equal to the official code; "
        "fast = torch's antialiased bicubic, within 1-3 levels, same greedy ids in the parity tests, 6-8x faster)",
        **_fixed(FIXED_MODEL))),
    "model.backend": ("local", _text(
        "local = run the model in this process; remote = ask an Oryx server (oryx-ros serve) or another "
        "OpenAI-compatible server at model.endpoint", **_fixed(FIXED_MODEL))),
    "model.endpoint": ("", _text("base URL of the model server for model.backend remote, e.g. http://gpu1:8000",
                                 **_fixed(FIXED_MODEL))),
    "model.api_key_env": ("ORYX_API_KEY", _text(
        "environment variable holding the model server's API key (never the key itself: parameters are readable "
        "by anyone on the ROS graph); unset = no key", **_fixed(FIXED_MODEL))),
    "model.timeout_s": (60.0, _float("remote backend: seconds without a byte from the server before a request "
                                     "fails (then retried with backoff)", 0.1, 3600.0, **_fixed(FIXED_MODEL))),
    "model.fallback_local": (False, _text("remote backend: when the server is unreachable, answer with the local "
                                          "model at model.path (loaded at start)", **_fixed(FIXED_MODEL))),
    "planner.min_frames_at_4x": (16, _int(
        "auto mode switches a camera's clip to 16x when 4x would keep fewer frames than this", 1, 4096,
        **_fixed(FIXED_MODEL))),
    "planner.max_frames_4x": (64, _int("automatic frame cap per camera at 4x (official eval: 64)", 1, 4096,
                                       **_fixed(FIXED_MODEL))),
    "planner.max_frames_16x": (256, _int("automatic frame cap per camera at 16x", 1, 16384, **_fixed(FIXED_MODEL))),
    "planner.max_context_tokens": (0, _int(
        "lower the context below the checkpoint's tokenizer_model_max_length to bound latency (0 = checkpoint's)",
        0, 1 << 20, **_fixed(FIXED_MODEL))),
    "ask.default_mode": ("auto", _text(f"mode when a request leaves it empty: {', '.join(MODES)}")),
    "ask.default_window_s": (10.0, _float("look-back window when a request gives 0, seconds (<= buffer.window_s)",
                                          0.01, 86400.0)),
    "ask.max_new_tokens": (128, _int("generation limit when a request gives 0; requests may ask up to the "
                                     "upper end of this range", 1, MAX_NEW_TOKENS)),
    "ask.max_question_chars": (MAX_QUESTION_CHARS, _int("longest question accepted, characters", 1, 1 << 20)),
    "ask.queue_size": (2, _int("requests waiting for the model before new ones are refused as busy", 1, 64,
                               **_fixed(FIXED_STORAGE))),
    "ask.deadline_s": (0.0, _float("a request not finished within this many seconds fails (0 = no deadline)",
                                   0.0, 3600.0)),
    "description.enabled": (True, _text("publish periodic scene descriptions (starts/stops the timer)")),
    "description.period_s": (10.0, _float("seconds between descriptions", 0.1, 86400.0)),
    "description.window_s": (30.0, _float("time window each description covers, seconds (<= buffer.window_s)",
                                          0.01, 86400.0)),
    "description.prompt": ("Describe what the cameras saw, briefly.", _text(
        "question used for descriptions (<= ask.max_question_chars; <image> is escaped as in questions)")),
    "description.mode": ("video_long", _text(f"mode for descriptions: {', '.join(MODES)} (16x by default)")),
    "description.max_frames": (32, _int("frame cap for descriptions, spread over the cameras (0 = token budget "
                                        "only; else at least one per camera)", 0, MAX_FRAMES)),
    "description.max_new_tokens": (64, _int("generation limit for descriptions", 1, MAX_NEW_TOKENS)),
    "description.spatial": (False, _text("also publish the scene graph and markers with each description")),
    "spatial.base_frame": ("base_link", _text("frame of scene-graph positions (REP 103: x forward, y left, z up)")),
    "spatial.pose_topic": ("", _text("optional robot pose topic (nav_msgs/Odometry or geometry_msgs/PoseStamped)",
                                     **_fixed(FIXED_SUBSCRIPTIONS))),
    "spatial.pose_type": ("odometry", _text("odometry or pose_stamped", **_fixed(FIXED_SUBSCRIPTIONS))),
    "spatial.max_objects": (8, _int("marked objects per spatial request (K)", 1, 64)),
    "spatial.publish_marked_views": (True, _text("publish the marked views the model saw on ~/marked_views")),
    "spatial.viewpoint": ("", _text("whose left/right/front/behind the relations use: empty = the base frame, "
                                    "else a camera name (its view, levelled); a request's viewpoint overrides it")),
    "spatial.relations_per_object": (3, _int("relations kept per object: those with its this many nearest "
                                             "neighbours by surface gap (0 = all pairs)", 0, 64)),
    "spatial.relations_inverse": (False, _text("publish both of two inverse relations (3 left_of 5, 5 right_of 3); "
                                              "false = only the one whose subject is the smaller object")),
    "spatial.model_labels": ("auto", _text(f"name the marked objects with one extra generation over the marked "
                                           f"views: {', '.join(MODEL_LABELS)} (auto = on with a checkpoint in "
                                           "model.path, off for the bundled tiny random model)")),
    "memory.enabled": (True, _text("keep a long-horizon memory of keyframes and descriptions on disk",
                                   **_fixed(FIXED_MEMORY))),
    "memory.url": ("", _text("empty = SQLite in memory.directory; postgresql://user@host/db = a shared server",
                             **_fixed(FIXED_MEMORY))),
    "memory.directory": ("", _text("SQLite directory; empty = $ROS_HOME/oryx_memory/<robot> (~/.ros by default)",
                                   **_fixed(FIXED_MEMORY))),
    "memory.robot": ("", _text("this robot's name in a shared memory; empty = the node's full name",
                               **_fixed(FIXED_MEMORY))),
    "memory.keyframe_hz": (1.0, _float("keyframes stored per second per camera (at most buffer.max_rate_hz)",
                                       0.001, 30.0)),
    "memory.max_pixels": (640 * 480, _int("keyframes are downscaled to at most this many pixels (the 4x/16x "
                                          "paths' input size)", 4096, 1 << 24, **_fixed(FIXED_MEMORY))),
    "memory.encoding": ("jpeg", _text(f"keyframe encoding: {', '.join(KEYFRAME_ENCODINGS)}",
                                      **_fixed(FIXED_MEMORY))),
    "memory.quality": (90, _int("JPEG quality of new keyframes", 1, 100)),
    "memory.max_megabytes": (4096.0, _float("disk budget of the memory, MB; the oldest keyframes go first",
                                            0.01, 1.0e8)),
    "memory.max_age_h": (24.0, _float("keyframes and entries older than this behind the newest are evicted, hours",
                                      0.001, 1.0e5)),
    "memory.embedding_model": ("", _text(
        "local sentence-transformers model directory for semantic search (never downloaded); empty = full-text "
        "search only", **_fixed(FIXED_MEMORY))),
    "memory.ask_max_frames": (32, _int("frames a question reaching into memory gets when it asks for 0, spread over "
                                       "the cameras (retrieved moments first, then even coverage)", 1, MAX_FRAMES)),
    "memory.recall_moments": (3, _int("memory moments retrieved for a question (0 = coverage only)", 0, 50)),
    "sensor.max_decode_pixels": (DEFAULT_MAX_DECODE_PIXELS, _int(
        "largest image area decoded (width x height, from the header); larger images are rejected",
        1, 1 << 31)),
    "sensor.future_tolerance_s": (2.0, _float(
        "stamps further than this ahead of the node's clock (sim or wall) are quarantined, seconds", 0.0, 3600.0)),
    "qos.sensor_reliable": (False, _text("camera subscriptions RELIABLE instead of sensor-data BEST_EFFORT",
                                         **_fixed(FIXED_SUBSCRIPTIONS))),
    "qos.sensor_depth": (30, _int("camera subscription queue depth", 1, 1000, **_fixed(FIXED_SUBSCRIPTIONS))),
}

# Parameter -> NodeConfig field. The node keeps its config in step with run-time changes through it.
CONFIG_FIELDS: dict[str, str] = {
    "sync.slop_s": "sync_slop_s", "sync.queue_size": "sync_queue_size",
    "sync.dead_camera_timeout_s": "dead_camera_timeout_s",
    "buffer.window_s": "buffer_window_s", "buffer.max_rate_hz": "buffer_max_rate_hz",
    "buffer.max_megabytes": "buffer_max_megabytes",
    "model.path": "model_path", "model.device": "model_device", "model.dtype": "model_dtype",
    "model.attn_implementation": "attn_implementation", "model.token_cache_megabytes": "token_cache_megabytes",
    "model.allow_pickle": "allow_pickle", "model.resize_backend": "resize_backend",
    "model.encode_on_arrival": "encode_on_arrival",
    "planner.min_frames_at_4x": "min_frames_at_4x", "planner.max_frames_4x": "max_frames_4x",
    "planner.max_frames_16x": "max_frames_16x", "planner.max_context_tokens": "max_context_tokens",
    "ask.default_mode": "default_mode", "ask.default_window_s": "default_window_s",
    "ask.max_new_tokens": "max_new_tokens", "ask.max_question_chars": "max_question_chars",
    "ask.queue_size": "queue_size", "ask.deadline_s": "deadline_s",
    "description.enabled": "description_enabled", "description.period_s": "description_period_s",
    "description.window_s": "description_window_s", "description.prompt": "description_prompt",
    "description.mode": "description_mode", "description.max_frames": "description_max_frames",
    "description.max_new_tokens": "description_max_new_tokens", "description.spatial": "description_spatial",
    "spatial.base_frame": "base_frame", "spatial.pose_topic": "pose_topic", "spatial.pose_type": "pose_type",
    "spatial.max_objects": "max_objects", "spatial.publish_marked_views": "publish_marked_views",
    "spatial.viewpoint": "viewpoint", "spatial.relations_per_object": "relations_per_object",
    "spatial.relations_inverse": "relations_inverse", "spatial.model_labels": "model_labels",
    "sensor.max_decode_pixels": "max_decode_pixels", "sensor.future_tolerance_s": "future_tolerance_s",
    "qos.sensor_reliable": "sensor_qos_reliable", "qos.sensor_depth": "sensor_qos_depth",
    "model.backend": "model_backend", "model.endpoint": "model_endpoint", "model.api_key_env": "model_api_key_env",
    "model.timeout_s": "model_timeout_s", "model.fallback_local": "model_fallback_local",
    "memory.enabled": "memory_enabled", "memory.url": "memory_url", "memory.directory": "memory_directory",
    "memory.robot": "memory_robot", "memory.keyframe_hz": "memory_keyframe_hz",
    "memory.max_pixels": "memory_max_pixels", "memory.encoding": "memory_encoding",
    "memory.quality": "memory_quality", "memory.max_megabytes": "memory_max_megabytes",
    "memory.max_age_h": "memory_max_age_h", "memory.embedding_model": "memory_embedding_model",
    "memory.ask_max_frames": "memory_ask_max_frames", "memory.recall_moments": "memory_recall_moments",
}

CAMERA_PARAMETERS: dict[str, tuple[Any, str]] = {
    "image_topic": ("", "colour image topic (sensor_msgs/Image, or CompressedImage when compressed)"),
    "compressed": (False, "subscribe to sensor_msgs/CompressedImage"),
    "camera_info_topic": ("", "sensor_msgs/CameraInfo topic of the colour image (needed for 3D)"),
    "depth_topic": ("", "registered depth image topic (16UC1 mm or 32FC1 m), empty = RGB only"),
    "frame_id": ("", "optical frame id; empty = from the message header"),
    "mount": ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
              "optical frame pose in the base frame: x y z qx qy qz qw (metres, quaternion xyzw)"),
}


def declare_parameters(node: Node) -> NodeConfig:
    """Declare every parameter on ``node`` and return their values as a typed config.

    Raises:
        StartupError: a value of the wrong type, out of its range, or refused by :func:`validate`
            (one line naming the parameter). ``model.*`` values are checked when the model is loaded.
    """
    try:
        return _declare_parameters(node)
    except (InvalidParameterTypeException, InvalidParameterValueException) as error:
        raise StartupError(f"{error} (fix it in the parameters file or on the command line)") from error


def _declare_parameters(node: Node) -> NodeConfig:
    node.declare_parameters("", [(name, default, descriptor) for name, (default, descriptor) in PARAMETERS.items()])
    node.declare_parameter("cameras.names", ["camera"], _text("camera names; each has a cameras.<name>.* group",
                                                                **_fixed(FIXED_SUBSCRIPTIONS)))
    names = list(node.get_parameter("cameras.names").value)
    if len(set(names)) != len(names) or not all(names):
        raise StartupError(f"cameras.names must be unique, non-empty names, got {names}: rename or remove the "
                           "repeated or empty ones", "cameras.names")
    cameras, mounts = [], {}
    for name in names:
        values = {}
        for key, (default, description) in CAMERA_PARAMETERS.items():
            values[key] = node.declare_parameter(f"cameras.{name}.{key}", default,
                                                 _text(description, **_fixed(FIXED_SUBSCRIPTIONS))).value
        if not values["image_topic"]:
            values["image_topic"] = f"/{name}/image_raw" + ("/compressed" if values["compressed"] else "")
        mounts[name] = tuple(float(v) for v in values.pop("mount"))
        if len(mounts[name]) != 7:
            raise StartupError(f"cameras.{name}.mount needs 7 numbers (x y z qx qy qz qw), got "
                               f"{len(mounts[name])}: give the optical frame pose as [x, y, z, qx, qy, qz, qw]",
                               f"cameras.{name}.mount")
        cameras.append(CameraConfig(
            name=name, image_topic=values["image_topic"], compressed=values["compressed"],
            camera_info_topic=values["camera_info_topic"] or None, depth_topic=values["depth_topic"] or None,
            frame_id=values["frame_id"] or None))

    config = NodeConfig(cameras=cameras, mounts=mounts,
                        **{field_name: node.get_parameter(name).value for name, field_name in CONFIG_FIELDS.items()})
    validate(config)
    return config


def descriptor_range(name: str) -> tuple[float, float] | None:
    """``(low, high)`` of a declared numeric parameter's range, None for text and booleans."""
    descriptor = PARAMETERS[name][1]
    ranges = list(descriptor.integer_range) or list(descriptor.floating_point_range)
    return (ranges[0].from_value, ranges[0].to_value) if ranges else None


def check_parameter(name: str, value: Any, value_of: Callable[[str], Any], camera_count: int) -> str | None:
    """Why ``name`` may not take ``value`` (None if it may), beyond what the descriptor's range checks.

    ``value_of`` gives the other parameters' values (as they will be after the change), for the checks
    that relate two of them.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be finite, got {value}"
    if name in ("ask.default_mode", "description.mode") and value not in MODES:
        return f"{name} must be one of {MODES}, got {value!r}"
    if name in ("ask.default_window_s", "description.window_s") and value > (kept := value_of("buffer.window_s")):
        return f"{name} {value:g} s is longer than the buffer keeps (buffer.window_s = {kept:g} s)"
    if name == "description.prompt":
        if not value.strip():
            return "description.prompt must not be empty"
        if len(value.strip()) > value_of("ask.max_question_chars"):
            return (f"description.prompt is {len(value.strip())} characters long; the limit is "
                    f"{value_of('ask.max_question_chars')} (ask.max_question_chars)")
    if name == "description.max_frames" and 0 < value < camera_count:
        return f"description.max_frames must be 0 or at least the number of cameras ({camera_count}), got {value}"
    if name == "spatial.base_frame" and not value.strip():
        return "spatial.base_frame must not be empty"
    if name == "model.resize_backend" and value not in RESIZE_BACKENDS:
        return f"model.resize_backend must be one of {RESIZE_BACKENDS}, got {value!r}"
    if name == "model.dtype" and value not in DTYPES:
        return f"model.dtype must be one of {DTYPES}, got {value!r}"
    if name == "model.device" and not DEVICE_PATTERN.fullmatch(value):
        return f"model.device must be {DEVICES_HINT}, got {value!r}"
    if name == "model.attn_implementation" and value not in ATTENTION:
        return f"model.attn_implementation must be one of {ATTENTION}, got {value!r}"
    if name == "spatial.pose_type" and value not in ("odometry", "pose_stamped"):
        return f"spatial.pose_type must be odometry or pose_stamped, got {value!r}"
    if name == "spatial.viewpoint" and value and value not in (cameras := list(value_of("cameras.names"))):
        return f"spatial.viewpoint must be empty (the base frame) or one of the cameras {cameras}, got {value!r}"
    if name == "model.backend" and value not in BACKENDS:
        return f"model.backend must be one of {BACKENDS}, got {value!r}"
    if name == "model.backend" and value == "remote" and not value_of("model.endpoint").strip():
        return "model.backend remote needs model.endpoint (the server's base URL, e.g. http://gpu1:8000)"
    if name == "memory.encoding" and value not in KEYFRAME_ENCODINGS:
        return f"memory.encoding must be one of {KEYFRAME_ENCODINGS}, got {value!r}"
    if name == "memory.url" and value and not value.startswith(("postgresql://", "postgres://", "sqlite")):
        return f"memory.url must be empty (SQLite) or a postgresql:// URL, got {value.split('@')[-1]!r}"
    if name == "spatial.model_labels" and value not in MODEL_LABELS:
        return f"spatial.model_labels must be one of {MODEL_LABELS}, got {value!r}"
    return None


def validate(config: NodeConfig) -> None:
    """Reject a start-up configuration that the descriptors' ranges cannot express (StartupError).

    ``model.*`` are left to the model loading (``oryx_ros.ros.startup.check_model_settings``, the same
    checks and more), so that a lifecycle node with a bad one stays up and fails its configure.
    """
    values = {name: getattr(config, field_name) for name, field_name in CONFIG_FIELDS.items()}
    lookup = {**values, "cameras.names": [camera.name for camera in config.cameras]}
    for name, value in values.items():
        problem = None if name.startswith("model.") else check_parameter(name, value, lookup.__getitem__,
                                                                           len(config.cameras))
        if problem:
            raise StartupError(problem, name)


def parameter_table_markdown() -> str:
    """The README's parameter table, generated from the declarations (a test keeps the README in step)."""
    rows = ["| parameter | default | description |", "|---|---|---|",
            "| `cameras.names` | `['camera']` | camera names; each has a `cameras.<name>.*` group (read-only) |"]
    rows += [f"| `cameras.<name>.{key}` | `{default!r}` | {description} (read-only) |"
             for key, (default, description) in CAMERA_PARAMETERS.items()]
    for name, (default, descriptor) in PARAMETERS.items():
        limits = ""
        if descriptor.floating_point_range:
            bounds = descriptor.floating_point_range[0]
            limits = f" [{bounds.from_value:g}, {bounds.to_value:g}]"
        elif descriptor.integer_range:
            bounds = descriptor.integer_range[0]
            limits = f" [{bounds.from_value}, {bounds.to_value}]"
        read_only = " (read-only)" if descriptor.read_only else ""
        rows.append(f"| `{name}` | `{default!r}` | {descriptor.description}{limits}{read_only} |")
    return "\n".join(rows) + "\n"
