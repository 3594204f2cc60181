"""Load an Oryx checkpoint directory strictly, offline, without allocating the weights twice.

A checkpoint directory holds ``config.json``, ``model.safetensors`` or shards listed in
``model.safetensors.index.json``, the tokenizer files and optionally ``generation_config.json``.

How (gpt-fast style): the model is built on the ``meta`` device, every tensor name and shape in the
checkpoint is compared with the model's before any tensor is read (a :class:`CheckpointMismatchError`
names every missing, unexpected and mis-shaped tensor), then each shard is read with safetensors
straight onto its target device and dtype and handed over with ``load_state_dict(strict=True,
assign=True)``. Buffers that are not in checkpoints (the rotary ``inv_freq``) are rebuilt afterwards.

ViT weights come from the main checkpoint (``model.vision_tower.vision_tower.*``) when present, else
from a separate Oryx-ViT file: ``vit_path`` or the path in ``mm_vision_tower``, as safetensors, or as a
pickled ``.pth`` only with ``allow_pickle=True`` (then ``torch.load(weights_only=True)``).

Multi-GPU (34B/32B): ``device_map='auto'`` asks accelerate for a placement that never splits a
decoder layer or a vision module (``OryxForCausalLM._no_split_modules``), loads each tensor onto its
device and attaches accelerate's hooks, which move activations between devices. A dict maps module
name prefixes to devices (``{"": "cuda:0"}``, or ``{"model.layers.0": 0, …}`` as accelerate writes it).
Untested on real multi-GPU hardware here.

Nothing is ever downloaded (``local_files_only=True``; no hub calls).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import torch
from safetensors import SafetensorError, safe_open

from .configuration_oryx import OryxConfig
from .modeling_oryx import OryxForCausalLM
from .modeling_oryx_vit import VitAttention

logger = logging.getLogger(__name__)

VIT_PREFIX: Final = "model.vision_tower.vision_tower."
SINGLE_FILE: Final = "model.safetensors"
INDEX_FILE: Final = "model.safetensors.index.json"
ATTN_IMPLEMENTATIONS: Final = ("sdpa", "eager", "flash_attention_2")
# Key prefixes a separate ViT file may carry; one of them is stripped when ALL keys start with it.
_VIT_FILE_PREFIXES: Final = (VIT_PREFIX, "vision_tower.vision_tower.", "vision_tower.", "module.")
# ViT backend that goes with each LLM attention choice (see modeling_oryx_vit.vit_attention).
_VIT_ATTN_FOR_LLM: Final[dict[str, VitAttention]] = {
    "sdpa": "auto", "eager": "eager", "flash_attention_2": "flash_attention_2",
}


class CheckpointMismatchError(RuntimeError):
    """The checkpoint's tensors do not match the model: lists every offending name."""

    def __init__(
        self,
        missing: Iterable[str] = (),
        unexpected: Iterable[str] = (),
        mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
        hint: str = "",
    ) -> None:
        self.missing = sorted(missing)
        self.unexpected = sorted(unexpected)
        self.mismatched = dict(sorted((mismatched or {}).items()))
        self.hint = hint
        lines = ["checkpoint does not match the Oryx model:"]
        if self.missing:
            lines.append(f"  {len(self.missing)} missing tensors: {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"  {len(self.unexpected)} unexpected tensors: {', '.join(self.unexpected)}")
        for name, (expected, found) in self.mismatched.items():
            lines.append(f"  shape mismatch {name}: model {list(expected)}, checkpoint {list(found)}")
        if hint:
            lines.append(f"  hint: {hint}")
        super().__init__("\n".join(lines))


class CorruptWeightsError(ValueError):
    """A weights file that safetensors cannot read (truncated, or not safetensors at all)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path} is not a readable safetensors file: {reason}")


class PickledWeightsError(ValueError):
    """A pickled weights file refused because ``allow_pickle`` is off."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"refusing to read the pickled file {path}: pass allow_pickle=True (it is then read with "
            f"torch.load(weights_only=True)) or convert it to safetensors"
        )


@dataclass
class LoadedOryx:
    """What :func:`load_oryx` returns."""

    model: OryxForCausalLM
    tokenizer: Any  # a transformers tokenizer (slow, use_fast=False)
    config: OryxConfig
    generation_config: dict[str, Any] = field(default_factory=dict)  # generation_config.json, {} if absent
    path: Path | None = None


# ----------------------------------------------------------------------------------------- public
def load_oryx(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device_map: str | dict[str, Any] | None = None,
    vit_path: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    progress: bool = True,
    *,
    vit_attn_implementation: VitAttention | None = None,
    force_dynamic_compressor: bool = True,
) -> LoadedOryx:
    """Load an Oryx checkpoint directory (see the module docstring).

    Args:
        path: checkpoint directory.
        device: target device when ``device_map`` is None.
        dtype: floating-point dtype of all weights (official inference: ``torch.bfloat16``).
        attn_implementation: LLM attention (``'sdpa'`` | ``'eager'`` | ``'flash_attention_2'``); the ViT
            follows (sdpa → flash-attn varlen on CUDA when importable, else SDPA) unless
            ``vit_attn_implementation`` says otherwise.
        device_map: None, ``'auto'`` (accelerate placement over the visible GPUs) or a dict
            ``{module prefix: device}``.
        vit_path: separate Oryx-ViT weights; overrides ViT tensors in the main checkpoint.
        allow_pickle: permit a pickled ``.pth`` ViT file (read with ``weights_only=True``).
        progress: log each shard at INFO (else DEBUG).
        force_dynamic_compressor: use the dynamic compressor even if the config says
            ``mm_resampler_type: null``, as every official inference entry point does (spec §8).

    Raises:
        FileNotFoundError: missing directory, config, weights or tokenizer files.
        CheckpointMismatchError: missing/unexpected/mis-shaped tensors (all named).
        CorruptWeightsError: a truncated or corrupt safetensors file (a ValueError).
        PickledWeightsError: a pickled ViT file without ``allow_pickle`` (a ValueError).
        ValueError: bad arguments, tokenizer larger than the vocab.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    if attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    log = logger.info if progress else logger.debug

    config = OryxConfig.from_pretrained(directory)
    if force_dynamic_compressor and config.mm_resampler_type != "dynamic_compressor":
        log("config says mm_resampler_type=%r; using dynamic_compressor as the official inference does",
            config.mm_resampler_type)
        config = config.with_resampler("dynamic_compressor")

    vit_attn = vit_attn_implementation or _VIT_ATTN_FOR_LLM[attn_implementation]
    with torch.device("meta"):
        model = OryxForCausalLM(config, attn_implementation=attn_implementation, vit_attn_implementation=vit_attn)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)

    placement = _resolve_placement(model, device, dtype, device_map)
    sources = checkpoint_tensor_sources(directory)  # name -> shard file
    vit_file = _vit_file(directory, config, vit_path, has_vit=any(n.startswith(VIT_PREFIX) for n in sources))
    vit_tensors: dict[str, torch.Tensor] = {}
    if vit_file is not None:
        vit_tensors = read_vit_weights(vit_file, allow_pickle=allow_pickle)
        overridden = [n for n in sources if n.startswith(VIT_PREFIX)]
        if overridden:
            logger.warning("vit_path given: %d ViT tensors of the main checkpoint are replaced by %s",
                           len(overridden), vit_file)
            for name in overridden:
                del sources[name]

    found_shapes = _shapes_in_shards(directory, sources)
    found_shapes.update({VIT_PREFIX + k: tuple(v.shape) for k, v in vit_tensors.items()})
    _check_names_and_shapes(expected, found_shapes, vit_file)

    tokenizer = load_tokenizer(directory, config)  # after the cheap weight check: fail fast
    generation_config = read_generation_config(directory)

    state: dict[str, torch.Tensor] = {}
    shard_files = sorted(set(sources.values()))
    for number, shard in enumerate(shard_files, 1):
        shard_path = directory / shard
        log("loading shard %d/%d %s (%.1f MB)", number, len(shard_files), shard, shard_path.stat().st_size / 1e6)
        names = [n for n, s in sources.items() if s == shard]
        by_device: dict[str, list[str]] = {}
        for name in names:
            by_device.setdefault(str(placement(name)), []).append(name)
        for target, group in by_device.items():
            with _safe_open(shard_path, device=target) as reader:
                for name in group:
                    state[name] = _cast(reader.get_tensor(name), dtype)
    if vit_tensors:
        log("loading %d ViT tensors from %s", len(vit_tensors), vit_file)
        for key, tensor in vit_tensors.items():
            name = VIT_PREFIX + key
            state[name] = _cast(tensor, dtype).to(placement(name))

    if config.tie_word_embeddings and "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    _rebuild_runtime_buffers(model, placement)

    vocab_rows = len(tokenizer)
    if vocab_rows > config.vocab_size:
        raise ValueError(f"the tokenizer has {vocab_rows} tokens, more than the {config.vocab_size} vocab rows")
    model.logits_vocab_size = vocab_rows  # = resize_token_embeddings(len(tokenizer)) of the original
    model.eval().requires_grad_(False)

    if device_map is not None and len({str(placement(n)) for n in state}) > 1:
        from accelerate import dispatch_model

        dispatch_model(model, device_map=placement.device_map)
    log("loaded %s: %s LLM, %d tensors, dtype %s, logits over %d tokens",
        directory.name, config.llm_family, len(state), dtype, vocab_rows)
    return LoadedOryx(model=model, tokenizer=tokenizer, config=config, generation_config=generation_config,
                      path=directory)


def load_tokenizer(directory: str | os.PathLike, config: OryxConfig | None = None):
    """The checkpoint's tokenizer, slow class as the original (``use_fast=False``), never remote code.

    ``config`` (read from the directory when None) is handed to transformers, which would otherwise
    re-read ``config.json`` and warn about the unknown ``oryx_qwen`` model type.
    """
    from transformers import AutoTokenizer

    directory = Path(directory)
    if config is None:
        config = OryxConfig.from_pretrained(directory)
    if not any((directory / name).is_file() for name in ("tokenizer_config.json", "vocab.json", "tokenizer.model")):
        raise FileNotFoundError(f"{directory} holds no tokenizer files")
    return AutoTokenizer.from_pretrained(
        str(directory), config=config.to_llm_config(), use_fast=False, trust_remote_code=False,
        local_files_only=True,
    )


def read_generation_config(directory: str | os.PathLike) -> dict[str, Any]:
    """``generation_config.json`` as a dict, ``{}`` when the file is absent."""
    path = Path(directory) / "generation_config.json"
    if not path.is_file():
        return {}
    values = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return values


def checkpoint_tensor_sources(directory: str | os.PathLike) -> dict[str, str]:
    """``{tensor name: shard file name}`` from the index, or from the single ``model.safetensors``."""
    directory = Path(directory)
    index_path = directory / INDEX_FILE
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index_path} has no weight_map")
        missing_files = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
        if missing_files:
            raise FileNotFoundError(f"shards listed in {index_path} are missing: {missing_files}")
        return dict(weight_map)
    single = directory / SINGLE_FILE
    if single.is_file():
        with _safe_open(single) as reader:
            return dict.fromkeys(reader.keys(), SINGLE_FILE)
    if any(directory.glob("*.bin")) or any(directory.glob("*.pth")):
        raise FileNotFoundError(
            f"{directory} holds only pickled weights (*.bin/*.pth); convert them to safetensors first"
        )
    raise FileNotFoundError(f"{directory} has neither {INDEX_FILE} nor {SINGLE_FILE}")


def read_vit_weights(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Oryx-ViT weights keyed as inside the tower (``patch_embed.proj.weight`` …) from a separate file.

    safetensors is read directly; a pickled ``.pth``/``.pt``/``.bin`` only with ``allow_pickle=True``,
    through ``torch.load(weights_only=True)``. A common key prefix (``vision_tower.``,
    ``model.vision_tower.vision_tower.``, ``module.``) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Oryx-ViT weights file {path} does not exist")
    if path.suffix == ".safetensors":
        with _safe_open(path) as reader:
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}  # noqa: SIM118 (not a dict)
    else:
        if not allow_pickle:
            raise PickledWeightsError(path)
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(loaded, dict) and set(loaded) == {wrapper} and isinstance(loaded[wrapper], dict):
                loaded = loaded[wrapper]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise ValueError(f"{path} does not hold a flat state dict of tensors")
        tensors = dict(loaded)
    for prefix in _VIT_FILE_PREFIXES:
        if tensors and all(name.startswith(prefix) for name in tensors):
            logger.info("stripping the key prefix %r from %s", prefix, path)
            tensors = {name[len(prefix):]: t for name, t in tensors.items()}
            break
    return tensors


# ----------------------------------------------------------------------------------------- helpers
def _vit_file(directory: Path, config: OryxConfig, vit_path, has_vit: bool) -> Path | None:
    if vit_path is not None:
        return Path(vit_path)
    if has_vit:
        return None
    candidate = config.vision_tower_file
    if candidate:
        candidate_path = Path(candidate)
        if not candidate_path.is_absolute():
            candidate_path = directory / candidate_path
        for option in (candidate_path, candidate_path / "oryx_vit.safetensors", candidate_path / "oryx_vit.pth"):
            if option.is_file():
                return option
    return None  # the strict check then names every missing ViT tensor


def _shapes_in_shards(directory: Path, sources: dict[str, str]) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in sorted(set(sources.values())):
        with _safe_open(directory / shard) as reader:
            present = set(reader.keys())
            for name in (n for n, s in sources.items() if s == shard):
                if name not in present:
                    raise CheckpointMismatchError(missing=[name], hint=f"the index lists it in {shard}, which lacks it")
                shapes[name] = tuple(reader.get_slice(name).get_shape())
    return shapes


def _check_names_and_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], vit_file: Path | None
) -> None:
    missing = set(expected) - set(found)
    unexpected = set(found) - set(expected)
    mismatched = {
        name: (expected[name], found[name]) for name in set(expected) & set(found) if expected[name] != found[name]
    }
    if not (missing or unexpected or mismatched):
        return
    hint = ""
    if any(name.startswith(VIT_PREFIX) for name in missing):
        hint = ("the ViT weights are neither in the checkpoint nor in a separate file: pass vit_path "
                if vit_file is None else f"the ViT file {vit_file} does not hold the expected keys")
    elif any(name.startswith("model.vision_resampler.") for name in missing):
        hint = "no compressor weights: the checkpoint may be a mm_resampler_type=null one (force_dynamic_compressor)"
    raise CheckpointMismatchError(missing, unexpected, mismatched, hint)


def _safe_open(path: Path, device: str = "cpu") -> Any:
    """``safe_open`` naming the file when its header cannot be read (truncated or not safetensors)."""
    try:
        return safe_open(str(path), framework="pt", device=device)
    except SafetensorError as error:
        raise CorruptWeightsError(path, str(error)) from error


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() and tensor.dtype != dtype else tensor


class _Placement:
    """Maps a tensor name to its device: one device, or the longest matching prefix of a device map."""

    def __init__(self, default: torch.device, device_map: dict[str, Any] | None) -> None:
        self.default = default
        self.device_map = device_map
        self._prefixes = sorted((device_map or {}).items(), key=lambda kv: -len(kv[0]))

    def __call__(self, name: str) -> torch.device:
        for prefix, target in self._prefixes:
            if prefix == "" or name == prefix or name.startswith(prefix + "."):
                return _as_device(target)
        if self.device_map is not None:
            raise ValueError(f"device_map places no module holding {name}")
        return self.default


def _as_device(target: Any) -> torch.device:
    if isinstance(target, int):
        return torch.device("cuda", target)
    if target == "disk":
        raise ValueError("device_map entries on 'disk' are not supported")
    return torch.device(target)


def _resolve_placement(model: OryxForCausalLM, device, dtype: torch.dtype, device_map) -> _Placement:
    if device_map is None:
        return _Placement(torch.device(device), None)
    if device_map == "auto":
        from accelerate import infer_auto_device_map

        device_map = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules, dtype=dtype)
        logger.info("device_map='auto' placed the model as %s", device_map)
    if not isinstance(device_map, dict):
        raise ValueError(f"device_map must be None, 'auto' or a dict, got {device_map!r}")
    return _Placement(torch.device(device), dict(device_map))


def _rebuild_runtime_buffers(model: OryxForCausalLM, placement: _Placement) -> None:
    """Recreate buffers that checkpoints do not store (rotary inv_freq) on the right device."""
    for name, module in list(model.named_modules()):
        if name.endswith("rotary_emb"):
            target = placement("model.embed_tokens.weight")  # rotary runs beside the embeddings
            with torch.device(target):
                fresh = type(module)(config=model.llm_config)
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, fresh)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"tensors left on the meta device after loading: {leftovers}")
