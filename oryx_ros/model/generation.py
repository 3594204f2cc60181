"""Token generation for Oryx: prefill, one-token decode steps and a loop with streaming and cancellation.

Greedy by default, as a robot node needs deterministic answers (the checkpoints' generation_config
says ``do_sample: true``; it is only read for ``repetition_penalty`` and the EOS ids). Sampling is
optional and reproducible through a seeded ``torch.Generator``.

Small functions in the gpt-fast manner: :func:`prefill` (prompt embeddings → first logits and the HF
KV cache), :func:`decode_one_token` (one id → next logits), :func:`select_next_token` and the loop
:func:`generate`, which calls ``on_token(token_id, text_so_far)`` after every token and checks the
cancel flag between tokens and, through :func:`~.cancellation.cancel_points`, within every decoder layer.

The repetition penalty sees the generated tokens only, as HF ``generate(inputs_embeds=…)`` did for the
original (its ``input_ids`` hold no prompt ids there).

Two KV-cache paths give the same token ids: the default grows a ``DynamicCache``; ``static=`` a
:class:`~.kv_cache.StaticDecoder` decodes into a fixed-size ``StaticCache`` with an optionally compiled
(CUDA-graph on GPU) step, for GPUs where per-token launch overhead matters.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

import torch

from .cancellation import RequestCancelledError, cancel_point_modules, cancel_points, is_cancelled
from .kv_cache import StaticDecoder
from .modeling_oryx import OryxForCausalLM
from .prompting import IM_END, chat_special_ids

logger = logging.getLogger(__name__)

DEFAULT_MAX_NEW_TOKENS: Final = 128
_REPLACEMENT_CHAR: Final = "\ufffd"  # what a byte-level BPE decode yields for an unfinished UTF-8 sequence


class StopReason(str, enum.Enum):
    EOS = "eos"  # an EOS id (e.g. <|im_end|>) was produced
    MAX_TOKENS = "max_tokens"  # max_new_tokens reached
    CANCELLED = "cancelled"  # the cancel flag was set


class CancelFlag(Protocol):
    def is_set(self) -> bool: ...


Cancel = CancelFlag | Callable[[], bool] | None
OnToken = Callable[[int, str], None]


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings. Defaults: greedy, 128 new tokens, no penalty, no EOS ids (add them)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    seed: int | None = None  # sampling only: seeds the torch.Generator

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be ≥ 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")

    @classmethod
    def from_generation_config(
        cls, generation_config: dict[str, Any], tokenizer: Any = None, **overrides: Any
    ) -> GenerationSettings:
        """Greedy settings with ``repetition_penalty`` and ``eos_token_id`` from a checkpoint's
        ``generation_config.json`` (its sampling fields are ignored) plus ``<|im_end|>`` from the
        tokenizer; ``overrides`` replace any field (e.g. ``do_sample=True, temperature=0.2, seed=0``)."""
        eos: list[int] = list(_as_ids(generation_config.get("eos_token_id")))
        if tokenizer is not None:
            im_end = tokenizer.convert_tokens_to_ids(IM_END)
            if im_end is not None and im_end != getattr(tokenizer, "unk_token_id", None):
                eos.append(int(im_end))
            if tokenizer.eos_token_id is not None:
                eos.append(int(tokenizer.eos_token_id))
        settings = cls(
            repetition_penalty=float(generation_config.get("repetition_penalty") or 1.0),
            eos_token_ids=tuple(dict.fromkeys(eos)),
        )
        return replace(settings, **overrides)


@dataclass
class GenerationResult:
    """Generated ids (the stop token excluded), their text, why it stopped and the timings."""

    token_ids: list[int]
    text: str
    stop_reason: StopReason
    stop_token_id: int | None = None  # the EOS id that ended generation
    prefill_s: float = 0.0  # prompt forward + first token
    decode_s: float = 0.0  # all later tokens
    prompt_length: int = 0  # LLM positions of the prompt (text + visual)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.token_ids) + (self.stop_token_id is not None) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


# ----------------------------------------------------------------------------------------- steps
def new_cache(model: OryxForCausalLM):
    """An empty HF ``DynamicCache`` for ``model``'s language model."""
    from transformers.cache_utils import DynamicCache

    try:
        return DynamicCache(config=model.llm_config)
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


@torch.no_grad()
def prefill(model: OryxForCausalLM, inputs_embeds: torch.Tensor, cache=None) -> tuple[torch.Tensor, Any]:
    """Prompt ``inputs_embeds (1, S, D)`` → last-position logits ``(1, V)`` and the filled KV cache."""
    if inputs_embeds.dim() != 3 or inputs_embeds.shape[0] != 1:
        raise ValueError(f"inputs_embeds must be (1, S, D), got {tuple(inputs_embeds.shape)}")
    cache = new_cache(model) if cache is None else cache
    out = model(inputs_embeds=inputs_embeds, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1], out.cache


@torch.no_grad()
def decode_one_token(model: OryxForCausalLM, token_id: torch.Tensor, cache) -> torch.Tensor:
    """One step: ``token_id (1, 1)`` at the next position → logits ``(1, V)``; the cache grows by one."""
    out = model(input_ids=token_id, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]


def apply_repetition_penalty(logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float) -> torch.Tensor:
    """HF's rule on ``logits (1, V)``: seen tokens' positive logits ÷ penalty, negative ones × penalty."""
    if penalty == 1.0 or previous_ids.numel() == 0:
        return logits
    index = previous_ids.view(1, -1).to(logits.device)
    seen = logits.gather(1, index)
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(1, index, seen)


