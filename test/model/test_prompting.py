"""Prompt ids with the real Qwen2 tokenizer, both layouts of spec §6."""

from __future__ import annotations

import pytest

from oryx_ros.model.prompting import (
    IMAGE_TOKEN_INDEX,
    build_prompt_ids,
    build_question_ids,
    chat_special_ids,
    count_placeholders,
    format_user_text,
    render_prompt,
)

IM_START, IM_END, NEWLINE = 151644, 151645, 198
# <|im_start|> system \n You are a helpful assistant. <|im_end|> \n   (known Qwen2 ids)
SYSTEM_BLOCK = [IM_START, 8948, NEWLINE, 2610, 525, 264, 10950, 17847, 13, IM_END, NEWLINE]
USER_HEADER = [IM_START, 872, NEWLINE]  # <|im_start|> user \n
ASSISTANT_HEADER = [IM_START, 77091, NEWLINE]  # <|im_start|> assistant \n


def test_special_ids(qwen_tokenizer):
    assert chat_special_ids(qwen_tokenizer) == (IM_START, IM_END)


def test_training_layout(qwen_tokenizer):
    question = "Describe the scene."
    ids = build_question_ids(qwen_tokenizer, question, 1, layout="training")
    question_ids = qwen_tokenizer("\n" + question)["input_ids"]
    assert question_ids[0] == NEWLINE
    assert ids == SYSTEM_BLOCK + USER_HEADER + [IMAGE_TOKEN_INDEX, NEWLINE] + question_ids + [IM_END, NEWLINE] \
        + ASSISTANT_HEADER
    # two separate newline ids after the placeholder
    position = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[position:position + 3] == [IMAGE_TOKEN_INDEX, NEWLINE, NEWLINE]


def test_chunked_layout(qwen_tokenizer):
    question = "Describe the scene."
    ids = build_question_ids(qwen_tokenizer, question, 1, layout="chunked")
    position = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[:position] == SYSTEM_BLOCK + USER_HEADER
    assert ids[position:position + 2] == [IMAGE_TOKEN_INDEX, NEWLINE] and ids[position + 2] != NEWLINE
    # the chunked layout is the tokenised rendered prompt with "<image>" cut out: one id shorter
    training = build_question_ids(qwen_tokenizer, question, 1, layout="training")
    assert len(training) == len(ids) + 1
    assert ids[-len(ASSISTANT_HEADER):] == ASSISTANT_HEADER


def test_text_only_prompt_equals_tokenised_rendering(qwen_tokenizer):
    rendered = render_prompt("What time is it?")
    for layout in ("training", "chunked"):
        ids = build_question_ids(qwen_tokenizer, "What time is it?", 0, layout=layout)
        assert ids == qwen_tokenizer(rendered)["input_ids"]
        assert IMAGE_TOKEN_INDEX not in ids


def test_several_images(qwen_tokenizer):
    assert format_user_text("Compare.", 3) == "<image> <image> <image>\nCompare."
    training = build_question_ids(qwen_tokenizer, "Compare.", 3, layout="training")
    chunked = build_question_ids(qwen_tokenizer, "Compare.", 3, layout="chunked")
    assert count_placeholders(training) == count_placeholders(chunked) == 3
    space = qwen_tokenizer(" ")["input_ids"]
    start = training.index(IMAGE_TOKEN_INDEX)
    assert training[start:start + 3 + len(space)] == [IMAGE_TOKEN_INDEX, NEWLINE, *space, IMAGE_TOKEN_INDEX]
    start = chunked.index(IMAGE_TOKEN_INDEX)
    assert chunked[start:start + 2 + len(space)] == [IMAGE_TOKEN_INDEX, *space, IMAGE_TOKEN_INDEX]


def test_custom_system_prompt_and_bad_arguments(qwen_tokenizer):
    ids = build_prompt_ids(qwen_tokenizer, "<image>\nHi", system_prompt="Be brief.")
    assert ids[:3] == [IM_START, 8948, NEWLINE]
    assert ids[3:3 + len(qwen_tokenizer("Be brief.")["input_ids"])] == qwen_tokenizer("Be brief.")["input_ids"]
    with pytest.raises(ValueError, match="unknown prompt layout"):
        build_prompt_ids(qwen_tokenizer, "Hi", layout="fancy")
    with pytest.raises(ValueError, match="already contains"):
        format_user_text("<image> what?", 1)


class _BosEverywhere:
    """A SentencePiece-like tokenizer stand-in that prefixes BOS (id 1) to every encoded chunk."""

    bos_token_id = 1
    unk_token_id = 0

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, text):
        return {"input_ids": [1, *self.inner(text)["input_ids"]]}

    def convert_tokens_to_ids(self, token):
        return self.inner.convert_tokens_to_ids(token)


def test_chunked_layout_keeps_a_single_leading_bos(qwen_tokenizer):
    ids = build_question_ids(_BosEverywhere(qwen_tokenizer), "Hi", 2, layout="chunked")
    assert ids[0] == 1 and ids.count(1) == 1
    assert count_placeholders(ids) == 2


class _NoChatTokens:
    bos_token_id = None
    unk_token_id = 0

    def __call__(self, text):
        return {"input_ids": [5]}

    def convert_tokens_to_ids(self, token):
        return 0


def test_missing_chat_tokens_raise():
    with pytest.raises(ValueError, match="im_start"):
        chat_special_ids(_NoChatTokens())
