"""``RemoteEngine``: :class:`~oryx_ros.model.engine.OryxEngine`'s ``answer`` over HTTP, against the fleet server.

The ROS node uses it in place of a local engine (``model.backend: remote``); same call, same :class:`Answer`.
What it does per question:

1. ``/v1/models`` once (cached): the context limit, planner policy, patch size and resize settings;
2. ``POST /v1/oryx/count_tokens`` (cached per question and labels): the prompt's text tokens, which only
   the server's tokenizer can count;
3. **plans locally** with :func:`~oryx_ros.model.planner.plan_visual_tokens`, exactly as the engine would,
   and sends **only the chosen frames**, each resized once to the model's input resolution (what
   :mod:`~oryx_ros.model.preprocessing` would resize it to for the plan's modality) and PNG-encoded
   (lossless). A frame is sent resized only when the server's preprocessing of the resized frame is the
   identity *and* the server's re-plan of the smaller request picks the same frames at the same token
   counts (checked here with the same planner); otherwise the original pixels go. Either way the model
   sees the pixels it would see locally, so greedy token ids are identical;
4. streams the answer (server-sent events), calling ``on_token(delta, n_tokens)`` per token and polling
   ``cancel`` every few milliseconds; a cancel shuts the socket, which the server sees as a disconnect and
   stops generating within a token.

Errors: connection failures, timeouts and 5xx before the first token are retried ``retries`` times with
exponential backoff (``backoff_s``, ``2·backoff_s``, ...); a 4xx is not retried (:class:`RemoteRequestError`,
also a ``ValueError`` like the engine's input errors); nothing is retried once tokens were streamed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cv2
import httpx
import numpy as np
import numpy.typing as npt

from oryx_ros.model.engine import Answer, EncodeReport, OnTokenText, VisualInput, checked_visuals
from oryx_ros.model.planner import ItemOffer, PlanPolicy, TokenPlan, default_token_counter, plan_visual_tokens
from oryx_ros.model.preprocessing import ResizeConfig, image_sizes, video_frame_size
from oryx_ros.model.resampling import resize_rgb, rgb_tensor
from oryx_ros.model.token_cache import CacheStats

from .openai_api import png_data_url

logger = logging.getLogger(__name__)

RETRY_STATUSES: Final = frozenset({500, 502, 503, 504})
CANCEL_POLL_S: Final = 0.02  # how often a waiting answer() reads ``cancel``
TEXT_COUNT_CACHE: Final = 256  # (question, labels) → text-token counts kept per client
DEFAULT_PNG_CACHE_BYTES: Final = 64 << 20  # encoded frames kept per client, by frame key (re-asked windows)

Cancel = Any  # threading.Event | Callable[[], bool] | None, as the engine's


class RemoteEngineError(RuntimeError):
    """The model server could not answer: unreachable, failing, or the stream broke."""


class RemoteRequestError(RemoteEngineError, ValueError):
    """The server refused the request (4xx): bad input, auth, size limits. Never retried."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _RetryableError(Exception):
    """A failure worth another attempt (nothing was streamed yet)."""


@dataclass(frozen=True)
class ServerInfo:
    """What ``GET /v1/models`` says about the served model."""

    model_name: str
    context_limit: int
    default_max_new_tokens: int
    max_new_tokens: int
    patch_size: int
    resize_backend: str
    resize: ResizeConfig
    policy: PlanPolicy
    max_images: int
    token_cache_bytes: int

    @classmethod
    def from_models_body(cls, body: dict[str, Any]) -> ServerInfo:
        try:
            model = body["data"][0]
            limits = model["oryx"]
            return cls(model_name=str(model["id"]), context_limit=int(limits["context_length"]),
                       default_max_new_tokens=int(limits["default_max_new_tokens"]),
                       max_new_tokens=int(limits["max_new_tokens"]), patch_size=int(limits["patch_size"]),
                       resize_backend=str(limits["resize_backend"]), resize=ResizeConfig(**limits["resize"]),
                       policy=PlanPolicy(**limits["policy"]), max_images=int(limits["max_images"]),
                       token_cache_bytes=int(limits.get("token_cache_bytes", 0)))
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise RemoteEngineError(f"/v1/models does not describe an oryx_ros server ({type(err).__name__}: "
                                    f"{err}); is the endpoint an `oryx-ros serve` server?") from None


