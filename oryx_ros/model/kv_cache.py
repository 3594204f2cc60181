"""Static KV cache and a compiled one-token decode step, for fixed-shape (CUDA-graph) decoding.

The default decode path (:func:`.generation.generate` without ``static=``) grows transformers'
``DynamicCache`` by one position per token: every step allocates and its shapes change, so it cannot
be captured in a CUDA graph. :class:`StaticDecoder` swaps in transformers' ``StaticCache`` (transformers
≥ 5: per layer ``keys``/``values`` of shape ``(1, kv_heads, max_cache_len, head_dim)``, allocated on the
first update and then written in place; the position is the cache's ``cumulative_length`` *tensor*, so
one traced graph serves every position) and, with ``compile=True``, runs the step through
``torch.compile`` as gpt-fast does (``fullgraph=True``; ``mode='reduce-overhead'`` on CUDA = CUDA graphs).

* Cache lengths are rounded up to ``bucket`` positions, and the cache of the last bucket is kept and
  reset for the next request, so requests of similar length reuse both the memory and the compiled
  graph (one graph per bucket; each new bucket recompiles, tens of seconds — warm up with
  :meth:`StaticDecoder.warmup`). ``max_cache_len`` fixes one size for every request instead.
* Attention in a step covers all ``max_cache_len`` positions (the unused ones are masked), so a large
  bucket costs some bandwidth per token: ``2·layers·kv_heads·head_dim·bucket·2`` bytes in bf16.
* Only the model step is compiled. The logits processing (repetition penalty, argmax) stays eager: a few
  small kernels per token, and the growing id history keeps it out of any graph.
* Prefill stays eager (its length varies per request); it fills the static cache in place.

Checked against the dynamic-cache path by ``test/model/test_kv_cache.py`` (identical token ids on the
tiny Qwen2 and Llama checkpoints, with repetition penalty and EOS; the compiled step where
``torch.compile`` runs, which on CPU needs a C++ compiler).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import torch

from .modeling_oryx import OryxForCausalLM

logger = logging.getLogger(__name__)

DEFAULT_BUCKET: Final = 256  # cache length granularity (positions); one compiled graph per bucket


def static_cache_length(needed: int, bucket: int = DEFAULT_BUCKET) -> int:
    """``needed`` positions rounded up to a multiple of ``bucket``."""
    if needed < 1:
        raise ValueError(f"a cache needs at least one position, got {needed}")
    if bucket < 1:
        raise ValueError(f"bucket must be ≥ 1, got {bucket}")
    return -(-needed // bucket) * bucket


def new_static_cache(model: OryxForCausalLM, max_cache_len: int):
    """An empty transformers ``StaticCache`` for ``model``'s LLM, ``max_cache_len`` positions long.

    Its tensors are allocated on the first update, on the device and in the dtype of the keys.
    """
    from transformers.cache_utils import StaticCache

    return StaticCache(config=model.llm_config, max_cache_len=max_cache_len)


def _decode_step(model: OryxForCausalLM, token_id: torch.Tensor, cache: Any) -> torch.Tensor:
    """``token_id (1, 1)`` at the cache's next position → logits ``(1, V)``; the cache is written in place."""
    return model(input_ids=token_id, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1]


class StaticDecoder:
    """A static KV cache and an (optionally compiled) decode step for one model, reused across requests.

    Pass it to :func:`.generation.generate` as ``static=``. Not thread-safe: one request at a time (the
    engine serialises requests). The compiled callable is kept as an attribute, so its graphs live as
    long as this object.
    """

    def __init__(
        self,
        model: OryxForCausalLM,
        *,
        compile: bool = False,
        compile_mode: str | None = None,
        bucket: int = DEFAULT_BUCKET,
        max_cache_len: int | None = None,
    ) -> None:
        """``compile``: run the step through ``torch.compile(fullgraph=True)``; ``compile_mode`` defaults to
        ``'reduce-overhead'`` (CUDA graphs) on CUDA and ``'default'`` elsewhere. ``max_cache_len`` fixes the
        cache size (a longer request raises ``ValueError``); otherwise lengths round up to ``bucket``."""
        if bucket < 1:
            raise ValueError(f"bucket must be ≥ 1, got {bucket}")
        if max_cache_len is not None and max_cache_len < 1:
            raise ValueError(f"max_cache_len must be ≥ 1, got {max_cache_len}")
        self.model = model
        self.bucket = bucket
        self.max_cache_len = max_cache_len
        self.compiled = compile
        device_type = model.embed_device.type
        self.compile_mode = compile_mode or ("reduce-overhead" if device_type == "cuda" else "default")
        self._cuda_graphs = compile and device_type == "cuda" and self.compile_mode in (
            "reduce-overhead", "max-autotune")
        self._step: Callable[..., torch.Tensor] = _decode_step
        if compile:
            self._step = torch.compile(_decode_step, mode=self.compile_mode, fullgraph=True, dynamic=False)
        self._cache: Any = None
        self._cache_len = 0

    def cache_length(self, needed: int) -> int:
        """The cache size a request of ``needed`` positions (prompt + new tokens) gets."""
        if self.max_cache_len is None:
            return static_cache_length(needed, self.bucket)
        if needed > self.max_cache_len:
            raise ValueError(f"the request needs {needed} cache positions, the static cache holds {self.max_cache_len}")
        return self.max_cache_len

    def cache_for(self, needed: int):
        """An empty static cache with room for ``needed`` positions: the kept one, reset, when the size
        matches; else a new one (the old one is dropped first, so two never coexist)."""
        length = self.cache_length(needed)
        if self._cache is not None and self._cache_len == length:
            self._cache.reset()
            return self._cache
        self._cache = None  # free the previous bucket's tensors before allocating the next
        self._cache = new_static_cache(self.model, length)
        self._cache_len = length
        return self._cache

    def release(self) -> None:
        """Drop the kept cache (its memory returns to the allocator)."""
        self._cache, self._cache_len = None, 0

    @torch.no_grad()
    def step(self, token_id: torch.Tensor, cache: Any) -> torch.Tensor:
        """One decode step: ``token_id (1, 1)`` → logits ``(1, V)``."""
        if self._cuda_graphs:
            # A new CUDA-graph generation: the previous step's output (already consumed) may be overwritten.
            torch.compiler.cudagraph_mark_step_begin()
        return self._step(self.model, token_id, cache)

    def warmup(self, prompt_length: int, new_tokens: int = 3) -> None:
        """Trace/compile and record the graph for the bucket of ``prompt_length + new_tokens`` positions
        (a prefill of zeros, then ``new_tokens`` steps); later requests in that bucket run the ready graph."""
        from .generation import prefill

        cache = self.cache_for(prompt_length + new_tokens)
        embeds = torch.zeros(1, prompt_length, self.model.config.hidden_size, device=self.model.embed_device,
                             dtype=self.model.dtype)
        logits, cache = prefill(self.model, embeds, cache)
        token = logits.argmax(dim=-1, keepdim=True)
        for _ in range(new_tokens):
            token = self.step(token, cache).argmax(dim=-1, keepdim=True)
        if token.device.type == "cuda":
            torch.cuda.synchronize(token.device)
