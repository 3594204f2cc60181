"""The marks prompt, the id parser and the model-relation parser."""

from __future__ import annotations

import pytest

from oryx_ros.spatial.prompting import (
    check_model_relations,
    multiview_prompt,
    parse_mentioned_ids,
    parse_model_relations,
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
