"""Validation of Ask requests (service and action goal) at the node's boundary, and the request's frame cap.

Everything a client sends is checked here before any work is queued, so a bad request gets one clear
error that starts with the field's name, and nothing malformed reaches the model:

* ``question``: stripped; not empty; at most ``max_question_chars`` characters (``ask.max_question_chars``).
  Prompt-control text is ESCAPED, not stripped, so the question keeps its meaning but cannot inject visual
  tokens or chat turns: the model's image placeholder ``<image>`` becomes ``[image]`` (each ``<image>``
  would otherwise be spliced as a whole visual block), and ChatML markers such as ``<|im_end|>`` become
  ``<\\|im_end\\|>`` (the tokenizer would otherwise read them as turn boundaries).
* ``cameras``: names this node has (unknown ones are named in the error), deduplicated keeping the
  first occurrence (``[a, a]`` is ``[a]``); empty = all cameras.
* ``window_s``: finite, >= 0, at most the buffer's window (``buffer.window_s``); 0 = ``ask.default_window_s``.
* ``max_new_tokens``: 0 = ``ask.max_new_tokens``, else at most the upper limit of that parameter's range.
* ``max_frames``: 0 = automatic, else at most ``MAX_FRAMES`` and, once the frames are known, at least
  one per camera that has frames (see :func:`spread_frame_cap`).
* ``mode``: empty = ``ask.default_mode``, else one of the modes.
* ``viewpoint``: empty = ``spatial.viewpoint``, else one of this node's cameras or the base frame
  (``spatial.base_frame``); whose left/right/front/behind the scene graph's relations use.

The module needs no ROS: requests are read by attribute (``srv/Ask`` request or ``action/Ask`` goal).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

__all__ = [
    "MAX_FRAMES",
    "MAX_NEW_TOKENS",
    "MAX_QUESTION_CHARS",
    "MODES",
    "RequestError",
    "RequestLimits",
    "ValidRequest",
    "escape_prompt_text",
    "spread_frame_cap",
    "validate_request",
]

MODES: Final = ("auto", "image", "video", "video_long", "multiview")
# Upper limits shared with the parameter descriptors (oryx_ros/ros/parameters.py), so a request can never
# ask for more than the node's own parameters may be set to.
MAX_NEW_TOKENS: Final = 8192
MAX_FRAMES: Final = 4096
# Default question length limit, characters: a long paragraph, far below any context limit in tokens.
MAX_QUESTION_CHARS: Final = 4000
IMAGE_PLACEHOLDER: Final = "<image>"  # oryx_ros.model.prompting.DEFAULT_IMAGE_TOKEN (not imported: no torch here)
IMAGE_PLACEHOLDER_ESCAPED: Final = "[image]"
# ChatML control markers (<|im_start|>, <|im_end|>, <|endoftext|> ...) a tokenizer reads as special tokens.
_CONTROL_MARKER: Final = re.compile(r"<\|([^<>|]*)\|>")

T = TypeVar("T")


class RequestError(ValueError):
    """A request the node cannot serve; the message (which starts with ``field``) goes back as ``error``."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class RequestLimits:
    """The node's current defaults and limits a request is checked against (read per request)."""

    cameras: tuple[str, ...]
    buffer_window_s: float
    default_window_s: float
    default_mode: str = "auto"
    default_max_new_tokens: int = 128
    max_new_tokens: int = MAX_NEW_TOKENS
    max_frames: int = MAX_FRAMES
    max_question_chars: int = MAX_QUESTION_CHARS
    base_frame: str = "base_link"  # spatial.base_frame: the viewpoint that is not a camera
    default_viewpoint: str = ""  # spatial.viewpoint: "" = the base frame, else a camera name


@dataclass(frozen=True)
class ValidRequest:
    """A request after validation, with the node's defaults filled in."""

    question: str
    cameras: tuple[str, ...]  # never empty: the request's (deduplicated) or all of the node's
    window_s: float
    mode: str
    max_new_tokens: int
    max_frames: int  # 0 = automatic
    spatial: bool
    escaped: int = 0  # prompt-control sequences escaped in the question
    viewpoint: str = ""  # camera whose levelled view the relations use; "" = the base frame


def escape_prompt_text(text: str) -> tuple[str, int]:
    """``text`` with ``<image>`` and ChatML markers made plain text; and how many were escaped.

    One pass is enough: the replacements contain no ``<`` so they cannot form a new placeholder.
    """
    escaped = text.count(IMAGE_PLACEHOLDER)
    text = text.replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER_ESCAPED)
    text, markers = _CONTROL_MARKER.subn(lambda m: "<\\|" + m.group(1) + "\\|>", text)
    return text, escaped + markers


def validate_request(request: Any, limits: RequestLimits) -> ValidRequest:
    """The checked request with defaults applied; :class:`RequestError` naming the field otherwise."""
    question = _text(getattr(request, "question", ""), "question").strip()
    if not question:
        raise _error("question", "question is empty")
    if len(question) > limits.max_question_chars:
        raise _error("question", f"question is {len(question)} characters long; the limit is "
                                 f"{limits.max_question_chars} (ask.max_question_chars)")
    question, escaped = escape_prompt_text(question)

    given_mode = _text(getattr(request, "mode", ""), "mode")
    mode = given_mode.strip() or limits.default_mode
    if mode not in MODES:
        raise _error("mode", f"mode must be one of {MODES} (or empty), got {given_mode!r}")

    cameras = _cameras(getattr(request, "cameras", ()), limits.cameras)
    window_s = _window(getattr(request, "window_s", 0.0), limits)
    max_new_tokens = _count(getattr(request, "max_new_tokens", 0), "max_new_tokens", limits.max_new_tokens,
                            "the upper limit of ask.max_new_tokens") or limits.default_max_new_tokens
    max_frames = _count(getattr(request, "max_frames", 0), "max_frames", limits.max_frames, "the node's frame limit")
    spatial = getattr(request, "spatial", False)
    if not isinstance(spatial, bool):
        raise _error("spatial", f"spatial must be true or false, got {spatial!r}")
    viewpoint = _viewpoint(getattr(request, "viewpoint", ""), limits)
    return ValidRequest(question=question, cameras=cameras, window_s=window_s, mode=mode,
                        max_new_tokens=max_new_tokens, max_frames=max_frames, spatial=spatial, escaped=escaped,
                        viewpoint=viewpoint)


