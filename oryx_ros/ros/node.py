"""The oryx node: a thin adapter from ROS to the sensor-side core, the spatial core and the Oryx engine.

Threads and callback groups (GilYieldingExecutor: rclpy's MultiThreadedExecutor with ros2/rclpy#1452 fixed):
* camera and pose subscriptions live on a hidden helper node (``_<name>_sensors``, SideNode) spun by a
  SingleThreadedExecutor on a thread of its own, so requests holding the pool's threads never delay sensor
  messages (rclpy's unfixed MultiThreadedExecutor lost camera messages at 4 RGB-D x 15 Hz); camera callbacks
  only hand each message to its camera's bounded queue; one worker thread per camera gates, decodes and
  stores it (CameraIngest), so no camera's decode delays another's messages;
* the ``~/ask`` service and the ``~/ask`` action (a reentrant group each) submit a job to the single
  inference worker and wait for it, so several requests may wait while sensors keep streaming in;
* the description and diagnostics timers (one mutually exclusive group) never wait on the model: a
  description is only submitted when the worker is idle, and published from its completion;
* the encode-ahead timer (same group, ``model.encode_on_arrival``) puts one job in the worker's background
  slot when new frames are stored: it encodes the frames the default question window and the description
  window would use into the token cache, and any question or description preempts it within one layer.

Stopping (SIGINT/SIGTERM, see :func:`_spin`): the executor spins on a thread of its own while the main
thread waits for a signal; then new requests are refused, the running and queued jobs are cancelled (the
model stops within one layer), waiting requests answer (an action goal gets its result) and the node is
destroyed before the ROS context shuts down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, NoReturn

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from oryx_ros.action import Ask as AskAction
from oryx_ros.model.planner import PlanError
from oryx_ros.msg import Evidence, SceneDescription, SceneGraph
from oryx_ros.perception.frames import Frame
from oryx_ros.ros.conversions import ns_to_stamp
from oryx_ros.ros.executors import GilYieldingExecutor
from oryx_ros.ros.inference_worker import CancelToken, DeadlineExceededError, InferenceWorker, WorkerBusyError
from oryx_ros.ros.model_backend import is_local
from oryx_ros.ros.parameters import CONFIG_FIELDS, NodeConfig, check_parameter, declare_parameters, descriptor_range
from oryx_ros.ros.process_memory import tune_malloc
from oryx_ros.ros.requests import RequestError, RequestLimits, escape_prompt_text, spread_frame_cap, validate_request
from oryx_ros.ros.scene_messages import scene_graph_message, scene_graph_of, scene_markers
from oryx_ros.ros.side_node import SideNode
from oryx_ros.ros.startup import StartupError, report
from oryx_ros.srv import Ask, Recall

NS_PER_S = 1_000_000_000
NEVER_NS = 1 << 62  # a duration no stamp gap reaches
INTERNAL_ERROR = "internal error (see the node log)"
SHUTTING_DOWN = "the node is shutting down"
STOP_GRACE_S = 1.0  # how long waiting requests get to answer once a stop is requested
SPATIAL_UNAVAILABLE = "spatial reasoning is unavailable: this build has no spatial module"
ACTION_RESULT_TIMEOUT_S = 60  # how long the ~/ask action server keeps a finished goal's result
ENCODE_AHEAD_PERIOD_S = 0.25  # how often an idle node looks for newly stored frames to encode
# Plans of encode-ahead reserve this question's text tokens: the frames differ from a real question's only
# when the context budget, not the frame cap, limits the plan.
TYPICAL_QUESTION = "What do the cameras show, and what has changed in the last seconds?"
POSE_MAX_GAP_NS = NS_PER_S  # a pose further than this from a frame's stamp is not that frame's pose


@dataclass(frozen=True)
class EncodeWindow:
    """One request shape that encode-ahead prepares for: the frames and settings its plan is made with."""

    by_camera: dict[str, list[Frame]]
    mode: str
    max_frames: int  # the engine's per-camera cap (0 = automatic)
    max_new_tokens: int
    question: str


@dataclass
class AskOutcome:
    """What the service response and the action result are both filled from."""

    success: bool = False
    error: str = ""
    answer: str = ""
    scene: SceneGraph = field(default_factory=SceneGraph)
    frames_used: int = 0
    visual_tokens: int = 0
    compression: str = ""
    latency_s: float = 0.0
    cancelled: bool = False
    evidence: Evidence = field(default_factory=Evidence)

    def fill(self, message: Any) -> Any:
        for name in ("success", "error", "answer", "scene", "frames_used", "visual_tokens", "compression",
                     "latency_s", "evidence"):
            setattr(message, name, getattr(self, name))
        if hasattr(message, "cancelled"):
            message.cancelled = self.cancelled
        return message


class RosLogHandler(logging.Handler):
    """Sends the ``oryx_ros`` Python loggers (model loading progress, spatial notes) to the node's log."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        message = f"[{record.name}] {record.getMessage()}"
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(message)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(message)
        else:
            self.ros_logger.info(message)


def _flat_counters(counter: Any) -> dict[str, Any]:
    """A camera's ingest counters as diagnostic values; per-reason counts (quarantined stamps, rejected
    images and CameraInfo) as ``<counter>_<reason>``, whichever of them this ingest has."""
    if counter is None:
        return {}
    values: dict[str, Any] = {}
    for key, value in vars(counter).items():
        if isinstance(value, dict):
            values.update({f"{key}_{reason}": count for reason, count in sorted(value.items())})
            values[f"{key}_total"] = sum(value.values())
        else:
            values[key] = value
    return values


