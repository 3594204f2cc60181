"""Accuracy and stage timings of the spatial core (``oryx_ros.spatial.build_scene``) on synthetic scenes.

For each seed a table scene (8 objects: a table, 3 objects on it, 2 on the floor and a stacked pair) is
rendered from ``--cameras`` RGB-D cameras at ``--width`` x ``--height``, with and without Kinect-like depth
noise (sigma = 1.2 mm + 1.9 mm (z - 0.4 m)^2, 2% missing pixels), then ``build_scene`` runs once as warm-up
(not counted) and ``--repeats`` times; median stage times are reported. Accuracy: centre error of the
recovered boxes against the true ones, relation agreement (ordered object pairs whose whole predicate set
matches the ground truth, and single predicate decisions), and marks whose anchor pixel lies on the
ground-truth object of their id.

The generator normally re-draws layouts where a relation sits within 3 cm of its threshold (ground truth
that a sensor cannot decide); ``--ambiguous`` lifts that rule to show agreement on unrestricted layouts.

``--scene furniture`` renders ``make_furniture_scene`` instead (a wall, a table with legs, a chair, an open
shelf and 6 objects on, in and under them), ``--scene both`` runs the two. Precision and recall count
recovered objects against the true ones (a spurious object lowers precision, a missed one recall). The
relations published with ``spatial.relations_per_object`` = ``--per-object`` and
``spatial.relations_inverse`` false are counted beside all relations that hold.

    python bench/bench_spatial.py --seeds 5 --width 640 --height 480
    python bench/bench_spatial.py --scene both --seeds 3 --width 320 --height 240

``--label-cost`` measures instead what naming the objects (``spatial.model_labels``) adds to a spatial
request: the question alone over the marked views, then the label question plus the question over the
same views keyed by their pixels (the second generation takes the ViT tokens from the token cache), as
the node runs them; ``--model DIR`` (default: the bundled tiny random checkpoint, whose names are noise)
and ``--device``.

    python bench/bench_spatial.py --label-cost --width 320 --height 240 --cameras 3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np
from machine import cpu_model

from oryx_ros.spatial.evaluation import score_scene
from oryx_ros.spatial.relations import RelationParams, select_relations
from oryx_ros.spatial.scene_graph import build_scene
from oryx_ros.spatial.synthetic_scene import DepthNoise, LayoutParams, make_furniture_scene, make_scene

STAGES = ("fuse", "planes", "cluster", "instances", "marks", "relations")


def hardware() -> str:
    import open3d

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU: {cpu}, {os.cpu_count()} logical cores (load average {load:.1f}), no GPU used\n"
            f"numpy {np.__version__}, open3d {open3d.__version__}, python {platform.python_version()}, "
            f"{platform.platform()}")


def run(args: argparse.Namespace, noise: DepthNoise | None, kind: str = "table") -> dict:
    layout = LayoutParams(ambiguity_margin_m=0.0) if args.ambiguous else LayoutParams()
    errors, pairs, pairs_ok, decisions, decisions_ok, marks, marks_ok, unmatched, spurious = [], 0, 0, 0, 0, 0, 0, 0, 0
    found, relations_all, relations_selected = 0, 0, 0
    selection = RelationParams(per_object=args.per_object, inverse=False)
    stage_times: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for seed in range(args.seeds):
        if kind == "furniture":
            scene = make_furniture_scene(seed, n_cameras=args.cameras, width=args.width, height=args.height,
                                         noise=noise)
        else:
            scene = make_scene(seed, n_cameras=args.cameras, width=args.width, height=args.height, noise=noise,
                               layout=layout)
        build_scene(scene.frames, scene.T_base_from_cam)  # warm-up: imports, allocator, open3d thread pool
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = build_scene(scene.frames, scene.T_base_from_cam)
            stage_times["total"].append(time.perf_counter() - start)
            for stage in STAGES:
                stage_times[stage].append(result.timings_s[stage])
        score = score_scene(scene, result)
        errors += list(score.centre_errors_m.values())
        pairs, pairs_ok = pairs + score.pairs, pairs_ok + score.pairs_agreeing
        decisions, decisions_ok = decisions + score.decisions, decisions_ok + score.decisions_agreeing
        marks, marks_ok = marks + score.marks, marks_ok + score.marks_on_their_object
        unmatched += len(score.unmatched_gt)
        spurious += len(score.spurious_ids)
        found += len(result.objects)
        boxes = {detail.id: detail.box_in_viewpoint for detail in result.instances}
        relations_all += len(result.relations)
        relations_selected += len(select_relations(result.relations, boxes, selection))
    true_count = len(errors) + unmatched
    return {
        "scene": kind,
        "noise": noise is not None,
        "objects_recovered": f"{len(errors)}/{true_count}",
        "objects_found_true": f"{found}/{true_count}",
        "precision": round(len(errors) / found, 2) if found else float("nan"),
        "recall": round(len(errors) / true_count, 2) if true_count else float("nan"),
        "spurious_objects": spurious,
        "centre_error_cm": {"mean": round(100 * float(np.mean(errors)), 2),
                            "p95": round(100 * float(np.percentile(errors, 95)), 2),
                            "max": round(100 * float(np.max(errors)), 2)},
        "relation_pairs_agreeing": f"{pairs_ok}/{pairs} ({100 * pairs_ok / pairs:.1f}%)",
        "relation_decisions_agreeing": f"{decisions_ok}/{decisions} ({100 * decisions_ok / decisions:.2f}%)",
        "marks_on_their_object": f"{marks_ok}/{marks}",
        "relations_per_scene": {"all": round(relations_all / args.seeds, 1),
                                f"per_object_{args.per_object}_no_inverse": round(relations_selected / args.seeds, 1)},
        "median_s": {stage: round(statistics.median(times), 3) for stage, times in stage_times.items()},
    }


def label_cost(args: argparse.Namespace) -> dict:
    """Seconds and tokens of the label generation next to the question's own (see the module docstring)."""
    import hashlib

    import torch

    from oryx_ros.model.engine import OryxEngine, VisualInput
    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
    from oryx_ros.spatial.prompting import label_question, parse_object_labels
    from oryx_ros.spatial.scene_graph import with_model_labels

    path = args.model or str(ensure_tiny_checkpoint())
    engine = OryxEngine.from_pretrained(path, device=args.device, progress=False)
    scene = make_scene(0, n_cameras=args.cameras, width=args.width, height=args.height)
    result = build_scene(scene.frames, scene.T_base_from_cam)
    question = "Which object is left of the red one?"
    label_tokens = 8 * len(result.marked_ids) + 8  # as the node's SpatialAdapter.label_max_new_tokens

    def visuals(serial: int | None) -> list[VisualInput]:
        # serial=None: not cached (the node without labels); else keyed by pixels (+ serial: fresh each repeat)
        return [VisualInput(frames=[view], label=f"Camera {name}",
                            keys=None if serial is None else
                            [(serial, name, hashlib.blake2b(view.tobytes(), digest_size=16).hexdigest())])
                for name, view in result.marked_views.items()]

    def sync() -> None:
        if torch.cuda.is_available() and str(args.device).startswith("cuda"):
            torch.cuda.synchronize()

    plain, labels, after_labels, label_new_tokens, names, from_cache = [], [], [], [], {}, 0
    for repeat in range(-1, args.repeats):  # repeat -1: warm-up, not counted
        sync()
        start = time.perf_counter()
        engine.answer(result.prompt + "\n" + question, visuals(None), mode="multiview", max_new_tokens=args.new_tokens)
        sync()
        middle = time.perf_counter()
        cached = visuals(repeat)
        named = engine.answer(label_question(result.marked_ids), cached, mode="multiview", max_new_tokens=label_tokens)
        sync()
        end_labels = time.perf_counter()
        names = parse_object_labels(named.text, result.marked_ids)
        labelled = with_model_labels(result, names)
        after = engine.answer(labelled.prompt + "\n" + question, cached, mode="multiview",
                              max_new_tokens=args.new_tokens)
        sync()
        end = time.perf_counter()
        if repeat >= 0:
            plain.append(middle - start)
            labels.append(end_labels - middle)
            after_labels.append(end - end_labels)
            label_new_tokens.append(named.new_tokens)
            from_cache = after.frames_from_cache
    return {
        "model": path, "device": args.device, "marked_views": len(result.marked_views),
        "marked_objects": len(result.marked_ids), "question_new_tokens": args.new_tokens,
        "label_max_new_tokens": label_tokens, "label_new_tokens": statistics.median(label_new_tokens),
        "median_s": {"question_alone": round(statistics.median(plain), 3),
                     "label_generation": round(statistics.median(labels), 3),
                     "question_after_labels_cached_views": round(statistics.median(after_labels), 3)},
        "request_with_labels_vs_without": round(
            (statistics.median(labels) + statistics.median(after_labels)) / statistics.median(plain), 2),
        "question_views_from_token_cache": from_cache,
        "label_timings_s": {k: round(v, 3) for k, v in named.timings.items()},
        "names_parsed": names,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ambiguous", action="store_true", help="allow layouts with borderline relations")
    parser.add_argument("--scene", choices=("table", "furniture", "both"), default="table",
                        help="make_scene (a table block and 8 primitives), make_furniture_scene, or both")
    parser.add_argument("--per-object", type=int, default=3,
                        help="relations_per_object for the published-relations count (0 = all pairs)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--label-cost", action="store_true", help="time the model's object naming instead")
    parser.add_argument("--model", default="", help="--label-cost: checkpoint directory (default: tiny random)")
    parser.add_argument("--device", default="cpu", help="--label-cost: torch device")
    parser.add_argument("--new-tokens", type=int, default=32, help="--label-cost: tokens of the question's answer")
    args = parser.parse_args(argv)
    if args.label_cost:
        cost = label_cost(args)
        if not args.json:
            print(hardware())
        print(json.dumps(cost, indent=None if args.json else 2))
        return 0
    kinds = ("table", "furniture") if args.scene == "both" else (args.scene,)
    results = [run(args, noise, kind) for kind in kinds for noise in (None, DepthNoise())]
    if args.json:
        print(json.dumps({"args": vars(args), "results": results}))
        return 0
    print(hardware())
    print(f"{args.seeds} scenes per kind x {args.cameras} RGB-D cameras at {args.width}x{args.height}, batch of one "
          f"request, {args.repeats} timed runs per scene after one warm-up; ambiguous layouts "
          f"{'allowed' if args.ambiguous else 're-drawn'}")
    for result in results:
        print(f"\n{result['scene']} scene, {'with' if result['noise'] else 'without'} depth noise:")
        for key, value in result.items():
            if key not in ("noise", "scene"):
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
