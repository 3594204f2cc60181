"""The Ray Serve deployment: :class:`OryxServer` replicas, each one :class:`~oryx_ros.model.engine.OryxEngine`
behind an OpenAI-compatible FastAPI ingress.

Routes (all JSON; errors are OpenAI error objects):

* ``POST /v1/chat/completions``: answer a question about PNG/JPEG frames (:mod:`.openai_api`), streamed as
  server-sent ``chat.completion.chunk`` events ending with ``data: [DONE]`` or as one ``chat.completion``;
* ``GET /v1/models``: the model and what a client needs to plan frames itself (context, planner policy,
  patch size, resize settings, request limits);
* ``POST /v1/oryx/count_tokens``: the prompt's text tokens for a question and item labels (the tokenizer
  lives here, the planner runs on the client: :class:`~.remote_engine.RemoteEngine`);
* ``GET /health``: liveness plus this replica's request and token-cache statistics (no auth: it holds counts only).

Per replica: the engine answers one request at a time (its lock); a request runs in a worker thread so the
event loop keeps streaming and notices disconnects. Frames are keyed in the token cache by their content
(blake2b of pixels + shape), so the same frame sent again, by any robot, is encoded once per replica.

Cancellation: a stream the client closes (or a request Ray Serve cancels) sets the request's
``threading.Event``, which the engine reads between tokens and before every ViT block and LLM layer.
"""

# No "from __future__ import annotations" here: FastAPI reads the route methods' annotations (Request) at
# runtime, and Serve's ingress wrapper does not carry this module's globals for string annotations.
import asyncio
import dataclasses
import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from .config import ServeConfig, config_from_dict
from .openai_api import (
    ChatRequest,
    RequestError,
    RequestLimits,
    answer_summary,
    check_bearer,
    chunk_body,
    completion_body,
    decode_image,
    error_body,
    frame_content_key,
    models_body,
    parse_chat_request,
    parse_count_request,
    parse_json_body,
    sse_event,
    usage_body,
)

logger = logging.getLogger(__name__)

APP_NAME: Final = "oryx"
DEPLOYMENT_NAME: Final = "OryxServer"
RECENT_REQUESTS: Final = 64  # per replica, shown by /health
_DTYPES: Final = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}

app = FastAPI(title="oryx_ros fleet server", docs_url=None, redoc_url=None, openapi_url=None)


@dataclass
class RequestRecord:
    """How one request ended (``/health``'s ``recent``)."""

    request_id: str
    stop_reason: str  # 'eos' | 'max_tokens' | 'cancelled' | 'error'
    new_tokens: int
    max_new_tokens: int
    frames_used: int
    frames_from_cache: int
    total_s: float


@dataclass
class ReplicaStats:
    """Request counters of one replica; updated from worker threads, hence the lock."""

    started: int = 0
    completed: int = 0
    cancelled: int = 0
    failed: int = 0
    recent: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=RECENT_REQUESTS))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, record: RequestRecord) -> None:
        with self.lock:
            if record.stop_reason == "cancelled":
                self.cancelled += 1
            elif record.stop_reason == "error":
                self.failed += 1
            else:
                self.completed += 1
            self.recent.append(record)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"started": self.started, "completed": self.completed, "cancelled": self.cancelled,
                    "failed": self.failed, "in_flight": self.started - self.completed - self.cancelled - self.failed,
                    "recent": [dataclasses.asdict(r) for r in self.recent]}


def load_engine(config: ServeConfig) -> Any:
    """The replica's engine, as ``config.model`` describes it ('' = the tiny random checkpoint)."""
    import torch

    from oryx_ros.model.engine import OryxEngine
    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

    model = config.model
    path = model.path or ensure_tiny_checkpoint()
    if not model.path:
        print("WARNING: oryx serve is answering with the TINY RANDOM-WEIGHT checkpoint (model.path is ''): "
              "its answers are noise; set model.path to a real Oryx checkpoint", file=sys.stderr, flush=True)
    dtype = getattr(torch, _DTYPES[model.dtype]) if model.dtype != "auto" else None
    return OryxEngine.from_pretrained(
        path, device=model.device, dtype=dtype, cache_bytes=int(model.token_cache_megabytes * 2**20),
        progress=False, max_context=model.max_context or None, model_name=model.name or None,
        default_max_new_tokens=model.default_max_new_tokens, resize_backend=model.resize_backend)