class OryxCore:
    """Everything the plain and the lifecycle node share; lives on a node, created in stages.

    configure: parameters, model, buffer, worker, publishers, services · activate: camera subscriptions and
    timers · deactivate: stop those · cleanup: release the model and everything else.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self.log = node.get_logger()
        self.config: NodeConfig = declare_parameters(node)
        self.engine: Any = None
        self.model_name = ""
        self.buffer: Any = None
        self.ingest: Any = None
        self.worker: InferenceWorker | None = None
        self.spatial: Any = None
        self.memory: Any = None  # MemoryAdapter when memory.enabled
        self.recall_service: Any = None
        self._publishers: list[Any] = []
        self.ask_service: Any = None
        self.ask_action: Any = None
        self._timers: list[Any] = []
        self._pose_subscription: Any = None
        self._sensors: SideNode | None = None
        self._clock_jump_handle: Any = None
        self._description_pending = False
        self._stopping = False
        self._in_flight = 0  # Ask requests (service or action) being answered
        self._server_errors: tuple[type[Exception], ...] = ()  # the remote backend's failures
        self._server_failures = 0
        self._last_server_error = ""
        self._in_flight_changed = threading.Condition()
        self._descriptions_skipped_busy = 0
        # The running description's token: a question preempts it (descriptions are best effort, questions
        # are someone waiting). A period-based deadline would instead cancel every description on a slow CPU.
        self._description_token: CancelToken | None = None
        self._descriptions_preempted = 0
        self._description_timer: Any = None
        # Encode-ahead (model.encode_on_arrival): totals over its background jobs, and the frames of the last
        # job that ran to its end (the timer submits nothing while the windows still hold the same frames).
        self._encoded_ahead_frames = 0
        self._encode_ahead_skipped_budget = 0  # planned frames left out of the last job: over the cache budget
        self._encode_ahead_failed = 0
        self._encoded_windows: tuple[Any, ...] | None = None
        self._encode_ahead_state = "off"  # 'off' | 'pending' (new frames to encode) | 'done' (the windows are)
        # (frames encoded, frames from the token cache) of the last answered question
        self._last_ask_frames: tuple[int, int] | None = None
        # (new, text, visual) tokens of the last description: shows description.* changes taking effect
        self._last_description_tokens: tuple[int, int, int] | None = None
        # Per camera: (colour messages, frames accepted) at the last diagnostics tick, and the monotonic
        # time each last grew: "no recent frames" means no messages arrived, whatever their stamps say.
        self._arrival_counts: dict[str, tuple[int, int]] = {}
        self._last_message_at: dict[str, float] = {}
        self._last_accepted_at: dict[str, float] = {}
        self.service_group = ReentrantCallbackGroup()
        self.action_group = ReentrantCallbackGroup()
        self.timer_group = MutuallyExclusiveCallbackGroup()
        node.add_on_set_parameters_callback(self._validate_parameter_change)
        node.add_post_set_parameters_callback(self._apply_parameter_change)
        package_logger = logging.getLogger("oryx_ros")
        package_logger.setLevel(logging.INFO)
        if not any(isinstance(h, RosLogHandler) for h in package_logger.handlers):
            package_logger.addHandler(RosLogHandler(self.log))

    # ----------------------------------------------------------------------------------------- lifecycle
    def configure(self) -> None:
        from oryx_ros.perception.frame_buffer import FrameBuffer

        self._load_model()
        _stop_if_requested_while_starting()
        config = self.config
        self.buffer = FrameBuffer(
            memory_budget_bytes=int(config.buffer_max_megabytes * 1024 * 1024),
            window_ns=int(config.buffer_window_s * NS_PER_S),
            rate_cap_hz=config.buffer_max_rate_hz or None,
        )
        self.worker = InferenceWorker(max_queue=config.queue_size)
        self.spatial = self._load_spatial()
        self.memory = self._open_memory()
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=QoSReliabilityPolicy.RELIABLE)
        node = self.node
        self.description_pub = node.create_publisher(SceneDescription, "~/scene_description", latched)
        self.graph_pub = node.create_publisher(SceneGraph, "~/scene_graph", latched)
        from visualization_msgs.msg import MarkerArray

        self.markers_pub = node.create_publisher(MarkerArray, "~/markers", latched)
        self.marked_views_pub = node.create_publisher(Image, "~/marked_views", 2)
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.ask_service = node.create_service(Ask, "~/ask", self._on_ask_service, callback_group=self.service_group)
        if self.memory is not None:
            self.recall_service = node.create_service(Recall, "~/recall", self._on_recall_service,
                                                      callback_group=self.service_group)
        self.ask_action = ActionServer(
            node, AskAction, "~/ask", execute_callback=self._on_ask_action, goal_callback=self._on_goal,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT, callback_group=self.action_group,
            # Finished goals' results are kept this long for late get_result calls (rclpy's default is
            # 900 s on Humble/Jazzy: 150 results at a goal every 6 s); clients ask for theirs at once.
            result_timeout=ACTION_RESULT_TIMEOUT_S)
        self._publishers = [self.description_pub, self.graph_pub, self.markers_pub, self.marked_views_pub,
                            self.diagnostics_pub]

    def activate(self) -> None:
        _stop_if_requested_while_starting()
        from rclpy.clock import JumpThreshold
        from rclpy.duration import Duration

        from oryx_ros.perception.stamp_gate import DEFAULT_TIME_JUMP_THRESHOLD_NS
        from oryx_ros.perception.sync import ApproximateTimeSynchronizer
        from oryx_ros.ros.camera_ingest import CameraIngest

        config = self.config
        # Sensor-data QoS (BEST_EFFORT, volatile) with qos.sensor_depth (30: 2 s at 15 Hz) of history, not its 5:
        # several RGB-D cameras must wait out a busy moment without being overwritten (bench_ingest_rgbd.py).
        qos = QoSProfile(depth=config.sensor_qos_depth, reliability=QoSReliabilityPolicy.RELIABLE
                         if config.sensor_qos_reliable else qos_profile_sensor_data.reliability)
        synchronizer = ApproximateTimeSynchronizer(
            [camera.name for camera in config.cameras], config.sync_queue_size,
            max(1, int(config.sync_slop_s * NS_PER_S)),
            dead_camera_timeout_ns=int(config.dead_camera_timeout_s * NS_PER_S) or None)
        # The node's clock (sim or wall) for the stamp gate's future check. Callbacks only queue messages; each
        # camera's worker thread decodes and stores, so one camera's slow decode never stalls another.
        clock = self.node.get_clock()
        # Camera and pose subscriptions are spun by a helper node of their own (SideNode): requests holding
        # the main executor's threads never delay them.
        self._sensors = SideNode(self.node, "sensors")
        self.ingest = CameraIngest(self.node, config.cameras, self.buffer, synchronizer=synchronizer, qos=qos,
                                   now_ns=lambda: clock.now().nanoseconds, workers=True, side_node=self._sensors,
                                   on_stored=self.memory.offer if self.memory is not None else None)
        # /clock going back (sim reset, bag looping with --clock) confirms a time jump at once.
        ingest = self.ingest
        self._clock_jump_handle = clock.create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-DEFAULT_TIME_JUMP_THRESHOLD_NS),
                          on_clock_change=False),
            post_callback=lambda _jump: ingest.on_clock_jump())
        self._timers = [self.node.create_timer(1.0, self._publish_diagnostics, self.timer_group),
                        self.node.create_timer(ENCODE_AHEAD_PERIOD_S, self._maybe_encode_ahead, self.timer_group)]
        self._restart_description_timer()
        self._apply_sensor_settings()
        if self.spatial is not None and config.pose_topic:
            self._pose_subscription = self.spatial.subscribe_pose(
                self._sensors.node, self._sensors.resolve(config.pose_topic), config.pose_type)
        self.log.info(f"listening to {len(config.cameras)} camera(s): "
                      + ", ".join(f"{c.name} ({c.image_topic})" for c in config.cameras))

    def deactivate(self) -> None:
        if self._clock_jump_handle is not None:
            self._clock_jump_handle.unregister()
            self._clock_jump_handle = None
        if self.ingest is not None:
            self.ingest.destroy()
            self.ingest = None
        for timer in self._timers:
            self.node.destroy_timer(timer)
        self._timers = []
        if self._pose_subscription is not None:
            self._pose_subscription = None  # destroyed with the side node
        if self._sensors is not None:
            self._sensors.close()
            self._sensors = None

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        """Orderly stop: refuse new requests, cancel the running and queued jobs, and give the requests
        already waiting up to ``grace_s`` to answer. False if some are still waiting then."""
        self._stopping = True
        if self.worker is not None:
            self.worker.cancel_all()
        with self._in_flight_changed:
            return self._in_flight_changed.wait_for(lambda: self._in_flight == 0, timeout=grace_s)

    def cleanup(self) -> None:
        self.deactivate()
        if self.worker is not None:
            self.worker.stop()
            self.worker = None
        if self.ask_action is not None:
            self.ask_action.destroy()
            self.ask_action = None
        if self.ask_service is not None:
            self.node.destroy_service(self.ask_service)
            self.ask_service = None
        if self.recall_service is not None:
            self.node.destroy_service(self.recall_service)
            self.recall_service = None
        if self.memory is not None:
            self.memory.close()
            self.memory = None
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers = []
        self.engine = None
        self.buffer = None

    # ------------------------------------------------------------------------------------------ set-up
    def _load_model(self) -> None:
        from oryx_ros.ros.model_backend import load_engine, model_name, server_errors

        self.engine = load_engine(self.config, self.log)
        self.model_name = model_name(self.engine, self.config, self.log)
        self._server_errors = server_errors(self.engine)

    def _open_memory(self) -> Any:
        """The long-horizon memory (memory.*), None when off. A store that cannot open is a start-up error."""
        if not self.config.memory_enabled:
            return None
        from oryx_ros.ros.memory_adapter import MemoryAdapter

        try:
            return MemoryAdapter(self.config, self.node.get_fully_qualified_name(), self._pose_at, self.log)
        except Exception as error:
            raise StartupError(f"cannot open the memory store: {error}; fix memory.url / memory.directory or "
                               "set memory.enabled false", "memory.url") from error

    def _pose_at(self, stamp_ns: int) -> Any:
        """The robot pose (memory record) at a stamp, from the pose topic; None without one."""
        if self.spatial is None:
            return None
        found = self.spatial.pose_at(stamp_ns, POSE_MAX_GAP_NS)
        if found is None:
            return None
        from oryx_ros.ros.memory_adapter import pose_record

        return pose_record(*found)

    def _load_spatial(self) -> Any:
        try:
            from oryx_ros.ros.spatial_adapter import SpatialAdapter
        except ImportError:
            self.log.warning(SPATIAL_UNAVAILABLE)
            return None
        return SpatialAdapter(self.config, self.log)

    # ------------------------------------------------------------------------------------- parameters
    def _validate_parameter_change(self, parameters: Sequence[Any]) -> SetParametersResult:
        """Refuse, with the reason, values the descriptors' ranges cannot express (read-only parameters
        are refused by rclpy itself, before this runs)."""
        changed = {parameter.name: parameter.value for parameter in parameters}

        def value_of(name: str) -> Any:
            return changed[name] if name in changed else self._parameter(name)

        for name, value in changed.items():
            if name in CONFIG_FIELDS:
                problem = check_parameter(name, value, value_of, len(self.config.cameras))
                if problem:
                    return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, parameters: Sequence[Any]) -> None:
        """Post-set hook: the new values take effect now (readers of ``self.config`` see them, the
        objects built from them are updated); parameters read per use need nothing here."""
        changed = {parameter.name: parameter.value for parameter in parameters if parameter.name in CONFIG_FIELDS}
        if not changed:
            return
        fields = {CONFIG_FIELDS[name]: value for name, value in changed.items()}
        self.config = dataclasses.replace(self.config, **fields)
        if changed.get("model.encode_on_arrival") is False and self.worker is not None:
            self.worker.cancel_background()
        if {"description.enabled", "description.period_s"} & changed.keys():
            self._restart_description_timer()
        if {"sync.slop_s", "sync.dead_camera_timeout_s", "sensor.max_decode_pixels",
                "sensor.future_tolerance_s"} & changed.keys():
            self._apply_sensor_settings()
        if self.memory is not None and {"memory.keyframe_hz", "memory.quality", "memory.max_megabytes",
                                        "memory.max_age_h"} & changed.keys():
            self.memory.apply_settings(self.config)
        if {"spatial.base_frame", "spatial.max_objects", "spatial.viewpoint", "spatial.relations_per_object",
                "spatial.relations_inverse", "spatial.model_labels"} & changed.keys():
            self._apply_spatial_settings()
        self.log.info("parameters applied: " + ", ".join(f"{name}={value!r}" for name, value in changed.items()))

    def _restart_description_timer(self) -> None:
        """The description timer as ``description.enabled`` and ``description.period_s`` say (while active)."""
        if self._description_timer is not None:
            if self._description_timer in self._timers:
                self._timers.remove(self._description_timer)
            self.node.destroy_timer(self._description_timer)
            self._description_timer = None
        if self.ingest is None or not self.config.description_enabled:
            return  # not active (the timers start on activate), or descriptions are off
        self._description_timer = self.node.create_timer(self.config.description_period_s, self._maybe_describe,
                                                         self.timer_group)
        self._timers.append(self._description_timer)

    def _apply_sensor_settings(self) -> None:
        """Synchronizer and ingest settings from ``self.config`` (on activate and when they change)."""
        ingest, config = self.ingest, self.config
        if ingest is None:
            return
        synchronizer = getattr(ingest, "synchronizer", None)
        if synchronizer is not None:
            synchronizer.slop_ns = max(1, int(config.sync_slop_s * NS_PER_S))
            # 0 = never declare a camera dead: a timeout no gap reaches (None would keep the cameras
            # already declared dead out of matching forever).
            synchronizer.dead_camera_timeout_ns = int(config.dead_camera_timeout_s * NS_PER_S) or NEVER_NS
        if hasattr(ingest, "max_decode_pixels"):
            ingest.max_decode_pixels = int(config.max_decode_pixels)
        if hasattr(ingest, "future_tolerance_ns"):
            ingest.future_tolerance_ns = int(config.future_tolerance_s * NS_PER_S)

    def _apply_spatial_settings(self) -> None:
        if self.spatial is not None:
            self.spatial.apply_settings(self.config)

    def _parameter(self, name: str) -> Any:
        """Current value of a parameter (run-time ones may change between two reads)."""
        return self.node.get_parameter(name).value

    def _request_limits(self) -> RequestLimits:
        max_new_tokens = descriptor_range("ask.max_new_tokens")
        window_s = self.config.buffer_window_s
        if self.memory is not None:  # a question may reach back as far as the memory keeps
            window_s = max(window_s, self.config.memory_max_age_h * 3600.0)
        return RequestLimits(
            cameras=tuple(camera.name for camera in self.config.cameras),
            buffer_window_s=window_s,
            default_window_s=self._parameter("ask.default_window_s"),
            default_mode=self._parameter("ask.default_mode"),
            default_max_new_tokens=self._parameter("ask.max_new_tokens"),
            max_new_tokens=int(max_new_tokens[1]) if max_new_tokens else 0,
            max_question_chars=self._parameter("ask.max_question_chars"),
            base_frame=self.config.base_frame, default_viewpoint=self.config.viewpoint)

    # ------------------------------------------------------------------------------------------ asking
    def _select_frames(self, cameras: Sequence[str], window_s: float, max_frames: int = 0,
                       cap_field: str = "max_frames") -> dict[str, list[Frame]]:
        """Each camera's frames in the window (ending at the newest buffered frame), at most ``max_frames``
        in total (0 = all), spread over the cameras and evenly over time per camera."""
        known = [c.name for c in self.config.cameras]
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise RequestError(f"cameras: unknown camera(s) {unknown}; this node has {known}", field="cameras")
        wanted = list(dict.fromkeys(cameras)) or known
        stamps = [stamp for name in wanted if (stamp := self.buffer.latest_stamp_ns(name)) is not None]
        newest = max(stamps, default=None)
        if newest is None:
            raise RequestError(f"no frames buffered yet for camera(s) {wanted}: are they publishing "
                               "(check /diagnostics)?", field="cameras")
        # The window ends at the newest buffered frame, not at "now", so a replayed bag with old stamps
        # works without use_sim_time (and with it, sim time and stamps agree anyway).
        start = newest - int(window_s * NS_PER_S)
        frames = self.buffer.query(cameras=wanted, start_ns=start, end_ns=newest)
        by_camera: dict[str, list[Frame]] = {name: [] for name in wanted}
        for frame in frames:
            by_camera[frame.camera].append(frame)
        # srv/Ask: max_frames caps the REQUEST, so the node spreads it; the engine's cap is per camera.
        return spread_frame_cap(by_camera, max_frames, field=cap_field)

    @staticmethod
    def _engine_frame_cap(by_camera: dict[str, list[Frame]], max_frames: int) -> int:
        """The engine's per-camera cap once the request's cap is spread: the largest share (0 = automatic)."""
        return max((len(frames) for frames in by_camera.values()), default=0) if max_frames else 0

    def _visuals(self, by_camera: dict[str, list[Frame]]) -> list[Any]:
        from oryx_ros.model.engine import VisualInput

        return [VisualInput(frames=[f.rgb for f in frames], keys=[f.uid for f in frames],
                            stamps_ns=[f.stamp_ns for f in frames], label=f"Camera {name}")
                for name, frames in by_camera.items()]

    def answer(self, request: Any, on_token: Callable[[str, int], None] | None = None,
               cancel_requested: Callable[[], bool] | None = None) -> AskOutcome:
        """Serve one Ask request (service or action goal); never raises."""
        with self._in_flight_changed:
            self._in_flight += 1
        try:
            return self._answer(request, on_token, cancel_requested)
        finally:
            with self._in_flight_changed:
                self._in_flight -= 1
                self._in_flight_changed.notify_all()

    def _answer(self, request: Any, on_token: Callable[[str, int], None] | None,
                cancel_requested: Callable[[], bool] | None) -> AskOutcome:
        started = time.monotonic()
        outcome = AskOutcome()
        try:
            if self._stopping:
                raise RequestError(SHUTTING_DOWN)
            valid = validate_request(request, self._request_limits())
            if valid.escaped:
                self.log.info(f"question: escaped {valid.escaped} prompt-control sequence(s) (<image>, <|...|>)")
            question, mode, max_new_tokens = valid.question, valid.mode, valid.max_new_tokens
            chosen = None if valid.spatial else self._memory_frames(valid, window_given=bool(request.window_s))
            if chosen is None:
                by_camera = self._select_frames(valid.cameras, valid.window_s, valid.max_frames)
                max_frames = self._engine_frame_cap(by_camera, valid.max_frames)
            else:  # frames from RAM and disk, already within the budget; long windows go to 16x
                by_camera, max_frames = chosen.by_camera, 0
                mode = "video_long" if mode == "auto" else mode
                newest = max(f.stamp_ns for frames in by_camera.values() for f in frames)
                question = self.memory.prompt_with_moments(question, chosen.moments, newest)
            header = Header(frame_id=self.config.base_frame, stamp=self.node.get_clock().now().to_msg())

            def job(token: CancelToken) -> AskOutcome:
                def cancelled() -> bool:
                    return token() or (cancel_requested is not None and cancel_requested())

                if valid.spatial:
                    return self._answer_spatial(question, by_camera, mode, max_frames, max_new_tokens,
                                                header, on_token, cancelled, viewpoint=valid.viewpoint)
                result = self.engine.answer(question, self._visuals(by_camera), mode=mode,
                                            max_new_tokens=max_new_tokens, max_frames=max_frames,
                                            on_token=on_token, cancel=cancelled)
                outcome = self._outcome(result, token)
                outcome.evidence = self._evidence(by_camera, result, chosen)
                return outcome

            deadline_s = self._parameter("ask.deadline_s")
            future, token = self.worker.submit(job, deadline_s=deadline_s)
            self._preempt_description()
            outcome = self._wait(future, token, cancel_requested)
            if outcome.success:
                self._last_server_error = ""
            if outcome.cancelled and self._stopping:
                outcome.error = SHUTTING_DOWN
        except (RequestError, WorkerBusyError, DeadlineExceededError) as error:
            outcome = AskOutcome(error=str(error))
        except PlanError as error:  # the planner's own words: what does not fit and what to change
            outcome = AskOutcome(error=f"the request does not fit the model's context: {error}")
        except self._server_errors as error:  # the model server is down, slow or refused: say which
            self._server_failures += 1
            self._last_server_error = str(error)
            self.log.warning(f"model server failed: {error}")
            outcome = AskOutcome(error=f"model server: {error}")
        except Exception as error:  # the node keeps serving whatever a request does; no Python text to clients
            self.log.error(f"request failed with an internal error ({type(error).__name__}); "
                           "the traceback is logged at debug level")
            self.log.debug("".join(traceback.format_exception(error)))
            outcome = AskOutcome(error=INTERNAL_ERROR)
        outcome.latency_s = time.monotonic() - started
        return outcome

    def _memory_frames(self, valid: Any, window_given: bool) -> Any:
        """Frames from RAM and memory for a question that needs the memory: a recall question ("when did
        you last see X?"; over the whole memory unless it gives a window), a window longer than the buffer
        keeps, or any window while the buffer is empty (after a restart). None when the RAM buffer serves it."""
        if self.memory is None:
            return None
        lookup = self.memory.lookup(valid.question)
        cameras = list(valid.cameras)
        stats = self.buffer.camera_stats()
        ram_newest = [s.newest_stamp_ns for c in cameras if (s := stats.get(c)) and s.newest_stamp_ns is not None]
        ram_oldest = [s.oldest_stamp_ns for c in cameras if (s := stats.get(c)) and s.oldest_stamp_ns is not None]
        memory_oldest, memory_newest = self.memory.span_ns()
        newest = max(ram_newest, default=memory_newest)
        if newest is None:
            return None  # nothing anywhere: the RAM path gives the usual error
        if lookup.recall and not window_given:
            start = min(memory_oldest if memory_oldest is not None else newest, min(ram_oldest, default=newest))
        else:
            start = newest - int(valid.window_s * NS_PER_S)
            # The RAM buffer serves every window it is configured to keep (buffer.window_s), as it did before
            # there was a memory; the memory serves longer windows, and any window after a restart (empty RAM).
            within_ram_window = valid.window_s <= self.config.buffer_window_s and bool(ram_oldest)
            if not lookup.recall and within_ram_window:
                return None
        ram: dict[str, list[Frame]] = {name: [] for name in cameras}
        for frame in self.buffer.query(cameras=cameras, start_ns=start, end_ns=newest):
            ram[frame.camera].append(frame)
        budget = valid.max_frames or self._parameter("memory.ask_max_frames")
        return self.memory.frames_for_question(lookup, cameras, start, newest, ram, budget,
                                               self._parameter("memory.recall_moments"), relevance_share=0.5)

    def _evidence(self, by_camera: dict[str, list[Frame]], result: Any, chosen: Any = None) -> Evidence:
        """The frames the model used (the plan may leave some out to fit the context) and their sources."""
        from oryx_ros.ros.memory_adapter import evidence_message

        used, offered = {}, 0
        for item, (camera, frames) in enumerate(by_camera.items()):
            offered += len(frames)
            indices = result.plan.used_frames(item) if result.plan is not None else range(len(frames))
            used[camera] = [frames[i] for i in indices if 0 <= i < len(frames)]
        dropped = offered - sum(len(frames) for frames in used.values()) + (chosen.dropped if chosen else 0)
        return evidence_message(used, chosen, self._pose_at if self.spatial is not None else None, dropped)

    def _on_recall_service(self, request: Recall.Request, response: Recall.Response) -> Recall.Response:
        from oryx_ros.ros.memory_adapter import moment_message

        try:
            moments = self.memory.recall(request, self._parameter("ask.max_question_chars"))
            response.moments = [moment_message(m) for m in moments]
            response.success = True
        except RequestError as error:
            response.error = str(error)
        except Exception as error:  # a store failure is reported, the node keeps serving
            self.log.error(f"recall failed ({type(error).__name__}: {error})")
            self.log.debug("".join(traceback.format_exception(error)))
            response.error = INTERNAL_ERROR
        return response

    def _wait(self, future: Future, token: CancelToken, cancel_requested: Callable[[], bool] | None) -> AskOutcome:
        """The job's outcome. Waiting in slices lets a cancel (the client's, or the node stopping) reach a
        queued job at once (it never starts) and a running one through its token, which the model reads
        before every layer."""
        while True:
            stopping = self._stopping or not rclpy.ok(context=self.node.context)
            if stopping or (cancel_requested is not None and cancel_requested()):
                if future.cancel():
                    return AskOutcome(cancelled=True, error=SHUTTING_DOWN if stopping else "cancelled")
                token.cancel()
            try:
                return future.result(timeout=0.02)
            except TimeoutError:
                continue
            except CancelledError:  # cancelled while queued by the worker's stop
                return AskOutcome(cancelled=True, error=SHUTTING_DOWN)

    def _outcome(self, result: Any, token: CancelToken) -> AskOutcome:
        self._last_ask_frames = (result.frames_encoded, result.frames_from_cache)
        if result.stop_reason == "cancelled" and token.deadline_passed:
            raise DeadlineExceededError("the request's deadline passed during generation; partial answer: "
                                        + result.text)
        return AskOutcome(success=result.stop_reason != "cancelled", answer=result.text,
                          frames_used=result.frames_used, visual_tokens=result.visual_tokens,
                          compression=result.compression, cancelled=result.stop_reason == "cancelled",
                          error="cancelled" if result.stop_reason == "cancelled" else "")

    def _answer_spatial(self, question: str, by_camera: dict[str, list[Frame]], mode: str, max_frames: int,
                        max_new_tokens: int, header: Header, on_token: Any, cancelled: Callable[[], bool],
                        viewpoint: str | None = None) -> AskOutcome:
        if self.spatial is None:
            result = self.engine.answer(question, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, on_token=on_token, cancel=cancelled)
            outcome = self._outcome(result, CancelToken())
            outcome.scene = SceneGraph(header=header, available=False, reason=SPATIAL_UNAVAILABLE)
            return outcome
        scene = self.spatial.build(by_camera, viewpoint)
        if not scene.available:
            # No fabricated 3D: answer from the plain views and say why there is no scene graph.
            result = self.engine.answer(question, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, on_token=on_token, cancel=cancelled)
            outcome = self._outcome(result, CancelToken())
            outcome.scene = scene_graph_message(header, [], [], available=False, reason=scene.reason)
            return outcome
        mode = "multiview" if mode == "auto" else mode
        labelled = self.spatial.labels_enabled and bool(scene.marked_ids)
        visuals = self.spatial.visuals(scene, cached=labelled)  # cached: the question reuses the label pass's ViT
        if labelled:
            # One extra generation: the model names every marked object (not streamed to the client).
            names = self.engine.answer(self.spatial.label_question(scene), visuals, mode=mode,
                                       max_new_tokens=self.spatial.label_max_new_tokens(scene), max_frames=max_frames,
                                       cancel=cancelled)
            self.spatial.label_questions += 1
            if names.stop_reason == "cancelled":
                outcome = self._outcome(names, CancelToken())
                outcome.answer = ""  # the partial names are not an answer to the question
                return outcome
            scene = self.spatial.with_labels(scene, names.text)
        result = self.engine.answer(self.spatial.prompt(question, scene), visuals, mode=mode,
                                    max_new_tokens=max_new_tokens, max_frames=max_frames, on_token=on_token,
                                    cancel=cancelled)
        outcome = self._outcome(result, CancelToken())
        relations = list(scene.relations) + self.spatial.model_relations(result.text, scene)
        # Positions are in the scene's common frame: the base frame, or the world frame with a pose topic.
        outcome.scene = scene_graph_of(Header(stamp=header.stamp, frame_id=scene.frame_id), scene, relations)
        outcome.scene.mentioned_ids = self.spatial.mentioned_ids(result.text, scene)
        outcome.scene.question_ids = self.spatial.mentioned_ids(question, scene)
        self._publish_scene(outcome.scene, scene)
        return outcome

    def _publish_scene(self, graph: SceneGraph, scene: Any) -> None:
        self.graph_pub.publish(graph)
        self.markers_pub.publish(scene_markers(graph))
        if self.config.publish_marked_views:
            for image in self.spatial.marked_view_messages(scene, graph.header):
                self.marked_views_pub.publish(image)

    # ---------------------------------------------------------------------------------------- callbacks
    def _on_ask_service(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        outcome = self.answer(request)
        self._log_outcome("service", request.question, outcome)
        return outcome.fill(response)

    def _on_goal(self, goal: AskAction.Goal) -> GoalResponse:
        # A bad goal is accepted and then aborted with the validation error in its result: a rejected
        # goal would tell the client nothing about why.
        try:
            validate_request(goal, self._request_limits())
        except RequestError as error:
            self.log.warning(f"action goal will be aborted: {error}")
        return GoalResponse.ACCEPT

    def _on_ask_action(self, goal_handle: Any) -> AskAction.Result:
        text: list[str] = []

        def on_token(delta: str, n_tokens: int) -> None:
            text.append(delta)
            goal_handle.publish_feedback(AskAction.Feedback(text="".join(text), tokens=n_tokens))

        outcome = self.answer(goal_handle.request, on_token, lambda: goal_handle.is_cancel_requested)
        self._log_outcome("action", goal_handle.request.question, outcome)
        if outcome.cancelled and goal_handle.is_cancel_requested:
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()  # a failure, or a goal stopped because the node is shutting down
        return outcome.fill(AskAction.Result())

    def _log_outcome(self, via: str, question: str, outcome: AskOutcome) -> None:
        if outcome.success:
            self.log.info(f"{via}: {question!r} -> {outcome.frames_used} frames, {outcome.visual_tokens} visual "
                          f"tokens ({outcome.compression}) in {outcome.latency_s:.2f} s")
        elif outcome.cancelled:
            reason = "" if outcome.error == "cancelled" else f" ({outcome.error})"
            self.log.info(f"{via}: {question!r} cancelled{reason} after {outcome.latency_s:.2f} s")
        else:
            self.log.warning(f"{via}: {question!r} failed: {outcome.error}")

    def _maybe_describe(self) -> None:
        if self._stopping:
            return
        if self._description_pending or not self.worker.idle:
            self._descriptions_skipped_busy += 1
            self.log.debug("skipping a scene description: the model is busy")
            return
        # Read each time: every description.* parameter takes effect at the next description.
        try:
            requested_frames = self._parameter("description.max_frames")
            by_camera = self._select_frames([], self._parameter("description.window_s"), requested_frames,
                                            cap_field="description.max_frames")
        except RequestError as error:
            self.log.info(f"no scene description yet: {error}", throttle_duration_sec=30.0)
            return
        # The operator's prompt is escaped like a client's question (it never injects visual tokens).
        prompt, _ = escape_prompt_text(self._parameter("description.prompt").strip())
        mode = self._parameter("description.mode")
        max_frames = self._engine_frame_cap(by_camera, requested_frames)
        max_new_tokens = self._parameter("description.max_new_tokens")
        started = time.monotonic()

        with_scene = self._parameter("description.spatial") and self.spatial is not None

        def job(token: CancelToken) -> tuple[Any, Any]:
            result = self.engine.answer(prompt, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, cancel=token)
            self._last_description_tokens = (result.new_tokens, result.prompt_tokens - result.visual_tokens,
                                             result.visual_tokens)
            return result, self.spatial.build(by_camera) if with_scene else None

        try:
            future, token = self.worker.submit(job)
        except WorkerBusyError:
            self._descriptions_skipped_busy += 1
            return
        self._description_pending, self._description_token = True, token
        future.add_done_callback(lambda f: self._publish_description(f, by_camera, started))

    def _maybe_encode_ahead(self) -> None:
        """Timer: while the worker is idle and new frames are stored, put one encode-ahead job in its
        background slot (a question or description submitted meanwhile preempts it)."""
        if (self._stopping or not self.config.encode_on_arrival or not is_local(self.engine)
                or self.engine.cache.max_bytes == 0):
            self._encode_ahead_state = "off"
            return
        windows = self._encode_windows()
        # Frames (by identity) and settings of every window: unchanged since the last finished job = nothing new.
        signature = tuple((tuple((name, tuple(f.uid for f in frames)) for name, frames in w.by_camera.items()),
                           w.mode, w.max_frames, w.max_new_tokens, w.question) for w in windows)
        if not windows or signature == self._encoded_windows:
            self._encode_ahead_state = "done"
            return
        self._encode_ahead_state = "pending"  # until the worker is idle (and the job done, not preempted)
        if self._description_pending or not self.worker.idle:
            return

        def job(token: CancelToken) -> list[Any]:
            # Cache budget shared by the windows, the default question's first: a question is what waits.
            budget, reports = self.engine.cache.max_bytes, []
            for window in windows:
                try:
                    report = self.engine.encode_into_cache(
                        self._visuals(window.by_camera), window.mode, question=window.question,
                        max_new_tokens=window.max_new_tokens, max_frames=window.max_frames, cancel=token,
                        byte_budget=budget)
                except PlanError as error:  # the same request from a client would be refused: nothing to prepare
                    self.log.debug(f"encode-ahead: {error}")
                    self._encode_ahead_failed += 1
                    continue
                reports.append(report)
                budget -= report.bytes_planned
                if report.cancelled:
                    break
            return reports

        submitted = self.worker.submit_background(job)
        if submitted is not None:
            submitted[0].add_done_callback(lambda future: self._encoded_ahead(future, signature))

    def _encode_windows(self) -> list[EncodeWindow]:
        """The request shapes to prepare for: a question with the ask.* defaults, and the description."""
        windows = []
        with contextlib.suppress(RequestError):  # no frames yet
            windows.append(EncodeWindow(self._select_frames([], self._parameter("ask.default_window_s")),
                                        self._parameter("ask.default_mode"), 0, self._parameter("ask.max_new_tokens"),
                                        TYPICAL_QUESTION))
        if self.config.description_enabled:
            requested = self._parameter("description.max_frames")
            with contextlib.suppress(RequestError):
                by_camera = self._select_frames([], self._parameter("description.window_s"), requested,
                                                cap_field="description.max_frames")
                prompt, _ = escape_prompt_text(self._parameter("description.prompt").strip())
                windows.append(EncodeWindow(by_camera, self._parameter("description.mode"),
                                            self._engine_frame_cap(by_camera, requested),
                                            self._parameter("description.max_new_tokens"), prompt))
        return windows

    def _encoded_ahead(self, future: Future, signature: tuple[Any, ...]) -> None:
        """Done callback of an encode-ahead job (on the worker thread): count what it did."""
        if future.cancelled() or future.exception() is not None:
            self._encoded_windows = signature  # a failure is logged once, and retried when frames change
            return
        reports = future.result()
        self._encoded_ahead_frames += sum(report.encoded for report in reports)
        if not any(report.cancelled for report in reports):
            self._encode_ahead_skipped_budget = sum(report.over_budget for report in reports)
            self._encoded_windows = signature

    def _preempt_description(self) -> None:
        token = self._description_token
        if self._description_pending and token is not None and not token():
            token.cancel()
            self._descriptions_preempted += 1

    def _publish_description(self, future: Future, by_camera: dict[str, list[Frame]], started: float) -> None:
        self._description_pending, self._description_token = False, None
        if self._stopping or future.cancelled() or not rclpy.ok(context=self.node.context):
            return  # cancelled or finished while the node was shutting down
        if future.exception() is not None:
            self.log.warning(f"scene description failed: {future.exception()}")
            return
        result, scene = future.result()
        if result.stop_reason == "cancelled":
            self.log.debug("scene description preempted by a question")
            return
        used = [frame for frames in by_camera.values() for frame in frames]
        stamps = [frame.stamp_ns for frame in used]
        message = SceneDescription(
            header=Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.config.base_frame),
            text=result.text, window_start=ns_to_stamp(min(stamps), Time), window_end=ns_to_stamp(max(stamps), Time),
            cameras=list(by_camera), frames=result.frames_used, visual_tokens=result.visual_tokens,
            compression=result.compression, latency_s=time.monotonic() - started, model=self.model_name)
        self.description_pub.publish(message)
        if self.memory is not None:
            self.memory.record_description(result.text, used, scene)
        if scene is not None:
            graph = scene_graph_of(Header(stamp=message.header.stamp, frame_id=scene.frame_id), scene)
            self._publish_scene(graph, scene)

    def _publish_diagnostics(self) -> None:
        now_ns = self.node.get_clock().now().nanoseconds
        array = DiagnosticArray()
        array.header.stamp = self.node.get_clock().now().to_msg()
        name = self.node.get_fully_qualified_name()

        def status(component: str, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticStatus:
            return DiagnosticStatus(level=level, name=f"{name}: {component}", message=message, hardware_id=name,
                                    values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])

        counters = self.ingest.stats().cameras if self.ingest is not None else {}
        buffer_cameras = self.buffer.camera_stats()
        # Stamps are compared with the stamps of the other cameras (their own time base), arrivals with
        # this process's monotonic clock: a bag replayed without use_sim_time has old stamps but is live.
        newest_ns = max((c.last_stamp_ns for c in counters.values() if c.last_stamp_ns), default=None)
        for camera in self.config.cameras:
            counter = counters.get(camera.name)
            level, message, values = self._camera_health(camera.name, counter, newest_ns, now_ns)
            stored = buffer_cameras.get(camera.name)
            array.status.append(status(f"camera {camera.name}", level, message, {
                "topic": camera.image_topic, **values,
                "stored_rate_hz": f"{stored.rate_hz:.2f}" if stored else "0", **_flat_counters(counter)}))
        if self.ingest is not None:
            level, message, values = self.ingest.diagnostic_status()
            array.status.append(status("synchronizer", bytes([level]), message, dict(values)))
        buffer = self.buffer
        fill = buffer.total_bytes() / buffer.memory_budget_bytes
        array.status.append(status("frame buffer", DiagnosticStatus.OK, "ok", {
            "frames": len(buffer), "sets": buffer.set_count(), "bytes": buffer.total_bytes(),
            "fill": f"{fill:.3f}", "time_jumps": buffer.time_jumps,
            **{f"dropped_{reason}": count for reason, count in buffer.drop_counts().items()},
            **{f"frames_{name}": stats.count for name, stats in buffer.camera_stats().items()}}))
        worker = self.worker.stats()
        model_level, model_message = DiagnosticStatus.OK, "busy" if worker.running else "idle"
        if self._last_server_error:  # cleared by the next answer the server gives
            model_level, model_message = DiagnosticStatus.WARN, f"model server failing: {self._last_server_error}"
        array.status.append(status("model", model_level, model_message, {
            "model": self.model_name, "device": self.config.model_device, "dtype": self.config.model_dtype,
            "queue_depth": worker.queued, "completed": worker.completed, "failed": worker.failed,
            "rejected_busy": worker.rejected_busy, "expired": worker.expired,
            "last_latency_s": f"{worker.last_latency_s:.3f}",
            "descriptions_skipped_busy": self._descriptions_skipped_busy,
            "descriptions_preempted": self._descriptions_preempted,
            "encode_ahead": "running" if worker.background_running else self._encode_ahead_state,
            "encode_ahead_frames_encoded": self._encoded_ahead_frames,
            "encode_ahead_jobs": worker.background_completed,
            "encode_ahead_preempted": worker.background_preempted,
            "encode_ahead_skipped_budget": self._encode_ahead_skipped_budget,
            "encode_ahead_failed": self._encode_ahead_failed + worker.background_failed,
            **(dict(zip(("last_ask_frames_encoded", "last_ask_frames_from_cache"), self._last_ask_frames,
                        strict=True)) if self._last_ask_frames else {}),
            **({f"token_cache_{k}": v for k, v in vars(self.engine.cache_stats()).items()}
               if is_local(self.engine) else {"backend": "remote", "endpoint": self.config.model_endpoint,
                                               "fallbacks": getattr(self.engine, "fallbacks", 0),
                                               "server_failures": self._server_failures,
                                               "last_server_error": self._last_server_error}),
            **(dict(zip(("last_description_new_tokens", "last_description_text_tokens",
                         "last_description_visual_tokens"), self._last_description_tokens, strict=True))
               if self._last_description_tokens else {})}))
        if self.memory is not None:
            array.status.append(status("memory", *self._memory_health()))
        array.status.append(status("parameters in effect", DiagnosticStatus.OK, "ok", self._settings_in_effect()))
        self.diagnostics_pub.publish(array)

    def _memory_health(self) -> tuple[bytes, str, dict[str, Any]]:
        """WARN while the store refuses writes (disk full, server down): frames are then not remembered."""
        try:
            values = self.memory.diagnostics()
        except Exception as error:  # a server that went away: say so, keep publishing the rest
            return DiagnosticStatus.ERROR, f"memory store unavailable: {error}", {}
        problem = self.memory.recorder.last_error
        if problem:
            return DiagnosticStatus.WARN, f"memory writes failing: {problem}", values
        return DiagnosticStatus.OK, "ok", values

    def _camera_health(self, camera: str, counter: Any, newest_ns: int | None, now_ns: int
                       ) -> tuple[bytes, str, dict[str, str]]:
        """(level, message, values) of one camera: WARN when no message arrived recently (monotonic
        time), when messages arrive but none is accepted, or when its stamps lag the other cameras'."""
        now = time.monotonic()
        messages = counter.images if counter is not None else 0
        accepted = counter.frames if counter is not None else 0
        previous = self._arrival_counts.get(camera)
        if messages and (previous is None or messages != previous[0]):
            self._last_message_at[camera] = now
        if accepted and (previous is None or accepted != previous[1]):
            self._last_accepted_at[camera] = now
        self._arrival_counts[camera] = (messages, accepted)
        quiet_s = max(5.0, 5 * self.config.dead_camera_timeout_s)
        message_age = now - self._last_message_at[camera] if camera in self._last_message_at else math.inf
        accepted_age = now - self._last_accepted_at[camera] if camera in self._last_accepted_at else math.inf
        last_ns = counter.last_stamp_ns if counter is not None else None
        lag_s = (newest_ns - last_ns) / NS_PER_S if last_ns and newest_ns else math.inf
        values = {"last_message_age_s": f"{message_age:.1f}", "last_frame_age_s": f"{accepted_age:.1f}",
                  "stamp_lag_s": f"{lag_s:.2f}",
                  # Informational: how far the stamps are behind the node's clock (large for a replayed bag).
                  "stamp_behind_clock_s": f"{(now_ns - last_ns) / NS_PER_S:.2f}" if last_ns else "inf"}
        if not messages:
            return DiagnosticStatus.WARN, "no recent frames: no message received yet", values
        if message_age > quiet_s:
            return DiagnosticStatus.WARN, f"no recent frames: no message for {message_age:.0f} s", values
        if accepted_age > quiet_s:
            return (DiagnosticStatus.WARN, f"messages arrive but no frame was accepted for {accepted_age:.0f} s "
                    "(see quarantined_* and rejected_*)", values)
        if lag_s > quiet_s:
            return DiagnosticStatus.WARN, f"stamps {lag_s:.1f} s behind the newest camera's", values
        return DiagnosticStatus.OK, "ok", values

    def _settings_in_effect(self) -> dict[str, Any]:
        """The run-time parameters as the objects using them hold them (not as declared)."""
        values: dict[str, Any] = {}
        synchronizer = getattr(self.ingest, "synchronizer", None)
        if synchronizer is not None:
            values["sync.slop_s"] = f"{synchronizer.slop_ns / NS_PER_S:g}"
            timeout = synchronizer.dead_camera_timeout_ns
            values["sync.dead_camera_timeout_s"] = "0" if timeout in (None, NEVER_NS) else f"{timeout / NS_PER_S:g}"
        if hasattr(self.ingest, "max_decode_pixels"):
            values["sensor.max_decode_pixels"] = self.ingest.max_decode_pixels
        if hasattr(self.ingest, "future_tolerance_ns"):
            values["sensor.future_tolerance_s"] = f"{self.ingest.future_tolerance_ns / NS_PER_S:g}"
        timer = self._description_timer
        values["description.period_s"] = f"{timer.timer_period_ns / NS_PER_S:g}" if timer is not None else "off"
        values["model.encode_on_arrival"] = "on" if self.config.encode_on_arrival else "off"
        if self.spatial is not None:
            params = self.spatial.params
            values["spatial.base_frame"] = params.base_frame
            values["spatial.max_objects"] = params.marks.max_marks
            values["spatial.viewpoint"] = params.viewpoint_camera or params.base_frame
            values["spatial.relations_per_object"] = params.relations.per_object
            values["spatial.relations_inverse"] = "on" if params.relations.inverse else "off"
            values["spatial.model_labels"] = "on" if self.spatial.labels_enabled else "off"
            values["spatial.label_questions"] = self.spatial.label_questions
        if self.memory is not None:
            values["memory.keyframe_hz"] = f"{self.memory.recorder.keyframe_hz:g}"
            values["memory.quality"] = self.memory.recorder.quality
            values["memory.max_megabytes"] = f"{self.memory.store.max_bytes / (1024 * 1024):g}"
            values["memory.max_age_h"] = f"{self.memory.store.max_age_ns / NS_PER_S / 3600:g}"
        return values


