"""Oryx prompt ids (spec §6): the ``qwen_1_5`` ChatML template with ``<image>`` placeholders.

Rendered prompt (the same for Qwen2, Qwen2.5 and Yi based Oryx models), one line per turn::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n<image>\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n

Every ``<image>`` becomes one id ``IMAGE_TOKEN_INDEX`` (-200), later replaced by one whole visual block
(an image or a whole video). Two id layouts exist and differ by one newline id:

* ``"training"`` (default): ids concatenated piecewise as training built them; each placeholder is
  followed by its own ``\\n`` id, so ``<image>\\n{question}`` gives ``[-200] 198 198 …`` for Qwen.
* ``"chunked"``: the rendered string split on ``<image>`` and each chunk tokenised separately
  (``tokenizer_image_token``, the lmms-eval path): ``[-200] 198 …``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

IMAGE_TOKEN_INDEX: Final = -200  # placeholder id of one visual item
IGNORE_INDEX: Final = -100
DEFAULT_IMAGE_TOKEN: Final = "<image>"
DEFAULT_SYSTEM_PROMPT: Final = "You are a helpful assistant."
IM_START: Final = "<|im_start|>"
IM_END: Final = "<|im_end|>"

PromptLayout = Literal["training", "chunked"]
PROMPT_LAYOUTS: Final = ("training", "chunked")


class Tokenizer(Protocol):
    """The part of a transformers tokenizer used here."""

    bos_token_id: int | None
    unk_token_id: int | None

    def __call__(self, text: str): ...
    def convert_tokens_to_ids(self, tokens): ...


def format_user_text(question: str, num_visual_items: int = 1) -> str:
    """User turn text: ``"<image>\\n{q}"`` for one item, ``"<image> <image> …\\n{q}"`` for several
    (lmms-eval's multi-image form), the bare question for none."""
    if num_visual_items < 0:
        raise ValueError(f"num_visual_items must be ≥ 0, got {num_visual_items}")
    if DEFAULT_IMAGE_TOKEN in question:
        raise ValueError("the question already contains <image>; pass the user text to build_prompt_ids directly")
    if num_visual_items == 0:
        return question
    return " ".join([DEFAULT_IMAGE_TOKEN] * num_visual_items) + "\n" + question


def render_prompt(user_text: str, system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """The ``qwen_1_5`` conversation rendered as one string (ends with the assistant header)."""
    return (
        f"{IM_START}system\n{system_prompt}{IM_END}\n"
        f"{IM_START}user\n{user_text}{IM_END}\n"
        f"{IM_START}assistant\n"
    )


def chat_special_ids(tokenizer: Tokenizer) -> tuple[int, int]:
    """``(im_start_id, im_end_id)``: 151644/151645 for Qwen, 6/7 for Yi.

    The original takes the first two ``additional_special_tokens_ids``; both are ``<|im_start|>`` and
    ``<|im_end|>`` in the Qwen and Yi tokenizers, so they are looked up by name, with the first two
    additional special tokens as the fallback.
    """
    ids = [_token_id(tokenizer, token) for token in (IM_START, IM_END)]
    if None in ids:
        extra = list(getattr(tokenizer, "additional_special_tokens_ids", None) or [])
        if len(extra) < 2:
            names = getattr(tokenizer, "extra_special_tokens", None) or []
            extra = [_token_id(tokenizer, name) for name in list(names)[:2]]
        if len(extra) < 2 or None in extra[:2]:
            raise ValueError(f"the tokenizer has no {IM_START} / {IM_END} tokens (needed by the ChatML template)")
        ids = extra[:2]
    return int(ids[0]), int(ids[1])


def build_prompt_ids(
    tokenizer: Tokenizer,
    user_text: str,
    *,
    layout: PromptLayout = "training",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> list[int]:
    """Prompt ids for one user turn; each ``<image>`` in ``user_text`` becomes ``IMAGE_TOKEN_INDEX``.

    The result ends with the assistant header (``<|im_start|>assistant\\n``), ready for generation.
    """
    if layout == "training":
        return _training_layout_ids(tokenizer, user_text, system_prompt)
    if layout == "chunked":
        return _chunked_layout_ids(tokenizer, render_prompt(user_text, system_prompt))
    raise ValueError(f"unknown prompt layout {layout!r}; expected one of {PROMPT_LAYOUTS}")


def build_question_ids(
    tokenizer: Tokenizer,
    question: str,
    num_visual_items: int = 1,
    *,
    layout: PromptLayout = "training",
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
) -> list[int]:
    """:func:`build_prompt_ids` for a question about ``num_visual_items`` images/videos."""
    return build_prompt_ids(
        tokenizer, format_user_text(question, num_visual_items), layout=layout, system_prompt=system_prompt
    )


def count_placeholders(ids: Sequence[int]) -> int:
    return sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)


# ----------------------------------------------------------------------------------------- layouts
def _ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def _training_layout_ids(tokenizer: Tokenizer, user_text: str, system_prompt: str) -> list[int]:
    # preprocess_qwen (spec §6 procedure 2): pieces tokenised on their own and concatenated.
    im_start, im_end = chat_special_ids(tokenizer)
    newline = _ids(tokenizer, "\n")
    ids = [im_start, *_ids(tokenizer, "system"), *newline, *_ids(tokenizer, system_prompt), im_end, *newline]
    ids += _ids(tokenizer, f"{IM_START}user") + newline
    pieces = user_text.split(DEFAULT_IMAGE_TOKEN)
    for index, piece in enumerate(pieces):
        ids += _ids(tokenizer, piece)
        if index < len(pieces) - 1:
            ids += [IMAGE_TOKEN_INDEX, *newline]
    ids += [im_end, *newline]
    ids += _ids(tokenizer, f"{IM_START}assistant") + newline
    return ids


def _chunked_layout_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    # tokenizer_image_token (spec §6 procedure 1): one BOS at the front at most, -200 between chunks.
    chunks = [_ids(tokenizer, chunk) for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    ids: list[int] = []
    if bos is not None and chunks and chunks[0][:1] == [bos]:
        ids.append(bos)
        # Tokenizers that add BOS add it to every chunk; only the leading one is kept.
        chunks = [chunk[1:] if chunk[:1] == [bos] else chunk for chunk in chunks]
    for index, chunk in enumerate(chunks):
        if index:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += chunk
    return ids


def _token_id(tokenizer: Tokenizer, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        return None
    return int(token_id)
