"""Every ROS parameter of the oryx node, declared in one place with descriptors and ranges.

Parameters are grouped by concern as in ``config/oryx.yaml``. Cameras are a list of names
(``cameras.names``) plus one group of parameters per name (``cameras.<name>.image_topic`` ...),
since ROS parameters cannot hold a list of structures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from oryx_ros.ros.camera_ingest import CameraConfig

MODES = ("auto", "image", "video", "video_long", "multiview")
DEVICES_HINT = "cpu, cuda, cuda:N, or auto (spread over all GPUs, for 34B/32B)"
DTYPES = ("float32", "bfloat16", "float16")
ATTENTION = ("sdpa", "eager", "flash_attention_2")


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
    extra: dict[str, Any] = field(default_factory=dict)


def _float(description: str, low: float, high: float, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description,
                               floating_point_range=[FloatingPointRange(from_value=low, to_value=high)], **kwargs)


def _int(description: str, low: int, high: int, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description,
                               integer_range=[IntegerRange(from_value=low, to_value=high, step=1)], **kwargs)


def _text(description: str, **kwargs: Any) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, **kwargs)


# name -> (default, descriptor). Read-only where changing it would need new subscriptions or a new model.
PARAMETERS: dict[str, tuple[Any, ParameterDescriptor]] = {
    "sync.slop_s": (0.05, _float("approximate-time sync: max stamp spread within a camera set, seconds", 0.0, 10.0)),
    "sync.queue_size": (10, _int("approximate-time sync: messages kept per camera while matching", 1, 1000,
                                 read_only=True)),
    "sync.dead_camera_timeout_s": (1.0, _float(
        "emit partial sets when a camera has been silent this long, seconds (0 = never)", 0.0, 3600.0)),
    "buffer.window_s": (120.0, _float("frames older than this behind the newest frame are forgotten, seconds",
                                      0.1, 86400.0, read_only=True)),
    "buffer.max_rate_hz": (2.0, _float("stored frames per second per camera (0 = every synchronized set)",
                                       0.0, 1000.0, read_only=True)),
    "buffer.max_megabytes": (1024.0, _float("memory budget of the frame buffer, MB", 1.0, 1.0e6, read_only=True)),
    "model.path": ("", _text("Oryx checkpoint directory; empty = the bundled tiny random model (demo only)",
                             read_only=True)),
    "model.device": ("cpu", _text(f"torch device: {DEVICES_HINT}", read_only=True)),
    "model.dtype": ("float32", _text(f"weights dtype: {', '.join(DTYPES)}", read_only=True)),
    "model.attn_implementation": ("sdpa", _text(f"attention: {', '.join(ATTENTION)}", read_only=True)),
    "model.token_cache_megabytes": (256.0, _float("per-frame visual-token cache budget, MB", 0.0, 1.0e6,
                                                   read_only=True)),
    "model.allow_pickle": (False, _text("allow loading a pickled .pth ViT file (weights_only); off = safetensors only",
                                        read_only=True)),
    "planner.min_frames_at_4x": (16, _int(
        "auto mode switches a camera's clip to 16x when 4x would keep fewer frames than this", 1, 4096,
        read_only=True)),
    "planner.max_frames_4x": (64, _int("automatic frame cap per camera at 4x (official eval: 64)", 1, 4096,
                                       read_only=True)),
    "planner.max_frames_16x": (256, _int("automatic frame cap per camera at 16x", 1, 16384, read_only=True)),
    "planner.max_context_tokens": (0, _int(
        "lower the context below the checkpoint's tokenizer_model_max_length to bound latency (0 = checkpoint's)",
        0, 1 << 20, read_only=True)),
    "ask.default_mode": ("auto", _text(f"mode when a request leaves it empty: {', '.join(MODES)}")),
    "ask.default_window_s": (10.0, _float("look-back window when a request gives 0, seconds", 0.01, 86400.0)),
    "ask.max_new_tokens": (128, _int("generation limit when a request gives 0", 1, 8192)),
    "ask.queue_size": (2, _int("requests waiting for the model before new ones are refused as busy", 1, 64,
                               read_only=True)),
    "ask.deadline_s": (0.0, _float("a request not finished within this many seconds fails (0 = no deadline)",
                                   0.0, 3600.0)),
    "description.enabled": (True, _text("publish periodic scene descriptions")),
    "description.period_s": (10.0, _float("seconds between descriptions", 0.1, 86400.0, read_only=True)),
    "description.window_s": (30.0, _float("time window each description covers, seconds", 0.01, 86400.0)),
    "description.prompt": ("Describe what the cameras saw, briefly.", _text("question used for descriptions")),
    "description.mode": ("video_long", _text(f"mode for descriptions: {', '.join(MODES)} (16x by default)")),
    "description.max_frames": (32, _int("frame cap for descriptions (0 = token budget only)", 0, 4096)),
    "description.max_new_tokens": (64, _int("generation limit for descriptions", 1, 8192)),
    "description.spatial": (False, _text("also publish the scene graph and markers with each description")),
    "spatial.base_frame": ("base_link", _text("frame of scene-graph positions (REP 103: x forward, y left, z up)")),
    "spatial.pose_topic": ("", _text("optional robot pose topic (nav_msgs/Odometry or geometry_msgs/PoseStamped)",
                                     read_only=True)),
    "spatial.pose_type": ("odometry", _text("odometry or pose_stamped", read_only=True)),
    "spatial.max_objects": (8, _int("marked objects per spatial request (K)", 1, 64)),
    "spatial.publish_marked_views": (True, _text("publish the marked views the model saw on ~/marked_views")),
    "qos.sensor_reliable": (False, _text("camera subscriptions RELIABLE instead of sensor-data BEST_EFFORT",
                                         read_only=True)),
    "qos.sensor_depth": (10, _int("camera subscription queue depth", 1, 1000, read_only=True)),
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
    """Declare every parameter on ``node`` and return their values as a typed config."""
    node.declare_parameters("", [(name, default, descriptor) for name, (default, descriptor) in PARAMETERS.items()])
    node.declare_parameter("cameras.names", ["camera"], _text("camera names; each has a cameras.<name>.* group",
                                                                read_only=True))
    names = list(node.get_parameter("cameras.names").value)
    if len(set(names)) != len(names) or not all(names):
        raise ValueError(f"cameras.names must be unique, non-empty names: {names}")
    cameras, mounts = [], {}
    for name in names:
        values = {}
        for key, (default, description) in CAMERA_PARAMETERS.items():
            values[key] = node.declare_parameter(f"cameras.{name}.{key}", default,
                                                 _text(description, read_only=True)).value
        if not values["image_topic"]:
            values["image_topic"] = f"/{name}/image_raw" + ("/compressed" if values["compressed"] else "")
        mounts[name] = tuple(float(v) for v in values.pop("mount"))
        if len(mounts[name]) != 7:
            raise ValueError(f"cameras.{name}.mount needs 7 numbers (x y z qx qy qz qw), got {len(mounts[name])}")
        cameras.append(CameraConfig(
            name=name, image_topic=values["image_topic"], compressed=values["compressed"],
            camera_info_topic=values["camera_info_topic"] or None, depth_topic=values["depth_topic"] or None,
            frame_id=values["frame_id"] or None))

    def get(name: str) -> Any:
        return node.get_parameter(name).value

    config = NodeConfig(
        cameras=cameras, mounts=mounts,
        sync_slop_s=get("sync.slop_s"), sync_queue_size=get("sync.queue_size"),
        dead_camera_timeout_s=get("sync.dead_camera_timeout_s"),
        buffer_window_s=get("buffer.window_s"), buffer_max_rate_hz=get("buffer.max_rate_hz"),
        buffer_max_megabytes=get("buffer.max_megabytes"),
        model_path=get("model.path"), model_device=get("model.device"), model_dtype=get("model.dtype"),
        attn_implementation=get("model.attn_implementation"),
        token_cache_megabytes=get("model.token_cache_megabytes"), allow_pickle=get("model.allow_pickle"),
        min_frames_at_4x=get("planner.min_frames_at_4x"), max_frames_4x=get("planner.max_frames_4x"),
        max_frames_16x=get("planner.max_frames_16x"), max_context_tokens=get("planner.max_context_tokens"),
        default_mode=get("ask.default_mode"), default_window_s=get("ask.default_window_s"),
        max_new_tokens=get("ask.max_new_tokens"), queue_size=get("ask.queue_size"), deadline_s=get("ask.deadline_s"),
        description_enabled=get("description.enabled"), description_period_s=get("description.period_s"),
        description_window_s=get("description.window_s"), description_prompt=get("description.prompt"),
        description_mode=get("description.mode"), description_max_frames=get("description.max_frames"),
        description_max_new_tokens=get("description.max_new_tokens"),
        description_spatial=get("description.spatial"),
        base_frame=get("spatial.base_frame"), pose_topic=get("spatial.pose_topic"),
        pose_type=get("spatial.pose_type"), max_objects=get("spatial.max_objects"),
        publish_marked_views=get("spatial.publish_marked_views"),
        sensor_qos_reliable=get("qos.sensor_reliable"), sensor_qos_depth=get("qos.sensor_depth"),
    )
    validate(config)
    return config


def validate(config: NodeConfig) -> None:
    """Reject values that the descriptors' ranges cannot express."""
    for label, value in (("ask.default_mode", config.default_mode), ("description.mode", config.description_mode)):
        if value not in MODES:
            raise ValueError(f"{label} must be one of {MODES}, got {value!r}")
    if config.model_dtype not in DTYPES:
        raise ValueError(f"model.dtype must be one of {DTYPES}, got {config.model_dtype!r}")
    if config.attn_implementation not in ATTENTION:
        raise ValueError(f"model.attn_implementation must be one of {ATTENTION}, got {config.attn_implementation!r}")
    if config.pose_type not in ("odometry", "pose_stamped"):
        raise ValueError(f"spatial.pose_type must be odometry or pose_stamped, got {config.pose_type!r}")
