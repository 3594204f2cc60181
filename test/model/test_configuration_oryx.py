"""Config parsing: LLM routing by model_type (spec §9.3), mm_* keys, vision settings."""

from __future__ import annotations

import json

import pytest

from oryx_ros.model.configuration_oryx import OryxConfig, OryxVisionConfig, llm_family_of
from oryx_ros.model.tiny_checkpoint import tiny_config_dict

# An Oryx-7B style config.json (keys as the official file; no vision key → official tower).
OFFICIAL_7B = {
    "architectures": ["OryxQwenForCausalLM"], "model_type": "oryx_qwen", "hidden_size": 3584,
    "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
    "vocab_size": 152064, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "max_position_embeddings": 32768,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "mm_hidden_size": 1152,
    "mm_projector_type": "simple_mlp_twoview", "mm_resampler_type": "dynamic_compressor",
    "mm_vision_tower": "oryx_vit:/path/to/oryx_vit", "mm_vision_select_layer": -1,
    "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "tokenizer_model_max_length": 32768,
    "tokenizer_padding_side": "right", "use_mm_proj": True, "rope_scaling": {"type": "linear", "factor": 2.0},
}


@pytest.mark.parametrize(("model_type", "family"), [
    ("oryx_qwen", "qwen2"), ("llava_qwen", "qwen2"), ("qwen2", "qwen2"), ("oryx_llama", "llama"), ("llama", "llama"),
])
def test_model_type_routing(model_type, family):
    assert llm_family_of({"model_type": model_type}) == family


def test_architecture_fallback_and_unknown():
    assert llm_family_of({"architectures": ["OryxQwen2ForCausalLM"]}) == "qwen2"
    assert llm_family_of({"model_type": "mystery", "architectures": ["OryxLlamaForCausalLM"]}) == "llama"
    with pytest.raises(ValueError, match="cannot tell"):
        llm_family_of({"model_type": "mystery"})


def test_official_config(tmp_path):
    # A Qwen2.5-32B shaped config under a directory named like a Llama model: routing ignores the name.
    directory = tmp_path / "Oryx-1.5-32B-llama"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(OFFICIAL_7B))
    config = OryxConfig.from_pretrained(directory)
    assert config.llm_family == "qwen2"
    assert config.vision == OryxVisionConfig()  # official tower: 1152 wide, 27 deep, 16 heads, 4304 MLP
    assert (config.vision.head_dim, config.vision.pos_embed_grid) == (72, 128)
    assert config.tokenizer_model_max_length == 32768
    assert config.vision_tower_file == "/path/to/oryx_vit"
    assert not any(k.startswith("mm_") for k in config.llm)
    llm = config.to_llm_config("eager")
    assert type(llm).__name__ == "Qwen2Config"
    assert llm.hidden_size == 3584 and llm.num_key_value_heads == 4
    assert llm._attn_implementation == "eager"
    # OryxQwenForCausalLM forces rope_scaling = None: the linear scaling in the file is dropped
    assert llm.rope_parameters == {"rope_theta": 1000000.0, "rope_type": "default"}
    assert config.to_dict() == OFFICIAL_7B


def test_tiny_config_carries_vision_settings():
    config = OryxConfig.from_dict(tiny_config_dict("llama"))
    assert config.llm_family == "llama"
    assert config.vision.hidden_size == 64 and config.vision.num_hidden_layers == 2
    assert config.mm_hidden_size == config.vision.hidden_size
    assert "oryx_vit_config" in config.to_dict()
    assert config.to_llm_config().attention_bias is False


@pytest.mark.parametrize(("change", "message"), [
    ({"mm_projector_type": "mlp2x_gelu"}, "mm_projector_type"),
    ({"mm_resampler_type": "spatial_pool"}, "mm_resampler_type"),
    ({"mm_use_im_start_end": True}, "mm_use_im_start_end"),
    ({"mm_hidden_size": 1024}, "mm_hidden_size"),
    ({"oryx_vit_config": {"hidden_size": 1152, "depth": 3}}, "unknown keys"),
    ({"oryx_vit_config": {"hidden_size": 100, "num_attention_heads": 16}}, "divisible"),
])
def test_unsupported_settings_raise(change, message):
    with pytest.raises(ValueError, match=message):
        OryxConfig.from_dict({**OFFICIAL_7B, **change})


def test_missing_llm_key_and_bad_file(tmp_path):
    values = dict(OFFICIAL_7B)
    del values["hidden_size"]
    with pytest.raises(ValueError, match="hidden_size"):
        OryxConfig.from_dict(values)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        OryxConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        OryxConfig.from_pretrained(tmp_path / "absent")


def test_null_resampler_is_accepted_and_can_be_forced():
    config = OryxConfig.from_dict({**OFFICIAL_7B, "mm_resampler_type": None})
    assert config.mm_resampler_type is None
    assert config.with_resampler("dynamic_compressor").mm_resampler_type == "dynamic_compressor"
