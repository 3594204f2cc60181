"""Text around the marked views: the prompt that explains the marks, and parsers for the answer.

The answer parsers only trust ids that exist in the current scene: a number the model mentions that
was not drawn is reported in ``unknown_ids`` (never silently turned into an object).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Final

from oryx_ros.spatial.relations import SpatialRelation

# A reference to a marked object: "object 3", "obj. 3", "item #3", "marker 3", "id 3", "#3", "[3]",
# "(3)" or "no. 3"; RELATION_REF additionally accepts a bare number as a sentence subject/object.
_REF_WORDS: Final = r"(?:objects?|obj\.?|items?|markers?|marks?|labels?|ids?|numbers?|no\.)"
_ID_REF: Final = re.compile(
    rf"(?:\b{_REF_WORDS}\s*#?\s*(\d+)\b|#\s*(\d+)\b|\[\s*(\d+)\s*\]|\(\s*#?(\d+)\s*\))", re.IGNORECASE
)
# "objects 3, 5 and 7" / "ids 1 or 2": the numbers after the first one in such a list.
_ID_LIST: Final = re.compile(
    rf"\b{_REF_WORDS}\s*#?\s*\d+((?:\s*(?:,|\band\b|\bor\b|&)\s*#?\s*\d+\b)+)", re.IGNORECASE
)
_NUMBER: Final = re.compile(r"\d+")

# Phrase → predicate (subject predicate object). Longer phrases first so "on top of" beats "on".
_PREDICATE_PHRASES: Final[tuple[tuple[str, str], ...]] = (
    (r"(?:(?:to|on)\s+the\s+)?left\s+(?:of|from)", "left_of"),
    (r"(?:(?:to|on)\s+the\s+)?right\s+(?:of|from)", "right_of"),
    (r"in\s+front\s+of", "in_front_of"),
    (r"behind|in\s+back\s+of", "behind"),
    (r"above|over", "above"),
    (r"below|under(?:neath)?|beneath", "below"),
    (r"on\s+top\s+of|on|upon|resting\s+on|sitting\s+on|standing\s+on|lying\s+on|supported\s+by", "on"),
    (r"near|next\s+to|close\s+to|beside|adjacent\s+to|by", "near"),
)
_REF_PATTERN: Final = rf"(?:{_REF_WORDS}\s*#?\s*(\d+)|#\s*(\d+)|\[\s*(\d+)\s*\]|\b(\d+)\b)"
# Between the subject and the predicate: an optional short description in brackets or commas
# ("object 3 (the red box) is ...", "#3, the mug, is ..."), a verb, an optional negation and adverb.
_RELATION: Final = re.compile(
    _REF_PATTERN
    + r"(?:\s*\([^()]{0,40}\)|\s*,[^,.;]{0,40},)?"
    + r"\s+(?:is|are|sits|sit|lies|lie|stands|stand|rests|rest|appears\s+to\s+be|seems\s+to\s+be|'s)?"
    + r"\s*(not\s+|n't\s+)?(?:located\s+|placed\s+|positioned\s+|situated\s+)?"
    + r"(?:directly\s+|just\s+|slightly\s+|right\s+(?=on|above|below|behind|in|next|under|beside)|immediately\s+)?"
    + r"(" + "|".join(f"(?:{phrase})" for phrase, _ in _PREDICATE_PHRASES) + r")"
    + r"\s+(?:the\s+)?" + _REF_PATTERN,
    re.IGNORECASE,
)


def multiview_prompt(cameras: Sequence[str], marked_ids: Sequence[int], *, with_depth: bool = True) -> str:
    """The paragraph placed before the question when the views carry coarse-correspondence marks."""
    if not cameras:
        raise ValueError("multiview_prompt needs at least one camera")
    n = len(cameras)
    views = "1 camera" if n == 1 else f"{n} cameras"
    text = (
        f"The images show the same scene from {views} ({', '.join(cameras)}), one image per camera, "
        "taken at about the same time."
    )
    if marked_ids:
        ids = ", ".join(str(i) for i in sorted(marked_ids))
        text += (
            " Objects are marked with numbered labels; the same number marks the same object in every view. "
            f"The marked objects are {ids}. Refer to an object by its number, as in 'object {min(marked_ids)}'."
        )
    elif with_depth:
        text += " No objects were marked in these views."
    return text


@dataclass(frozen=True)
class MentionedIds:
    ids: list[int]  # valid ids in the order first mentioned
    unknown_ids: list[int] = field(default_factory=list)  # numbers referred to as objects that do not exist


def parse_mentioned_ids(text: str, valid_ids: Collection[int]) -> MentionedIds:
    """Ids that the answer refers to ("object 3", "obj. 3", "#3", "[3]", "(3)", "objects 3, 5 and 7").

    Bare numbers ("3 cups", "2.5 m") are not ids. Numbers that look like references but name no
    existing object go to ``unknown_ids``.
    """
    valid = set(valid_ids)
    found: list[tuple[int, int]] = []  # (position, id)
    for match in _ID_REF.finditer(text):
        number = next(g for g in match.groups() if g is not None)
        found.append((match.start(), int(number)))
    for match in _ID_LIST.finditer(text):
        tail_start = match.start(1)
        for number in _NUMBER.finditer(match.group(1)):
            found.append((tail_start + number.start(), int(number.group())))
    ids: list[int] = []
    unknown: list[int] = []
    for _, number in sorted(found):
        target = ids if number in valid else unknown
        if number not in target:
            target.append(number)
    return MentionedIds(ids, unknown)


@dataclass(frozen=True)
class ParsedRelations:
    relations: list[SpatialRelation]
    negated: int = 0  # "3 is not left of 5": recognised but not a relation
    unknown_ids: list[int] = field(default_factory=list)  # assertions about ids that do not exist (skipped)


def _predicate_of(phrase: str) -> str:
    for pattern, predicate in _PREDICATE_PHRASES:
        if re.fullmatch(pattern, phrase, re.IGNORECASE):
            return predicate
    raise AssertionError(f"phrase {phrase!r} matched the relation pattern but no predicate")


def parse_model_relations(text: str, valid_ids: Collection[int], *, confidence: float = 0.5) -> ParsedRelations:
    """Relation assertions about marked ids in a model answer → ``SpatialRelation(source='model')``.

    Understands "3 is left of 5", "object 2 is on object 4", "#1 sits on top of #2", "[4] is next to [1]",
    "object 3 (the red box) is to the right of object 5". ``distance`` is 0 (unknown) and ``viewpoint``
    is "" because the model judged from the images, not in a known frame. Both ids must exist.
    """
    valid = set(valid_ids)
    relations: list[SpatialRelation] = []
    seen: set[tuple[int, str, int]] = set()
    unknown: list[int] = []
    negated = 0
    # A match is tried at every reference, not only after the previous match, so that in
    # "1 is left of 2, 2 is on 3" the second "2" can start an assertion of its own.
    starts = sorted({m.start() for m in re.finditer(_REF_PATTERN, text, re.IGNORECASE)})
    for start in starts:
        match = _RELATION.match(text, start)
        if match is None:
            continue
        groups = match.groups()
        subject = next(int(g) for g in groups[0:4] if g is not None)
        negation, phrase = groups[4], groups[5]
        obj = next(int(g) for g in groups[6:10] if g is not None)
        if negation:
            negated += 1
            continue
        missing = [i for i in (subject, obj) if i not in valid]
        if missing:
            unknown.extend(i for i in missing if i not in unknown)
            continue
        if subject == obj:
            continue
        predicate = _predicate_of(phrase)
        key = (subject, predicate, obj)
        if key not in seen:
            seen.add(key)
            relations.append(SpatialRelation(subject, predicate, obj, 0.0, confidence, "model", ""))
    return ParsedRelations(relations, negated, unknown)


def check_model_relations(
    model: Sequence[SpatialRelation], geometry: Sequence[SpatialRelation]
) -> dict[tuple[int, str, int], bool]:
    """For each model assertion, whether the geometry agrees (the same triple holds geometrically)."""
    holds = {(r.subject_id, r.predicate, r.object_id) for r in geometry}
    return {(r.subject_id, r.predicate, r.object_id): (r.subject_id, r.predicate, r.object_id) in holds for r in model}