def spread_frame_cap(by_camera: Mapping[str, Sequence[T]], max_frames: int,
                     stamp_of: Callable[[T], int] = lambda frame: frame.stamp_ns, field: str = "max_frames",
                     ) -> dict[str, list[T]]:
    """At most ``max_frames`` frames in total, spread over the cameras, evenly over time per camera.

    ``by_camera``: each camera's frames in time order. ``max_frames`` 0 = no cap (all frames). Shares are
    as equal as the cameras' frame counts allow (a camera with few frames gives its unused share to the
    others); each camera keeps its newest frame and ``k`` frames nearest to ``k`` evenly spaced times over
    its span. A cap below the number of cameras with frames is a :class:`RequestError` (every camera asked
    for gets at least one frame, rather than some being dropped unnoticed).
    """
    frames = {name: list(items) for name, items in by_camera.items() if items}
    if max_frames <= 0 or sum(len(items) for items in frames.values()) <= max_frames:
        return frames
    if max_frames < len(frames):
        raise _error(field, f"{field} {max_frames} is fewer than the {len(frames)} cameras with frames in "
                            f"the window ({', '.join(frames)}): each needs at least one; ask fewer cameras "
                            f"or raise {field}")
    shares = _shares({name: len(items) for name, items in frames.items()}, max_frames)
    return {name: _evenly_in_time(items, shares[name], stamp_of) for name, items in frames.items()}


# --------------------------------------------------------------------------------------------- internals
def _error(field: str, message: str) -> RequestError:
    return RequestError(message, field=field)


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise _error(field, f"{field} must be a string, got {type(value).__name__}")
    return value


def _cameras(requested: Any, known: Sequence[str]) -> tuple[str, ...]:
    names = [_text(name, "cameras") for name in requested]
    unknown = [name for name in dict.fromkeys(names) if name not in known]
    if unknown:
        raise _error("cameras", f"cameras: unknown camera(s) {unknown}; this node has {list(known)}")
    return tuple(dict.fromkeys(names)) or tuple(known)


def _viewpoint(value: Any, limits: RequestLimits) -> str:
    """The camera whose view the relations use ("" = the base frame)."""
    given = _text(value, "viewpoint").strip()
    if not given:
        return limits.default_viewpoint
    if given == limits.base_frame:
        return ""
    if given not in limits.cameras:
        raise _error("viewpoint", f"viewpoint: unknown camera {given!r}; give one of {list(limits.cameras)} or the "
                                  f"base frame {limits.base_frame!r} (empty = spatial.viewpoint)")
    return given


def _window(value: Any, limits: RequestLimits) -> float:
    try:
        window_s = float(value)
    except (TypeError, ValueError):
        raise _error("window_s", f"window_s must be a number of seconds, got {value!r}") from None
    if not math.isfinite(window_s):
        raise _error("window_s", f"window_s must be finite, got {window_s}")
    if window_s < 0:
        raise _error("window_s", f"window_s must be >= 0 (0 = the node's default), got {window_s:g}")
    if window_s > limits.buffer_window_s:
        raise _error("window_s", f"window_s {window_s:g} s is longer than the buffer keeps "
                                 f"(buffer.window_s = {limits.buffer_window_s:g} s)")
    return window_s or limits.default_window_s


def _count(value: Any, field: str, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(field, f"{field} must be a whole number, got {value!r}")
    if value < 0:
        raise _error(field, f"{field} must be >= 0 (0 = the node's default), got {value}")
    if value > limit:
        raise _error(field, f"{field} {value} is above {what}: {limit}")
    return value


def _shares(counts: Mapping[str, int], total: int) -> dict[str, int]:
    """Water-filling: equal shares of ``total``, a camera never getting more than it has."""
    shares: dict[str, int] = {}
    left = total
    # Fewest frames first, so what a small camera cannot use goes to the larger ones; ties in given order.
    order = sorted(counts, key=lambda name: counts[name])
    for index, name in enumerate(order):
        shares[name] = min(counts[name], left // (len(order) - index))
        left -= shares[name]
    return shares


def _evenly_in_time(frames: Sequence[T], k: int, stamp_of: Callable[[T], int]) -> list[T]:
    """``k`` of ``frames`` (time order), nearest to ``k`` evenly spaced times, the newest included."""
    n = len(frames)
    if k >= n:
        return list(frames)
    if k == 1:
        return [frames[-1]]
    stamps = [stamp_of(frame) for frame in frames]
    first, span = stamps[0], stamps[-1] - stamps[0]
    chosen: list[int] = []
    for j in range(k):
        target = first + span * j / (k - 1)
        # Keep room for the picks still to come, and never pick an index twice.
        low = chosen[-1] + 1 if chosen else 0
        high = n - k + j
        i = bisect.bisect_left(stamps, target, low, high + 1)
        candidates = [c for c in (i - 1, i) if low <= c <= high]
        chosen.append(min(candidates, key=lambda c: (abs(stamps[c] - target), c)))
    return [frames[i] for i in chosen]
