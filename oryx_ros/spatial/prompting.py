"""Text around the marked views: the prompt that explains the marks, and parsers for the answer.

The answer parsers only trust ids that exist in the current scene: a number the model mentions that
was not drawn is reported in ``unknown_ids`` (never silently turned into an object).

Object names: :func:`label_question` asks the model to name every marked object in one answer ("<n>:
<name>" per line), :func:`parse_object_labels` keeps only names that look like short noun phrases, and
:func:`parse_label_mentions` ties the words of a question or an answer ("the mug") to ids by those names.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
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


def multiview_prompt(cameras: Sequence[str], marked_ids: Sequence[int], *, with_depth: bool = True,
                     labels: Mapping[int, str] | None = None) -> str:
    """The paragraph placed before the question when the views carry coarse-correspondence marks.

    ``labels``: id → name given by the model (:func:`parse_object_labels`), listed beside the ids.
    """
    if not cameras:
        raise ValueError("multiview_prompt needs at least one camera")
    n = len(cameras)
    views = "1 camera" if n == 1 else f"{n} cameras"
    text = (
        f"The images show the same scene from {views} ({', '.join(cameras)}), one image per camera, "
        "taken at about the same time."
    )
    if marked_ids:
        labels = labels or {}
        ids = ", ".join(f"{i} ({labels[i]})" if i in labels else str(i) for i in sorted(marked_ids))
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


# ------------------------------------------------------------------------------------------ object names
LABEL_MAX_WORDS: Final = 4  # "red coffee mug", "potted plant": a name, not a sentence
LABEL_MAX_CHARS: Final = 32
# Words that never belong in an object's name: pronouns, verbs of a sentence, refusals, and "object" itself
# (the colour fallback already says "red object"). A name holding one is rejected, not trimmed.
_NOT_IN_A_NAME: Final = frozenset({
    "i", "you", "he", "she", "it", "we", "they", "me", "this", "that", "these", "those", "there", "here", "what",
    "which", "who", "is", "are", "was", "were", "be", "been", "am", "can", "cannot", "could", "would", "should",
    "will", "may", "might", "do", "does", "did", "not", "no", "none", "nothing", "unknown", "unclear", "unsure",
    "sorry", "see", "seen", "seems", "looks", "appears", "visible", "and", "or", "but", "yes", "maybe", "object",
    "objects", "thing", "things", "item", "items", "mark", "marks", "marker", "number", "label", "something",
    "anything"
})
_ARTICLES: Final = frozenset({"a", "an", "the", "some"})
_NAME_WORD: Final = re.compile(r"[a-z][a-z'-]*")
# One "<n>: <name>" entry: at the start of a line or after ";" or ",", an optional bullet and "object"/"mark"
# word, the id (bare, [n], (n) or #n), a separator (optional after brackets), then the name up to the
# end of the line or list item.
_LABEL_ENTRY: Final = re.compile(
    r"(?:^|(?<=[;,]))[ \t]*(?:[-*\u2022][ \t]*)?(?:(?:objects?|obj\.?|marks?|markers?|items?|ids?|no\.)[ \t]*)?"
    r"(?:\[[ \t]*(?P<bracketed>\d{1,3})[ \t]*\]|\([ \t]*(?P<parenthesised>\d{1,3})[ \t]*\)|#?(?P<bare>\d{1,3}))"
    r"(?P<separator>[ \t]*(?::|=|->|-|\u2013|\u2014|\.(?!\d)|\)|\bis\b)|(?=[ \t]))"
    r"[ \t]*(?P<name>[^\n;,]*)",
    re.IGNORECASE | re.MULTILINE,
)


def label_question(marked_ids: Sequence[int]) -> str:
    """The one question that names every marked object (asked over the marked views)."""
    if not marked_ids:
        raise ValueError("label_question needs at least one marked id")
    ids = sorted(marked_ids)
    return (f"Name the object under each numbered mark ({', '.join(str(i) for i in ids)}): answer one line per "
            f"mark as '<n>: <name>', with a short name such as 'mug' or 'office chair', for example '{ids[0]}: mug'.")


def clean_label(text: str) -> str | None:
    """``text`` as a short lower-case noun phrase ("A red mug." → "red mug"), None when it is not one."""
    words = text.strip().strip(".!?:\"'`*_ ").lower().split()
    while words and words[0] in _ARTICLES:
        words = words[1:]
    if not words or len(words) > LABEL_MAX_WORDS:
        return None
    if not all(_NAME_WORD.fullmatch(word) and not word.endswith(("-", "'")) for word in words):
        return None  # digits, punctuation inside, non-latin script: not a name we can match words against
    if any(word in _NOT_IN_A_NAME or word in _ARTICLES for word in words):
        return None
    label = " ".join(words)
    return label if len(label) <= LABEL_MAX_CHARS else None


def parse_object_labels(text: str, valid_ids: Collection[int]) -> dict[int, str]:
    """Names per marked id from the answer to :func:`label_question`.

    Accepts "1: mug", "1 - mug", "1. mug", "1) mug", "[1] a red mug", "(2) chair", "#3 = bowl", "object 4: a
    plant", "- 5: lamp" and several entries on one line separated by ";" or ",". Only ids in
    ``valid_ids`` with a name that passes :func:`clean_label` are kept; an id given two different names is
    dropped (the model was not sure). Anything else, e.g. free text, gives no labels.
    """
    valid = set(valid_ids)
    names: dict[int, str] = {}
    conflicting: set[int] = set()
    for match in _LABEL_ENTRY.finditer(text):
        number = match.group("bracketed") or match.group("parenthesised") or match.group("bare")
        if match.group("bare") and not match.group("separator").strip():
            continue  # "3 cups" in a sentence: a bare number needs a separator to start an entry
        object_id = int(number)
        label = clean_label(match.group("name"))
        if object_id not in valid or label is None:
            continue
        if names.setdefault(object_id, label) != label:
            conflicting.add(object_id)
    return {object_id: label for object_id, label in names.items() if object_id not in conflicting}


def _phrase_pattern(words: Sequence[str]) -> re.Pattern[str]:
    # The last word may be plural ("the mugs"); words may be separated by any whitespace.
    *head, last = (re.escape(w) for w in words)
    return re.compile(r"\b" + r"\s+".join([*head, last + r"(?:s|es)?"]) + r"\b", re.IGNORECASE)


def parse_label_mentions(text: str, labels: Mapping[int, str], colours: Mapping[int, str] | None = None) -> list[int]:
    """Ids whose name occurs in ``text`` ("where is the mug?" → the id named "mug"), in order of mention.

    A phrase counts only when it picks one object: the full name ("red mug"), the name's last word
    ("mug" for "red mug") or the colour and last word ("blue mug"), whichever of these belongs to exactly
    one id; longer phrases win where they overlap. A colour fallback ("red object") is matched as a whole only.
    """
    colours = colours or {}
    candidates: dict[tuple[str, ...], set[int]] = {}
    for object_id, label in labels.items():
        words = tuple(label.lower().split())
        if not words:
            continue
        if words[-1] in _NOT_IN_A_NAME:  # "red object" (the colour fallback) only as a whole
            phrases = {words} if len(words) > 1 else set()
        else:
            phrases = {words, words[-1:]}
            if colours.get(object_id):
                phrases.add((colours[object_id].lower(), words[-1]))
        for phrase in phrases:
            candidates.setdefault(phrase, set()).add(object_id)
    found: list[tuple[int, int, int]] = []  # (start, -length, id)
    for phrase, ids in candidates.items():
        if len(ids) != 1:
            continue  # "mug" when there are two mugs: no guess
        (object_id,) = ids
        for match in _phrase_pattern(phrase).finditer(text):
            found.append((match.start(), -(match.end() - match.start()), object_id))
    ids_in_order: list[int] = []
    covered_until = -1
    for start, negative_length, object_id in sorted(found):
        if start < covered_until:
            continue  # inside a longer phrase already matched
        covered_until = start - negative_length
        if object_id not in ids_in_order:
            ids_in_order.append(object_id)
    return ids_in_order