class OryxNode(Node):
    """The plain node: configured and active as soon as it is constructed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("oryx", **kwargs)
        try:
            self.core = OryxCore(self)
            self.core.configure()
        except StartupError as error:  # main() then exits 1
            report(self.get_logger(), error)
            raise
        self.core.activate()

    def destroy_node(self) -> None:
        if hasattr(self, "core"):  # not when the parameters were refused
            self.core.cleanup()
        super().destroy_node()


class OryxLifecycleNode(LifecycleNode):
    """The managed variant: configure loads the model, activate subscribes, deactivate/cleanup release."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("oryx", **kwargs)
        try:
            self.core = OryxCore(self)  # declares the parameters, so they can be inspected and set before configure
        except StartupError as error:  # camera parameters (model.* are checked by configure): exit 1
            report(self.get_logger(), error)
            raise

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create services/publishers; FAILURE (stay unconfigured) if that fails."""
        try:
            self.core.configure()
        except StartupError as error:  # one line naming the parameter; the node stays up, unconfigured
            report(self.get_logger(), error)
            return TransitionCallbackReturn.FAILURE
        except Exception as error:
            self.get_logger().error(f"configure failed: {type(error).__name__}: {error}")
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the camera subscriptions and timers."""
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop the camera subscriptions and timers; the model stays loaded."""
        self.core.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release the model, the buffer, services and publishers."""
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS


