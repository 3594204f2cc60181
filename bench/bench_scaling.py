"""Scaling of the Oryx engine with frames (8 → 256, at 4x and 16x) and cameras (1 → 4), under the planner.

For each point one request goes through :meth:`OryxEngine.answer` (batch size 1, 640x480 frames, token cache
off, so every frame is preprocessed and encoded) and the script records the engine's stage times (preprocess,
vision, prefill, decode), the plan (frames used, visual and prompt tokens: the planner drops frames once the
context limit is reached) and the peak memory the request added:

* CPU: peak RSS above the RSS at the start of the request (Linux ``VmHWM``, reset through
  ``/proc/self/clear_refs``; free heap memory is returned with ``malloc_trim`` first, so one request's
  leftovers do not hide the next one's growth). It counts torch's CPU tensors, which ``tracemalloc`` does not see.
* CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the start.

Default: the tiny random checkpoint on CPU, which measures the pipeline (preprocessing, packing, planning,
attention over long prompts), not a real model's speed. ``--model DIR --device cuda --dtype bfloat16`` runs a
real checkpoint. ``--plot-dir docs/images`` writes ``scaling_frames.png`` and ``scaling_cameras.png``.

    python bench/bench_scaling.py --plot-dir docs/images --json /tmp/scaling.json   # ~3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from machine import cpu_model

from oryx_ros.model.engine import OryxEngine, VisualInput

STAGES: Final = ("preprocess_s", "vision_s", "prefill_s", "decode_s")
STAGE_LABELS: Final = {"preprocess_s": "preprocess", "vision_s": "vision (ViT + compressor + projector)",
                       "prefill_s": "prefill", "decode_s": "decode"}
MODE_LABELS: Final = {"video": "4x (video)", "video_long": "16x (video_long)", "auto": "auto"}
FRAME_PERIOD_NS: Final = 100_000_000  # 10 Hz camera


# ----------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory a block adds, in bytes: CUDA allocator peak, else peak RSS (Linux), else sampled RSS."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._libc = None
        with contextlib.suppress(OSError):
            self._libc = ctypes.CDLL("libc.so.6")
        self.method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS (VmHWM)"

    @staticmethod
    def _status_kib(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise KeyError(field)

    @contextlib.contextmanager
    def measure(self, out: dict[str, float]):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            start = torch.cuda.memory_allocated(self.device)
            yield
            torch.cuda.synchronize(self.device)
            out["peak_added_mib"] = (torch.cuda.max_memory_allocated(self.device) - start) / 2**20
            return
        if self._libc is not None:
            self._libc.malloc_trim(0)  # give free heap pages back, so they count again when reused
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM (the peak RSS) to the current RSS
        start = self._status_kib("VmRSS")
        yield
        out["peak_added_mib"] = (self._status_kib("VmHWM") - start) / 1024


# ----------------------------------------------------------------------------------------- runs
def make_frames(n: int, width: int, height: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 5 * i, axis=1) for i in range(n)]  # distinct frames, cheap to make


def run_point(engine: OryxEngine, memory: PeakMemory, visuals: list[VisualInput], mode: str, max_frames: int,
              args) -> dict[str, Any]:
    runs = []
    for _ in range(args.repeats):
        measured: dict[str, float] = {}
        with memory.measure(measured):
            answer = engine.answer(args.question, visuals, mode=mode, max_new_tokens=args.max_new_tokens,
                                   max_frames=max_frames)
        runs.append((answer, measured["peak_added_mib"]))
    answer = runs[-1][0]
    row: dict[str, Any] = {key: statistics.median(a.timings[key] for a, _ in runs) for key in (*STAGES, "total_s")}
    row.update(
        ttft_s=row["preprocess_s"] + row["vision_s"] + row["prefill_s"],
        peak_added_mib=max(m for _, m in runs),
        frames_offered=answer.frames_offered, frames_used=answer.frames_used, compression=answer.compression,
        visual_tokens=answer.visual_tokens, prompt_tokens=answer.prompt_tokens, new_tokens=answer.new_tokens,
    )
    return row


def sweep_frames(engine: OryxEngine, memory: PeakMemory, args) -> list[dict[str, Any]]:
    rows = []
    for mode in ("video", "video_long"):
        for n in args.frames:
            frames = make_frames(n, args.width, args.height, seed=n)
            visual = VisualInput(frames, stamps_ns=[i * FRAME_PERIOD_NS for i in range(n)], label="Camera front")
            row = {"mode": mode, "cameras": 1, **run_point(engine, memory, [visual], mode, n, args)}
            rows.append(row)
            print(f"  frames {n:>3} {mode:<10} used {row['frames_used']:>3}  prompt {row['prompt_tokens']:>5}  "
                  f"TTFT {row['ttft_s']:6.2f} s  +{row['peak_added_mib']:6.0f} MiB", file=sys.stderr, flush=True)
    return rows


def sweep_cameras(engine: OryxEngine, memory: PeakMemory, args) -> list[dict[str, Any]]:
    rows = []
    names = ("front", "left", "right", "rear")
    for cameras in range(1, args.max_cameras + 1):
        visuals = [VisualInput(make_frames(args.frames_per_camera, args.width, args.height, seed=100 + c),
                               stamps_ns=[i * FRAME_PERIOD_NS for i in range(args.frames_per_camera)],
                               label=f"Camera {names[c % len(names)]}") for c in range(cameras)]
        row = {"mode": "auto", "cameras": cameras,
               **run_point(engine, memory, visuals, "auto", args.frames_per_camera, args)}
        rows.append(row)
        print(f"  cameras {cameras} × {args.frames_per_camera} frames: {row['compression']} "
              f"used {row['frames_used']:>3}  prompt {row['prompt_tokens']:>5}  TTFT {row['ttft_s']:6.2f} s  "
              f"+{row['peak_added_mib']:6.0f} MiB",
              file=sys.stderr, flush=True)
    return rows


# ----------------------------------------------------------------------------------------- output
def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}\n")
    header = (f"{'cams':>4} {'mode':<10} {'offered':>7} {'used':>4} {'comp':>4} {'prompt':>6} {'preproc':>8} "
              f"{'vision':>8} {'prefill':>8} {'decode':>8} {'TTFT':>8} {'peak+MiB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['cameras']:>4} {r['mode']:<10} {r['frames_offered']:>7} {r['frames_used']:>4} {r['compression']:>4} "
              f"{r['prompt_tokens']:>6} {r['preprocess_s']:>7.2f}s {r['vision_s']:>7.2f}s {r['prefill_s']:>7.2f}s "
              f"{r['decode_s']:>7.2f}s {r['ttft_s']:>7.2f}s {r['peak_added_mib']:>8.0f}")


def plot(frames_rows: list[dict], camera_rows: list[dict], directory: Path, subtitle: str, context: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    colors = {"preprocess_s": "tab:blue", "vision_s": "tab:orange", "prefill_s": "tab:green", "decode_s": "tab:red"}
    styles = {"video": "-", "video_long": "--"}
    written = []

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for mode in ("video", "video_long"):
        rows = [r for r in frames_rows if r["mode"] == mode]
        x = [r["frames_offered"] for r in rows]
        for stage in STAGES:
            axes[0].plot(x, [r[stage] for r in rows], styles[mode], marker="o", ms=3, color=colors[stage],
                         label=f"{STAGE_LABELS[stage].split(' ')[0]} {MODE_LABELS[mode].split(' ')[0]}")
        axes[1].plot(x, [r["peak_added_mib"] for r in rows], styles[mode], marker="o", color="tab:purple",
                     label=MODE_LABELS[mode])
        axes[2].plot(x, [r["prompt_tokens"] for r in rows], styles[mode], marker="o", color="tab:gray",
                     label=f"prompt tokens {MODE_LABELS[mode].split(' ')[0]}")
        for r in rows:
            if r["frames_used"] < r["frames_offered"]:
                axes[2].annotate(f"{r['frames_used']} of {r['frames_offered']}\nframes kept",
                                 (r["frames_offered"], r["prompt_tokens"]), textcoords="offset points",
                                 xytext=(-70, -28), fontsize=8, arrowprops={"arrowstyle": "->", "lw": 0.6})
    axes[2].axhline(context, color="black", lw=0.8, ls=":", label=f"context limit {context}")
    titles = ("time per stage (s)", "peak memory added by the request (MiB)", "prompt tokens (planner)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["frames_offered"] for r in frames_rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("frames offered (1 camera, 640x480)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2)
    axes[1].legend(fontsize=8)
    axes[2].legend(fontsize=8)
    fig.suptitle(f"Scaling with frames — solid 4x, dashed 16x — {subtitle}", fontsize=10)
    fig.tight_layout()
    path = directory / "scaling_frames.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    x = np.array([r["cameras"] for r in camera_rows])
    bottom = np.zeros(len(camera_rows))
    for stage in STAGES:
        values = np.array([r[stage] for r in camera_rows])
        axes[0].bar(x, values, bottom=bottom, color=colors[stage], label=STAGE_LABELS[stage])
        bottom += values
    for r, top in zip(camera_rows, bottom, strict=True):
        axes[0].annotate(f"{r['compression']}, {r['frames_used']} fr", (r["cameras"], top), ha="center",
                         textcoords="offset points", xytext=(0, 3), fontsize=8)
    axes[0].set_title("time per stage (s), stacked", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].bar(x, [r["peak_added_mib"] for r in camera_rows], color="tab:purple")
    axes[1].set_title("peak memory added by the request (MiB)", fontsize=10)
    per_camera = camera_rows[0]["frames_offered"]
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xlabel(f"cameras ({per_camera} frames each, 640x480, mode auto)")
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"Scaling with cameras — {subtitle}", fontsize=10)
    fig.tight_layout()
    path = directory / "scaling_cameras.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint dir (default: tiny random model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None)
    parser.add_argument("--frames", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--max-cameras", type=int, default=4)
    parser.add_argument("--frames-per-camera", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="runs per point (median; memory: max)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--question", default="What changed over time, and where?")
    parser.add_argument("--plot-dir", type=Path, default=None, help="write scaling_frames.png, scaling_cameras.png")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    model_dir = args.model
    if model_dir is None:
        from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

        model_dir = ensure_tiny_checkpoint()
    dtype = getattr(torch, args.dtype) if args.dtype else None
    engine = OryxEngine.from_pretrained(model_dir, device=args.device, dtype=dtype, cache_bytes=0, progress=False)
    memory = PeakMemory(engine.device)
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else cpu_model()
    what = "tiny RANDOM checkpoint: pipeline cost, not a real model's speed" if args.model is None else model_dir.name
    print(f"model: {engine.model_name} ({what}); device {engine.device} ({device_name}), dtype {engine.dtype}, "
          f"torch threads {torch.get_num_threads()}; context {engine.context_limit}; batch size 1, "
          f"{args.width}x{args.height} frames, {args.max_new_tokens} new tokens, token cache off, "
          f"median of {args.repeats}; memory: {memory.method} above the request's start")

    started = time.monotonic()
    warm = VisualInput(make_frames(4, args.width, args.height, seed=0))
    for mode in ("video", "video_long"):  # warm-up, not counted: allocator, kernels, position-embedding cache
        engine.answer(args.question, [warm], mode=mode, max_new_tokens=2)
    print("frames sweep ...", file=sys.stderr, flush=True)
    frames_rows = sweep_frames(engine, memory, args)
    print("cameras sweep ...", file=sys.stderr, flush=True)
    camera_rows = sweep_cameras(engine, memory, args)
    print_table("Frames (1 camera; max_frames = frames offered, so only the context limit drops frames)", frames_rows)
    print_table(f"Cameras ({args.frames_per_camera} frames each, mode auto)", camera_rows)

    by_mode = {m: {r["frames_offered"]: r for r in frames_rows if r["mode"] == m} for m in ("video", "video_long")}
    lo, hi = min(args.frames), max(args.frames)
    print("\nratios in this run:")
    for mode, rows in by_mode.items():
        a, b = rows[lo], rows[hi]
        print(f"  {MODE_LABELS[mode]:<17} {hi} vs {lo} frames offered ({b['frames_used']} vs {a['frames_used']} used): "
              f"TTFT ×{b['ttft_s'] / a['ttft_s']:.1f}, vision ×{b['vision_s'] / a['vision_s']:.1f}, "
              f"prefill ×{b['prefill_s'] / a['prefill_s']:.1f}, peak memory ×"
              f"{b['peak_added_mib'] / max(a['peak_added_mib'], 1e-9):.1f}")
    common = sorted(set(by_mode["video"]) & set(by_mode["video_long"]))
    for n in common:
        v, vl = by_mode["video"][n], by_mode["video_long"][n]
        print(f"  {n:>3} frames: 16x / 4x TTFT {vl['ttft_s'] / v['ttft_s']:.2f}, prompt tokens "
              f"{vl['prompt_tokens'] / v['prompt_tokens']:.2f}")
    c1, cn = camera_rows[0], camera_rows[-1]
    print(f"  cameras {cn['cameras']} vs 1: TTFT ×{cn['ttft_s'] / c1['ttft_s']:.1f}, "
          f"peak memory ×{cn['peak_added_mib'] / max(c1['peak_added_mib'], 1e-9):.1f}")
    print(f"\n(sweeps took {time.monotonic() - started:.0f} s)")

    subtitle = f"{what.split(':')[0]}, {device_name}, {engine.dtype}".replace("torch.", "")
    if args.plot_dir is not None:
        for path in plot(frames_rows, camera_rows, args.plot_dir, subtitle, engine.context_limit):
            print(f"wrote {path}", file=sys.stderr)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": device_name, "model": str(model_dir), "frames": frames_rows,
                                         "cameras": camera_rows, "memory_method": memory.method}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
