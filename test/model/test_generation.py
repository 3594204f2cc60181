"""Generation: KV cache vs full forward, greedy determinism, stops, cancellation, logits processing."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import torch

from oryx_ros.model.generation import (
    GenerationSettings,
    IncrementalDecoder,
    StopReason,
    apply_repetition_penalty,
    decode_one_token,
    generate,
    prefill,
    process_logits,
)
from oryx_ros.model.preprocessing import preprocess_image
from oryx_ros.model.prompting import build_question_ids


@pytest.fixture(scope="module")
def prompt_embeds(tiny_oryx):
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    ids = build_question_ids(tiny_oryx.tokenizer, "What is on the table?", 1)
    return tiny_oryx.model.prepare_inputs_embeds(ids, [preprocess_image(image)])


def _no_cache_greedy(model, embeds, steps):
    """Reference: full forward over the whole sequence at every step, no KV cache."""
    ids, logits_per_step = [], []
    for _ in range(steps):
        extra = model.embed_text(torch.tensor(ids, dtype=torch.long)) if ids else embeds.new_zeros(0, embeds.shape[2])
        full = torch.cat([embeds[0], extra])[None]
        logits = model(inputs_embeds=full, logits_to_keep=1).logits[:, -1]
        logits_per_step.append(logits)
        ids.append(int(logits.argmax()))
    return ids, logits_per_step


def test_kv_cache_decode_equals_full_forward(tiny_oryx, prompt_embeds):
    model = tiny_oryx.model
    reference_ids, reference_logits = _no_cache_greedy(model, prompt_embeds, 4)
    logits, cache = prefill(model, prompt_embeds)
    torch.testing.assert_close(logits, reference_logits[0], atol=1e-4, rtol=1e-4)
    for step in range(1, 4):
        token = torch.tensor([[reference_ids[step - 1]]])
        logits = decode_one_token(model, token, cache)
        torch.testing.assert_close(logits, reference_logits[step], atol=1e-4, rtol=1e-4)
    assert cache.get_seq_length() == prompt_embeds.shape[1] + 3


def test_greedy_generation_is_deterministic_and_matches_reference(tiny_oryx, prompt_embeds):
    settings = GenerationSettings(max_new_tokens=6)
    first = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer, settings)
    second = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer, settings)
    assert first.token_ids == second.token_ids
    reference_ids, _ = _no_cache_greedy(tiny_oryx.model, prompt_embeds, 6)
    assert first.token_ids == reference_ids
    assert first.stop_reason is StopReason.MAX_TOKENS
    assert first.text == tiny_oryx.tokenizer.decode(first.token_ids, skip_special_tokens=True)
    assert first.prefill_s > 0 and first.decode_s > 0
    assert first.prompt_length == prompt_embeds.shape[1]


@pytest.mark.parametrize("limit", [1, 3])
def test_max_new_tokens_is_respected(tiny_oryx, prompt_embeds, limit):
    streamed = []
    result = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer, GenerationSettings(max_new_tokens=limit),
                      on_token=lambda token, text: streamed.append((token, text)))
    assert len(result.token_ids) == limit and result.stop_reason is StopReason.MAX_TOKENS
    assert [t for t, _ in streamed] == result.token_ids
    assert streamed[-1][1] == IncrementalDecoder(tiny_oryx.tokenizer).push_all(result.token_ids)


def test_eos_stops_generation(tiny_oryx, prompt_embeds):
    free = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer, GenerationSettings(max_new_tokens=5))
    eos = free.token_ids[2]
    if eos in free.token_ids[:2]:
        pytest.skip("the random model repeats its tokens")
    stopped = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer,
                       GenerationSettings(max_new_tokens=5, eos_token_ids=(eos,)))
    assert stopped.token_ids == free.token_ids[:2]
    assert stopped.stop_reason is StopReason.EOS and stopped.stop_token_id == eos


def test_cancellation_stops_within_one_token(tiny_oryx, prompt_embeds):
    event = threading.Event()
    result = generate(tiny_oryx.model, prompt_embeds, tiny_oryx.tokenizer, GenerationSettings(max_new_tokens=50),
                      on_token=lambda token, text: event.set(), cancel=event)
    assert len(result.token_ids) == 1 and result.stop_reason is StopReason.CANCELLED

    calls = []
    result = generate(tiny_oryx.model, prompt_embeds, None, GenerationSettings(max_new_tokens=50),
                      on_token=lambda token, text: calls.append(token), cancel=lambda: len(calls) >= 3)
    assert len(result.token_ids) == 3 and result.stop_reason is StopReason.CANCELLED

    already = threading.Event()
    already.set()
    result = generate(tiny_oryx.model, prompt_embeds, None, GenerationSettings(), cancel=already)
    assert result.token_ids == [] and result.stop_reason is StopReason.CANCELLED


def test_settings_from_generation_config_stay_greedy(tiny_oryx):
    settings = GenerationSettings.from_generation_config(tiny_oryx.generation_config, tiny_oryx.tokenizer)
    assert tiny_oryx.generation_config["do_sample"] is True
    assert settings.do_sample is False
    assert settings.repetition_penalty == 1.05
    assert set(settings.eos_token_ids) == {151645, 151643}
    sampled = GenerationSettings.from_generation_config(tiny_oryx.generation_config, do_sample=True, seed=3)
    assert sampled.do_sample and sampled.seed == 3
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationSettings(max_new_tokens=0)


def test_logits_processing_matches_transformers():
    from transformers.generation.logits_process import (
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 50, generator=generator) * 3
    previous = torch.tensor([3, 7, 7, 11])
    settings = GenerationSettings(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05)
    ours = process_logits(logits, previous, settings)
    reference = logits.clone()
    for processor in (RepetitionPenaltyLogitsProcessor(1.05), TemperatureLogitsWarper(0.7), TopKLogitsWarper(20),
                      TopPLogitsWarper(0.8)):
        reference = processor(previous[None], reference)
    torch.testing.assert_close(ours, reference)
    # greedy: only the penalty applies
    penalised = apply_repetition_penalty(logits, previous, 1.05)
    torch.testing.assert_close(process_logits(logits, previous, GenerationSettings(repetition_penalty=1.05)),
                               penalised)
    assert torch.equal(penalised[0, 4], logits[0, 4])


def test_seeded_sampling_is_reproducible(tiny_oryx, prompt_embeds):
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, temperature=1.5, seed=7)
    first = generate(tiny_oryx.model, prompt_embeds, None, settings)
    second = generate(tiny_oryx.model, prompt_embeds, None, settings)
    assert first.token_ids == second.token_ids and len(first.token_ids) == 4


def test_incremental_text_never_splits_characters(qwen_tokenizer):
    text = "Robot sees 你好 🙂 𓀀 ꙮ 鬱 ok"  # the last three are split over several byte-level tokens
    ids = qwen_tokenizer(text)["input_ids"]
    decoder = IncrementalDecoder(qwen_tokenizer)
    partial = [decoder.push(token) for token in ids]
    assert partial[-1] == text
    for piece in partial:
        assert "\ufffd" not in piece and text.startswith(piece)
    # some tokens carry partial UTF-8 sequences, so the text must have been held back at least once
    assert any(a == b for a, b in itertools.pairwise(partial))


def test_im_end_always_stops_when_a_tokenizer_is_given(tiny_model_factory, qwen_tokenizer):
    model = tiny_model_factory(attn="sdpa")
    model.logits_vocab_size = len(qwen_tokenizer)
    embeds = model.prepare_inputs_embeds(build_question_ids(qwen_tokenizer, "Hi", 0))
    first = generate(model, embeds, qwen_tokenizer, GenerationSettings(max_new_tokens=2)).token_ids[0]
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # swap the two lm_head rows: the greedy first token becomes <|im_end|>
        weight = model.lm_head.weight
        weight[[first, im_end]] = weight[[im_end, first]]
    result = generate(model, embeds, qwen_tokenizer, GenerationSettings(max_new_tokens=5))
    assert result.token_ids == [] and result.text == ""
    assert result.stop_reason is StopReason.EOS and result.stop_token_id == im_end
    # without a tokenizer only the explicit EOS ids count
    assert len(generate(model, embeds, None, GenerationSettings(max_new_tokens=2)).token_ids) == 2
