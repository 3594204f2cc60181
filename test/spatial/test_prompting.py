"""The marks prompt, the id parser, the model-relation parser, and object names from the model."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oryx_ros.spatial.prompting import (
    LABEL_MAX_CHARS,
    LABEL_MAX_WORDS,
    check_model_relations,
    clean_label,
    label_question,
    multiview_prompt,
    parse_label_mentions,
    parse_mentioned_ids,
    parse_model_relations,
    parse_object_labels,
)
from oryx_ros.spatial.relations import SpatialRelation

VALID = {1, 2, 3, 4, 5, 12}


def test_prompt_explains_the_marks() -> None:
    text = multiview_prompt(["front", "left", "right"], [3, 1, 2])
    assert "3 cameras (front, left, right)" in text
    assert "the same number marks the same object in every view" in text
    assert "1, 2, 3" in text
    assert "numbered" not in multiview_prompt(["front"], [])
    with pytest.raises(ValueError):
        multiview_prompt([], [1])


@pytest.mark.parametrize(
    ("text", "ids", "unknown"),
    [
        ("The mug is object 3.", [3], []),
        ("It is #4, next to [1].", [4, 1], []),
        ("Objects 2, 5 and 12 are red.", [2, 5, 12], []),
        ("obj. 2 or (5)", [2, 5], []),
        ("marker 1 and id 3; OBJECT 1 again", [1, 3], []),
        ("There are 3 cups, 2.5 m away, on 2 tables.", [], []),
        ("object 7 is the lamp but object 2 is the cup", [2], [7]),
        ("objects 1 & 9", [1], [9]),
    ],
)
def test_mentioned_ids(text: str, ids: list[int], unknown: list[int]) -> None:
    parsed = parse_mentioned_ids(text, VALID)
    assert parsed.ids == ids
    assert parsed.unknown_ids == unknown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 is left of 5.", [(3, "left_of", 5)]),
        ("Object 2 is on object 4.", [(2, "on", 4)]),
        ("#1 sits on top of #2", [(1, "on", 2)]),
        ("[4] is next to [1] and [2] is under [3].", [(4, "near", 1), (2, "below", 3)]),
        ("Object 3 (the red box) is to the right of object 5.", [(3, "right_of", 5)]),
        ("object 5 is behind object 1, while object 1 is in front of object 12",
         [(5, "behind", 1), (1, "in_front_of", 12)]),
        ("Object 2 is directly above object 4.", [(2, "above", 4)]),
        ("3 is on the left of 5, 5 is on 1", [(3, "left_of", 5), (5, "on", 1)]),
        ("object 1 is left of object 2 which is left of 3", [(1, "left_of", 2)]),
    ],
)
def test_model_relations(text: str, expected: list[tuple[int, str, int]]) -> None:
    parsed = parse_model_relations(text, VALID)
    assert [(r.subject_id, r.predicate, r.object_id) for r in parsed.relations] == expected
    assert all(r.source == "model" and r.distance == 0.0 and r.viewpoint == "" for r in parsed.relations)


def test_model_relations_skip_negations_and_unknown_ids() -> None:
    parsed = parse_model_relations("3 is not left of 5. Object 9 is on object 1. 2 isn't near 4.", VALID)
    assert parsed.relations == []
    assert parsed.negated == 2
    assert parsed.unknown_ids == [9]


def test_model_relations_ignore_non_references() -> None:
    parsed = parse_model_relations("There are 2 cups on the table and 3 books.", VALID)
    assert parsed.relations == []


def test_check_model_relations_against_geometry() -> None:
    model = parse_model_relations("1 is on 2. 3 is left of 4.", VALID).relations
    geometry = [SpatialRelation(1, "on", 2, 0.3, 0.9), SpatialRelation(4, "left_of", 3, 0.5, 0.8)]
    assert check_model_relations(model, geometry) == {(1, "on", 2): True, (3, "left_of", 4): False}


# ------------------------------------------------------------------------------------------ object names
def test_label_question_and_prompt_with_names() -> None:
    question = label_question([4, 2])
    assert "(2, 4)" in question and "'<n>: <name>'" in question
    with pytest.raises(ValueError):
        label_question([])
    text = multiview_prompt(["front"], [2, 4], labels={4: "mug"})
    assert "The marked objects are 2, 4 (mug)." in text


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("1: mug\n2: box", {1: "mug", 2: "box"}),
        ("[1] a red mug\n[2] The office chair.", {1: "red mug", 2: "office chair"}),
        ("1 - mug\n2 \u2013 bowl\n3. lamp\n4) plant", {1: "mug", 2: "bowl", 3: "lamp", 4: "plant"}),
        ("- object 1: a mug\n* mark 2 = potted plant\n#3 is a shelf", {1: "mug", 2: "potted plant", 3: "shelf"}),
        ("(1) mug; (2) chair, 3: toy car", {1: "mug", 2: "chair", 3: "toy car"}),
        ("Sure! Here they are:\n1: mug\n", {1: "mug"}),
        ("1: it is a mug\n2: unknown\n3: 42\n4: I cannot see it", {}),  # sentences, refusals, numbers
        ("1: a very large ceramic coffee mug", {}),  # too long for a name
        ("7: mug\n1: cup", {1: "cup"}),  # 7 is not marked
        ("1: mug\n1: cup\n2: box", {2: "box"}),  # two names for 1: not sure, dropped
        ("I see 2 mugs and 3 cups at 2.5 m.", {}),  # bare numbers in a sentence start no entry
        ("The objects are a mug and a box.", {}),
    ],
)
def test_object_labels(text: str, labels: dict[int, str]) -> None:
    assert parse_object_labels(text, VALID) == labels


@given(st.text(max_size=300))
@settings(max_examples=300, deadline=None)
def test_object_labels_from_any_text_are_short_names_of_marked_ids(text: str) -> None:
    labels = parse_object_labels(text, VALID)
    assert set(labels) <= VALID
    for label in labels.values():
        assert clean_label(label) == label and len(label) <= LABEL_MAX_CHARS
        assert 1 <= len(label.split()) <= LABEL_MAX_WORDS and re.fullmatch(r"[a-z' -]+", label)
    if not re.search(r"[0-9]", text):
        assert labels == {}  # no number, no entry: garbage gives no labels


_NAME_WORDS = st.sampled_from(["mug", "red", "office", "chair", "potted", "plant", "box", "toy", "car", "lamp"])
_FORMATS = ["{n}: {name}", "[{n}] {name}", "{n} - {name}", "{n}. {name}", "({n}) the {name}", "- object {n}: a {name}",
            "{n}) {name}.", "#{n} = {name}", "mark {n} is {name}"]


@given(st.dictionaries(st.sampled_from(sorted(VALID)), st.lists(_NAME_WORDS, min_size=1, max_size=3), min_size=1),
       st.lists(st.sampled_from(_FORMATS), min_size=1), st.sampled_from(["\n", "\r\n", "; ", "\n\n"]))
@settings(max_examples=200, deadline=None)
def test_object_labels_round_trip_in_every_accepted_format(names: dict[int, list[str]], formats: list[str],
                                                           separator: str) -> None:
    entries = [formats[i % len(formats)].format(n=n, name=" ".join(words))
               for i, (n, words) in enumerate(names.items())]
    text = "Here are the names:\n" + separator.join(entries)
    assert parse_object_labels(text, VALID) == {n: " ".join(words) for n, words in names.items()}


def test_label_mentions_tie_words_to_one_object_or_none() -> None:
    labels = {1: "mug", 2: "red box", 3: "office chair", 4: "mug", 5: "green object"}
    colours = {1: "white", 2: "red", 3: "black", 4: "blue", 5: "green"}
    # Two mugs: "the mug" picks none, "the blue mug" picks 4; "box" and "chairs" pick one each.
    assert parse_label_mentions("Is the mug left of the box?", labels, colours) == [2]
    assert parse_label_mentions("The blue mug is on the office chairs.", labels, colours) == [4, 3]
    assert parse_label_mentions("the green object and the red box", labels, colours) == [5, 2]
    assert parse_label_mentions("an object", labels, colours) == []
    assert parse_label_mentions("mugshot", {1: "mug"}) == []  # whole words only
