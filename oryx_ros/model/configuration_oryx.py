"""Typed configuration of an Oryx checkpoint, read from its official ``config.json``.

An official Oryx ``config.json`` is a Qwen2 or Llama config plus the ``mm_*`` keys of the multimodal
wrapper (spec §8). This module splits it into

* the language-model part, turned into a transformers ``Qwen2Config`` / ``LlamaConfig`` by
  :meth:`OryxConfig.to_llm_config`;
* the multimodal part (typed fields named exactly as the official keys);
* the vision-tower shape (:class:`OryxVisionConfig`). Official configs do not describe the tower (the
  original hard-codes SigLIP-so400m/16), so its settings live under the extra key ``oryx_vit_config``
  with the official values as defaults; only tiny test checkpoints write that key.

The language-model family is chosen from ``model_type`` (then ``architectures``), never from the
directory name (spec §9.3: the original routes Oryx-1.5-32B to Llama because "7b" is not in its name).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

logger = logging.getLogger(__name__)

LlmFamily = Literal["qwen2", "llama"]

# Spec §9.3: accepted model types and the transformers architecture each one maps to.
LLM_FAMILY_BY_MODEL_TYPE: Final[dict[str, LlmFamily]] = {
    "oryx_qwen": "qwen2",
    "llava_qwen": "qwen2",
    "qwen2": "qwen2",
    "oryx_llama": "llama",
    "llama": "llama",
}
# Fallback when model_type is missing or unknown: the class names seen in official configs.
LLM_FAMILY_BY_ARCHITECTURE: Final[dict[str, LlmFamily]] = {
    "OryxQwenForCausalLM": "qwen2",
    "OryxQwen2ForCausalLM": "qwen2",
    "LlavaQwenForCausalLM": "qwen2",
    "Qwen2ForCausalLM": "qwen2",
    "OryxLlamaForCausalLM": "llama",
    "LlamaForCausalLM": "llama",
}

# Extra key (absent from official configs) holding the vision-tower shape; see OryxVisionConfig.
VISION_CONFIG_KEY: Final = "oryx_vit_config"

SUPPORTED_PROJECTOR_TYPES: Final = ("simple_mlp_twoview",)
SUPPORTED_RESAMPLER_TYPES: Final = ("dynamic_compressor", None)

# Keys of the multimodal wrapper (and bookkeeping keys) that must not reach the LLM config.
_NON_LLM_PREFIXES: Final = ("mm_", "tune_mm_", "freeze_mm_", "unfreeze_mm_")
_NON_LLM_KEYS: Final = frozenset(
    {
        "model_type",
        "architectures",
        "auto_map",
        "_name_or_path",
        "transformers_version",
        "torch_dtype",
        "dtype",
        "use_mm_proj",
        "vision_tower",
        "tokenizer_model_max_length",
        "tokenizer_padding_side",
        "modality_max_length",
        "image_aspect_ratio",
        "attn_implementation",
        VISION_CONFIG_KEY,
    }
)


@dataclass(frozen=True)
class OryxVisionConfig:
    """Shape of the Oryx ViT (spec §3.1). Defaults are the official SigLIP-so400m/16 values."""

    hidden_size: int = 1152  # C, the vision width
    num_hidden_layers: int = 27
    num_attention_heads: int = 16  # head_dim = 72
    intermediate_size: int = 4304  # int(1152 * 3.7362)
    patch_size: int = 16  # px
    image_size: int = 2048  # px; pos_embed covers an (image_size/patch_size)² grid = 128×128
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "patch_size", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"OryxVisionConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"vision image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def pos_embed_grid(self) -> int:
        """Side of the square grid stored in ``pos_embed`` (128 for the official tower)."""
        return self.image_size // self.patch_size

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> OryxVisionConfig:
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown keys in {VISION_CONFIG_KEY!r}: {unknown}; known: {sorted(known)}")
        return cls(**values)


@dataclass
class OryxConfig:
    """An Oryx checkpoint's configuration.

    Field names are the official ``config.json`` keys. ``llm`` keeps the language-model keys as read
    (minus the multimodal ones) and ``raw`` the whole file, so nothing from the file is lost.
    """

    llm_family: LlmFamily
    model_type: str
    hidden_size: int  # D, the LLM width
    vocab_size: int  # rows of embed_tokens / lm_head in the checkpoint (152064 for Qwen2 Oryx)
    llm: dict[str, Any]
    mm_hidden_size: int = 1152
    mm_projector_type: str = "simple_mlp_twoview"
    mm_resampler_type: str | None = "dynamic_compressor"
    mm_vision_tower: str | None = None
    mm_vision_select_layer: int = -1  # stored, ignored (the original hard-codes -1)
    mm_vision_select_feature: str = "patch"  # stored, unused
    mm_use_im_start_end: bool = False
    mm_use_im_patch_token: bool = False
    tokenizer_model_max_length: int | None = None
    tokenizer_padding_side: str = "right"
    tie_word_embeddings: bool = False
    vision: OryxVisionConfig = field(default_factory=OryxVisionConfig)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.mm_projector_type not in SUPPORTED_PROJECTOR_TYPES:
            raise ValueError(
                f"mm_projector_type {self.mm_projector_type!r} is not supported (only {SUPPORTED_PROJECTOR_TYPES})"
            )
        if self.mm_resampler_type not in SUPPORTED_RESAMPLER_TYPES:
            raise ValueError(
                f"mm_resampler_type {self.mm_resampler_type!r} is not supported "
                f"(only {SUPPORTED_RESAMPLER_TYPES})"
            )
        if self.mm_use_im_start_end:
            raise ValueError("mm_use_im_start_end=true is not supported (all official Oryx configs set false)")
        if self.mm_hidden_size != self.vision.hidden_size:
            raise ValueError(
                f"mm_hidden_size {self.mm_hidden_size} differs from the vision width {self.vision.hidden_size}"
            )

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> OryxConfig:
        """Build from the parsed official ``config.json``.

        Raises ``ValueError`` when the language-model family cannot be told from ``model_type`` or
        ``architectures``, or when a required LLM key is missing.
        """
        raw = dict(values)
        family = llm_family_of(raw)
        for key in ("hidden_size", "vocab_size", "num_hidden_layers", "num_attention_heads"):
            if key not in raw:
                raise ValueError(f"config.json lacks the language-model key {key!r}")
        if "mm_use_im_patch_token" not in raw:
            # The original builder then defaults it to True and adds an unused <im_patch> token.
            logger.warning("config.json lacks mm_use_im_patch_token; treating it as false (no <im_patch> token)")
        llm = {
            k: v
            for k, v in raw.items()
            if k not in _NON_LLM_KEYS and not k.startswith(_NON_LLM_PREFIXES)
        }
        # mm_vision_tower may also be spelled vision_tower (spec §8).
        vision_tower = raw.get("mm_vision_tower", raw.get("vision_tower"))
        max_len = raw.get("tokenizer_model_max_length")
        return cls(
            llm_family=family,
            model_type=str(raw.get("model_type", "")),
            hidden_size=int(raw["hidden_size"]),
            vocab_size=int(raw["vocab_size"]),
            llm=llm,
            mm_hidden_size=int(raw.get("mm_hidden_size", 1152)),
            mm_projector_type=str(raw.get("mm_projector_type", "simple_mlp_twoview")),
            mm_resampler_type=raw.get("mm_resampler_type", "dynamic_compressor"),
            mm_vision_tower=vision_tower,
            mm_vision_select_layer=int(raw.get("mm_vision_select_layer", -1)),
            mm_vision_select_feature=str(raw.get("mm_vision_select_feature", "patch")),
            mm_use_im_start_end=bool(raw.get("mm_use_im_start_end", False)),
            mm_use_im_patch_token=bool(raw.get("mm_use_im_patch_token", False)),
            tokenizer_model_max_length=None if max_len is None else int(max_len),
            tokenizer_padding_side=str(raw.get("tokenizer_padding_side", "right")),
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            vision=OryxVisionConfig.from_dict(raw.get(VISION_CONFIG_KEY)),
            raw=raw,
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> OryxConfig:
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json at {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object")
        return cls.from_dict(values)

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path) -> OryxConfig:
        return cls.from_json_file(Path(checkpoint_dir) / "config.json")

    def with_resampler(self, mm_resampler_type: str | None) -> OryxConfig:
        """A copy with another resampler (the official entry points force ``dynamic_compressor``)."""
        raw = {**self.raw, "mm_resampler_type": mm_resampler_type}
        return OryxConfig.from_dict(raw)

    # ------------------------------------------------------------------ derived
    @property
    def vision_tower_file(self) -> str | None:
        """Path part of ``mm_vision_tower`` (text after the first ``:`` of ``"oryx_vit:/path"``)."""
        if not self.mm_vision_tower or ":" not in self.mm_vision_tower:
            return None
        return self.mm_vision_tower.split(":", 1)[1] or None

    def to_llm_config(self, attn_implementation: str = "sdpa"):
        """transformers ``Qwen2Config`` or ``LlamaConfig`` for the language model.

        ``rope_scaling`` is forced to None for Qwen2, as ``OryxQwenForCausalLM.__init__`` does.
        """
        from transformers import LlamaConfig, Qwen2Config

        kwargs = dict(self.llm)
        if self.llm_family == "qwen2":
            kwargs["rope_scaling"] = None
            config = Qwen2Config(**kwargs)
        else:
            config = LlamaConfig(**kwargs)
        config._attn_implementation = attn_implementation
        return config

    def to_dict(self) -> dict[str, Any]:
        """The official-format dict (``raw``) with the vision key written only when non-default."""
        out = dict(self.raw)
        if self.vision != OryxVisionConfig():
            out[VISION_CONFIG_KEY] = asdict(self.vision)
        return out


def llm_family_of(config: dict[str, Any]) -> LlmFamily:
    """Language-model family from ``model_type``, else from ``architectures`` (spec §9.3)."""
    model_type = config.get("model_type")
    if model_type in LLM_FAMILY_BY_MODEL_TYPE:
        return LLM_FAMILY_BY_MODEL_TYPE[model_type]
    for arch in config.get("architectures") or ():
        if arch in LLM_FAMILY_BY_ARCHITECTURE:
            return LLM_FAMILY_BY_ARCHITECTURE[arch]
    raise ValueError(
        f"cannot tell the language model from model_type={model_type!r}, "
        f"architectures={config.get('architectures')!r}; accepted model types: {sorted(LLM_FAMILY_BY_MODEL_TYPE)}"
    )
