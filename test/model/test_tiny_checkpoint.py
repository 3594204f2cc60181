"""Tiny checkpoint writer: official layout, determinism, cache reuse, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from oryx_ros.model.tiny_checkpoint import (
    INDEX_NAME,
    SHARD_NAMES,
    TOKENIZER_FILES,
    ensure_tiny_checkpoint,
    main,
    qwen_tokenizer_dir,
    write_tiny_checkpoint,
)


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_gives_identical_bytes(tmp_path, tiny_checkpoint_dir):
    again = write_tiny_checkpoint(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(Path(tiny_checkpoint_dir))
    other = _digests(write_tiny_checkpoint(tmp_path / "other", seed=1))
    reference = _digests(Path(tiny_checkpoint_dir))
    assert other[SHARD_NAMES[0]] != reference[SHARD_NAMES[0]]
    assert other["config.json"] == reference["config.json"]


def test_official_layout(tiny_checkpoint_dir):
    directory = Path(tiny_checkpoint_dir)
    names = {p.name for p in directory.iterdir()}
    assert names == {*SHARD_NAMES, INDEX_NAME, "config.json", "generation_config.json", *TOKENIZER_FILES}
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "oryx_qwen" and config["vocab_size"] == 152064
    assert config["mm_projector_type"] == "simple_mlp_twoview"
    assert config["mm_resampler_type"] == "dynamic_compressor"
    index = json.loads((directory / INDEX_NAME).read_text())
    assert index["weight_map"]["model.layers.0.self_attn.q_proj.weight"] == SHARD_NAMES[0]
    assert index["weight_map"]["model.vision_tower.vision_tower.pos_embed"] == SHARD_NAMES[1]
    assert index["metadata"]["total_size"] > 0
    for name in TOKENIZER_FILES:
        assert (directory / name).read_bytes() == (qwen_tokenizer_dir() / name).read_bytes()


def test_ensure_tiny_checkpoint_writes_once(tmp_path, monkeypatch):
    monkeypatch.setenv("ORYX_ROS_CACHE", str(tmp_path / "cache"))
    first = ensure_tiny_checkpoint()
    assert first == tmp_path / "cache" / "tiny-oryx-qwen2-seed0"
    assert ensure_tiny_checkpoint(tmp_path / "cache") == first
    stamp = (first / SHARD_NAMES[0]).stat().st_mtime_ns
    assert ensure_tiny_checkpoint() == first
    assert (first / SHARD_NAMES[0]).stat().st_mtime_ns == stamp
    assert not list((tmp_path / "cache").glob(".*tmp*"))


def test_cli_writes_llama_flavour(tmp_path, capsys):
    assert main([str(tmp_path / "llama"), "--seed", "2", "--llm", "llama"]) == 0
    config = json.loads((tmp_path / "llama" / "config.json").read_text())
    assert config["model_type"] == "oryx_llama" and config["attention_bias"] is False
    assert str(tmp_path / "llama") in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "x"), "--llm", "gpt2"])
