"""The OpenAI-compatible wire format of the fleet server: request parsing and validation, response bodies.

Pure functions over JSON-like values and bytes (no Ray, no FastAPI, no torch), so every rule is tested
without a server, including property tests that feed arbitrary JSON.

Request (``POST /v1/chat/completions``)::

    {"model": "tiny-oryx-qwen2-seed0",
     "messages": [{"role": "user", "content": [
         {"type": "text", "text": "What is on the table?"},
         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0..."}}, ...]}],
     "max_tokens": 64, "stream": true,
     "oryx": {"mode": "auto", "max_frames": 0,
              "items": [{"label": "Camera front", "images": [0, 1, 2], "stamps_ns": [0, 5e8, 1e9]}]}}

* One user message (the server adds Oryx's own system prompt; earlier turns are not supported).
* Images are PNG or JPEG **data URLs** only: the server never fetches a URL or opens a path.
* ``oryx`` (optional): ``mode`` (default ``auto``), ``max_frames`` (default 0 = automatic) and ``items``
  (default: every image, in order, as one unlabelled item); image indices count the message's image parts
  in order, and every image belongs to exactly one item.
* Greedy decoding: ``temperature``, ``top_p``, ``seed``, ``n=1`` and the penalties are accepted and ignored;
  ``stop``, ``tools``, ``logprobs`` and ``response_format`` are refused (they would change the answer).

Every malformed request raises :class:`RequestError` (HTTP 400 unless stated) with a message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import cv2
import numpy as np
import numpy.typing as npt

from oryx_ros.perception.image_header import ImageHeaderError, read_image_header

ANSWER_MODES: Final = ("auto", "image", "video", "video_long", "multiview")  # = oryx_ros.model.engine's
IMAGE_MEDIA_TYPES: Final[dict[str, str]] = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg"}
MAX_LABEL_CHARS: Final = 200
IMAGE_TOKEN: Final = "<image>"  # the prompt placeholder: never allowed in client text
# Accepted for compatibility and ignored: the server decodes greedily, so these cannot change the answer.
IGNORED_FIELDS: Final = frozenset({"temperature", "top_p", "seed", "user", "frequency_penalty", "presence_penalty",
                                   "n", "model", "messages", "max_tokens", "max_completion_tokens", "stream",
                                   "stream_options", "oryx"})
REFUSED_FIELDS: Final = ("stop", "tools", "tool_choice", "functions", "logprobs", "top_logprobs", "response_format")
ORYX_FIELDS: Final = frozenset({"mode", "max_frames", "items"})
ITEM_FIELDS: Final = frozenset({"label", "images", "stamps_ns"})
FINISH_REASONS: Final[dict[str, str]] = {"eos": "stop", "max_tokens": "length", "cancelled": "stop"}
_DATA_URL: Final = re.compile(r"data:([\w/+.-]+);base64,", re.ASCII)


class RequestError(ValueError):
    """A request the server refuses: ``status`` (400, 401, 404, 413), OpenAI ``type``, ``param`` and ``code``."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return error_body(str(self), error_type=self.error_type, param=self.param, code=self.code)


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for (from ``config.limits`` and ``config.model``)."""

    max_images: int
    max_image_pixels: int
    max_new_tokens: int
    default_max_new_tokens: int


@dataclass(frozen=True)
class ImagePart:
    """One image of a request, sized from its header; its pixels are decoded later (:func:`decode_image`)."""

    data: bytes  # the PNG/JPEG file
    format: str  # 'png' | 'jpeg'
    width: int
    height: int


@dataclass(frozen=True)
class ItemSpec:
    """One visual item: its images (indices into the request's images, oldest first), stamps and label."""

    images: tuple[int, ...]
    stamps_ns: tuple[int, ...] | None
    label: str | None


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request, ready for the engine once its images are decoded."""

    model: str | None
    question: str
    images: tuple[ImagePart, ...]
    items: tuple[ItemSpec, ...]
    mode: str
    max_frames: int
    max_new_tokens: int
    stream: bool
    include_usage: bool


# ----------------------------------------------------------------------------------------- parsing
def parse_json_body(body: bytes) -> Any:
    """The JSON value of a request body, or RequestError (400)."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise RequestError(f"the request body is not valid JSON: {err}") from None


def parse_chat_request(payload: Any, limits: RequestLimits) -> ChatRequest:
    """Validate a decoded ``/v1/chat/completions`` body. Images are sized from their headers (the
    count and pixel limits apply before any pixel is decoded); raises :class:`RequestError`."""
    if not isinstance(payload, Mapping):
        raise RequestError(f"the request body must be a JSON object, got {_json_type(payload)}")
    refused = [name for name in REFUSED_FIELDS if payload.get(name) not in (None, False, [])]
    if refused:
        raise RequestError(f"{refused} not supported: the server answers with greedy decoding and plain text",
                           param=refused[0])
    model = payload.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model must be a string, got {_json_type(model)}", param="model")
    if payload.get("n", 1) != 1:
        raise RequestError("n must be 1: one answer per request", param="n")
    question, urls = _user_message(payload.get("messages"))
    if len(urls) > limits.max_images:
        raise RequestError(f"{len(urls)} images exceed the server's limit of {limits.max_images} per request",
                           param="messages", code="too_many_images")
    images = tuple(_image_part(url, index, limits.max_image_pixels) for index, url in enumerate(urls))
    mode, max_frames, items = _oryx_options(payload.get("oryx"), len(images))
    max_new = _max_tokens(payload, limits)
    stream = payload.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(f"stream must be true or false, got {_json_type(stream)}", param="stream")
    options = payload.get("stream_options") or {}
    if not isinstance(options, Mapping):
        raise RequestError("stream_options must be an object", param="stream_options")
    return ChatRequest(model=model, question=question, images=images, items=items, mode=mode,
                       max_frames=max_frames, max_new_tokens=max_new, stream=bool(stream),
                       include_usage=options.get("include_usage") is True)


def _user_message(messages: Any) -> tuple[str, list[str]]:
    """(question text, image URLs in order) of the one user message."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list", param="messages")
    if len(messages) != 1:
        raise RequestError(
            f"got {len(messages)} messages; send exactly one user message (conversations and system prompts "
            "are not supported: the server uses Oryx's own system prompt)", param="messages")
    message = messages[0]
    if not isinstance(message, Mapping) or message.get("role") != "user":
        raise RequestError("the message must be an object with role 'user'", param="messages[0].role")
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError("messages[0].content must be a string or a list of parts", param="messages[0].content")
    texts: list[str] = []
    urls: list[str] = []
    for index, part in enumerate(content):
        where = f"messages[0].content[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
            if not isinstance(url, str):
                raise RequestError(f"{where}.image_url must be an object with a string url", param=where)
            urls.append(url)
        else:
            raise RequestError(f"{where} must be {{'type': 'text', 'text': str}} or "
                               "{'type': 'image_url', 'image_url': {'url': 'data:image/png;base64,...'}}", param=where)
    question = "\n".join(texts)
    if IMAGE_TOKEN in question:
        raise RequestError(f"the text must not contain {IMAGE_TOKEN}; send images as image_url parts",
                           param="messages[0].content")
    return question, urls


def _image_part(url: str, index: int, max_pixels: int) -> ImagePart:
    """Base64-decode a data URL and read its header; refuse anything but a sized PNG or JPEG."""
    param = f"image {index}"
    match = _DATA_URL.match(url)
    if match is None:
        shown = url[:60] + ("..." if len(url) > 60 else "")
        raise RequestError(
            f"image {index}: only data:image/png;base64 or data:image/jpeg;base64 URLs are accepted (the server "
            f"never fetches URLs or opens files), got {shown!r}", param=param, code="unsupported_image_url")
    media_type = match.group(1).lower()
    declared = IMAGE_MEDIA_TYPES.get(media_type)
    if declared is None:
        raise RequestError(f"image {index}: media type {media_type!r} is not accepted; use image/png or image/jpeg",
                           param=param, code="unsupported_image_format")
    try:
        data = base64.b64decode(url[match.end():], validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"image {index}: the data URL is not valid base64 ({err})", param=param) from None
    try:
        header = read_image_header(data)
    except ImageHeaderError as err:
        raise RequestError(f"image {index}: {err}", param=param, code="invalid_image") from None
    if header.format != declared:
        raise RequestError(f"image {index}: declared {media_type} but the data is {header.format}", param=param,
                           code="invalid_image")
    if header.pixels > max_pixels:
        raise RequestError(f"image {index}: {header.width}x{header.height} px exceeds the server's limit of "
                           f"{max_pixels} px per image", param=param, code="image_too_large")
    if len(data) < header.min_data_bytes:
        raise RequestError(f"image {index}: a {header.width}x{header.height} {header.format} cannot be "
                           f"{len(data)} bytes (truncated)", param=param, code="invalid_image")
    return ImagePart(data=data, format=header.format, width=header.width, height=header.height)


def _oryx_options(options: Any, n_images: int) -> tuple[str, int, tuple[ItemSpec, ...]]:
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise RequestError(f"oryx must be an object, got {_json_type(options)}", param="oryx")
    unknown = sorted(str(key) for key in set(options) - ORYX_FIELDS)
    if unknown:
        raise RequestError(f"unknown oryx field(s) {unknown}; expected {sorted(ORYX_FIELDS)}", param="oryx")
    mode = options.get("mode", "auto")
    if mode not in ANSWER_MODES:
        raise RequestError(f"oryx.mode must be one of {list(ANSWER_MODES)}, got {mode!r}", param="oryx.mode")
    max_frames = options.get("max_frames", 0)
    if not _is_int(max_frames) or not 0 <= max_frames <= 100_000:
        raise RequestError(f"oryx.max_frames must be an integer in 0..100000, got {max_frames!r}",
                           param="oryx.max_frames")
    raw_items = options.get("items")
    if raw_items is None:
        items: tuple[ItemSpec, ...] = (ItemSpec(tuple(range(n_images)), None, None),) if n_images else ()
        return mode, max_frames, items
    if not isinstance(raw_items, list):
        raise RequestError("oryx.items must be a list", param="oryx.items")
    items = tuple(_item(raw, index, n_images) for index, raw in enumerate(raw_items))
    used = sorted(i for item in items for i in item.images)
    if used != list(range(n_images)):
        raise RequestError(f"oryx.items must use every one of the {n_images} images exactly once, they use "
                           f"{used[:20]}{'...' if len(used) > 20 else ''}", param="oryx.items")
    return mode, max_frames, items


def _item(raw: Any, index: int, n_images: int) -> ItemSpec:
    where = f"oryx.items[{index}]"
    if not isinstance(raw, Mapping):
        raise RequestError(f"{where} must be an object", param=where)
    unknown = sorted(str(key) for key in set(raw) - ITEM_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown} in {where}; expected {sorted(ITEM_FIELDS)}", param=where)
    images = raw.get("images")
    if not isinstance(images, list) or not images or not all(_is_int(i) and 0 <= i < n_images for i in images):
        raise RequestError(f"{where}.images must be a non-empty list of image indices in 0..{n_images - 1}",
                           param=f"{where}.images")
    stamps = raw.get("stamps_ns")
    if stamps is not None:
        if not isinstance(stamps, list) or len(stamps) != len(images) or not all(_is_int(s) for s in stamps):
            raise RequestError(f"{where}.stamps_ns must be a list of {len(images)} integers (ns)",
                               param=f"{where}.stamps_ns")
        if any(b < a for a, b in itertools.pairwise(stamps)):
            raise RequestError(f"{where}.stamps_ns must be non-decreasing (frames oldest first)",
                               param=f"{where}.stamps_ns")
    label = raw.get("label")
    if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL_CHARS or IMAGE_TOKEN in label):
        raise RequestError(f"{where}.label must be a string of at most {MAX_LABEL_CHARS} characters without "
                           f"{IMAGE_TOKEN}", param=f"{where}.label")
    return ItemSpec(tuple(images), tuple(stamps) if stamps is not None else None, label)


def _max_tokens(payload: Mapping[str, Any], limits: RequestLimits) -> int:
    value = payload.get("max_completion_tokens", payload.get("max_tokens"))
    if value is None:
        return limits.default_max_new_tokens
    if not _is_int(value) or not 1 <= value <= limits.max_new_tokens:
        raise RequestError(f"max_tokens must be an integer in 1..{limits.max_new_tokens}, got {value!r}",
                           param="max_tokens")
    return int(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def parse_count_request(payload: Any) -> tuple[str, list[str | None]]:
    """``{"question": str, "labels": [str | null, ...]}`` of ``POST /v1/oryx/count_tokens``."""
    if not isinstance(payload, Mapping):
        raise RequestError("the body must be an object {'question': str, 'labels': [str | null, ...]}")
    question, labels = payload.get("question", ""), payload.get("labels", [])
    if not isinstance(question, str) or IMAGE_TOKEN in question:
        raise RequestError(f"question must be a string without {IMAGE_TOKEN}", param="question")
    if not isinstance(labels, list) or len(labels) > 10_000 or not all(
            label is None or (isinstance(label, str) and len(label) <= MAX_LABEL_CHARS and IMAGE_TOKEN not in label)
            for label in labels):
        raise RequestError(f"labels must be a list of strings (at most {MAX_LABEL_CHARS} characters) or nulls",
                           param="labels")
    return question, list(labels)


# ----------------------------------------------------------------------------------------- images
def decode_image(part: ImagePart) -> npt.NDArray[np.uint8]:
    """RGB uint8 ``(H, W, 3)`` pixels of a header-checked PNG/JPEG (grey and alpha become RGB)."""
    buffer = np.frombuffer(part.data, dtype=np.uint8)
    bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # 8-bit, 3 channels whatever the file holds
    if bgr is None or bgr.shape[:2] != (part.height, part.width):
        raise RequestError(f"a {part.width}x{part.height} {part.format} image could not be decoded (corrupt data)",
                           code="invalid_image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def frame_content_key(pixels: npt.NDArray[np.uint8]) -> str:
    """The token cache's key of a frame: blake2b of its shape and pixels, so equal content = one encoding."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ----------------------------------------------------------------------------------------- responses
def error_body(message: str, *, error_type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object, which its clients turn into ``BadRequestError`` and friends."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_body(request_id: str, created: int, model: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A non-streaming ``chat.completion``; ``summary`` is :func:`answer_summary`'s."""
    return {
        "id": request_id, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": summary["text"]},
                     "finish_reason": FINISH_REASONS[summary["stop_reason"]], "logprobs": None}],
        "usage": usage_body(summary["prompt_tokens"], summary["new_tokens"]),
        "oryx": {key: value for key, value in summary.items() if key != "text"},
    }


