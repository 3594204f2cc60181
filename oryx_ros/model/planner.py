"""Token budget planner: which frames go to the model, at which compression, so the prompt always fits.

The original Oryx code truncates the multimodal sequence to ``tokenizer_model_max_length`` silently, cutting
the end of the prompt (the question and the assistant header) for long videos (spec §7.6, §12.8). This module
decides *before* any pixels are processed how many frames of each visual item (one camera, say) to keep,
which ones (spread evenly over the time window, first and last included) and at which compression:

======  ==============  ============================================================================
tag     compression     token count (spec §2.5; computed by ``preprocessing``'s functions)
======  ==============  ============================================================================
image   1x              ``3 + lgh·(lgw+1) + gh·(gw+1)`` per item (lowres + highres views)
video   4x              ``2 + Σ_t (ph·(pw+1) + 1)`` per item, ``(ph, pw)`` = frame grid / 2
video_long 16x          same with ``(ph, pw)`` = grid / 4 on the patch-128 resize
======  ==============  ============================================================================

Budget: ``text_tokens + visual_tokens + max_new_tokens <= context_limit``. The new tokens are counted so
that the whole generation stays inside the context the model was trained with, not only the prompt.

Modes (``mode=``):

* ``auto``: no visuals → text only. Every item a single frame → all as 1x images if they fit, else each
  as a one-frame 4x video, else 16x. Otherwise every item is a 4x video; when 4x would keep fewer than
  ``min(wanted, policy.min_frames_at_4x)`` frames per item ("too many dropped") it switches to 16x.
* ``image``: one 1x image per item (its latest frame); error if they do not fit.
* ``video`` / ``video_long``: every item a 4x / 16x video with as many frames as fit.
* ``multiview``: every item is one view (its latest frame): all views as 1x images if they fit, else one
  video item whose frames are the views at 4x, else at 16x; error if not every view fits.

``max_frames`` caps the frames per item (0 = automatic: ``policy.auto_max_frames_4x`` at 4x, the
training/eval ``frames_upbound`` of 64, and ``policy.auto_max_frames_16x`` at 16x, the long-video training
range). Nothing is dropped silently: every dropped frame is counted in :attr:`TokenPlan.dropped` with its reason.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

PlanMode = Literal["auto", "image", "video", "video_long", "multiview"]
Modality = Literal["image", "video", "video_long"]

PLAN_MODES: Final = ("auto", "image", "video", "video_long", "multiview")
COMPRESSION_OF: Final[dict[str, str]] = {"image": "1x", "video": "4x", "video_long": "16x", "text": "none"}

# Reasons a frame on offer does not reach the model (keys of TokenPlan.dropped entries).
DROP_MAX_FRAMES: Final = "max_frames"  # above the per-item frame cap (explicit or automatic)
DROP_BUDGET: Final = "context_budget"  # the context limit leaves no room for it
DROP_ONE_PER_ITEM: Final = "one_frame_per_item"  # image / multiview modes use only the latest frame of an item


class PlanError(ValueError):
    """The request cannot fit the context limit, even with one frame per item at 16x."""


class TokenCounter(Protocol):
    """Exact visual-token counts for a frame of a given pixel size (W, H) before preprocessing."""

    def image_tokens(self, width: int, height: int) -> int:
        """Tokens of one 1x image item (begin + lowres rows + sep + highres rows + end)."""

    def video_frame_tokens(self, width: int, height: int, modality: str) -> int:
        """Tokens one frame adds to a ``video``/``video_long`` block (its rows, newlines and image_sep)."""

    def video_overhead_tokens(self) -> int:
        """Tokens of a video block besides its frames (image_begin + image_end)."""


@dataclass(frozen=True)
class ItemOffer:
    """The frames on offer for one visual item (e.g. one camera), oldest first.

    ``sizes`` are the frames' pixel sizes ``(width, height)`` before any resize; ``stamps_ns`` (optional,
    non-decreasing int ns) place them in time so the chosen subset is spread over the window by time,
    not by index. ``label`` is carried into the plan (e.g. the camera name written in the prompt).
    """

    sizes: Sequence[tuple[int, int]]
    stamps_ns: Sequence[int] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if len(self.sizes) == 0:
            raise ValueError("a visual item needs at least one frame (leave out items with no frames)")
        for w, h in self.sizes:
            if int(w) <= 0 or int(h) <= 0:
                raise ValueError(f"frame size must be positive, got {w}x{h}")
        if self.stamps_ns is not None:
            if len(self.stamps_ns) != len(self.sizes):
                raise ValueError(f"{len(self.stamps_ns)} stamps for {len(self.sizes)} frames")
            if any(b < a for a, b in zip(self.stamps_ns, self.stamps_ns[1:], strict=False)):
                raise ValueError("stamps_ns must be non-decreasing (frames oldest first)")

    @property
    def n_frames(self) -> int:
        return len(self.sizes)


@dataclass(frozen=True)
class PlanPolicy:
    """The tunable parts of the planner; defaults follow the official training/eval settings (spec §1)."""

    # "Too many frames dropped" at 4x: 4x is kept only while it keeps at least min(wanted, this) frames per
    # item; 16 frames still show a clip's course, below that the temporal coverage of 16x is worth more
    # than the spatial detail of 4x.
    min_frames_at_4x: int = 16
    auto_max_frames_4x: int = 64  # frames_upbound / max_frames_num of the official video eval
    auto_max_frames_16x: int = 256  # video_long training used 3-4x frames_upbound = 192-256 frames

    def __post_init__(self) -> None:
        if self.min_frames_at_4x < 1 or self.auto_max_frames_4x < 1 or self.auto_max_frames_16x < 1:
            raise ValueError(f"policy values must be >= 1: {self}")


@dataclass(frozen=True)
class PlannedItem:
    """One visual item as it goes to the model: one ``<image>`` placeholder, one modality tag.

    ``frames`` are ``(offer item index, frame index)`` pairs in prompt order; a merged multiview video
    holds one frame of each offered item.
    """

    modality: Modality
    frames: tuple[tuple[int, int], ...]
    visual_tokens: int
    label: str | None = None


@dataclass(frozen=True)
class Drop:
    """``count`` frames of offered item ``item`` left out, and why (one of the ``DROP_*`` reasons)."""

    item: int
    count: int
    reason: str


@dataclass(frozen=True)
class TokenPlan:
    """The planner's report: what goes in, what was left out, and the resulting token counts."""

    mode_requested: str
    mode_used: str  # 'text' | 'image' | 'video' | 'video_long' (the modality tag of every item)
    compression: str  # 'none' | '1x' | '4x' | '16x'
    views_merged: bool  # multiview fell back to one video whose frames are the views
    items: tuple[PlannedItem, ...]
    frames_offered: int
    frames_used: int
    dropped: tuple[Drop, ...]
    visual_tokens: int
    text_tokens: int
    max_new_tokens: int
    context_limit: int
    notes: tuple[str, ...] = field(default=())

    @property
    def frames_dropped(self) -> int:
        return self.frames_offered - self.frames_used

    @property
    def prompt_tokens(self) -> int:
        return self.text_tokens + self.visual_tokens

    @property
    def headroom_tokens(self) -> int:
        """Context left unused after the prompt and the largest possible answer (never negative)."""
        return self.context_limit - self.prompt_tokens - self.max_new_tokens

    def used_frames(self, item: int) -> list[int]:
        """Frame indices of offered item ``item`` that reach the model, in prompt order."""
        return [f for planned in self.items for (i, f) in planned.frames if i == item]

    def drops_by_reason(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for drop in self.dropped:
            totals[drop.reason] = totals.get(drop.reason, 0) + drop.count
        return totals

    def as_dict(self) -> dict[str, object]:
        """A flat, JSON-friendly summary (for logs, ROS diagnostics and the CLI)."""
        return {
            "mode_requested": self.mode_requested,
            "mode_used": self.mode_used,
            "compression": self.compression,
            "views_merged": self.views_merged,
            "frames_offered": self.frames_offered,
            "frames_used": self.frames_used,
            "frames_dropped": self.frames_dropped,
            "dropped_by_reason": self.drops_by_reason(),
            "visual_tokens": self.visual_tokens,
            "text_tokens": self.text_tokens,
            "prompt_tokens": self.prompt_tokens,
            "max_new_tokens": self.max_new_tokens,
            "context_limit": self.context_limit,
            "frames_per_item": [len(p.frames) for p in self.items],
            "notes": list(self.notes),
        }


def spread_indices(n: int, k: int, stamps_ns: Sequence[int] | None = None) -> list[int]:
    """``k`` distinct indices out of ``n`` frames, spread evenly over the time window, ascending.

    The first and the last frame are always included for ``k >= 2``; ``k == 1`` takes the latest frame
    (the most recent view is the one a robot asks about). With ``stamps_ns`` the targets are evenly spaced
    in time and each takes the nearest still-free frame, so bursts and gaps in the stream do not skew
    the coverage; without stamps (or with one stamp for all) the spacing is by index.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        return list(range(n))
    if k == 1:
        return [n - 1]
    times: Sequence[float] | Sequence[int] = stamps_ns if stamps_ns is not None else range(n)
    if times[-1] == times[0]:
        times = range(n)
    t0, t1 = times[0], times[-1]
    chosen = [0]
    for j in range(1, k - 1):
        target = t0 + (t1 - t0) * j / (k - 1)
        lo = chosen[-1] + 1
        hi = n - (k - j)  # leave one frame for each remaining target
        pos = bisect.bisect_left(times, target, lo, hi + 1)
        candidates = [i for i in (pos - 1, pos) if lo <= i <= hi]
        if not candidates:
            candidates = [min(max(pos, lo), hi)]
        chosen.append(min(candidates, key=lambda i: (abs(times[i] - target), i)))
    chosen.append(n - 1)  # endpoints are fixed, so runs of equal stamps cannot push them inwards
    return chosen


class _MemoCounter:
    """Memoises a counter's per-size answers: plans evaluate the same few frame sizes many times."""

    def __init__(self, counter: TokenCounter) -> None:
        self.image_tokens = functools.lru_cache(maxsize=256)(counter.image_tokens)
        self.video_frame_tokens = functools.lru_cache(maxsize=256)(counter.video_frame_tokens)
        self.video_overhead = int(counter.video_overhead_tokens())


def plan_visual_tokens(
    items: Sequence[ItemOffer],
    *,
    context_limit: int,
    text_tokens: int,
    max_new_tokens: int,
    mode: str = "auto",
    max_frames: int = 0,
    merged_text_tokens: int | None = None,
    policy: PlanPolicy | None = None,
    counter: TokenCounter | None = None,
) -> TokenPlan:
    """Choose frames and compression so ``text + visual + max_new_tokens <= context_limit``.

    ``text_tokens`` counts every prompt token that is not visual (template, labels, question) for the
    items laid out one ``<image>`` each; ``merged_text_tokens`` is the same for the multiview fallback
    with all views in one ``<image>`` (defaults to ``text_tokens``). ``counter`` gives exact visual-token
    counts (default: the model core's formulas). Raises :class:`PlanError` when nothing fits and
    ``ValueError`` for malformed arguments.
    """
    if mode not in PLAN_MODES:
        raise ValueError(f"mode must be one of {PLAN_MODES}, got {mode!r}")
    if context_limit <= 0 or text_tokens < 0 or max_new_tokens < 0 or max_frames < 0:
        raise ValueError(
            f"need context_limit > 0, text_tokens >= 0, max_new_tokens >= 0, max_frames >= 0; got "
            f"{context_limit}, {text_tokens}, {max_new_tokens}, {max_frames}"
        )
    planner = _Planner(
        items=list(items),
        context_limit=context_limit,
        text_tokens=text_tokens,
        merged_text_tokens=text_tokens if merged_text_tokens is None else merged_text_tokens,
        max_new_tokens=max_new_tokens,
        mode=mode,
        max_frames=max_frames,
        policy=policy or PlanPolicy(),
        counter=_MemoCounter(counter or default_token_counter()),
    )
    return planner.plan()


@dataclass
class _Planner:
    items: list[ItemOffer]
    context_limit: int
    text_tokens: int
    merged_text_tokens: int
    max_new_tokens: int
    mode: str
    max_frames: int
    policy: PlanPolicy
    counter: _MemoCounter
    notes: list[str] = field(default_factory=list)

    # ---- entry ------------------------------------------------------------------------------------
    def plan(self) -> TokenPlan:
        if self.text_tokens + self.max_new_tokens > self.context_limit:
            raise PlanError(
                f"the text alone does not fit: {self.text_tokens} prompt tokens + {self.max_new_tokens} new "
                f"tokens > context limit {self.context_limit}; shorten the question or lower max_new_tokens"
            )
        if not self.items:
            return self._result("text", (), ())
        if self.mode == "image":
            plan = self._images_or_none(required=True)
            assert plan is not None  # required=True raises instead of returning None
            return plan
        if self.mode == "multiview":
            return self._multiview()
        if self.mode in ("video", "video_long"):
            plan = self._videos(self.mode)
            if plan is None:
                raise self._nothing_fits(self.mode)
            return plan
        return self._auto()

    def _auto(self) -> TokenPlan:
        if all(item.n_frames == 1 for item in self.items):
            plan = self._images_or_none(required=False)
            if plan is not None:
                return plan
        plan_4x = self._videos("video")
        if plan_4x is not None:
            wanted = max(min(item.n_frames, self._cap("video")) for item in self.items)
            kept = max(len(p.frames) for p in plan_4x.items)
            if kept >= min(wanted, self.policy.min_frames_at_4x):
                return plan_4x
            self.notes.append(
                f"4x keeps only {kept} of {wanted} wanted frames per item (< {self.policy.min_frames_at_4x}): "
                "using 16x video_long"
            )
        else:
            self.notes.append("one frame per item does not fit at 4x: using 16x video_long")
        plan_16x = self._videos("video_long")
        if plan_16x is None:
            raise self._nothing_fits("video_long")
        return plan_16x

    # ---- images -------------------------------------------------------------------------------------
    def _images_or_none(self, *, required: bool) -> TokenPlan | None:
        """One 1x image per item (its latest frame), or None/PlanError when they do not fit."""
        planned, dropped = [], []
        for i, item in enumerate(self.items):
            latest = item.n_frames - 1
            planned.append(PlannedItem("image", ((i, latest),), self._image_cost(i, latest), item.label))
            if item.n_frames > 1:
                dropped.append(Drop(i, item.n_frames - 1, DROP_ONE_PER_ITEM))
        visual = sum(p.visual_tokens for p in planned)
        if self._fits(self.text_tokens, visual):
            return self._result("image", tuple(planned), tuple(dropped))
        message = (
            f"{len(planned)} image(s) at 1x need {visual} visual tokens; with {self.text_tokens} text and "
            f"{self.max_new_tokens} new tokens that exceeds the context limit {self.context_limit}"
        )
        if required:
            raise PlanError(message + "; use mode 'auto' or 'video' to compress")
        self.notes.append(message)
        return None

    def _image_cost(self, item: int, frame: int) -> int:
        w, h = self.items[item].sizes[frame]
        return int(self.counter.image_tokens(int(w), int(h)))

    # ---- videos -------------------------------------------------------------------------------------
    def _cap(self, modality: str) -> int:
        if self.max_frames > 0:
            return self.max_frames
        return self.policy.auto_max_frames_4x if modality == "video" else self.policy.auto_max_frames_16x

    def _video_cost(self, modality: str, frames: Sequence[tuple[int, int]]) -> int:
        per_frame = 0
        for i, f in frames:
            w, h = self.items[i].sizes[f]
            per_frame += int(self.counter.video_frame_tokens(int(w), int(h), modality))
        return self.counter.video_overhead + per_frame

    def _video_items(self, modality: Modality, k: int) -> list[PlannedItem]:
        """Every item as a video of min(wanted, k) frames spread over its window."""
        cap = self._cap(modality)
        planned = []
        for i, item in enumerate(self.items):
            n_take = min(item.n_frames, cap, k)
            chosen = spread_indices(item.n_frames, n_take, item.stamps_ns)
            frames = tuple((i, f) for f in chosen)
            planned.append(PlannedItem(modality, frames, self._video_cost(modality, frames), item.label))
        return planned

    def _videos(self, modality: Modality) -> TokenPlan | None:
        """Every item a video with the most frames per item that fit, or None if one each does not fit."""
        k_max = max(min(item.n_frames, self._cap(modality)) for item in self.items)

        def fits(k: int) -> list[PlannedItem] | None:
            planned = self._video_items(modality, k)
            return planned if self._fits(self.text_tokens, sum(p.visual_tokens for p in planned)) else None

        best = fits(1)
        if best is None:
            return None
        # Cost grows with k (more frames of similar size); binary search, and only fitting plans are kept.
        lo, hi = 1, k_max
        while lo < hi:
            mid = (lo + hi + 1) // 2
            candidate = fits(mid)
            if candidate is None:
                hi = mid - 1
            else:
                lo, best = mid, candidate
        cap = self._cap(modality)
        dropped = []
        for i, (item, planned) in enumerate(zip(self.items, best, strict=True)):
            over_cap = item.n_frames - min(item.n_frames, cap)
            if over_cap:
                dropped.append(Drop(i, over_cap, DROP_MAX_FRAMES))
            over_budget = min(item.n_frames, cap) - len(planned.frames)
            if over_budget:
                dropped.append(Drop(i, over_budget, DROP_BUDGET))
        return self._result(modality, tuple(best), tuple(dropped))

    # ---- multiview ----------------------------------------------------------------------------------
    def _multiview(self) -> TokenPlan:
        images = self._images_or_none(required=False)
        if images is not None:
            return images
        views = tuple((i, item.n_frames - 1) for i, item in enumerate(self.items))
        dropped = tuple(
            Drop(i, item.n_frames - 1, DROP_ONE_PER_ITEM) for i, item in enumerate(self.items) if item.n_frames > 1
        )
        labels = [item.label for item in self.items if item.label]
        label = ", ".join(labels) if labels else None
        for modality in ("video", "video_long"):
            visual = self._video_cost(modality, views)
            if self._fits(self.merged_text_tokens, visual):
                self.notes.append(f"the {len(views)} views go in as one {modality} item (1x does not fit)")
                merged = PlannedItem(modality, views, visual, label)  # type: ignore[arg-type]
                return self._result(modality, (merged,), dropped, views_merged=True)
        raise PlanError(
            f"{len(views)} views do not fit even as one 16x video ({self._video_cost('video_long', views)} "
            f"visual + {self.merged_text_tokens} text + {self.max_new_tokens} new tokens > context limit "
            f"{self.context_limit}); use fewer views or a longer context"
        )

    # ---- helpers ------------------------------------------------------------------------------------
    def _fits(self, text_tokens: int, visual_tokens: int) -> bool:
        return text_tokens + visual_tokens + self.max_new_tokens <= self.context_limit

    def _nothing_fits(self, modality: str) -> PlanError:
        one_each = sum(
            self._video_cost(modality, [(i, item.n_frames - 1)]) for i, item in enumerate(self.items)
        )
        return PlanError(
            f"even one frame per item at {COMPRESSION_OF[modality]} ({len(self.items)} item(s), {one_each} "
            f"visual tokens) plus {self.text_tokens} text and {self.max_new_tokens} new tokens exceeds the "
            f"context limit {self.context_limit}; use fewer cameras, lower max_new_tokens or a longer context"
        )

    def _result(
        self,
        modality: str,
        planned: tuple[PlannedItem, ...],
        dropped: tuple[Drop, ...],
        *,
        views_merged: bool = False,
    ) -> TokenPlan:
        text = self.merged_text_tokens if views_merged else self.text_tokens
        plan = TokenPlan(
            mode_requested=self.mode,
            mode_used=modality,
            compression=COMPRESSION_OF[modality],
            views_merged=views_merged,
            items=planned,
            frames_offered=sum(item.n_frames for item in self.items),
            frames_used=sum(len(p.frames) for p in planned),
            dropped=dropped,
            visual_tokens=sum(p.visual_tokens for p in planned),
            text_tokens=text,
            max_new_tokens=self.max_new_tokens,
            context_limit=self.context_limit,
            notes=tuple(self.notes),
        )
        # The invariants every caller relies on; a violation is a planner bug, not bad input.
        assert plan.prompt_tokens + plan.max_new_tokens <= plan.context_limit, plan
        assert plan.frames_used + sum(d.count for d in dropped) == plan.frames_offered, plan
        return plan


def default_token_counter(patch_size: int = 16) -> TokenCounter:
    """The model core's exact token formulas (``oryx_ros.model.preprocessing``) for a ViT patch size."""
    return CoreTokenCounter(patch_size)


class CoreTokenCounter:
    """:class:`TokenCounter` backed by ``oryx_ros.model.preprocessing`` (canonical resize settings)."""

    def __init__(self, patch_size: int = 16) -> None:
        self.patch_size = int(patch_size)

    def image_tokens(self, width: int, height: int) -> int:
        from oryx_ros.model.preprocessing import image_token_count

        return image_token_count(width, height, patch_size=self.patch_size)

    def video_frame_tokens(self, width: int, height: int, modality: str) -> int:
        from oryx_ros.model.preprocessing import video_frame_token_count

        return video_frame_token_count(width, height, modality, patch_size=self.patch_size)  # type: ignore[arg-type]

    def video_overhead_tokens(self) -> int:
        from oryx_ros.model.preprocessing import video_token_count

        # 2 today (image_begin + image_end); derived so it follows the core's formula.
        return video_token_count(64, 64, 1, patch_size=self.patch_size) - self.video_frame_tokens(64, 64, "video")