# Helpers come before the deployment class: Serve's ingress decorator serialises the class as it is
# defined, so names it uses must already exist.
class _AnswerRun:
    """One request's engine run in a worker thread, its token events on an asyncio queue."""

    def __init__(self, server: "OryxServer", chat: ChatRequest, visuals: list[Any], request_id: str) -> None:
        self.server, self.chat, self.request_id = server, chat, request_id
        self.created = int(time.time())
        self.cancel = threading.Event()
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue[tuple[str, int] | None] = asyncio.Queue()
        self.future = self.loop.run_in_executor(server.workers, server._answer, chat, visuals, request_id,
                                                self._on_token, self.cancel)
        self.future.add_done_callback(lambda _: self.events.put_nowait(None))  # runs on the loop

    def _on_token(self, delta: str, n_tokens: int) -> None:  # engine thread → event loop
        self.loop.call_soon_threadsafe(self.events.put_nowait, (delta, n_tokens))

    async def first_event(self) -> tuple[str, int] | None:
        """The first token, or None when the run ended first; raises the run's RequestError."""
        event = await self.events.get()
        if event is None:
            self.future.result()  # raises what the run raised
        return event

    async def result(self) -> Any:
        return await self.future

    async def sse(self, first: tuple[str, int] | None) -> AsyncIterator[bytes]:
        """OpenAI chunks: the role, one per token (with ``oryx.tokens``), the finish with the ``oryx`` summary,
        usage when asked for, ``[DONE]``. Closing the stream early sets the cancel event."""
        model, rid, created = self.server.model_name, self.request_id, self.created
        finished = False
        try:
            yield sse_event(chunk_body(rid, created, model, {"role": "assistant", "content": ""}))
            event = first
            while event is not None:
                delta, n_tokens = event
                yield sse_event(chunk_body(rid, created, model, {"content": delta}, extension={"tokens": n_tokens}))
                event = await self.events.get()
            try:
                answer = await self.future
            except RequestError as err:
                yield sse_event(err.body())
            except Exception as err:
                logger.exception("request %s failed", rid)
                yield sse_event(error_body(f"the server failed: {type(err).__name__}: {err}",
                                           error_type="server_error"))
            else:
                summary = answer_summary(answer)
                yield sse_event(chunk_body(rid, created, model, {}, finish_reason=_finish(summary),
                                           extension={k: v for k, v in summary.items() if k != "text"}))
                if self.chat.include_usage:
                    yield sse_event(chunk_body(rid, created, model, {}, with_choice=False,
                                               usage=usage_body(summary["prompt_tokens"], summary["new_tokens"])))
            yield sse_event("[DONE]")
            finished = True
        finally:
            if not finished:  # the client closed the stream, or Serve cancelled the request
                self.cancel.set()


def _finish(summary: dict[str, Any]) -> str:
    from .openai_api import FINISH_REASONS

    return FINISH_REASONS[summary["stop_reason"]]


def _visuals_of(chat: ChatRequest) -> list[Any]:
    """Decode the images (their headers passed the limits) into the engine's VisualInputs, keyed by content."""
    from oryx_ros.model.engine import VisualInput

    pixels = [decode_image(part) for part in chat.images]
    keys = [frame_content_key(frame) for frame in pixels]
    visuals = []
    for item in chat.items:
        visuals.append(VisualInput([pixels[i] for i in item.images], keys=[keys[i] for i in item.images],
                                   stamps_ns=list(item.stamps_ns) if item.stamps_ns is not None else None,
                                   label=item.label))
    return visuals


