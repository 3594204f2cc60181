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

    python bench/bench_spatial.py --seeds 5 --width 640 --height 480
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
from oryx_ros.spatial.scene_graph import build_scene
from oryx_ros.spatial.synthetic_scene import DepthNoise, LayoutParams, make_scene

STAGES = ("fuse", "planes", "cluster", "instances", "marks", "relations")


def hardware() -> str:
    import open3d

    cpu = cpu_model()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"CPU: {cpu}, {os.cpu_count()} logical cores (load average {load:.1f}), no GPU used\n"
            f"numpy {np.__version__}, open3d {open3d.__version__}, python {platform.python_version()}, "
            f"{platform.platform()}")


def run(args: argparse.Namespace, noise: DepthNoise | None) -> dict:
    layout = LayoutParams(ambiguity_margin_m=0.0) if args.ambiguous else LayoutParams()
    errors, pairs, pairs_ok, decisions, decisions_ok, marks, marks_ok, unmatched, spurious = [], 0, 0, 0, 0, 0, 0, 0, 0
    stage_times: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
    for seed in range(args.seeds):
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
    return {
        "noise": noise is not None,
        "objects_recovered": f"{len(errors)}/{len(errors) + unmatched}",
        "spurious_objects": spurious,
        "centre_error_cm": {"mean": round(100 * float(np.mean(errors)), 2),
                            "p95": round(100 * float(np.percentile(errors, 95)), 2),
                            "max": round(100 * float(np.max(errors)), 2)},
        "relation_pairs_agreeing": f"{pairs_ok}/{pairs} ({100 * pairs_ok / pairs:.1f}%)",
        "relation_decisions_agreeing": f"{decisions_ok}/{decisions} ({100 * decisions_ok / decisions:.2f}%)",
        "marks_on_their_object": f"{marks_ok}/{marks}",
        "median_s": {stage: round(statistics.median(times), 3) for stage, times in stage_times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cameras", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ambiguous", action="store_true", help="allow layouts with borderline relations")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    results = [run(args, None), run(args, DepthNoise())]
    if args.json:
        print(json.dumps({"args": vars(args), "results": results}))
        return 0
    print(hardware())
    print(f"{args.seeds} scenes x {args.cameras} RGB-D cameras at {args.width}x{args.height}, batch of one "
          f"request, {args.repeats} timed runs per scene after one warm-up; ambiguous layouts "
          f"{'allowed' if args.ambiguous else 're-drawn'}")
    for result in results:
        print(f"\n{'with' if result['noise'] else 'without'} depth noise:")
        for key, value in result.items():
            if key != "noise":
                print(f"  {key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
