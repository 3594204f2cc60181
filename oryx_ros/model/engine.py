"""The Oryx inference engine: question + camera frames → planned, cached, streamed answer.

One call of :meth:`OryxEngine.answer` runs:

1. **plan** (:mod:`.planner`): count the prompt's text tokens, then pick the compression and a frame
   subset per visual item so ``prompt + max_new_tokens`` never exceeds the context limit
   (``tokenizer_model_max_length``); nothing is truncated silently, the plan reports every dropped frame;
2. **preprocess** the chosen frames (spec §2) — only those the token cache does not hold;
3. **vision**: look every frame up in the per-frame :class:`~.token_cache.VisualTokenCache` first; the
   misses of the whole request go through the ViT, compressor and projector in ONE packed pass; video
   blocks are assembled from per-frame embeddings, which depend on the frame only;
4. **merge** the visual blocks into the prompt's ``-200`` placeholders → ``inputs_embeds``;
5. **generate** greedily (:mod:`.generation`), streaming text deltas to ``on_token``.

``cancel`` is checked before each frame's preprocessing, before the attention and the MLP of every ViT
block and LLM decoder layer (:mod:`.cancellation`) and between tokens; a cancelled vision pass caches nothing.

Prompt: the official ``qwen_1_5`` ChatML template. Unlabelled items are written as the official
multi-image form ``<image> <image>\\n{question}``; labelled items one per line as
``{label}: <image>`` (e.g. ``Camera front: <image>``) before the question. A multiview request that
falls back to one video writes the views' labels joined by ", " before its single ``<image>``.

:meth:`OryxEngine.encode_into_cache` runs steps 1-3 only, ahead of a question: it plans as :meth:`answer`
would and puts the planned frames' embeddings into the token cache in small cancellable batches (the ROS
node calls it while its inference worker is idle, so a later question finds its frames encoded).

Threading: :meth:`OryxEngine.answer` holds a lock for the whole request, so one engine serves one
request at a time; concurrent callers wait. The token cache is itself thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from .cancellation import (
    Cancel,
    RequestCancelledError,
    cancel_point_modules,
    cancel_points,
    is_cancelled,
    raise_if_cancelled,
)
from .generation import DEFAULT_MAX_NEW_TOKENS, GenerationSettings, generate
from .kv_cache import StaticDecoder
from .loading import LoadedOryx, load_oryx
from .modeling_oryx import ImageInput
from .planner import ItemOffer, PlanPolicy, TokenPlan, default_token_counter, plan_visual_tokens
from .preprocessing import preprocess_image, preprocess_video_frame
from .prompting import DEFAULT_IMAGE_TOKEN, DEFAULT_SYSTEM_PROMPT, PROMPT_LAYOUTS, build_prompt_ids, count_placeholders
from .resampling import ResizeBackend, check_backend
from .token_cache import CacheStats, VisualCacheKey, VisualTokenCache

logger = logging.getLogger(__name__)

ANSWER_MODES: Final = ("auto", "image", "video", "video_long", "multiview")
DEFAULT_CACHE_BYTES: Final = 1 << 30  # 1 GiB ≈ 700 Oryx-7B 4x frames in bf16 (205 × 3584 × 2 B each)
# Context used when a config has no tokenizer_model_max_length (the original builder's fallback).
FALLBACK_CONTEXT: Final = 2048
# Frames per packed ViT pass of encode_into_cache: small, so a cancel between passes loses little work.
DEFAULT_ENCODE_BATCH_FRAMES: Final = 8

OnTokenText = Callable[[str, int], None]  # (delta_text, tokens generated so far)


@dataclass
class VisualInput:
    """One visual item of a request (one camera, one video, or one view).

    ``frames``: RGB uint8 ``(H, W, 3)`` arrays, oldest first. ``keys``: one hashable identity per frame
    for the token cache (e.g. ``Frame.uid``; equal keys must mean equal pixels), None = do not cache.
    ``stamps_ns``: capture times (non-decreasing int ns), used to spread the chosen frames over time.
    ``label``: written before the item's ``<image>`` in the prompt, e.g. ``"Camera front"``.
    """

    frames: list[npt.NDArray[np.uint8]]
    keys: list[Hashable] | None = None
    stamps_ns: list[int] | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if len(self.frames) == 0:
            raise ValueError("a VisualInput needs at least one frame")
        for index, frame in enumerate(self.frames):
            if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                described = (f"{type(frame).__name__} {getattr(frame, 'dtype', '')} "
                             f"{getattr(frame, 'shape', '')}").strip()
                raise ValueError(f"frame {index} must be an RGB uint8 (H, W, 3) numpy array, got {described}")
        for name in ("keys", "stamps_ns"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.frames):
                raise ValueError(f"{len(values)} {name} for {len(self.frames)} frames")
        if self.label is not None and DEFAULT_IMAGE_TOKEN in self.label:
            raise ValueError(f"a label must not contain {DEFAULT_IMAGE_TOKEN}")

    def size_wh(self, index: int) -> tuple[int, int]:
        height, width = self.frames[index].shape[:2]
        return int(width), int(height)


@dataclass(frozen=True)
class EncodeReport:
    """What one :meth:`OryxEngine.encode_into_cache` call did, counted in frames (images)."""

    planned: int = 0  # frames the plan would use
    already_cached: int = 0  # planned frames (within the budget) found in the cache
    encoded: int = 0  # planned frames this call put into the cache
    over_budget: int = 0  # planned frames left out: their embeddings would not fit the byte budget
    cancelled: bool = False  # stopped by ``cancel`` before encoding every planned miss
    modality: str = ""  # 'image' | 'video' | 'video_long' (the plan's), '' when nothing was planned
    bytes_planned: int = 0  # bytes of the planned frames within the budget (cached before or now)


@dataclass
class Answer:
    """The result of one question. ``timings`` holds ``preprocess_s``, ``vision_s``, ``prefill_s``,
    ``decode_s`` and ``total_s`` (seconds; the device is synchronised before each clock read)."""

    text: str
    new_tokens: int
    prompt_tokens: int
    visual_tokens: int
    frames_offered: int
    frames_used: int
    compression: str  # 'none' | '1x' | '4x' | '16x'
    mode_used: str  # 'text' | 'image' | 'video' | 'video_long'
    stop_reason: str  # 'eos' | 'max_tokens' | 'cancelled'
    timings: dict[str, float]
    plan: TokenPlan | None
    token_ids: list[int] = field(default_factory=list)
    frames_encoded: int = 0  # frames (images) that went through the ViT in this request
    frames_from_cache: int = 0  # frames (images) whose embeddings came from the token cache


class _PlannedFrame(NamedTuple):
    """A planned frame that :meth:`OryxEngine.encode_into_cache` may encode."""

    newness: int  # capture stamp (ns), else the frame's index: larger = newer
    item: int  # index of its planned item
    position: int  # its position in that item's frames
    key: VisualCacheKey
    bytes: int  # size of its embedding in the cache


def checked_visuals(visuals: Sequence[VisualInput], mode: str, question: str) -> list[VisualInput]:
    """The checks every answer's input passes (locally, or before a remote engine sends anything)."""
    if mode not in ANSWER_MODES:
        raise ValueError(f"mode must be one of {ANSWER_MODES}, got {mode!r}")
    if DEFAULT_IMAGE_TOKEN in question:
        raise ValueError(f"the question must not contain {DEFAULT_IMAGE_TOKEN}; pass visuals instead")
    visuals = list(visuals)
    for index, visual in enumerate(visuals):
        if not isinstance(visual, VisualInput):
            raise TypeError(f"visuals[{index}] must be a VisualInput, got {type(visual).__name__}")
    return visuals