@dataclass
class _Outgoing:
    """The frames of one request as sent: per item, (offered item, frame index) and the pixels."""

    mode: str  # the mode the server plans with
    items: list[list[tuple[int, int]]]
    modality: str = ""  # what the frames were resized for ('' = not resized)
    pixels: dict[tuple[int, int], npt.NDArray[np.uint8]] = field(default_factory=dict)

    @property
    def resized(self) -> bool:
        return bool(self.modality)


class RemoteEngine:
    """Answers questions with a remote ``oryx-ros serve`` server; drop-in for ``OryxEngine.answer``."""

    def __init__(self, endpoint: str, api_key: str | None = None, timeout_s: float = 30.0,
                 connect_timeout_s: float = 3.0, retries: int = 2, backoff_s: float = 0.5) -> None:
        """``endpoint``: the server's base URL (``http://host:8000``). ``timeout_s``: longest wait for the
        next byte of a response (it covers queueing on a busy server and the vision pass before the first
        token); ``connect_timeout_s``: to open a connection. ``retries``: extra attempts after a connection
        failure, timeout or 5xx before any token, waiting ``backoff_s · 2^attempt`` between them."""
        if not endpoint.startswith(("http://", "https://")):
            raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
        if timeout_s <= 0 or connect_timeout_s <= 0 or retries < 0 or backoff_s < 0:
            raise ValueError("timeout_s and connect_timeout_s must be > 0, retries and backoff_s >= 0")
        self.endpoint = endpoint.rstrip("/")
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self._client = httpx.Client(headers=headers, timeout=timeout)
        # Answers stream over a fresh connection each (no keep-alive), so the socket is known from the moment it
        # connects and a cancel can shut it down even before the server sends its headers.
        self._stream_client = httpx.Client(headers=headers, timeout=timeout,
                                           limits=httpx.Limits(max_keepalive_connections=0))
        self._info: ServerInfo | None = None
        self._info_lock = threading.Lock()
        self._text_counts: OrderedDict[tuple[str, tuple[str | None, ...]], tuple[int, int]] = OrderedDict()
        self._pngs: OrderedDict[tuple[Hashable, str, tuple[int, int]], bytes] = OrderedDict()
        self._png_bytes = 0
        self._cache_lock = threading.Lock()  # answer() may run in several threads (the caches are shared)
        self.png_cache_bytes = DEFAULT_PNG_CACHE_BYTES
        self._stats_lock = threading.Lock()
        self._frames_from_cache = 0
        self._frames_encoded = 0
        # Bytes of the last answer() for the bench: the chat request body as sent, and the raw RGB pixels of
        # every frame offered (what sending them all uncompressed would cost).
        self.last_request_bytes = 0
        self.last_raw_frame_bytes = 0
        self.last_frames_resized = False

    # ------------------------------------------------------------------ properties
    @property
    def server_info(self) -> ServerInfo:
        """The server's ``/v1/models`` description, fetched on first use and cached."""
        with self._info_lock:
            if self._info is None:
                self._info = ServerInfo.from_models_body(self._request_json("GET", "/v1/models"))
            return self._info

    @property
    def model_name(self) -> str:
        return self.server_info.model_name

    @property
    def context_limit(self) -> int:
        return self.server_info.context_limit

    @property
    def default_max_new_tokens(self) -> int:
        return self.server_info.default_max_new_tokens

    def cache_stats(self) -> CacheStats:
        """Token-cache hits and misses of this client's questions on the server (no network call): frames the
        server found in its cache vs encoded. Entries and bytes belong to the server (0 here)."""
        with self._stats_lock:
            max_bytes = self._info.token_cache_bytes if self._info is not None else 0
            return CacheStats(hits=self._frames_from_cache, misses=self._frames_encoded, evictions=0, rejected=0,
                              entries=0, bytes_used=0, max_bytes=max_bytes)

    def close(self) -> None:
        self._client.close()
        self._stream_client.close()

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def encode_into_cache(self, visuals: Sequence[VisualInput], mode: str = "auto", **_: Any) -> EncodeReport:
        """No-op: the server encodes a frame when a question first uses it (there is no encode-ahead route)."""
        return EncodeReport()

    # ------------------------------------------------------------------ answering
    def answer(
        self,
        question: str,
        visuals: Sequence[VisualInput] = (),
        mode: str = "auto",
        max_new_tokens: int | None = None,
        max_frames: int = 0,
        on_token: OnTokenText | None = None,
        cancel: Cancel = None,
    ) -> Answer:
        """``OryxEngine.answer`` on the server (see the module docstring). Raises
        :class:`~oryx_ros.model.planner.PlanError` when the request cannot fit the context, ``ValueError``
        (incl. :class:`RemoteRequestError`) for malformed input and :class:`RemoteEngineError` when the
        server cannot answer. A cancelled answer has ``stop_reason`` ``'cancelled'``, the text streamed so far
        and no ``token_ids`` (the stream carries text)."""
        start = time.perf_counter()
        visuals = checked_visuals(visuals, mode, question)
        info = self.server_info
        max_new = info.default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        text_tokens, merged_text_tokens = self._text_token_counts(question, [v.label for v in visuals])
        plan = self._plan(visuals, mode, max_new, max_frames, text_tokens, merged_text_tokens)
        planned = sum(len(item.frames) for item in plan.items)
        if planned > info.max_images and visuals:
            # The server refuses more images than its limit: cap the frames per item so the plan fits it (the
            # plan's drops count the frames left out, as for any frame cap).
            cap = max(1, info.max_images // len(visuals))
            max_frames = min(max_frames, cap) if max_frames else cap
            logger.info("the server takes at most %d images per request: %d frames per item instead of %d in all",
                        info.max_images, max_frames, planned)
            plan = self._plan(visuals, mode, max_new, max_frames, text_tokens, merged_text_tokens)
        outgoing = self._outgoing(plan, visuals, mode, max_frames, text_tokens, merged_text_tokens)
        body = self._request_body(question, visuals, outgoing, max_new, max_frames)
        self.last_request_bytes = len(body)
        self.last_raw_frame_bytes = sum(int(f.nbytes) for v in visuals for f in v.frames)
        self.last_frames_resized = outgoing.resized
        prepare_s = time.perf_counter() - start
        if _is_cancelled(cancel):
            return self._answer_of(plan, {}, "", 0, "cancelled", start, prepare_s)
        summary, text, n_tokens, stop = self._stream_with_retries(body, on_token, cancel)
        answer = self._answer_of(plan, summary, text, n_tokens, stop, start, prepare_s)
        with self._stats_lock:
            self._frames_from_cache += answer.frames_from_cache
            self._frames_encoded += answer.frames_encoded
        return answer

    # ------------------------------------------------------------------ planning
    def _text_token_counts(self, question: str, labels: list[str | None]) -> tuple[int, int]:
        key = (question, tuple(labels))
        with self._cache_lock:
            if key in self._text_counts:
                self._text_counts.move_to_end(key)
                return self._text_counts[key]
        body = self._request_json("POST", "/v1/oryx/count_tokens", {"question": question, "labels": labels})
        counts = int(body["text_tokens"]), int(body["merged_text_tokens"])
        with self._cache_lock:
            self._text_counts[key] = counts
            while len(self._text_counts) > TEXT_COUNT_CACHE:
                self._text_counts.popitem(last=False)
        return counts

    def _plan(self, visuals: Sequence[VisualInput], mode: str, max_new: int, max_frames: int, text_tokens: int,
              merged_text_tokens: int, sizes: Sequence[Sequence[tuple[int, int]]] | None = None,
              stamps: Sequence[Sequence[int] | None] | None = None, labels: Sequence[str | None] | None = None
              ) -> TokenPlan:
        """The engine's plan (``OryxEngine._plan``) from the server's limits; ``sizes``/``stamps``/``labels``
        describe another set of items (a simulated outgoing request) instead of ``visuals``."""
        info = self.server_info
        if sizes is None:
            sizes = [[v.size_wh(i) for i in range(len(v.frames))] for v in visuals]
            stamps = [v.stamps_ns for v in visuals]
            labels = [v.label for v in visuals]
        assert stamps is not None and labels is not None
        offers = [ItemOffer(list(s), list(t) if t is not None else None, label)
                  for s, t, label in zip(sizes, stamps, labels, strict=True)]
        return plan_visual_tokens(offers, context_limit=info.context_limit, text_tokens=text_tokens,
                                  max_new_tokens=max_new, mode=mode, max_frames=max_frames,
                                  merged_text_tokens=merged_text_tokens, policy=info.policy,
                                  counter=default_token_counter(info.patch_size))

    def _outgoing(self, plan: TokenPlan, visuals: list[VisualInput], mode: str, max_frames: int,
                  text_tokens: int, merged_text_tokens: int) -> _Outgoing:
        """The smallest request whose server-side plan equals ``plan``: the chosen frames resized, else the
        chosen frames as they are, else everything as offered (the server then plans exactly as here)."""
        everything = _Outgoing(mode, [[(i, f) for f in range(len(v.frames))] for i, v in enumerate(visuals)])
        if not plan.items:
            return everything
        sent_mode = "multiview" if plan.views_merged else plan.mode_used
        chosen = [sorted((i, f) for f in plan.used_frames(i)) for i in range(len(visuals))]
        if not all(chosen):
            return everything
        wanted = _signature(plan, None)
        # Resized frames are sent when they are no larger than the originals (a small frame is upscaled by
        # preprocessing: its original pixels are then the cheaper way to the same model input).
        original_px = sum(visuals[i].frames[f].shape[0] * visuals[i].frames[f].shape[1]
                          for pairs in chosen for i, f in pairs)
        resized_px = 0
        for pairs in chosen:
            for i, f in pairs:
                size = self._model_input_size(*visuals[i].size_wh(f), plan.mode_used)
                resized_px += size[0] * size[1] if size is not None else original_px
        for resized in ((True, False) if resized_px <= original_px else (False, True)):
            outgoing = _Outgoing(sent_mode, chosen, modality=plan.mode_used if resized else "")
            for pairs in chosen:
                for i, f in pairs:
                    frame = visuals[i].frames[f]
                    pixels = self._model_input(frame, plan.mode_used) if resized else frame
                    if pixels is None:
                        break
                    outgoing.pixels[(i, f)] = pixels
            if len(outgoing.pixels) != sum(map(len, chosen)):
                continue  # some frame would not survive a second preprocessing unchanged
            sizes = [[_size_wh(outgoing.pixels[p]) for p in pairs] for pairs in chosen]
            stamps = [[visuals[i].stamps_ns[f] for i, f in pairs] if visuals[pairs[0][0]].stamps_ns is not None
                      else None for pairs in chosen]
            try:
                server_plan = self._plan(visuals, sent_mode, plan.max_new_tokens, max_frames, text_tokens,
                                         merged_text_tokens, sizes, stamps, [v.label for v in visuals])
            except ValueError:
                continue
            if _signature(server_plan, chosen) == wanted:
                return outgoing
        return everything

    def _model_input_size(self, width: int, height: int, modality: str) -> tuple[int, int] | None:
        """The size preprocessing resizes a ``width×height`` frame to for ``modality`` (for images the highres
        view: the lowres one is derived from it), or None when preprocessing a frame of that size again would
        resize it once more (the server would then not see the same pixels)."""
        resize = self.server_info.resize
        if modality == "image":
            sizes = image_sizes(width, height, resize)
            again = image_sizes(*sizes.highres, resize)
            same = (again.guarded, again.highres, again.lowres) == (sizes.highres, sizes.highres, sizes.lowres)
            return sizes.highres if same else None
        size = video_frame_size(width, height, modality, resize)  # type: ignore[arg-type]
        return size if video_frame_size(*size, modality, resize) == size else None  # type: ignore[arg-type]

    def _model_input(self, frame: npt.NDArray[np.uint8], modality: str) -> npt.NDArray[np.uint8] | None:
        """``frame`` resized exactly as the server's preprocessing would (same backend, same steps), or None
        (see :meth:`_model_input_size`)."""
        info = self.server_info
        height, width = frame.shape[:2]
        size = self._model_input_size(width, height, modality)
        if size is None:
            return None
        pixels = rgb_tensor(frame)
        backend = info.resize_backend
        if modality == "image":  # preprocess_image: the tiny-image guard, then the highres resize
            pixels = resize_rgb(pixels, image_sizes(width, height, info.resize).guarded, backend)  # type: ignore[arg-type]
        return np.ascontiguousarray(resize_rgb(pixels, size, backend).numpy())  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the request
    def _request_body(self, question: str, visuals: list[VisualInput], outgoing: _Outgoing, max_new: int,
                      max_frames: int) -> bytes:
        content: list[dict[str, Any]] = [{"type": "text", "text": question}]
        items = []
        for pairs in outgoing.items:
            indices = []
            for i, f in pairs:
                indices.append(len(content) - 1)
                pixels = outgoing.pixels.get((i, f), visuals[i].frames[f])
                key = visuals[i].keys[f] if visuals[i].keys is not None else None
                png = self._png(pixels, key, outgoing.modality or "original")
                content.append({"type": "image_url", "image_url": {"url": png_data_url(png)}})
            first = pairs[0][0]
            stamps = [visuals[i].stamps_ns[f] for i, f in pairs] if visuals[first].stamps_ns is not None else None
            items.append({"label": visuals[first].label, "images": indices, "stamps_ns": stamps})
        payload = {"model": self.model_name, "messages": [{"role": "user", "content": content}],
                   "max_tokens": max_new, "stream": True,
                   "oryx": {"mode": outgoing.mode, "max_frames": max_frames, "items": items}}
        return json.dumps(payload, separators=(",", ":")).encode()

    def _png(self, pixels: npt.NDArray[np.uint8], key: Hashable | None, variant: str) -> bytes:
        """Lossless PNG of RGB ``pixels``, remembered by the frame's key: a window asked about again is not
        encoded again."""
        cache_key = (key, variant, _size_wh(pixels))
        with self._cache_lock:
            if key is not None and cache_key in self._pngs:
                self._pngs.move_to_end(cache_key)
                return self._pngs[cache_key]
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RemoteEngineError(f"PNG encoding of a {pixels.shape} frame failed")
        png = encoded.tobytes()
        if key is not None and len(png) <= self.png_cache_bytes:
            with self._cache_lock:
                if cache_key not in self._pngs:
                    self._pngs[cache_key] = png
                    self._png_bytes += len(png)
                while self._png_bytes > self.png_cache_bytes:
                    _, dropped = self._pngs.popitem(last=False)
                    self._png_bytes -= len(dropped)
        return png

    def _answer_of(self, plan: TokenPlan, summary: dict[str, Any], text: str, n_tokens: int, stop: str,
                   start: float, prepare_s: float) -> Answer:
        timings = dict.fromkeys(("preprocess_s", "vision_s", "prefill_s", "decode_s"), 0.0)
        timings.update(summary.get("timings") or {})
        timings["server_total_s"] = timings.pop("total_s", 0.0)
        timings["client_prepare_s"] = prepare_s
        timings["total_s"] = time.perf_counter() - start
        if summary and (summary.get("visual_tokens"), summary.get("prompt_tokens")) != (plan.visual_tokens,
                                                                                       plan.prompt_tokens):
            logger.warning("the server built %s visual / %s prompt tokens, the local plan %d / %d",
                           summary.get("visual_tokens"), summary.get("prompt_tokens"), plan.visual_tokens,
                           plan.prompt_tokens)
        return Answer(text=text, new_tokens=int(summary.get("new_tokens", n_tokens)),
                      prompt_tokens=int(summary.get("prompt_tokens", plan.prompt_tokens)),
                      visual_tokens=plan.visual_tokens, frames_offered=plan.frames_offered,
                      frames_used=plan.frames_used, compression=plan.compression, mode_used=plan.mode_used,
                      stop_reason=stop, timings=timings, plan=plan, token_ids=list(summary.get("token_ids", [])),
                      frames_encoded=int(summary.get("frames_encoded", 0)),
                      frames_from_cache=int(summary.get("frames_from_cache", 0)))

    # ------------------------------------------------------------------ HTTP
    def _request_json(self, method: str, path: str, payload: Any = None) -> Any:
        """A small JSON request with the retry policy."""
        def once() -> Any:
            try:
                response = self._client.request(method, self.endpoint + path, json=payload)
            except httpx.TransportError as err:
                raise _RetryableError(_describe(err)) from None
            _raise_for_status(response.status_code, response.content)
            try:
                return response.json()
            except ValueError:
                raise RemoteEngineError(f"{method} {self.endpoint}{path} did not return JSON") from None

        return self._with_retries(once, None)

    def _with_retries(self, attempt: Any, cancel: Cancel) -> Any:
        attempts = 1 + self.retries
        last = ""
        for number in range(attempts):
            try:
                return attempt()
            except _RetryableError as err:
                last = str(err)
                logger.warning("model server %s: attempt %d of %d failed: %s", self.endpoint, number + 1,
                               attempts, last)
            if number + 1 < attempts:
                deadline = time.monotonic() + self.backoff_s * 2**number
                while time.monotonic() < deadline:
                    if _is_cancelled(cancel):
                        return None
                    time.sleep(min(CANCEL_POLL_S, max(0.0, deadline - time.monotonic())))
        raise RemoteEngineError(f"model server {self.endpoint} unreachable after {attempts} attempts: {last}")

    def _stream_with_retries(self, body: bytes, on_token: OnTokenText | None,
                             cancel: Cancel) -> tuple[dict[str, Any], str, int, str]:
        result = self._with_retries(lambda: self._stream_once(body, on_token, cancel), cancel)
        return result if result is not None else ({}, "", 0, "cancelled")

    def _stream_once(self, body: bytes, on_token: OnTokenText | None,
                     cancel: Cancel) -> tuple[dict[str, Any], str, int, str]:
        """One streamed attempt → (final summary, text, tokens, stop reason). The HTTP exchange runs in a
        reader thread so that this thread can poll ``cancel`` while the server is silent (queueing, vision)."""
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        stop_reading = threading.Event()
        connection: dict[str, socket.socket] = {}
        reader = threading.Thread(target=self._read_stream, args=(body, events, stop_reading, connection),
                                  name="oryx-remote-stream", daemon=True)
        reader.start()
        text_parts: list[str] = []
        n_tokens = 0
        try:
            while True:
                if _is_cancelled(cancel):
                    stop_reading.set()  # first: a socket connecting right now is then shut by the reader itself
                    _hang_up(connection)  # the server sees the disconnect and sets its cancel event
                    return {}, "".join(text_parts), n_tokens, "cancelled"
                try:
                    kind, value = events.get(timeout=CANCEL_POLL_S)
                except queue.Empty:
                    continue
                if kind == "data":
                    chunk = value
                    if "error" in chunk:
                        error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
                        message = f"model server {self.endpoint} failed mid-answer: {error.get('message')}"
                        if n_tokens == 0 and error.get("type") != "invalid_request_error":
                            raise _RetryableError(message)
                        raise (RemoteRequestError(message, 400) if error.get("type") == "invalid_request_error"
                               else RemoteEngineError(message))
                    extension = chunk.get("oryx") or {}
                    choices = chunk.get("choices") or []
                    if choices and choices[0].get("finish_reason") is not None:
                        return extension, "".join(text_parts), n_tokens, str(extension.get("stop_reason", "eos"))
                    delta = (choices[0].get("delta") or {}).get("content") if choices else None
                    if delta is not None and "tokens" in extension:
                        n_tokens = int(extension["tokens"])
                        text_parts.append(delta)
                        if on_token is not None:
                            on_token(delta, n_tokens)
                elif kind == "http_error":
                    status, content = value
                    _raise_for_status(status, content)
                elif kind in ("transport_error", "eof"):
                    what = value if kind == "transport_error" else "the stream ended before the answer did"
                    if n_tokens == 0:
                        raise _RetryableError(what)
                    raise RemoteEngineError(f"model server {self.endpoint} broke off the answer after {n_tokens} "
                                            f"tokens: {what}")
        finally:
            stop_reading.set()

    def _read_stream(self, body: bytes, events: queue.Queue, stop: threading.Event,
                     connection: dict[str, socket.socket]) -> None:
        def trace(event: str, info: dict[str, Any]) -> None:  # httpcore's connection events
            if event == "connection.connect_tcp.complete" and info.get("return_value") is not None:
                connection["socket"] = info["return_value"].get_extra_info("socket")
                if stop.is_set():
                    _hang_up(connection)

        try:
            with self._stream_client.stream("POST", self.endpoint + "/v1/chat/completions", content=body,
                                            headers={"Content-Type": "application/json"},
                                            extensions={"trace": trace}) as response:
                if response.status_code != 200:
                    events.put(("http_error", (response.status_code, response.read())))
                    return
                for line in response.iter_lines():
                    if stop.is_set():
                        return
                    if not line.startswith("data:"):
                        continue  # blank separators and SSE comments
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        events.put(("data", json.loads(data)))
                    except ValueError:
                        events.put(("transport_error", f"malformed event {data[:80]!r}"))
                        return
                events.put(("eof", None))
        except httpx.TransportError as err:
            if not stop.is_set():
                events.put(("transport_error", _describe(err)))
        except Exception as err:  # reported to the waiting thread, never lost
            if not stop.is_set():
                events.put(("transport_error", f"{type(err).__name__}: {err}"))


# ----------------------------------------------------------------------------------------- helpers
def _signature(plan: TokenPlan, chosen: list[list[tuple[int, int]]] | None) -> tuple[Any, ...]:
    """What makes two plans give the same prompt: per planned item its modality, label and frames (mapped
    back to the offered frames through ``chosen`` for a plan of the outgoing request), and the token counts."""
    def original(item: int, frame: int) -> tuple[int, int]:
        return chosen[item][frame] if chosen is not None else (item, frame)

    items = tuple((p.modality, p.label, p.visual_tokens, tuple(original(i, f) for i, f in p.frames))
                  for p in plan.items)
    return plan.mode_used, plan.views_merged, plan.visual_tokens, plan.prompt_tokens, items


def _size_wh(pixels: npt.NDArray[np.uint8]) -> tuple[int, int]:
    return int(pixels.shape[1]), int(pixels.shape[0])


def _is_cancelled(cancel: Cancel) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def _hang_up(connection: dict[str, socket.socket]) -> None:
    """Shut the stream's socket down: wakes the reader thread's blocked read and sends the server a FIN."""
    sock = connection.get("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


def _raise_for_status(status: int, content: bytes) -> None:
    if status < 400:
        return
    try:
        error = json.loads(content)["error"]
        message = str(error.get("message", error))
    except (ValueError, KeyError, TypeError, AttributeError):
        message = content[:200].decode("utf-8", "replace") or f"HTTP {status}"
    if status in RETRY_STATUSES:
        raise _RetryableError(f"HTTP {status}: {message}")
    if status >= 500:
        raise RemoteEngineError(f"model server failed with HTTP {status}: {message}")
    raise RemoteRequestError(f"model server refused the request (HTTP {status}): {message}", status)


def _describe(err: httpx.TransportError) -> str:
    text = str(err) or type(err).__name__
    if isinstance(err, httpx.ConnectError):
        return f"connection failed: {text}"
    if isinstance(err, httpx.TimeoutException):
        return f"timed out ({type(err).__name__}): {text}"
    return f"{type(err).__name__}: {text}"
