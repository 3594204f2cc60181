"""Scores of a :class:`~oryx_ros.spatial.scene_graph.SceneResult` against a synthetic scene's ground truth.

Used by the tests and ``bench/bench_spatial.py``. All positions in the base frame (the synthetic scene
is built in it and ``build_scene`` is called without odometry).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from oryx_ros.spatial.relations import PREDICATES
from oryx_ros.spatial.scene_graph import SceneResult
from oryx_ros.spatial.synthetic_scene import SyntheticScene


@dataclass(frozen=True)
class SceneScore:
    gt_of_id: dict[int, int]  # recovered object id → ground-truth primitive index
    centre_errors_m: dict[int, float]  # by ground-truth index, for matched objects
    size_errors_m: dict[int, float]  # largest per-axis size error, by ground-truth index
    unmatched_gt: list[int]  # ground-truth objects that were not recovered
    spurious_ids: list[int]  # recovered objects that match no ground-truth object
    pairs: int  # ordered ground-truth pairs scored
    pairs_agreeing: int  # pairs whose recovered predicate set equals the true one
    decisions: int  # pairs x predicates
    decisions_agreeing: int
    disagreements: list[tuple[int, str, int, bool]] = field(default_factory=list)  # (gt a, predicate, gt b, true value)
    marks: int = 0  # badges drawn over all views
    marks_on_their_object: int = 0  # badges whose anchor pixel shows the ground-truth object of their id

    @property
    def pair_agreement(self) -> float:
        return self.pairs_agreeing / self.pairs if self.pairs else 1.0

    @property
    def decision_agreement(self) -> float:
        return self.decisions_agreeing / self.decisions if self.decisions else 1.0

    @property
    def max_centre_error_m(self) -> float:
        return max(self.centre_errors_m.values(), default=float("nan"))


def match_objects(scene: SyntheticScene, result: SceneResult, gate_m: float = 0.15) -> dict[int, int]:
    """Recovered id → ground-truth index, greedy on ascending centre distance within ``gate_m``."""
    if not result.objects:
        return {}
    truth = np.array([p.centre_m for p in scene.primitives])
    found = np.array([o.position for o in result.objects])
    distances = np.linalg.norm(found[:, None, :] - truth[None, :, :], axis=2)
    matched: dict[int, int] = {}
    used: set[int] = set()
    for flat in np.argsort(distances, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, distances.shape)
        if distances[i, j] > gate_m:
            break
        object_id = result.objects[i].id
        if object_id in matched or int(j) in used:
            continue
        matched[object_id] = int(j)
        used.add(int(j))
    return matched


def score_scene(scene: SyntheticScene, result: SceneResult, gate_m: float = 0.15) -> SceneScore:
    gt_of_id = match_objects(scene, result, gate_m)
    id_of_gt = {gt: object_id for object_id, gt in gt_of_id.items()}
    objects = {o.id: o for o in result.objects}
    centre_errors = {
        gt: float(np.linalg.norm(np.array(objects[i].position) - scene.primitives[gt].centre_m))
        for i, gt in gt_of_id.items()
    }
    size_errors = {
        gt: float(np.abs(np.array(objects[i].size) - scene.primitives[gt].size_m).max()) for i, gt in gt_of_id.items()
    }
    true = set(scene.true_relations())
    found = {(gt_of_id[s], p, gt_of_id[o]) for s, p, o in
             ((r.subject_id, r.predicate, r.object_id) for r in result.relations if r.source == "geometry")
             if s in gt_of_id and o in gt_of_id}
    n = len(scene.primitives)
    pairs = pairs_agreeing = decisions = decisions_agreeing = 0
    disagreements: list[tuple[int, str, int, bool]] = []
    for a in range(n):
        for b in range(n):
            if a == b:
                continue
            pairs += 1
            pair_ok = True
            for predicate in PREDICATES:
                decisions += 1
                expected = (a, predicate, b) in true
                got = (a, predicate, b) in found if a in id_of_gt and b in id_of_gt else not expected
                if got == expected:
                    decisions_agreeing += 1
                else:
                    pair_ok = False
                    disagreements.append((a, predicate, b, expected))
            pairs_agreeing += pair_ok
    marks = on_object = 0
    for view, view_marks in result.marks.items():
        truth_image = scene.instance_images[view.split("@")[0]]
        for mark in view_marks:
            marks += 1
            on_object += gt_of_id.get(mark.mark_id, -99) == int(truth_image[mark.v, mark.u])
    return SceneScore(
        gt_of_id=gt_of_id,
        centre_errors_m=centre_errors,
        size_errors_m=size_errors,
        unmatched_gt=sorted(set(range(n)) - set(gt_of_id.values())),
        spurious_ids=sorted(set(objects) - set(gt_of_id)),
        pairs=pairs,
        pairs_agreeing=pairs_agreeing,
        decisions=decisions,
        decisions_agreeing=decisions_agreeing,
        disagreements=disagreements,
        marks=marks,
        marks_on_their_object=on_object,
    )