def process_logits(logits: torch.Tensor, previous_ids: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """HF's logits-processor order on ``logits (1, V)`` (float32): repetition penalty, then — when
    sampling — temperature, top-k, top-p (removed entries become ``-inf``)."""
    logits = apply_repetition_penalty(logits.float(), previous_ids, settings.repetition_penalty)
    if not settings.do_sample:
        return logits
    logits = logits / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p is not None and settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative <= 1 - settings.top_p
        drop_sorted[..., -1:] = False  # always keep the most likely token
        logits = logits.masked_fill(drop_sorted.scatter(1, order, drop_sorted), float("-inf"))
    return logits


def select_next_token(
    logits: torch.Tensor,
    previous_ids: torch.Tensor,
    settings: GenerationSettings,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next id ``(1, 1)`` from ``logits (1, V)``: :func:`process_logits`, then argmax or a draw."""
    logits = process_logits(logits, previous_ids, settings)
    if not settings.do_sample:
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator)


class IncrementalDecoder:
    """Text of the ids so far, never ending inside a multi-byte character.

    A byte-level BPE token may carry part of a UTF-8 sequence; decoding then ends in U+FFFD. Such a
    tail is held back until the following tokens complete it.
    """

    def __init__(self, tokenizer: Any, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self.text = ""  # the stable text so far

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        decoded = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if not decoded.endswith(_REPLACEMENT_CHAR):
            self.text = decoded
        return self.text

    def push_all(self, token_ids: Iterable[int]) -> str:
        for token_id in token_ids:
            self.push(token_id)
        return self.text

    def final_text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens) if self.ids else ""


# ----------------------------------------------------------------------------------------- loop
def generate(
    model: OryxForCausalLM,
    inputs_embeds: torch.Tensor,
    tokenizer: Any = None,
    settings: GenerationSettings | None = None,
    *,
    on_token: OnToken | None = None,
    cancel: Cancel = None,
    cache=None,
    static: StaticDecoder | None = None,
) -> GenerationResult:
    """Generate from prompt embeddings ``(1, S, D)`` (see :meth:`OryxForCausalLM.prepare_inputs_embeds`).

    Stops at an id in ``settings.eos_token_ids`` or at ``<|im_end|>`` when ``tokenizer`` is given (the
    stop id is not included in ``token_ids``), after
    ``max_new_tokens`` ids, or when ``cancel`` (a ``threading.Event`` or a callable) is set; the flag is
    checked before the prompt pass, between tokens and within every decoder layer (a long prefill stops
    part-way), so no token follows a request once the running layer ends.
    ``on_token(token_id, text_so_far)`` runs after each kept token (``text_so_far`` needs ``tokenizer``).

    ``static``: decode into its static KV cache (sized for ``prompt + max_new_tokens``) with its step
    instead of a ``DynamicCache`` (same ids). A compiled step has no in-layer cancel points (they would
    break the graph): during decoding the flag is then read between tokens only.
    """
    settings = settings or GenerationSettings()
    if static is not None and cache is not None:
        raise ValueError("pass either cache or static, not both")
    eos = set(settings.eos_token_ids)
    if tokenizer is not None:
        eos.add(chat_special_ids(tokenizer)[1])  # <|im_end|> always ends the assistant turn
    decoder = IncrementalDecoder(tokenizer) if tokenizer is not None else None
    generator = None
    if settings.do_sample and settings.seed is not None:
        generator = torch.Generator(device=model.lm_head.weight.device).manual_seed(settings.seed)

    result = GenerationResult(token_ids=[], text="", stop_reason=StopReason.MAX_TOKENS,
                              prompt_length=int(inputs_embeds.shape[1]))
    if is_cancelled(cancel):
        result.stop_reason = StopReason.CANCELLED
        return result

    start = time.perf_counter()
    decode_start: float | None = None
    generated = 0
    points = cancel_point_modules(model)
    if static is not None:
        cache = static.cache_for(result.prompt_length + settings.max_new_tokens)
        step: Callable[[torch.Tensor, Any], torch.Tensor] = static.step
        decode_points = [] if static.compiled else points
    else:
        step = functools.partial(decode_one_token, model)
        decode_points = points
    try:
        with cancel_points(points, cancel):
            logits, cache = prefill(model, inputs_embeds, cache)
            previous = torch.empty(0, dtype=torch.long, device=logits.device)
            next_id = select_next_token(logits, previous, settings, generator)
            token = int(next_id)  # one device sync per token: needed for the EOS check and streaming anyway
            result.prefill_s = time.perf_counter() - start

        with cancel_points(decode_points, cancel):
            decode_start = time.perf_counter()
            generated = 1
            while True:
                if token in eos:
                    result.stop_reason, result.stop_token_id = StopReason.EOS, token
                    break
                result.token_ids.append(token)
                if on_token is not None:
                    on_token(token, decoder.push(token) if decoder is not None else "")
                elif decoder is not None:
                    decoder.ids.append(token)
                if generated >= settings.max_new_tokens:
                    result.stop_reason = StopReason.MAX_TOKENS
                    break
                if is_cancelled(cancel):
                    result.stop_reason = StopReason.CANCELLED
                    break
                previous = torch.cat([previous, next_id.view(-1)])
                generated += 1
                logits = step(next_id.view(1, 1), cache)
                next_id = select_next_token(logits, previous, settings, generator)
                token = int(next_id)
    except RequestCancelledError:  # raised in a layer: that step's token is dropped, those streamed stay
        result.stop_reason = StopReason.CANCELLED
    if decode_start is None:
        result.prefill_s = time.perf_counter() - start
    else:
        result.decode_s = time.perf_counter() - decode_start if generated > 1 else 0.0
    if decoder is not None:
        result.text = decoder.final_text()
    return result


def _as_ids(value: int | Iterable[int] | None) -> Sequence[int]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)
