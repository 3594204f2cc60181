"""Oryx in pure torch + transformers (no ROS): preprocessing, model, prompts, loading, generation.

Modules (each readable on its own):

* :mod:`.configuration_oryx`: typed config from an official ``config.json``;
* :mod:`.preprocessing`: resize arithmetic, PIL-bicubic resampling, normalisation, token counts;
* :mod:`.modeling_oryx_vit`: the Oryx ViT with packed (varlen) attention;
* :mod:`.modeling_oryx`: compressor, projector, token layout, the LLM wrapper;
* :mod:`.prompting`: ChatML prompt ids with ``<image>`` placeholders;
* :mod:`.loading`: strict offline checkpoint loading (meta device, ``assign=True``);
* :mod:`.generation`: prefill / decode steps, greedy loop with streaming and cancellation;
* :mod:`.tiny_checkpoint`: tiny random checkpoints in the official format for tests.

Names below are imported lazily, so ``import oryx_ros.model.preprocessing`` stays free of transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "OryxConfig": "configuration_oryx",
    "OryxVisionConfig": "configuration_oryx",
    "ResizeConfig": "preprocessing",
    "PreprocessedImage": "preprocessing",
    "image_sizes": "preprocessing",
    "video_frame_size": "preprocessing",
    "image_token_count": "preprocessing",
    "video_token_count": "preprocessing",
    "video_frame_token_count": "preprocessing",
    "preprocess_image": "preprocessing",
    "preprocess_video": "preprocessing",
    "preprocess_video_frame": "preprocessing",
    "OryxViT": "modeling_oryx_vit",
    "OryxForCausalLM": "modeling_oryx",
    "ImageInput": "modeling_oryx",
    "VideoInput": "modeling_oryx",
    "ContextLengthError": "modeling_oryx",
    "IMAGE_TOKEN_INDEX": "prompting",
    "build_prompt_ids": "prompting",
    "build_question_ids": "prompting",
    "load_oryx": "loading",
    "LoadedOryx": "loading",
    "CheckpointMismatchError": "loading",
    "GenerationSettings": "generation",
    "GenerationResult": "generation",
    "StopReason": "generation",
    "generate": "generation",
    "write_tiny_checkpoint": "tiny_checkpoint",
    "ensure_tiny_checkpoint": "tiny_checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module_name}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
