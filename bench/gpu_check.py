"""GPU readiness check: an Oryx-7B-shaped random bf16 model, time to first token and decode speed → JSON.

What it measures (batch size 1, 640x480 frames, the engine with its planner, no token cache):

* time to first token (preprocess + vision + prefill + first token) for 16, 64 and 256 frames at 4x
  (``video``) and 16x (``video_long``), with ``max_frames`` = the frame count, so only the context limit
  (32768 for Oryx-7B) drops frames — the JSON records how many were used and the visual tokens;
* decode tokens/s at two prompt lengths for three decode paths: the eager ``DynamicCache`` loop, the
  static cache (eager), and the static cache with a compiled step (``mode='reduce-overhead'``: CUDA graphs);
* peak memory (``torch.cuda.max_memory_allocated`` per phase; peak RSS on CPU);
* the ratio of each decode rate to the memory-bandwidth bound: bandwidth / bytes read per token, where a
  token reads every LLM weight except the embedding table (lm_head included, all rows) plus the KV cache
  (its full static length on the static paths).

The weights are random and never touch the disk: the model is built straight on the device in bf16 and
filled with N(0, 0.02²) (norms 1). Writing and re-reading a 16 GB checkpoint would take minutes of the
8-minute budget and measure the disk, not the GPU. Real checkpoints load through ``loading.load_oryx``:
pass ``--checkpoint DIR`` to time one that way instead. ``--tiny`` runs the same code with the tiny
configuration on CPU in seconds (what CI runs, ``test/model/test_gpu_check.py``).

The JSON is rewritten after every phase, so a run cut short still leaves what it measured; phases that
would start after ``--deadline-s`` are skipped and listed under ``skipped``.

    bash bench/gpu_check.sh /tmp/gpu_check.json          # the lent-GPU run (< 8 minutes)
    python bench/gpu_check.py --tiny --out /tmp/tiny.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from oryx_ros.model.configuration_oryx import OryxConfig
from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.generation import GenerationSettings, generate
from oryx_ros.model.kv_cache import StaticDecoder
from oryx_ros.model.loading import LoadedOryx, load_oryx, load_tokenizer
from oryx_ros.model.modeling_oryx import OryxForCausalLM
from oryx_ros.model.modeling_oryx_vit import _flash_attn_varlen_func
from oryx_ros.model.tiny_checkpoint import qwen_tokenizer_dir, tiny_config_dict, tiny_generation_config_dict

# Oryx-7B = Qwen2-7B + OryxViT (spec §0): D 3584, 28 layers, 28/4 heads, MLP 18944; ViT 1152 wide, 27 deep.
ORYX_7B_SHAPE: Final = dict(hidden_size=3584, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                            intermediate_size=18944, vision_width=1152, vision_depth=27, vision_heads=16,
                            vision_mlp=4304, vision_image_size=2048)
# Peak HBM bandwidth (GB/s) by a substring of torch.cuda.get_device_name(); first match wins. Vendor datasheets.
BANDWIDTH_GBS: Final = (
    ("H200", 4800.0), ("H100 NVL", 3900.0), ("H100 PCIe", 2000.0), ("H100", 3350.0),  # H100 SXM: "H100 80GB HBM3"
    ("A100-SXM4-80GB", 2039.0), ("A100 80GB PCIe", 1935.0), ("A100-PCIE-80GB", 1935.0), ("A100", 1555.0),
    ("L40S", 864.0), ("A10G", 600.0), ("L4", 300.0), ("RTX 4090", 1008.0),
)
WEIGHT_STD: Final = 0.02


def bandwidth_for(device_name: str) -> float | None:
    """Peak memory bandwidth in GB/s for a CUDA device name, None when unknown."""
    for key, gbs in BANDWIDTH_GBS:
        if key in device_name:
            return gbs
    return None


# ----------------------------------------------------------------------------------------- model
def random_model(config: OryxConfig, device: torch.device, dtype: torch.dtype, seed: int = 0) -> OryxForCausalLM:
    """The model built directly on ``device`` in ``dtype`` with random weights: nothing is written or read."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = OryxForCausalLM(config, attn_implementation="sdpa", vit_attn_implementation="auto")
    finally:
        torch.set_default_dtype(previous)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, WEIGHT_STD, generator=generator)
    return model.eval().requires_grad_(False)