# A stop signal that arrived while the node was starting. The KeyboardInterrupt its handler raises can be
# swallowed: raised inside a finalizer that the garbage collector runs during model loading, it only prints
# "Exception ignored in ... __del__" (seen in 4 of 9 signals timed into the tiny model's loading).
_STARTUP_STOP = threading.Event()


def _stop_if_requested_while_starting() -> None:
    if _STARTUP_STOP.is_set():
        raise KeyboardInterrupt


class _StopSignals:
    """SIGINT and SIGTERM, handled in Python (rclpy's own handlers would shut the context down at once,
    before a streaming goal could be given its result). While the node starts they interrupt it (model
    loading ends with ``KeyboardInterrupt``); once it serves they only set ``requested``."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.serving = False
        _STARTUP_STOP.clear()
        self._previous = {number: signal.signal(number, self._handle) for number in self.SIGNALS}
        self._previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def _unraisable(self, unraisable: Any) -> None:
        # Our KeyboardInterrupt landed in a finalizer and was swallowed there: _STARTUP_STOP has the stop, so
        # it is not reported as an error (with a traceback) on the way out.
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            return
        self._previous_unraisable(unraisable)

    def _handle(self, number: int, _frame: Any) -> None:
        if not self.serving:
            _STARTUP_STOP.set()  # the KeyboardInterrupt below may be swallowed: start-up checks this too
            raise KeyboardInterrupt
        self.requested.set()  # a repeated signal changes nothing: the stop is already under way

    def restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        sys.unraisablehook = self._previous_unraisable


def _serve(node: Node, signals: _StopSignals) -> None:
    """Spin ``node`` until a stop signal, then stop it in order (see the module docstring)."""
    # Every queued or running request holds one thread while it waits for the model (the queue
    # bounds them); the rest serve timers and new requests (which may be refused as busy). Sensor
    # subscriptions are on the side node's executor.
    queue_size = node.get_parameter("ask.queue_size").value if node.has_parameter("ask.queue_size") else 8
    executor = GilYieldingExecutor(num_threads=queue_size + 1 + 4)
    executor.add_node(node)

    def spin() -> None:
        with contextlib.suppress(ExternalShutdownException):
            executor.spin()

    spinner = threading.Thread(target=spin, name="oryx-executor")
    signals.serving = True
    spinner.start()
    while spinner.is_alive() and not signals.requested.wait(1.0):
        pass
    node.get_logger().info("stopping: cancelling the running and queued requests")
    core = getattr(node, "core", None)
    if core is not None and not core.stop():
        node.get_logger().warning(f"requests still waiting {STOP_GRACE_S:.1f} s after the stop; ending anyway")
    # The executor sends the results of the goals that just ended: a task queued after them marks that.
    marker, deadline = executor.create_task(lambda: None), time.monotonic() + 0.5
    while not marker.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    executor.shutdown(timeout_sec=0.5)
    spinner.join(0.5)


def _spin(node_class: type[Node], argv: Sequence[str] | None) -> int:
    """Run the node until SIGINT/SIGTERM; 0 after an orderly stop (at any stage), 1 on a start-up error."""
    args = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    tune_malloc()  # before DDS and the executor start threads: camera-sized buffers must not fragment the heap
    signals = _StopSignals()
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            node = node_class()  # the plain node loads the model here: a signal interrupts the loading
            try:
                _stop_if_requested_while_starting()
                _serve(node, signals)
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError:  # already logged as one line by the node
        return 1
    finally:
        signals.restore()
    return 0


def _end_process(code: int) -> NoReturn:
    """Exit at once with ``code``. :func:`_spin` has already released the node, the model and the ROS
    context in order; interpreter finalization after that took 1-5 s (torch, CUDA, open3d module state),
    long enough for launch to escalate to SIGTERM, and C++ static destructors could abort the process
    ("terminate called without an active exception") while a library thread was still alive."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    _end_process(_spin(OryxNode, argv))


def main_lifecycle(argv: Sequence[str] | None = None) -> int:
    _end_process(_spin(OryxLifecycleNode, argv))


if __name__ == "__main__":
    sys.exit(main())