def chunk_body(request_id: str, created: int, model: str, delta: Mapping[str, Any], *,
               finish_reason: str | None = None, extension: Mapping[str, Any] | None = None,
               usage: Mapping[str, int] | None = None, with_choice: bool = True) -> dict[str, Any]:
    """One ``chat.completion.chunk``; ``extension`` goes under ``oryx`` (token count, final summary)."""
    body: dict[str, Any] = {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": []}
    if with_choice:
        body["choices"] = [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}]
    if extension is not None:
        body["oryx"] = dict(extension)
    if usage is not None:
        body["usage"] = dict(usage)
    return body


def sse_event(body: Mapping[str, Any] | str) -> bytes:
    """A server-sent event line pair; ``"[DONE]"`` ends OpenAI's stream."""
    data = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


def answer_summary(answer: Any) -> dict[str, Any]:
    """The JSON-friendly fields of an :class:`~oryx_ros.model.engine.Answer` (the ``oryx`` extension)."""
    return {
        "text": answer.text,
        "stop_reason": answer.stop_reason,
        "new_tokens": answer.new_tokens,
        "prompt_tokens": answer.prompt_tokens,
        "visual_tokens": answer.visual_tokens,
        "frames_offered": answer.frames_offered,
        "frames_used": answer.frames_used,
        "frames_encoded": answer.frames_encoded,
        "frames_from_cache": answer.frames_from_cache,
        "compression": answer.compression,
        "mode_used": answer.mode_used,
        "token_ids": list(answer.token_ids),
        "timings": dict(answer.timings),
        "plan": answer.plan.as_dict() if answer.plan is not None else None,
    }


def models_body(model: str, created: int, limits: Mapping[str, Any]) -> dict[str, Any]:
    """``GET /v1/models``: one model, with under ``oryx`` what a client needs to plan frames itself."""
    return {"object": "list",
            "data": [{"id": model, "object": "model", "created": created, "owned_by": "oryx_ros",
                      "oryx": dict(limits)}]}


def check_bearer(authorization: str | None, expected: str | None) -> None:
    """RequestError 401 unless ``authorization`` is ``Bearer <expected>`` (no check when ``expected`` is None)."""
    if expected is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise RequestError("missing or wrong API key: send 'Authorization: Bearer <key>'", status=401,
                           code="invalid_api_key", error_type="authentication_error")