def llm_weight_bytes(model: OryxForCausalLM) -> int:
    """Bytes of the weights one decode step reads: every LLM weight except the embedding table."""
    total = sum(p.numel() * p.element_size() for n, p in model.model.layers.named_parameters())
    total += sum(p.numel() * p.element_size() for p in model.model.norm.parameters())
    return total + model.lm_head.weight.numel() * model.lm_head.weight.element_size()


def kv_bytes_per_position(model: OryxForCausalLM) -> int:
    """Bytes of keys and values one position holds over all layers."""
    llm = model.llm_config
    head_dim = getattr(llm, "head_dim", None) or llm.hidden_size // llm.num_attention_heads
    return 2 * llm.num_hidden_layers * llm.num_key_value_heads * head_dim * model.dtype.itemsize


# ----------------------------------------------------------------------------------------- helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        return {"peak_allocated_gib": torch.cuda.max_memory_allocated(device) / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}
    return {"process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def frames(n: int, width: int = 640, height: int = 480, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, 7 * i, axis=1) for i in range(n)]  # distinct frames without n random draws


class Report:
    """The JSON document, rewritten after every phase."""

    def __init__(self, path: Path, deadline_s: float) -> None:
        self.path = path
        self.started = time.monotonic()
        self.deadline_s = deadline_s
        self.data: dict[str, Any] = {"skipped": []}

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def phase(self, name: str, estimate_s: float, run: Callable[[], Any]) -> Any:
        """Run a phase unless it would end after the deadline (by its estimate); store and write its result."""
        if self.elapsed() + estimate_s > self.deadline_s:
            self.data["skipped"].append(name)
            print(f"[gpu_check] skip {name}: {self.elapsed():.0f} s elapsed, ~{estimate_s:.0f} s needed", flush=True)
            self.write()
            return None
        print(f"[gpu_check] {name} ...", flush=True)
        started = time.monotonic()
        try:
            value = run()
        except Exception as error:  # keep the other phases' results
            value = {"error": f"{type(error).__name__}: {error}"}
            print(f"[gpu_check] {name} failed: {value['error']}", flush=True)
        self.data[name] = value
        self.data.setdefault("phase_wall_s", {})[name] = round(time.monotonic() - started, 2)
        self.write()
        return value

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------- phases
def ttft(engine: OryxEngine, counts: list[int], modes: list[str], repeats: int) -> list[dict[str, Any]]:
    """Time to first token per (frames, mode): one uncounted warm-up per case, median of ``repeats``."""
    rows = []
    for mode in modes:
        for n in counts:
            visual = VisualInput(frames(n, seed=n), stamps_ns=[i * 100_000_000 for i in range(n)])
            runs = []
            reset_peak(engine.device)
            for _ in range(repeats + 1):
                answer = engine.answer("Describe what happens.", [visual], mode=mode, max_new_tokens=1, max_frames=n)
                runs.append(answer)
            timed = runs[1:]
            t = {key: statistics.median(a.timings[key] for a in timed)
                 for key in ("preprocess_s", "vision_s", "prefill_s", "total_s")}
            last = timed[-1]
            rows.append({
                "frames_offered": n, "mode": mode, "compression": last.compression, "frames_used": last.frames_used,
                "visual_tokens": last.visual_tokens, "prompt_tokens": last.prompt_tokens,
                "ttft_s": t["total_s"], **t, "runs": len(timed), **peak_memory(engine.device),
            })
            print(f"[gpu_check]   {mode:<10} {n:>3} frames → {last.frames_used} used, {last.prompt_tokens} tokens, "
                  f"TTFT {t['total_s']:.3f} s", flush=True)
    return rows


def decode(model: OryxForCausalLM, prompt_lengths: list[int], new_tokens: int, paths: list[str],
           bandwidth_gbs: float | None, repeats: int = 3, time_left: Callable[[], float] = lambda: float("inf"),
           per_length_s: float = 0.0) -> list[dict[str, Any]]:
    """Decode tokens/s per (prompt length, path): median of ``repeats`` runs, the paths interleaved so load
    drifts hit them alike; no EOS (random ids until ``new_tokens``). A length is skipped (row with
    ``skipped``) when less than ``per_length_s`` of ``time_left()`` remains. Peak memory: over all paths."""
    device, dtype = model.embed_device, model.dtype
    weights = llm_weight_bytes(model)
    kv_per_pos = kv_bytes_per_position(model)
    settings = GenerationSettings(max_new_tokens=new_tokens, repetition_penalty=1.05)  # as Oryx-7B ships it
    statics = {path: None if path == "dynamic" else StaticDecoder(model, compile=path == "static_compiled")
               for path in paths}
    rows = []
    for length in prompt_lengths:
        if time_left() < per_length_s:
            rows += [{"path": path, "prompt_tokens": length, "skipped": "deadline"} for path in paths]
            continue
        generator = torch.Generator(device=device).manual_seed(length)
        embeds = torch.randn(1, length, model.config.hidden_size, generator=generator, device=device, dtype=dtype)
        embeds *= 0.02
        warmup_s: dict[str, float] = {}
        for path, static in statics.items():  # warm-up, not counted: compiles and records the graph per bucket
            started = time.perf_counter()
            if static is not None and static.compiled:
                static.warmup(length)
            generate(model, embeds, None, GenerationSettings(max_new_tokens=3), static=static)
            sync(device)
            warmup_s[path] = time.perf_counter() - started
        reset_peak(device)
        rates: dict[str, list[float]] = {path: [] for path in paths}
        for _ in range(repeats):
            for path, static in statics.items():
                sync(device)
                result = generate(model, embeds, None, settings, static=static)
                sync(device)
                rates[path].append(result.decode_tokens_per_s)
        memory = peak_memory(device)
        for path, static in statics.items():
            kv_positions = static.cache_length(length + new_tokens) if static is not None else length + new_tokens // 2
            bytes_per_token = weights + kv_per_pos * kv_positions
            tok_s = statistics.median(rates[path])
            row = {"path": path, "prompt_tokens": length, "new_tokens": new_tokens, "decode_tok_s": tok_s,
                   "runs_tok_s": rates[path], "ms_per_token": 1e3 / tok_s if tok_s else None,
                   "bytes_per_token_gb": bytes_per_token / 1e9, "kv_positions_read": kv_positions,
                   "warmup_s": warmup_s[path], **memory}
            if bandwidth_gbs:
                bound = bandwidth_gbs * 1e9 / bytes_per_token
                row.update(bound_tok_s=bound, ratio_to_bound=tok_s / bound, achieved_gbs=tok_s * bytes_per_token / 1e9)
            rows.append(row)
            print(f"[gpu_check]   {path:<15} prompt {length:>6}: {tok_s:.1f} tok/s"
                  + (f" ({row['ratio_to_bound']:.0%} of the bandwidth bound)" if bandwidth_gbs else ""), flush=True)
    for static in statics.values():
        if static is not None:
            static.release()
    return rows


# ----------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    parser.add_argument("--tiny", action="store_true", help="tiny configuration on CPU (seconds; for CI)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="load a real checkpoint through load_oryx")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--frames", type=int, nargs="+", default=None, help="default 16 64 256 (tiny: 2 4)")
    parser.add_argument("--modes", nargs="+", default=["video", "video_long"], choices=["video", "video_long"])
    parser.add_argument("--repeats", type=int, default=None, help="timed TTFT runs per case (default 2, tiny 1)")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode tokens per run (default 128, tiny 8)")
    parser.add_argument("--prompt-lengths", type=int, nargs="+", default=None,
                        help="decode prompt lengths (default 1024 13500, tiny 64)")
    parser.add_argument("--decode-repeats", type=int, default=3, help="timed decode runs per path (median)")
    parser.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                        help="the compiled decode path; auto = on CUDA only")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="memory bandwidth for the bound (default: looked up from the device name)")
    parser.add_argument("--deadline-s", type=float, default=420.0, help="skip phases that would end later")
    args = parser.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    counts = args.frames or ([2, 4] if args.tiny else [16, 64, 256])
    repeats = args.repeats or (1 if args.tiny else 2)
    new_tokens = args.new_tokens or (8 if args.tiny else 128)
    lengths = args.prompt_lengths or ([64] if args.tiny else [1024, 13500])
    compile_on = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    paths = ["dynamic", "static", *(["static_compiled"] if compile_on else [])]

    report = Report(args.out, args.deadline_s)
    state: dict[str, LoadedOryx] = {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    bandwidth = args.bandwidth_gbs or (bandwidth_for(name) if device.type == "cuda" else None)
    report.data.update({
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": str(device), "device_name": name, "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "flash_attn_available": _flash_attn_varlen_func() is not None,
        "bandwidth_gbs": bandwidth, "bandwidth_source": "argument" if args.bandwidth_gbs else "device-name table",
        "shape": "tiny" if args.tiny else ("checkpoint" if args.checkpoint else "Oryx-7B"),
        "weights": "loaded with load_oryx" if args.checkpoint else "random, built on the device (no disk)",
        "batch_size": 1, "frame_size": "640x480",
    })
    if device.type == "cuda":
        report.data["device_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30

    def build() -> dict[str, Any]:
        if args.checkpoint is not None:
            loaded = load_oryx(args.checkpoint, device=device, dtype=dtype, attn_implementation="sdpa")
        else:
            config = OryxConfig.from_dict(tiny_config_dict("qwen2", **({} if args.tiny else ORYX_7B_SHAPE)))
            model = random_model(config, device, dtype)
            tokenizer = load_tokenizer(qwen_tokenizer_dir(), config)
            model.logits_vocab_size = len(tokenizer)
            loaded = LoadedOryx(model=model, tokenizer=tokenizer, config=config,
                                generation_config=tiny_generation_config_dict())
        sync(device)
        state["loaded"] = loaded
        params = sum(p.numel() for p in loaded.model.parameters())
        return {"parameters": params, "weight_gib": params * torch.finfo(dtype).bits / 8 / 2**30,
                "llm_decode_weight_gb": llm_weight_bytes(loaded.model) / 1e9,
                "vit_attention": loaded.model.model.vision_tower.vision_tower.attn_implementation,
                **peak_memory(device)}

    if report.phase("model", 10 if args.tiny else 90, build) is None or "error" in report.data["model"]:
        return 1
    loaded = state["loaded"]
    engine = OryxEngine(loaded, cache_bytes=0)
    report.phase("ttft", 30 if args.tiny else 150, lambda: ttft(engine, counts, args.modes, repeats))
    eager_paths = [p for p in paths if p != "static_compiled"]
    report.phase("decode", 20 if args.tiny else 60,
                 lambda: decode(loaded.model, lengths, new_tokens, eager_paths, bandwidth, args.decode_repeats))
    if "static_compiled" in paths:
        # Longest prompt first: one compile per cache bucket (~1 min each for 28 layers), the deadline may cut the rest.
        report.phase("decode_compiled", 60 if args.tiny else 90,
                     lambda: decode(loaded.model, sorted(lengths, reverse=True), new_tokens, ["static_compiled"],
                                    bandwidth, args.decode_repeats, lambda: args.deadline_s - report.elapsed(),
                                    60 if args.tiny else 90))
    report.data["finished"] = True
    report.write()
    print(f"[gpu_check] wrote {args.out} after {report.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
