"""Time to first token of a 32-frame question: frames encoded ahead (``OryxEngine.encode_into_cache``, what the
node does while idle) vs cold (every frame through the ViT when the question comes) vs the LLM alone.

Per run, with frame keys never seen before (batch size 1, one camera, ``mode='video'``, 4x):

* cold: ``answer()``; TTFT = the call to its first streamed token;
* warm: ``encode_into_cache()`` first (not timed: the node does it before the question), then ``answer()``;
* reference: prefill of a prompt of the same length (random embeddings: the LLM's cost depends on the
  shape only) plus one decode step, i.e. what a question costs with no vision, planning or merging at all.

Goal (issue "Speed"): warm TTFT <= 1.3 x reference. Medians of ``--repeats`` runs after one warm-up run that is
not counted; every figure is a ratio to a reference measured in the same run.

    python bench/bench_encode_ahead.py                                   # tiny random checkpoint, CPU
    python bench/bench_encode_ahead.py --model /path/to/Oryx-7B --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path

import torch
from bench_engine import hardware, make_frames

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.generation import decode_one_token, prefill

_keys = itertools.count()


def _sync(engine: OryxEngine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize(engine.device)


def visual(frames: list, label: str = "Camera front") -> VisualInput:
    """The frames under keys never used before: nothing of them is in the token cache."""
    return VisualInput(frames, keys=[next(_keys) for _ in frames], label=label,
                       stamps_ns=[i * 100_000_000 for i in range(len(frames))])


def ttft(engine: OryxEngine, item: VisualInput, args: argparse.Namespace) -> tuple[float, dict]:
    """(seconds from the call to the first streamed token, the answer's counts)."""
    first: list[float] = []
    _sync(engine)
    start = time.perf_counter()
    answer = engine.answer(args.question, [item], mode="video", max_new_tokens=args.max_new_tokens,
                           on_token=lambda _delta, _n: first.append(time.perf_counter()) if not first else None)
    assert first, "no token was streamed"
    return first[0] - start, {"prompt_tokens": answer.prompt_tokens, "frames_encoded": answer.frames_encoded,
                              "frames_from_cache": answer.frames_from_cache, "compression": answer.compression}


@torch.no_grad()
def llm_alone(engine: OryxEngine, prompt_tokens: int) -> float:
    """Prefill of ``prompt_tokens`` positions plus one decode step, in seconds."""
    model = engine.model
    embeds = torch.randn(1, prompt_tokens, engine.config.hidden_size, dtype=engine.dtype, device=engine.device)
    _sync(engine)
    start = time.perf_counter()
    logits, cache = prefill(model, embeds)
    next_id = logits.argmax(dim=-1, keepdim=True)
    decode_one_token(model, next_id, cache).argmax(dim=-1).item()  # .item(): the step has finished
    return time.perf_counter() - start


def run(engine: OryxEngine, frames: list, args: argparse.Namespace) -> dict:
    cold_s, cold = ttft(engine, visual(frames), args)
    assert cold["frames_encoded"] == len(frames), cold
    ahead = visual(frames)
    _sync(engine)
    start = time.perf_counter()
    report = engine.encode_into_cache([ahead], "video", question=args.question, max_new_tokens=args.max_new_tokens)
    _sync(engine)
    encode_s = time.perf_counter() - start
    warm_s, warm = ttft(engine, ahead, args)
    assert report.encoded == len(frames) and warm["frames_from_cache"] == len(frames), (report, warm)
    reference_s = llm_alone(engine, warm["prompt_tokens"])
    return {"cold_s": cold_s, "warm_s": warm_s, "reference_s": reference_s, "encode_ahead_s": encode_s,
            "prompt_tokens": warm["prompt_tokens"], "compression": warm["compression"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--attn", default="sdpa", help="LLM attention implementation")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--question", default="What happens in this clip?")
    args = parser.parse_args(argv)

    model_dir = args.model
    if model_dir is None:
        from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

        model_dir = ensure_tiny_checkpoint()
        print("(tiny RANDOM checkpoint: timings of the pipeline, not of a real model)", file=sys.stderr)
    engine = OryxEngine.from_pretrained(model_dir, device=args.device, attn_implementation=args.attn,
                                        dtype=getattr(torch, args.dtype) if args.dtype else None)
    frames = make_frames(args.frames, args.width, args.height, seed=args.frames)
    run(engine, frames, args)  # warm-up: allocators, kernels, position-embedding caches
    runs = [run(engine, frames, args) for _ in range(args.repeats)]

    def median(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"model: {engine.model_name}  device: {engine.device}  dtype: {engine.dtype}")
    print(hardware())
    print(f"batch size 1, one camera, {args.frames} frames of {args.width}x{args.height} at "
          f"{runs[0]['compression']} ({runs[0]['prompt_tokens']} prompt tokens), max_new_tokens "
          f"{args.max_new_tokens}, median of {args.repeats} runs after 1 warm-up\n")
    print(f"{'time to first token':<44} {'median':>9}")
    print(f"{'cold (frames encoded when the question comes)':<44} {median('cold_s') * 1e3:>7.1f}ms")
    print(f"{'warm (frames encoded ahead, while idle)':<44} {median('warm_s') * 1e3:>7.1f}ms")
    print(f"{'reference: prefill + first decode step only':<44} {median('reference_s') * 1e3:>7.1f}ms")
    print(f"{'(encoding ahead itself, off the question)':<44} {median('encode_ahead_s') * 1e3:>7.1f}ms")
    warm_vs_reference = median("warm_s") / median("reference_s")
    print("\nratios in this run:")
    print(f"  warm / cold TTFT        {median('warm_s') / median('cold_s'):.3f}")
    print(f"  warm / reference        {warm_vs_reference:.2f}  (goal <= 1.3: "
          f"{'met' if warm_vs_reference <= 1.3 else 'NOT met'})")
    print(f"  cold / reference        {median('cold_s') / median('reference_s'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
