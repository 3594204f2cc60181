"""Stage timings of the Oryx engine: preprocess, vision, prefill, decode; cold vs warm token cache.

Scenarios (batch size 1, one visual item): one still image (1x), a clip of 8 and of 32 frames (4x).
Each scenario is timed cold (frame keys never seen: every frame goes through the ViT) and warm (the same
keys again: every frame comes from the token cache), ``--repeats`` times after one warm-up run that is
not counted; medians are reported. Absolute numbers depend on the machine, so the headline figures are
ratios measured in the same run: warm/cold time to first token (TTFT) and warm/cold vision time.

Default: the tiny random checkpoint on CPU (pipeline overheads, not model quality). For a real model:

    python bench/bench_engine.py --model /path/to/Oryx-7B --device cuda --dtype bfloat16

The device is synchronised before every clock read (the engine does it per stage).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from machine import cpu_model

from oryx_ros.model.engine import OryxEngine, VisualInput

STAGES = ("preprocess_s", "vision_s", "prefill_s", "decode_s", "total_s")
_keys = itertools.count()


@dataclass
class Scenario:
    name: str
    num_frames: int
    mode: str


SCENARIOS = (Scenario("1 image", 1, "auto"), Scenario("8 frames", 8, "video"), Scenario("32 frames", 32, "video"))


def hardware() -> str:
    cpu = cpu_model()
    lines = [f"CPU: {cpu}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()}",
             f"torch {torch.__version__}, python {platform.python_version()}, {platform.platform()}"]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}")
    return "\n".join(lines)


def make_frames(n: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def run_once(engine: OryxEngine, scenario: Scenario, frames: list[np.ndarray], keys: list[int], args) -> dict:
    streamed: list[int] = []  # streaming on, as the ROS node runs it
    visual = VisualInput(frames, keys=keys, stamps_ns=[i * 33_000_000 for i in range(len(frames))])
    answer = engine.answer(args.question, [visual], mode=scenario.mode, max_new_tokens=args.max_new_tokens,
                           on_token=lambda _d, n: streamed.append(n))
    t = dict(answer.timings)
    t["ttft_s"] = t["preprocess_s"] + t["vision_s"] + t["prefill_s"]
    t["decode_tok_s"] = (answer.new_tokens - 1) / t["decode_s"] if answer.new_tokens > 1 and t["decode_s"] > 0 else 0.0
    t["new_tokens"] = answer.new_tokens
    t["prompt_tokens"] = answer.prompt_tokens
    t["visual_tokens"] = answer.visual_tokens
    t["compression"] = answer.compression
    t["frames_encoded"] = answer.frames_encoded
    t["frames_from_cache"] = answer.frames_from_cache
    return t


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bench_scenario(engine: OryxEngine, scenario: Scenario, args) -> dict:
    frames = make_frames(scenario.num_frames, args.width, args.height, seed=scenario.num_frames)
    warmup_keys = [next(_keys) for _ in frames]
    run_once(engine, scenario, frames, warmup_keys, args)  # warm-up: allocators, kernels, pos-embed cache
    cold, warm = [], []
    for _ in range(args.repeats):
        keys = [next(_keys) for _ in frames]  # never seen: all misses
        cold.append(run_once(engine, scenario, frames, keys, args))
        warm.append(run_once(engine, scenario, frames, keys, args))  # same keys: all hits
    assert all(r["frames_encoded"] == 0 for r in warm), "warm runs must be served from the cache"
    return {"scenario": scenario.name, "frames": scenario.num_frames, "cold": cold, "warm": warm}


def report(results: list[dict], args, engine: OryxEngine) -> None:
    print(f"model: {engine.model_name}  device: {engine.device}  dtype: {engine.dtype}  "
          f"context: {engine.context_limit}")
    print(hardware())
    print(f"batch size 1, frame size {args.width}x{args.height}, max_new_tokens {args.max_new_tokens}, "
          f"median of {args.repeats} runs after 1 warm-up\n")
    header = (f"{'scenario':<10} {'cache':<5} {'comp':>4} {'vis tok':>7} {'prompt':>6} {'preproc':>8} "
              f"{'vision':>8} {'prefill':>8} {'TTFT':>8} {'decode':>8} {'tok/s':>7}")
    print(header)
    print("-" * len(header))
    for result in results:
        for label in ("cold", "warm"):
            runs = result[label]
            r0 = runs[0]
            print(f"{result['scenario']:<10} {label:<5} {r0['compression']:>4} {r0['visual_tokens']:>7} "
                  f"{r0['prompt_tokens']:>6} {median(runs, 'preprocess_s') * 1e3:>6.1f}ms "
                  f"{median(runs, 'vision_s') * 1e3:>6.1f}ms {median(runs, 'prefill_s') * 1e3:>6.1f}ms "
                  f"{median(runs, 'ttft_s') * 1e3:>6.1f}ms {median(runs, 'decode_s') * 1e3:>6.1f}ms "
                  f"{median(runs, 'decode_tok_s'):>7.1f}")
    print("\nratios in this run (warm / cold; lower is better):")
    for result in results:
        cold_ttft, warm_ttft = median(result["cold"], "ttft_s"), median(result["warm"], "ttft_s")
        cold_vis, warm_vis = median(result["cold"], "vision_s"), median(result["warm"], "vision_s")
        print(f"  {result['scenario']:<10} TTFT {warm_ttft / cold_ttft:.3f}   vision {warm_vis / cold_vis:.3f}   "
              f"(preprocess+vision share of cold TTFT: "
              f"{(median(result['cold'], 'preprocess_s') + cold_vis) / cold_ttft:.0%})")
    stats = engine.cache_stats()
    print(f"\ntoken cache: {stats.hits} hits, {stats.misses} misses, {stats.evictions} evictions, "
          f"{stats.entries} entries, {stats.bytes_used / 1e6:.1f} MB of {stats.max_bytes / 1e6:.0f} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--attn", default="sdpa", help="LLM attention implementation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--question", default="Describe what happens.")
    parser.add_argument("--json", type=Path, default=None, help="also write all runs to this JSON file")
    args = parser.parse_args(argv)

    model_dir = args.model
    if model_dir is None:
        from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

        model_dir = ensure_tiny_checkpoint()
        print("(tiny RANDOM checkpoint: timings of the pipeline, not of a real model)", file=sys.stderr)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    engine = OryxEngine.from_pretrained(model_dir, device=args.device, dtype=dtype,
                                        attn_implementation=args.attn)
    results = [bench_scenario(engine, scenario, args) for scenario in SCENARIOS]
    report(results, args, engine)
    if args.json is not None:
        args.json.write_text(json.dumps({"hardware": hardware(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