def _error_response(err: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress(app)
class OryxServer:
    """One replica: an engine, its token cache and its counters."""

    def __init__(self, config: dict[str, Any], api_key: str | None = None) -> None:
        # The key comes from the driver's environment (config.http.api_key_env) as an argument, so a replica
        # on another node of a cluster needs no copy of the variable.
        self.config = config_from_dict(config)
        self.api_key = api_key or None
        self.engine = load_engine(self.config)
        self.model_name: str = self.engine.model_name
        self.created = int(time.time())
        self.limits = RequestLimits(
            max_images=self.config.limits.max_images, max_image_pixels=self.config.limits.max_image_pixels,
            max_new_tokens=self.config.limits.max_new_tokens,
            default_max_new_tokens=self.config.model.default_max_new_tokens)
        self.stats = ReplicaStats()
        # Threads beyond the first wait on the engine's lock: one per request Serve lets into this replica.
        self.workers = ThreadPoolExecutor(max_workers=self.config.replicas.max_ongoing_requests,
                                          thread_name_prefix="oryx-answer")
        context = serve.get_replica_context()
        self.replica_id = context.replica_id.unique_id if context is not None else "local"

    # ------------------------------------------------------------------ routes
    @app.get("/health")
    async def health(self) -> dict[str, Any]:
        import ray

        cache = self.engine.cache_stats()
        return {"status": "ok", "model": self.model_name, "replica": self.replica_id,
                "actor_name": ray.get_runtime_context().get_actor_name(), "requests": self.stats.snapshot(),
                "cache": {**dataclasses.asdict(cache), "hit_rate": cache.hit_rate}}

    @app.get("/v1/models")
    async def models(self, request: Request) -> Response:
        try:
            check_bearer(request.headers.get("authorization"), self.api_key)
        except RequestError as err:
            return _error_response(err)
        return JSONResponse(models_body(self.model_name, self.created, self._model_limits()))

    @app.post("/v1/oryx/count_tokens")
    async def count_tokens(self, request: Request) -> Response:
        try:
            check_bearer(request.headers.get("authorization"), self.api_key)
            question, labels = parse_count_request(parse_json_body(await self._read_body(request)))
            counts = await asyncio.to_thread(self._text_tokens, question, labels)
        except RequestError as err:
            return _error_response(err)
        return JSONResponse(counts)

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Response:
        try:
            check_bearer(request.headers.get("authorization"), self.api_key)
            chat = parse_chat_request(parse_json_body(await self._read_body(request)), self.limits)
            if chat.model not in (None, "", self.model_name):
                raise RequestError(f"model {chat.model!r} is not served here; this server serves "
                                   f"{self.model_name!r}", status=404, param="model", code="model_not_found")
            visuals = await asyncio.to_thread(_visuals_of, chat)
        except RequestError as err:
            return _error_response(err)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        run = _AnswerRun(self, chat, visuals, request_id)
        try:
            first = await run.first_event()  # before any header: a plan error still becomes a 400
        except RequestError as err:
            return _error_response(err)
        except asyncio.CancelledError:
            run.cancel.set()  # the client went away (or Serve cancelled) while the frames were encoded
            raise
        if chat.stream:
            return StreamingResponse(run.sse(first), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Request-Id": request_id})
        try:
            answer = await run.result()
        except asyncio.CancelledError:
            run.cancel.set()
            raise
        except RequestError as err:
            return _error_response(err)
        return JSONResponse(completion_body(request_id, run.created, self.model_name, answer_summary(answer)))

    # ------------------------------------------------------------------ helpers
    async def _read_body(self, request: Request) -> bytes:
        """The body, refused with 413 from Content-Length or as soon as it grows past the limit."""
        limit = self.config.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestError(f"the request body ({declared} bytes) exceeds the server's limit of {limit} bytes",
                               status=413, code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestError(f"the request body exceeds the server's limit of {limit} bytes", status=413,
                                   code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _model_limits(self) -> dict[str, Any]:
        from oryx_ros.model.preprocessing import DEFAULT_RESIZE

        engine = self.engine
        return {
            "context_length": engine.context_limit,
            "default_max_new_tokens": engine.default_max_new_tokens,
            "max_new_tokens": self.limits.max_new_tokens,
            "patch_size": int(engine.config.vision.patch_size),
            "resize_backend": engine.resize_backend,
            "resize": dataclasses.asdict(DEFAULT_RESIZE),
            "policy": dataclasses.asdict(engine.policy),
            "max_images": self.limits.max_images,
            "max_image_pixels": self.limits.max_image_pixels,
            "max_body_bytes": self.config.limits.max_body_bytes,
            "image_formats": ["png", "jpeg"],
            "token_cache_bytes": engine.cache.max_bytes,
            "dtype": str(engine.dtype).removeprefix("torch."),
        }

    def _text_tokens(self, question: str, labels: list[str | None]) -> dict[str, int]:
        """The text-token counts the engine's planner uses (both layouts), as ``OryxEngine._plan`` computes
        them: the engine owns the prompt template, so the client asks rather than guesses."""
        text_tokens = self.engine.text_token_count(question, labels)
        merged_label = ", ".join(label for label in labels if label) or None
        merged = self.engine.text_token_count(question, [merged_label]) if labels else text_tokens
        return {"text_tokens": int(text_tokens), "merged_text_tokens": int(merged)}

    def _answer(self, chat: ChatRequest, visuals: list[Any], request_id: str,
                on_token: Callable[[str, int], None], cancel: threading.Event) -> Any:
        """Runs in a worker thread: the engine call, with its end recorded in the stats."""
        from oryx_ros.model.planner import PlanError

        with self.stats.lock:
            self.stats.started += 1
        start = time.perf_counter()
        try:
            answer = self.engine.answer(chat.question, visuals, mode=chat.mode, max_new_tokens=chat.max_new_tokens,
                                        max_frames=chat.max_frames, on_token=on_token, cancel=cancel)
        except (PlanError, ValueError, TypeError) as err:
            self.stats.record(RequestRecord(request_id, "error", 0, chat.max_new_tokens, 0, 0,
                                            time.perf_counter() - start))
            raise RequestError(str(err), code="plan_error" if isinstance(err, PlanError) else None) from None
        except BaseException:
            self.stats.record(RequestRecord(request_id, "error", 0, chat.max_new_tokens, 0, 0,
                                            time.perf_counter() - start))
            raise
        self.stats.record(RequestRecord(request_id, answer.stop_reason, answer.new_tokens, chat.max_new_tokens,
                                        answer.frames_used, answer.frames_from_cache, time.perf_counter() - start))
        return answer


def build_application(config: ServeConfig, api_key: str | None = None) -> Any:
    """The Serve application for ``config``: replica count or autoscaling, resources, request queueing."""
    replicas = config.replicas
    options: dict[str, Any] = {
        "max_ongoing_requests": replicas.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": replicas.num_cpus, "num_gpus": replicas.num_gpus},
        # A replica being replaced stops taking requests at once; in-flight streams get this long to finish.
        "graceful_shutdown_timeout_s": 5.0,
        "graceful_shutdown_wait_loop_s": 0.5,
    }
    if config.autoscaling:
        options["autoscaling_config"] = {"min_replicas": replicas.min_replicas, "max_replicas": replicas.max_replicas,
                                         "target_ongoing_requests": replicas.target_ongoing_requests}
    else:
        options["num_replicas"] = replicas.num_replicas
    return OryxServer.options(**options).bind(config.as_dict(), api_key)


def api_key_from_env(config: ServeConfig) -> str | None:
    """The API key named by ``config.http.api_key_env`` in this process's environment (None = no auth)."""
    name = config.http.api_key_env
    return (os.environ.get(name) or None) if name else None