class OryxEngine:
    """Oryx question answering over camera frames, with token planning, caching and streaming."""

    def __init__(
        self,
        loaded: LoadedOryx,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        prompt_layout: str = "training",
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        policy: PlanPolicy | None = None,
        default_max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_context: int | None = None,
        model_name: str | None = None,
        resize_backend: ResizeBackend = "fast",
        static_decoder: StaticDecoder | None = None,
    ) -> None:
        """Wrap a loaded checkpoint. ``max_context`` lowers the context limit below the config's
        ``tokenizer_model_max_length`` (e.g. to bound latency and memory on a small GPU).
        ``resize_backend`` picks the bicubic resize of preprocessing: ``"fast"`` (torch, within 2 levels of
        Pillow; greedy ids equal the reference's in test_reference_parity) or ``"exact"`` (Pillow itself).
        ``static_decoder`` (a :class:`~.kv_cache.StaticDecoder` of this model): decode into its static KV cache
        with its (optionally compiled, CUDA-graph) step instead of a growing ``DynamicCache``; same token ids."""
        if prompt_layout not in PROMPT_LAYOUTS:
            raise ValueError(f"prompt_layout must be one of {PROMPT_LAYOUTS}, got {prompt_layout!r}")
        if max_context is not None and max_context < 1:
            raise ValueError(f"max_context must be >= 1, got {max_context}")
        self.max_context = max_context
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.config = loaded.config
        self.generation_config = dict(loaded.generation_config)
        self.prompt_layout = prompt_layout
        self.system_prompt = system_prompt
        self.policy = policy or PlanPolicy()
        self.default_max_new_tokens = int(default_max_new_tokens)
        self.model_name = model_name or (loaded.path.name if loaded.path is not None else "oryx")
        self.cache = VisualTokenCache(cache_bytes)
        self._counter = default_token_counter(self.config.vision.patch_size)
        self._lock = threading.Lock()
        self.resize_backend = check_backend(resize_backend)
        self.static_decoder = static_decoder

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
        device_map: str | dict[str, Any] | None = None,
        allow_pickle: bool = False,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        vit_path: str | Path | None = None,
        progress: bool = True,
        **engine_kwargs: Any,
    ) -> OryxEngine:
        """Load a checkpoint directory with :func:`~.loading.load_oryx` and wrap it.

        ``dtype`` defaults to float32 on CPU and bfloat16 elsewhere (the official inference dtype);
        ``vit_path`` names a separate Oryx-ViT weights file. ``progress`` logs each shard as it loads (INFO).
        ``engine_kwargs`` go to the constructor
        (``prompt_layout``, ``system_prompt``, ``policy``, ``default_max_new_tokens``, ``max_context``,
        ``resize_backend``).
        """
        if dtype is None:
            dtype = torch.float32 if torch.device(device).type == "cpu" and device_map is None else torch.bfloat16
        loaded = load_oryx(path, device=device, dtype=dtype, attn_implementation=attn_implementation,
                           device_map=device_map, vit_path=vit_path, allow_pickle=allow_pickle, progress=progress)
        return cls(loaded, cache_bytes=cache_bytes, **engine_kwargs)

    # ------------------------------------------------------------------ properties
    @property
    def context_limit(self) -> int:
        """Tokens the model may see (prompt + answer): ``tokenizer_model_max_length`` of the config
        (else ``max_position_embeddings``), lowered to ``max_context`` when that is set."""
        limit = self.config.tokenizer_model_max_length
        if limit is None:
            limit = int(self.config.llm.get("max_position_embeddings") or FALLBACK_CONTEXT)
        return int(limit) if self.max_context is None else min(int(limit), self.max_context)

    @property
    def device(self) -> torch.device:
        return self.model.embed_device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def cache_stats(self) -> CacheStats:
        return self.cache.stats()

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
        """Answer ``question`` about ``visuals`` (see the module docstring for the steps).

        ``on_token(delta_text, n_tokens)`` runs after every generated token with the new text (the
        concatenation of all deltas equals ``Answer.text``; a last call with an unchanged count may flush
        text held back at the end, e.g. an unfinished UTF-8 character). ``cancel`` (a
        ``threading.Event`` or a callable returning True) is checked before every frame's preprocessing,
        every ViT block, every LLM layer and between tokens; a cancelled answer has ``stop_reason``
        ``'cancelled'`` and the tokens streamed so far. Raises :class:`~.planner.PlanError` when the request
        cannot fit the context and ``ValueError`` for malformed input.
        """
        visuals = checked_visuals(visuals, mode, question)
        max_new = self.default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        with self._lock:
            return self._answer(question, visuals, mode, max_new, max_frames, on_token, cancel)

    def _answer(self, question, visuals, mode, max_new, max_frames, on_token, cancel) -> Answer:
        start = time.perf_counter()
        timings = dict.fromkeys(("preprocess_s", "vision_s", "prefill_s", "decode_s", "total_s"), 0.0)

        # 1. plan: text tokens of both possible layouts, then frames and compression.
        plan = self._plan(question, visuals, mode, max_new, max_frames)
        for note in plan.notes:
            logger.info("plan: %s", note)
        if plan.frames_dropped:
            logger.info("plan: %d of %d frames left out %s", plan.frames_dropped, plan.frames_offered,
                        plan.drops_by_reason())
        input_ids = build_prompt_ids(self.tokenizer, self._user_text(question, [p.label for p in plan.items]),
                                     layout=self.prompt_layout, system_prompt=self.system_prompt)

        def finish(text="", token_ids=(), stop="cancelled", prompt_tokens=plan.prompt_tokens, **counts) -> Answer:
            timings["total_s"] = time.perf_counter() - start
            return Answer(text=text, new_tokens=len(token_ids), prompt_tokens=prompt_tokens,
                          visual_tokens=plan.visual_tokens, frames_offered=plan.frames_offered,
                          frames_used=plan.frames_used, compression=plan.compression, mode_used=plan.mode_used,
                          stop_reason=stop, timings=timings, plan=plan, token_ids=list(token_ids), **counts)

        # 2.-3. preprocess the cache misses, encode them in one pass, assemble the blocks.
        try:
            blocks, encoded, cached = self._visual_blocks(visuals, plan, timings, cancel)
        except RequestCancelledError:
            return finish()
        # 4. merge the blocks into the placeholders (counted as vision time: it is the visual embedding).
        vision_start = time.perf_counter()
        inputs_embeds = self.model.merge_visual_embeddings(input_ids, blocks, max_length=self.context_limit)
        _sync(self.device)
        timings["vision_s"] += time.perf_counter() - vision_start
        prompt_tokens = int(inputs_embeds.shape[1])
        visual_tokens = sum(int(b.shape[0]) for b in blocks)
        if prompt_tokens != plan.prompt_tokens or visual_tokens != plan.visual_tokens:
            raise RuntimeError(  # the planner's formulas and the model disagree: a bug, never silent
                f"planned {plan.prompt_tokens} prompt / {plan.visual_tokens} visual tokens, built "
                f"{prompt_tokens} / {visual_tokens}"
            )
        counts = {"frames_encoded": encoded, "frames_from_cache": cached}
        if is_cancelled(cancel):
            return finish(prompt_tokens=prompt_tokens, **counts)

        # 5. generate, streaming deltas.
        settings = GenerationSettings.from_generation_config(self.generation_config, self.tokenizer,
                                                             max_new_tokens=max_new)
        streamed = _DeltaStream(on_token)
        result = generate(self.model, inputs_embeds, self.tokenizer, settings,
                          on_token=streamed.push if on_token is not None else None, cancel=cancel,
                          static=self.static_decoder)
        streamed.flush(result.text, len(result.token_ids))
        timings["prefill_s"], timings["decode_s"] = result.prefill_s, result.decode_s
        return finish(result.text, result.token_ids, result.stop_reason.value, prompt_tokens, **counts)

    def _plan(self, question: str, visuals: list[VisualInput], mode: str, max_new: int, max_frames: int) -> TokenPlan:
        """Step 1 of a request: text tokens of both possible layouts, then frames and compression.
        Shared by :meth:`answer` and :meth:`encode_into_cache`, so both pick the same frames."""
        labels = [v.label for v in visuals]
        text_tokens = self.text_token_count(question, labels)
        merged_label = ", ".join(label for label in labels if label) or None
        merged_text_tokens = self.text_token_count(question, [merged_label]) if visuals else text_tokens
        offers = [ItemOffer([v.size_wh(i) for i in range(len(v.frames))], v.stamps_ns, v.label) for v in visuals]
        return plan_visual_tokens(
            offers, context_limit=self.context_limit, text_tokens=text_tokens, max_new_tokens=max_new,
            mode=mode, max_frames=max_frames, merged_text_tokens=merged_text_tokens, policy=self.policy,
            counter=self._counter,
        )

    # ------------------------------------------------------------------ encoding ahead of a question
    def encode_into_cache(
        self,
        visuals: Sequence[VisualInput],
        mode: str = "auto",
        *,
        question: str = "",
        max_new_tokens: int | None = None,
        max_frames: int = 0,
        cancel: Cancel = None,
        batch_frames: int = DEFAULT_ENCODE_BATCH_FRAMES,
        byte_budget: int | None = None,
    ) -> EncodeReport:
        """Put into the token cache the frames that :meth:`answer` with the same ``visuals``, ``mode``,
        ``max_new_tokens`` and ``max_frames`` would use, at the compression its plan would choose, so
        that such a question later finds them there (``Answer.frames_from_cache``).

        ``question`` only sets the text-token count the plan reserves; the frames differ from a real
        question's only when the context budget, not the frame cap, limits the plan. Frames already
        cached are left alone. The planned frames are taken newest first while their embeddings fit
        ``byte_budget`` (default: the whole cache), counting those already cached, so encoding never
        evicts what it just stored; the rest count as ``over_budget``. Misses are encoded newest first
        in packed passes of ``batch_frames`` frames, each under the engine's lock, each through the same
        preprocessing and encoder as :meth:`answer`. ``cancel`` is read before every batch and, within
        one, at every ViT block (:mod:`.cancellation`): a cancelled batch caches nothing, the batches
        before it stay. Raises :class:`~.planner.PlanError` and ``ValueError`` as :meth:`answer` does.
        """
        visuals = checked_visuals(visuals, mode, question)
        max_new = self.default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if max_new < 1 or batch_frames < 1:
            raise ValueError(f"max_new_tokens and batch_frames must be >= 1, got {max_new}, {batch_frames}")
        budget = self.cache.max_bytes if byte_budget is None else min(int(byte_budget), self.cache.max_bytes)
        if not visuals or budget <= 0 or is_cancelled(cancel):
            return EncodeReport(cancelled=is_cancelled(cancel))
        plan = self._plan(question, visuals, mode, max_new, max_frames)
        modality = plan.mode_used
        element_bytes = torch.empty((), dtype=self.dtype).element_size()
        candidates: list[_PlannedFrame] = []
        for item_index, planned in enumerate(plan.items):
            for position, (source, frame) in enumerate(planned.frames):
                visual = visuals[source]
                key = self._cache_key(visual, frame, modality)
                if key is None:
                    continue  # a frame without a key is never cached
                width, height = visual.size_wh(frame)
                rows = (self._counter.image_tokens(width, height) if modality == "image"
                        else self._counter.video_frame_tokens(width, height, modality))
                newness = visual.stamps_ns[frame] if visual.stamps_ns is not None else frame
                candidates.append(_PlannedFrame(newness, item_index, position, key,
                                                rows * self.config.hidden_size * element_bytes))
        candidates.sort(key=lambda c: c.newness, reverse=True)  # newest first: what a short question asks about
        misses: list[_PlannedFrame] = []
        used_bytes = cached = 0
        for candidate in candidates:
            if used_bytes + candidate.bytes > budget:
                continue
            used_bytes += candidate.bytes
            if candidate.key in self.cache:
                cached += 1
            else:
                misses.append(candidate)
        report = EncodeReport(planned=plan.frames_used, already_cached=cached, modality=modality,
                              over_budget=len(candidates) - cached - len(misses), bytes_planned=used_bytes)
        timings = dict.fromkeys(("preprocess_s", "vision_s"), 0.0)
        for start in range(0, len(misses), batch_frames):
            batch = misses[start:start + batch_frames]
            items = []  # the plan's items cut down to this batch's frames, in prompt order
            for item_index, planned in enumerate(plan.items):
                positions = sorted(c.position for c in batch if c.item == item_index)
                if positions:
                    items.append(replace(planned, frames=tuple(planned.frames[p] for p in positions)))
            try:
                with self._lock:
                    _, encoded, _ = self._visual_blocks(visuals, replace(plan, items=tuple(items)), timings, cancel)
            except RequestCancelledError:
                return replace(report, cancelled=True)
            report = replace(report, encoded=report.encoded + encoded)
        return report

    # ------------------------------------------------------------------ prompt
    @staticmethod
    def _user_text(question: str, labels: Sequence[str | None]) -> str:
        if not labels:
            return question
        if all(label is None for label in labels):
            return " ".join([DEFAULT_IMAGE_TOKEN] * len(labels)) + "\n" + question  # official multi-image form
        lines = [f"{label}: {DEFAULT_IMAGE_TOKEN}" if label else DEFAULT_IMAGE_TOKEN for label in labels]
        return "\n".join(lines) + "\n" + question

    def text_token_count(self, question: str, labels: Sequence[str | None]) -> int:
        """Prompt tokens of ``question`` with items labelled ``labels``, without the visual placeholders (what
        the planner budgets for text; a remote client plans with the server's count)."""
        ids = build_prompt_ids(self.tokenizer, self._user_text(question, labels), layout=self.prompt_layout,
                               system_prompt=self.system_prompt)
        return len(ids) - count_placeholders(ids)

    # ------------------------------------------------------------------ vision
    def _cache_key(self, visual: VisualInput, frame: int, modality: str) -> VisualCacheKey | None:
        if visual.keys is None or self.cache.max_bytes == 0:
            return None
        return VisualCacheKey(visual.keys[frame], modality, visual.size_wh(frame), str(self.dtype),
                              str(self.model.model.vision_tower.device))

    def _visual_blocks(
        self, visuals: list[VisualInput], plan: TokenPlan, timings: dict[str, float], cancel: Cancel = None
    ) -> tuple[list[torch.Tensor], int, int]:
        """Blocks ``[(L_i, D)]`` in plan order; returns (blocks, frames encoded, frames from cache).

        Raises :class:`~.cancellation.RequestCancelledError` when ``cancel`` is set before a frame's
        preprocessing or a ViT block; the cache then holds what it held before (a packed pass caches all
        its frames or none).
        """
        raise_if_cancelled(cancel)
        if not plan.items:
            return [], 0, 0
        # Per planned frame: its embedding (from the cache) or a slot for the encoder's output.
        frame_embeddings: list[list[torch.Tensor | None]] = []
        misses: list[tuple[int, int, VisualCacheKey | None]] = []  # (item, position, key)
        pixels: list[Any] = []
        preprocess_start = time.perf_counter()
        for item_index, planned in enumerate(plan.items):
            row: list[torch.Tensor | None] = []
            for position, (source, frame) in enumerate(planned.frames):
                visual = visuals[source]
                key = self._cache_key(visual, frame, planned.modality)
                hit = self.cache.get(key) if key is not None else None
                row.append(hit)
                if hit is None:
                    raise_if_cancelled(cancel)
                    misses.append((item_index, position, key))
                    if planned.modality == "image":
                        pre = preprocess_image(visual.frames[frame], resize_backend=self.resize_backend)
                        pixels.append(ImageInput(pre.lowres, pre.highres))
                    else:
                        pixels.append(preprocess_video_frame(visual.frames[frame], planned.modality,
                                                             resize_backend=self.resize_backend))
            frame_embeddings.append(row)
        timings["preprocess_s"] += time.perf_counter() - preprocess_start

        vision_start = time.perf_counter()
        modality = plan.mode_used  # every planned item of a request has the same modality
        if pixels:
            with cancel_points(cancel_point_modules(self.model), cancel):
                if modality == "image":
                    fresh = self.model.encode_images(pixels)
                else:
                    fresh = self.model.encode_video_frames(pixels, modality)  # one packed ViT pass for all
            for (item_index, position, key), embedding in zip(misses, fresh, strict=True):
                embedding = embedding.clone()  # own storage: no view pins the whole batch output
                frame_embeddings[item_index][position] = embedding
                if key is not None:
                    self.cache.put(key, embedding)
        blocks = []
        for row in frame_embeddings:
            if modality == "image":
                (block,) = row
                blocks.append(block)
            else:
                blocks.append(self.model.assemble_video(row))
        _sync(self.device)
        timings["vision_s"] += time.perf_counter() - vision_start
        used = sum(len(row) for row in frame_embeddings)
        return blocks, len(misses), used - len(misses)


class _DeltaStream:
    """Turns the core's ``on_token(token_id, text_so_far)`` into ``on_token(delta_text, n_tokens)``."""

    def __init__(self, callback: OnTokenText | None) -> None:
        self.callback = callback
        self.emitted = ""
        self.count = 0

    def push(self, _token_id: int, text_so_far: str) -> None:
        self.count += 1
        self._emit(text_so_far, self.count)

    def flush(self, final_text: str, n_tokens: int) -> None:
        if self.callback is not None and final_text != self.emitted:
            self._emit(final_text, n_tokens)

    def _emit(self, text: str, n_tokens: int) -> None:
        if self.callback is None:
            return
        if not text.startswith(self.emitted):
            # Only tokenizers whose decode rewrites earlier text get here (not byte-level BPE).
            logger.warning("streamed text was revised by the tokenizer; the stream may differ from the answer")
        delta = text[len(self.emitted):]
        self.emitted = text
        self.callback(delta, n_tokens)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
