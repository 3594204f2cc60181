"""Static KV cache and compiled decode step: the same token ids as the eager dynamic-cache path."""

from __future__ import annotations

import threading

import pytest
import torch

from oryx_ros.model.generation import GenerationSettings, StopReason, generate
from oryx_ros.model.kv_cache import StaticDecoder, static_cache_length
from oryx_ros.model.prompting import build_question_ids

PENALTY = 1.3  # strong enough to change the tiny model's greedy choices (it repeats tokens without it)


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def model_and_prompt(request, tiny_model_factory, qwen_tokenizer):
    model = tiny_model_factory(llm=request.param, attn="sdpa")
    model.logits_vocab_size = len(qwen_tokenizer)
    ids = build_question_ids(qwen_tokenizer, "Which objects are on the table, and where?", 0)
    text = model.prepare_inputs_embeds(ids)  # (1, S, D)
    noise = torch.randn(1, 40, text.shape[2], generator=torch.Generator().manual_seed(1)) * 0.05
    return model, torch.cat([noise, text], dim=1)  # a longer prompt than the question alone


def test_cache_length_rounds_up_to_the_bucket():
    assert static_cache_length(1, 16) == 16
    assert static_cache_length(16, 16) == 16
    assert static_cache_length(17, 16) == 32
    with pytest.raises(ValueError):
        static_cache_length(0)
    with pytest.raises(ValueError):
        static_cache_length(5, 0)


@pytest.mark.parametrize("penalty", [1.0, PENALTY])
def test_static_cache_decode_gives_the_dynamic_cache_ids(model_and_prompt, penalty):
    model, embeds = model_and_prompt
    settings = GenerationSettings(max_new_tokens=12, repetition_penalty=penalty)
    dynamic = generate(model, embeds, None, settings)
    static = generate(model, embeds, None, settings, static=StaticDecoder(model, bucket=16))
    assert static.token_ids == dynamic.token_ids
    assert static.stop_reason is dynamic.stop_reason is StopReason.MAX_TOKENS
    assert len(static.token_ids) == 12


def test_static_cache_stops_at_eos_like_the_dynamic_cache(model_and_prompt):
    model, embeds = model_and_prompt
    free = generate(model, embeds, None, GenerationSettings(max_new_tokens=8, repetition_penalty=PENALTY))
    index = next((i for i, t in enumerate(free.token_ids) if i > 0 and t not in free.token_ids[:i]), None)
    if index is None:
        pytest.skip("the random model produced no new token after the first")
    eos = free.token_ids[index]
    settings = GenerationSettings(max_new_tokens=8, repetition_penalty=PENALTY, eos_token_ids=(eos,))
    dynamic = generate(model, embeds, None, settings)
    static = generate(model, embeds, None, settings, static=StaticDecoder(model, bucket=16))
    assert dynamic.token_ids == free.token_ids[:index] == static.token_ids
    assert static.stop_reason is dynamic.stop_reason is StopReason.EOS
    assert static.stop_token_id == dynamic.stop_token_id == eos


def test_one_static_decoder_serves_requests_of_several_lengths(model_and_prompt):
    model, embeds = model_and_prompt
    decoder = StaticDecoder(model, bucket=64)
    settings = GenerationSettings(max_new_tokens=6, repetition_penalty=PENALTY)
    for length in (embeds.shape[1], embeds.shape[1] - 7, 20, embeds.shape[1]):  # same bucket, then a new one
        prompt = embeds[:, :length]
        expected = generate(model, prompt, None, settings).token_ids
        assert generate(model, prompt, None, settings, static=decoder).token_ids == expected
        assert decoder._cache_len == static_cache_length(length + 6, 64)


def test_fixed_cache_size_and_argument_errors(model_and_prompt):
    model, embeds = model_and_prompt
    decoder = StaticDecoder(model, max_cache_len=embeds.shape[1] + 4)
    assert decoder.cache_length(3) == embeds.shape[1] + 4
    ids = generate(model, embeds, None, GenerationSettings(max_new_tokens=4), static=decoder).token_ids
    assert ids == generate(model, embeds, None, GenerationSettings(max_new_tokens=4)).token_ids
    with pytest.raises(ValueError, match="static cache holds"):
        generate(model, embeds, None, GenerationSettings(max_new_tokens=5), static=decoder)
    with pytest.raises(ValueError, match="either cache or static"):
        generate(model, embeds, None, static=decoder, cache=object())
    with pytest.raises(ValueError):
        StaticDecoder(model, bucket=0)


def test_static_decode_can_be_cancelled_between_tokens(model_and_prompt):
    model, embeds = model_and_prompt
    event = threading.Event()
    result = generate(model, embeds, None, GenerationSettings(max_new_tokens=20),
                      on_token=lambda token, text: event.set(), cancel=event,
                      static=StaticDecoder(model, bucket=16))
    assert len(result.token_ids) == 1 and result.stop_reason is StopReason.CANCELLED


def _compile_works() -> bool:
    try:
        torch.compile(lambda x: x + 1)(torch.zeros(1))
    except Exception:  # no C++ compiler or no Python headers: inductor cannot build CPU kernels
        return False
    return True


@pytest.mark.slow
def test_compiled_static_decode_gives_the_dynamic_cache_ids(model_and_prompt):
    """~40 s per model on 2 CPU cores (inductor compile of the one-token step)."""
    if not _compile_works():
        pytest.skip("torch.compile cannot build kernels here")
    from torch._dynamo.utils import counters

    model, embeds = model_and_prompt
    decoder = StaticDecoder(model, compile=True, bucket=64)
    eos_free = GenerationSettings(max_new_tokens=10, repetition_penalty=PENALTY)
    for length in (embeds.shape[1], embeds.shape[1] - 5):  # same bucket: the graph is reused
        prompt = embeds[:, :length]
        expected = generate(model, prompt, None, eos_free)
        compiled = generate(model, prompt, None, eos_free, static=decoder)
        assert compiled.token_ids == expected.token_ids
    eos = expected.token_ids[-1]
    with_eos = GenerationSettings(max_new_tokens=10, repetition_penalty=PENALTY, eos_token_ids=(eos,))
    stop_dynamic = generate(model, prompt, None, with_eos)
    stop_compiled = generate(model, prompt, None, with_eos, static=decoder)
    assert stop_compiled.token_ids == stop_dynamic.token_ids
    assert stop_compiled.stop_reason is stop_dynamic.stop_reason is StopReason.EOS
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"]


def test_engine_with_a_static_decoder_gives_the_same_answer(tiny_oryx):
    import numpy as np

    from oryx_ros.model.engine import OryxEngine, VisualInput

    frame = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    visuals = [VisualInput([frame, frame[::-1].copy()])]
    plain = OryxEngine(tiny_oryx, cache_bytes=0).answer("What moves?", visuals, mode="video", max_new_tokens=6)
    engine = OryxEngine(tiny_oryx, cache_bytes=0, static_decoder=StaticDecoder(tiny_oryx.model, bucket=64))
    static = engine.answer("What moves?", visuals, mode="video", max_new_tokens=6)
    assert static.token_ids == plain.token_ids and static.text == plain.text
    assert static.stop_reason == plain.stop_reason
