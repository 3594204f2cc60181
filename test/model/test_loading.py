"""Strict offline loading: key/shape checks, ViT sources, pickle policy, dtypes, placement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from oryx_ros.model.loading import (
    CheckpointMismatchError,
    checkpoint_tensor_sources,
    load_oryx,
    read_vit_weights,
)
from oryx_ros.model.tiny_checkpoint import INDEX_NAME, SHARD_NAMES, TOKENIZER_FILES, random_state_dict

VIT = "model.vision_tower.vision_tower."


@pytest.fixture(scope="module")
def tiny_tensors(tiny_checkpoint_dir) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for shard in SHARD_NAMES:
        tensors.update(load_file(str(Path(tiny_checkpoint_dir) / shard)))
    return tensors


def _variant(src: Path, dst: Path, tensors: dict[str, torch.Tensor], config_changes: dict | None = None) -> Path:
    """A copy of the tiny checkpoint as one model.safetensors holding ``tensors``."""
    dst.mkdir(parents=True)
    for name in (*TOKENIZER_FILES, "generation_config.json"):
        (dst / name).symlink_to(Path(src) / name)
    config = json.loads((Path(src) / "config.json").read_text())
    config.update(config_changes or {})
    (dst / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_round_trip_equals_written_weights(tiny_oryx, tiny_checkpoint_dir):
    config = json.loads((Path(tiny_checkpoint_dir) / "config.json").read_text())
    written = random_state_dict(config, seed=0, dtype=torch.bfloat16)
    loaded = tiny_oryx.model.state_dict()
    assert set(loaded) == set(written)
    for name, tensor in written.items():
        assert loaded[name].dtype == torch.float32
        assert torch.equal(loaded[name], tensor.float()), name
    index = json.loads((Path(tiny_checkpoint_dir) / INDEX_NAME).read_text())
    assert set(index["weight_map"]) == set(loaded)  # the index lists exactly the model's tensors
    assert set(index["weight_map"].values()) == set(SHARD_NAMES)


def test_loaded_bundle(tiny_oryx):
    assert type(tiny_oryx.tokenizer).__name__ == "Qwen2Tokenizer"  # slow tokenizer, use_fast=False
    assert tiny_oryx.model.logits_vocab_size == len(tiny_oryx.tokenizer) == 151669
    assert tiny_oryx.generation_config["repetition_penalty"] == 1.05
    assert tiny_oryx.config.llm_family == "qwen2"
    assert not any(t.is_meta for t in tiny_oryx.model.state_dict().values())
    assert not any(p.requires_grad for p in tiny_oryx.model.parameters())


def test_missing_unexpected_and_misshaped_tensors_are_all_named(tmp_path, tiny_checkpoint_dir, tiny_tensors):
    tensors = dict(tiny_tensors)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    del tensors[VIT + "blocks.0.attn.qkv.bias"]
    tensors["model.extra_head.weight"] = torch.zeros(2, 2)
    tensors["model.mm_projector.image_sep"] = torch.zeros(65)
    path = _variant(tiny_checkpoint_dir, tmp_path / "bad", tensors)
    with pytest.raises(CheckpointMismatchError) as caught:
        load_oryx(path, progress=False)
    error = caught.value
    assert error.missing == sorted(["model.layers.1.mlp.up_proj.weight", VIT + "blocks.0.attn.qkv.bias"])
    assert error.unexpected == ["model.extra_head.weight"]
    assert error.mismatched == {"model.mm_projector.image_sep": ((64,), (65,))}
    message = str(error)
    for name in ("model.layers.1.mlp.up_proj.weight", "model.extra_head.weight", "model.mm_projector.image_sep"):
        assert name in message


@pytest.mark.parametrize(
    ("change", "kind"),
    [("missing", "missing"), ("unexpected", "unexpected"), ("shape", "shape mismatch")],
)
def test_each_kind_of_mismatch_raises(tmp_path, tiny_checkpoint_dir, tiny_tensors, change, kind):
    tensors = dict(tiny_tensors)
    if change == "missing":
        del tensors["lm_head.weight"]
    elif change == "unexpected":
        tensors["lm_head.bias"] = torch.zeros(3)
    else:
        tensors["model.norm.weight"] = torch.zeros(63)
    with pytest.raises(CheckpointMismatchError, match=kind):
        load_oryx(_variant(tiny_checkpoint_dir, tmp_path / change, tensors), progress=False)


def test_single_file_checkpoint_and_bf16(tmp_path, tiny_checkpoint_dir, tiny_tensors):
    path = _variant(tiny_checkpoint_dir, tmp_path / "single", dict(tiny_tensors))
    assert set(checkpoint_tensor_sources(path).values()) == {"model.safetensors"}
    loaded = load_oryx(path, dtype=torch.bfloat16, attn_implementation="eager", progress=False)
    model = loaded.model
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # rebuilt, not cast
    q_proj = tiny_tensors["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, q_proj)
    logits = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()


def test_vit_from_separate_files(tmp_path, tiny_checkpoint_dir, tiny_tensors, tiny_oryx):
    main = {k: v for k, v in tiny_tensors.items() if not k.startswith(VIT)}
    vit = {k[len(VIT):]: v for k, v in tiny_tensors.items() if k.startswith(VIT)}
    path = _variant(tiny_checkpoint_dir, tmp_path / "no-vit", main)

    with pytest.raises(CheckpointMismatchError, match="pass vit_path") as caught:
        load_oryx(path, progress=False)
    assert len(caught.value.missing) == len(vit) and not caught.value.unexpected

    save_file(vit, str(tmp_path / "oryx_vit.safetensors"))
    loaded = load_oryx(path, vit_path=tmp_path / "oryx_vit.safetensors", progress=False)
    reference = tiny_oryx.model.state_dict()
    for key in vit:
        assert torch.equal(loaded.model.state_dict()[VIT + key], reference[VIT + key])

    # Pickled .pth: refused unless allowed, then read with weights_only=True (here with a key prefix).
    torch.save({"vision_tower." + k: v for k, v in vit.items()}, tmp_path / "oryx_vit.pth")
    with pytest.raises(ValueError, match="allow_pickle"):
        load_oryx(path, vit_path=tmp_path / "oryx_vit.pth", progress=False)
    loaded_pth = load_oryx(path, vit_path=tmp_path / "oryx_vit.pth", allow_pickle=True, progress=False)
    assert torch.equal(loaded_pth.model.state_dict()[VIT + "pos_embed"], reference[VIT + "pos_embed"])

    # The path inside mm_vision_tower ("oryx_vit:/dir/file") is used when no vit_path is given.
    via_config = _variant(tiny_checkpoint_dir, tmp_path / "via-config", main,
                          {"mm_vision_tower": f"oryx_vit:{tmp_path / 'oryx_vit.safetensors'}"})
    loaded_cfg = load_oryx(via_config, progress=False)
    assert torch.equal(loaded_cfg.model.state_dict()[VIT + "pos_embed"], reference[VIT + "pos_embed"])


def test_vit_file_with_wrong_keys_is_rejected(tmp_path):
    save_file({"blocks.0.attn.qkv.weight": torch.zeros(2), "head.weight": torch.zeros(1)},
              str(tmp_path / "v.safetensors"))
    assert set(read_vit_weights(tmp_path / "v.safetensors")) == {"blocks.0.attn.qkv.weight", "head.weight"}
    with pytest.raises(FileNotFoundError):
        read_vit_weights(tmp_path / "absent.safetensors")


def test_llama_flavour_and_routing_from_config_not_directory(tmp_path):
    from oryx_ros.model.tiny_checkpoint import write_tiny_checkpoint

    # The directory name suggests Qwen 7B; the config says Llama: the config wins.
    path = write_tiny_checkpoint(tmp_path / "Oryx-7B-qwen", seed=1, llm="llama", vocab_size=151680)
    loaded = load_oryx(path, progress=False)
    assert loaded.config.llm_family == "llama"
    assert type(loaded.model.model).__name__ == "OryxLlamaModel"
    assert not loaded.model.model.layers[0].self_attn.q_proj.bias
    assert loaded.model(input_ids=torch.tensor([[5, 6]])).logits.shape == (1, 2, 151669)


def test_device_map_dict_and_errors(tiny_checkpoint_dir, tmp_path):
    loaded = load_oryx(tiny_checkpoint_dir, device_map={"": "cpu"}, progress=False)
    assert loaded.model.lm_head.weight.device.type == "cpu"
    with pytest.raises(ValueError, match="attn_implementation"):
        load_oryx(tiny_checkpoint_dir, attn_implementation="flash", progress=False)
    with pytest.raises(ValueError, match="floating-point"):
        load_oryx(tiny_checkpoint_dir, dtype=torch.int8, progress=False)
    with pytest.raises(FileNotFoundError):
        load_oryx(tmp_path / "absent", progress=False)


def test_missing_shard_is_reported(tmp_path, tiny_checkpoint_dir):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint_dir, copy)
    (copy / SHARD_NAMES[1]).unlink()
    with pytest.raises(FileNotFoundError, match=SHARD_NAMES[1]):
        load_oryx(copy, progress=False)
