"""The oryx node: a thin adapter from ROS to the sensor-side core, the spatial core and the Oryx engine.

Threads and callback groups (MultiThreadedExecutor):
* camera subscriptions (a mutually exclusive group per camera) only convert messages and fill the frame buffer;
* the ``~/ask`` service and the ``~/ask`` action (a reentrant group each) submit a job to the single
  inference worker and wait for it, so several requests may wait while sensors keep streaming in;
* the description and diagnostics timers (one mutually exclusive group) never wait on the model: a
  description is only submitted when the worker is idle, and published from its completion.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from oryx_ros.action import Ask as AskAction
from oryx_ros.msg import SceneDescription, SceneGraph
from oryx_ros.perception.frames import Frame
from oryx_ros.ros.conversions import ns_to_stamp
from oryx_ros.ros.inference_worker import CancelToken, DeadlineExceededError, InferenceWorker, WorkerBusyError
from oryx_ros.ros.parameters import MODES, NodeConfig, declare_parameters
from oryx_ros.ros.scene_messages import scene_graph_message, scene_markers
from oryx_ros.srv import Ask

NS_PER_S = 1_000_000_000
SPATIAL_UNAVAILABLE = "spatial reasoning is unavailable: this build has no spatial module"


class RequestError(ValueError):
    """A request the node cannot serve; the message goes back to the caller as ``error``."""


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

    def fill(self, message: Any) -> Any:
        for name in ("success", "error", "answer", "scene", "frames_used", "visual_tokens", "compression",
                     "latency_s"):
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
        self._publishers: list[Any] = []
        self.ask_service: Any = None
        self.ask_action: Any = None
        self._timers: list[Any] = []
        self._pose_subscription: Any = None
        self._clock_jump_handle: Any = None
        self._description_pending = False
        self._descriptions_skipped_busy = 0
        self.sensor_group = MutuallyExclusiveCallbackGroup()
        self.service_group = ReentrantCallbackGroup()
        self.action_group = ReentrantCallbackGroup()
        self.timer_group = MutuallyExclusiveCallbackGroup()
        node.add_on_set_parameters_callback(self._validate_parameter_change)
        package_logger = logging.getLogger("oryx_ros")
        package_logger.setLevel(logging.INFO)
        if not any(isinstance(h, RosLogHandler) for h in package_logger.handlers):
            package_logger.addHandler(RosLogHandler(self.log))

    # ----------------------------------------------------------------------------------------- lifecycle
    def configure(self) -> None:
        from oryx_ros.perception.frame_buffer import FrameBuffer

        self._load_model()
        config = self.config
        self.buffer = FrameBuffer(
            memory_budget_bytes=int(config.buffer_max_megabytes * 1024 * 1024),
            window_ns=int(config.buffer_window_s * NS_PER_S),
            rate_cap_hz=config.buffer_max_rate_hz or None,
        )
        self.worker = InferenceWorker(max_queue=config.queue_size)
        self.spatial = self._load_spatial()
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
        self.ask_action = ActionServer(
            node, AskAction, "~/ask", execute_callback=self._on_ask_action, goal_callback=self._on_goal,
            cancel_callback=lambda _goal: CancelResponse.ACCEPT, callback_group=self.action_group)
        self._publishers = [self.description_pub, self.graph_pub, self.markers_pub, self.marked_views_pub,
                            self.diagnostics_pub]

    def activate(self) -> None:
        from rclpy.clock import JumpThreshold
        from rclpy.duration import Duration

        from oryx_ros.perception.stamp_gate import DEFAULT_TIME_JUMP_THRESHOLD_NS
        from oryx_ros.perception.sync import ApproximateTimeSynchronizer
        from oryx_ros.ros.camera_ingest import CameraIngest

        config = self.config
        qos = QoSProfile(depth=config.sensor_qos_depth, reliability=QoSReliabilityPolicy.RELIABLE) \
            if config.sensor_qos_reliable else qos_profile_sensor_data
        synchronizer = ApproximateTimeSynchronizer(
            [camera.name for camera in config.cameras], config.sync_queue_size,
            max(1, int(config.sync_slop_s * NS_PER_S)),
            dead_camera_timeout_ns=int(config.dead_camera_timeout_s * NS_PER_S) or None)
        # The node's clock (sim or wall) for the stamp gate's future check; each camera gets its own
        # callback group, so one camera's slow decode never stalls another.
        clock = self.node.get_clock()
        self.ingest = CameraIngest(self.node, config.cameras, self.buffer, synchronizer=synchronizer, qos=qos,
                                   now_ns=lambda: clock.now().nanoseconds)
        # /clock going back (sim reset, bag looping with --clock) confirms a time jump at once.
        ingest = self.ingest
        self._clock_jump_handle = clock.create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-DEFAULT_TIME_JUMP_THRESHOLD_NS),
                          on_clock_change=False),
            post_callback=lambda _jump: ingest.on_clock_jump())
        self._timers = [self.node.create_timer(1.0, self._publish_diagnostics, self.timer_group)]
        if config.description_enabled:
            self._timers.append(
                self.node.create_timer(config.description_period_s, self._maybe_describe, self.timer_group))
        if self.spatial is not None and config.pose_topic:
            self._pose_subscription = self.spatial.subscribe_pose(self.node, config, self.sensor_group)
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
            self.node.destroy_subscription(self._pose_subscription)
            self._pose_subscription = None

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
        for publisher in self._publishers:
            self.node.destroy_publisher(publisher)
        self._publishers = []
        self.engine = None
        self.buffer = None

    # ------------------------------------------------------------------------------------------ set-up
    def _load_model(self) -> None:
        import torch

        from oryx_ros.model.engine import OryxEngine
        from oryx_ros.model.planner import PlanPolicy

        config = self.config
        path = config.model_path
        if not path:
            from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

            path = str(ensure_tiny_checkpoint())
            self.log.warning("=" * 78)
            self.log.warning("model.path is empty: using the bundled TINY RANDOM Oryx checkpoint at " + path)
            self.log.warning("Its answers are meaningless. Set model.path to a real checkpoint (e.g. Oryx-7B).")
            self.log.warning("=" * 78)
        started = time.monotonic()
        # "auto" spreads a 34B/32B checkpoint over all visible GPUs (accelerate placement, whole decoder layers).
        multi_gpu = config.model_device == "auto"
        self.engine = OryxEngine.from_pretrained(
            path, device="cuda" if multi_gpu else config.model_device, device_map="auto" if multi_gpu else None,
            dtype=getattr(torch, config.model_dtype),
            attn_implementation=config.attn_implementation, allow_pickle=config.allow_pickle,
            cache_bytes=int(config.token_cache_megabytes * 1024 * 1024),
            policy=PlanPolicy(min_frames_at_4x=config.min_frames_at_4x, auto_max_frames_4x=config.max_frames_4x,
                              auto_max_frames_16x=config.max_frames_16x),
            max_context=config.max_context_tokens or None)
        self.model_name = self.engine.model_name
        self.log.info(f"loaded {self.model_name} on {config.model_device} ({config.model_dtype}) "
                      f"in {time.monotonic() - started:.1f} s, context {self.engine.context_limit} tokens")

    def _load_spatial(self) -> Any:
        try:
            from oryx_ros.ros.spatial_adapter import SpatialAdapter
        except ImportError:
            self.log.warning(SPATIAL_UNAVAILABLE)
            return None
        return SpatialAdapter(self.config, self.log)

    def _validate_parameter_change(self, parameters: Sequence[Any]) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name in ("ask.default_mode", "description.mode") and parameter.value not in MODES:
                return SetParametersResult(successful=False, reason=f"{parameter.name} must be one of {MODES}")
        return SetParametersResult(successful=True)

    def _parameter(self, name: str) -> Any:
        """Current value of a run-time tunable parameter (others are fixed in ``self.config``)."""
        return self.node.get_parameter(name).value

    # ------------------------------------------------------------------------------------------ asking
    def _select_frames(self, cameras: Sequence[str], window_s: float) -> dict[str, list[Frame]]:
        known = [c.name for c in self.config.cameras]
        unknown = [c for c in cameras if c not in known]
        if unknown:
            raise RequestError(f"unknown camera(s) {unknown}; this node has {known}")
        wanted = list(cameras) or known
        stamps = [stamp for name in wanted if (stamp := self.buffer.latest_stamp_ns(name)) is not None]
        newest = max(stamps, default=None)
        if newest is None:
            raise RequestError(f"no frames buffered yet for camera(s) {wanted}: are they publishing "
                               "(check /diagnostics)?")
        # The window ends at the newest buffered frame, not at "now", so a replayed bag with old stamps
        # works without use_sim_time (and with it, sim time and stamps agree anyway).
        start = newest - int(window_s * NS_PER_S)
        frames = self.buffer.query(cameras=wanted, start_ns=start, end_ns=newest)
        by_camera: dict[str, list[Frame]] = {name: [] for name in wanted}
        for frame in frames:
            by_camera[frame.camera].append(frame)
        return {name: items for name, items in by_camera.items() if items}

    def _visuals(self, by_camera: dict[str, list[Frame]]) -> list[Any]:
        from oryx_ros.model.engine import VisualInput

        return [VisualInput(frames=[f.rgb for f in frames], keys=[f.uid for f in frames],
                            stamps_ns=[f.stamp_ns for f in frames], label=f"Camera {name}")
                for name, frames in by_camera.items()]

    def answer(self, request: Any, on_token: Callable[[str, int], None] | None = None,
               cancel_requested: Callable[[], bool] | None = None) -> AskOutcome:
        """Serve one Ask request (service or action goal); never raises."""
        started = time.monotonic()
        outcome = AskOutcome()
        try:
            question = request.question.strip()
            if not question:
                raise RequestError("the question is empty")
            mode = request.mode or self._parameter("ask.default_mode")
            if mode not in MODES:
                raise RequestError(f"mode must be one of {MODES} (or empty), got {request.mode!r}")
            if request.window_s < 0:
                raise RequestError("window_s must be >= 0")
            window_s = request.window_s or self._parameter("ask.default_window_s")
            max_new_tokens = request.max_new_tokens or self._parameter("ask.max_new_tokens")
            by_camera = self._select_frames(list(request.cameras), window_s)
            header = Header(frame_id=self.config.base_frame, stamp=self.node.get_clock().now().to_msg())

            def job(token: CancelToken) -> AskOutcome:
                def cancelled() -> bool:
                    return token() or (cancel_requested is not None and cancel_requested())

                if request.spatial:
                    return self._answer_spatial(question, by_camera, mode, request.max_frames, max_new_tokens,
                                                header, on_token, cancelled)
                result = self.engine.answer(question, self._visuals(by_camera), mode=mode,
                                            max_new_tokens=max_new_tokens, max_frames=request.max_frames,
                                            on_token=on_token, cancel=cancelled)
                return self._outcome(result, token)

            deadline_s = self._parameter("ask.deadline_s")
            future, token = self.worker.submit(job, deadline_s=deadline_s)
            outcome = self._wait(future, token, cancel_requested)
        except (RequestError, WorkerBusyError, DeadlineExceededError) as error:
            outcome = AskOutcome(error=str(error))
        except Exception as error:  # the node keeps serving whatever a request does
            self.log.error(f"request failed: {type(error).__name__}: {error}")
            outcome = AskOutcome(error=f"{type(error).__name__}: {error}")
        outcome.latency_s = time.monotonic() - started
        return outcome

    def _wait(self, future: Future, token: CancelToken, cancel_requested: Callable[[], bool] | None) -> AskOutcome:
        # Waiting in slices lets a cancelled action goal stop a job that has not started yet.
        while True:
            try:
                return future.result(timeout=0.05)
            except TimeoutError:
                if cancel_requested is not None and cancel_requested():
                    token.cancel()
                if not rclpy.ok(context=self.node.context):
                    token.cancel()
                    raise RequestError("the node is shutting down") from None

    def _outcome(self, result: Any, token: CancelToken) -> AskOutcome:
        if result.stop_reason == "cancelled" and token.deadline_passed:
            raise DeadlineExceededError("the request's deadline passed during generation; partial answer: "
                                        + result.text)
        return AskOutcome(success=result.stop_reason != "cancelled", answer=result.text,
                          frames_used=result.frames_used, visual_tokens=result.visual_tokens,
                          compression=result.compression, cancelled=result.stop_reason == "cancelled",
                          error="cancelled" if result.stop_reason == "cancelled" else "")

    def _answer_spatial(self, question: str, by_camera: dict[str, list[Frame]], mode: str, max_frames: int,
                        max_new_tokens: int, header: Header, on_token: Any, cancelled: Callable[[], bool]
                        ) -> AskOutcome:
        if self.spatial is None:
            result = self.engine.answer(question, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, on_token=on_token, cancel=cancelled)
            outcome = self._outcome(result, CancelToken())
            outcome.scene = SceneGraph(header=header, available=False, reason=SPATIAL_UNAVAILABLE)
            return outcome
        scene = self.spatial.build(by_camera)
        if not scene.available:
            # No fabricated 3D: answer from the plain views and say why there is no scene graph.
            result = self.engine.answer(question, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, on_token=on_token, cancel=cancelled)
            outcome = self._outcome(result, CancelToken())
            outcome.scene = scene_graph_message(header, [], [], available=False, reason=scene.reason)
            return outcome
        result = self.engine.answer(self.spatial.prompt(question, scene), self.spatial.visuals(scene),
                                    mode="multiview" if mode == "auto" else mode, max_new_tokens=max_new_tokens,
                                    max_frames=max_frames, on_token=on_token, cancel=cancelled)
        outcome = self._outcome(result, CancelToken())
        relations = list(scene.relations) + self.spatial.model_relations(result.text, scene)
        mentioned = self.spatial.mentioned_ids(result.text, scene)
        # Positions are in the scene's common frame: the base frame, or the world frame with a pose topic.
        outcome.scene = scene_graph_message(Header(stamp=header.stamp, frame_id=scene.frame_id), scene.objects,
                                            relations)
        outcome.scene.mentioned_ids = mentioned
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
        if not goal.question.strip():
            self.log.warning("rejected an action goal with an empty question")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_ask_action(self, goal_handle: Any) -> AskAction.Result:
        text: list[str] = []

        def on_token(delta: str, n_tokens: int) -> None:
            text.append(delta)
            goal_handle.publish_feedback(AskAction.Feedback(text="".join(text), tokens=n_tokens))

        outcome = self.answer(goal_handle.request, on_token, lambda: goal_handle.is_cancel_requested)
        self._log_outcome("action", goal_handle.request.question, outcome)
        if outcome.cancelled or goal_handle.is_cancel_requested:
            outcome.cancelled = True
            goal_handle.canceled()
        elif outcome.success:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return outcome.fill(AskAction.Result())

    def _log_outcome(self, via: str, question: str, outcome: AskOutcome) -> None:
        if outcome.success:
            self.log.info(f"{via}: {question!r} -> {outcome.frames_used} frames, {outcome.visual_tokens} visual "
                          f"tokens ({outcome.compression}) in {outcome.latency_s:.2f} s")
        else:
            self.log.warning(f"{via}: {question!r} failed: {outcome.error}")

    def _maybe_describe(self) -> None:
        if self._description_pending or not self.worker.idle:
            self._descriptions_skipped_busy += 1
            self.log.debug("skipping a scene description: the model is busy")
            return
        try:
            by_camera = self._select_frames([], self._parameter("description.window_s"))
        except RequestError as error:
            self.log.info(f"no scene description yet: {error}", throttle_duration_sec=30.0)
            return
        prompt = self._parameter("description.prompt")
        mode = self._parameter("description.mode")
        max_frames = self._parameter("description.max_frames")
        max_new_tokens = self._parameter("description.max_new_tokens")
        started = time.monotonic()

        with_scene = self._parameter("description.spatial") and self.spatial is not None

        def job(token: CancelToken) -> tuple[Any, Any]:
            result = self.engine.answer(prompt, self._visuals(by_camera), mode=mode, max_new_tokens=max_new_tokens,
                                        max_frames=max_frames, cancel=token)
            return result, self.spatial.build(by_camera) if with_scene else None

        try:
            future, _ = self.worker.submit(job, deadline_s=self.config.description_period_s * 3)
        except WorkerBusyError:
            self._descriptions_skipped_busy += 1
            return
        self._description_pending = True
        future.add_done_callback(lambda f: self._publish_description(f, by_camera, started))

    def _publish_description(self, future: Future, by_camera: dict[str, list[Frame]], started: float) -> None:
        self._description_pending = False
        if not rclpy.ok(context=self.node.context):
            return  # finished while the node was shutting down
        if future.exception() is not None:
            self.log.warning(f"scene description failed: {future.exception()}")
            return
        result, scene = future.result()
        used = [frame for frames in by_camera.values() for frame in frames]
        stamps = [frame.stamp_ns for frame in used]
        message = SceneDescription(
            header=Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.config.base_frame),
            text=result.text, window_start=ns_to_stamp(min(stamps), Time), window_end=ns_to_stamp(max(stamps), Time),
            cameras=list(by_camera), frames=result.frames_used, visual_tokens=result.visual_tokens,
            compression=result.compression, latency_s=time.monotonic() - started, model=self.model_name)
        self.description_pub.publish(message)
        if scene is not None:
            graph = scene_graph_message(Header(stamp=message.header.stamp, frame_id=scene.frame_id), scene.objects,
                                        scene.relations, scene.available, scene.reason)
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
        for camera in self.config.cameras:
            counter = counters.get(camera.name)
            last_ns = counter.last_stamp_ns if counter is not None else None
            # Staleness against the node clock: with use_sim_time this is /clock, else wall time (a replayed
            # bag with old stamps then shows as stale, which is true of its data).
            stale_s = (now_ns - last_ns) / NS_PER_S if last_ns else float("inf")
            healthy = last_ns is not None and stale_s < max(5.0, 5 * self.config.dead_camera_timeout_s)
            stored = buffer_cameras.get(camera.name)
            array.status.append(status(
                f"camera {camera.name}", DiagnosticStatus.OK if healthy else DiagnosticStatus.WARN,
                "ok" if healthy else "no recent frames",
                {"topic": camera.image_topic, "staleness_s": f"{stale_s:.2f}",
                 "stored_rate_hz": f"{stored.rate_hz:.2f}" if stored else "0",
                 **(vars(counter) if counter is not None else {})}))
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
        array.status.append(status("model", DiagnosticStatus.OK, "busy" if worker.running else "idle", {
            "model": self.model_name, "device": self.config.model_device, "dtype": self.config.model_dtype,
            "queue_depth": worker.queued, "completed": worker.completed, "failed": worker.failed,
            "rejected_busy": worker.rejected_busy, "expired": worker.expired,
            "last_latency_s": f"{worker.last_latency_s:.3f}", "descriptions_skipped_busy":
            self._descriptions_skipped_busy, **{f"token_cache_{k}": v for k, v in
                                                vars(self.engine.cache_stats()).items()}}))
        self.diagnostics_pub.publish(array)


class OryxNode(Node):
    """The plain node: configured and active as soon as it is constructed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("oryx", **kwargs)
        self.core = OryxCore(self)
        self.core.configure()
        self.core.activate()

    def destroy_node(self) -> None:
        self.core.cleanup()
        super().destroy_node()


class OryxLifecycleNode(LifecycleNode):
    """The managed variant: configure loads the model, activate subscribes, deactivate/cleanup release."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("oryx", **kwargs)
        self.core = OryxCore(self)  # declares the parameters, so they can be inspected and set before configure

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create services/publishers; FAILURE (stay unconfigured) if that fails."""
        try:
            self.core.configure()
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


def _spin(node_class: type[Node], argv: Sequence[str] | None) -> int:
    args = [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]
    try:
        with rclpy.init(args=args):
            node = node_class()
            # Every queued or running request holds one thread while it waits for the model (the queue
            # bounds them); the rest serve cameras, timers and new requests (which may be refused as busy).
            queue_size = node.get_parameter("ask.queue_size").value if node.has_parameter("ask.queue_size") else 8
            executor = MultiThreadedExecutor(num_threads=queue_size + 1 + 4)
            executor.add_node(node)
            try:
                executor.spin()
            finally:
                node.destroy_node()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return _spin(OryxNode, argv)


def main_lifecycle(argv: Sequence[str] | None = None) -> int:
    return _spin(OryxLifecycleNode, argv)


if __name__ == "__main__":
    sys.exit(main())
