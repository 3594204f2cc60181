"""bench/gpu_check.py: the Python part of the GPU readiness check runs (tiny shape, CPU) and its 7B shape is right."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def gpu_check():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", BENCH / "gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_oryx_7b_shape_has_the_official_parameter_count(gpu_check):
    from oryx_ros.model.configuration_oryx import OryxConfig
    from oryx_ros.model.modeling_oryx import OryxForCausalLM
    from oryx_ros.model.tiny_checkpoint import tiny_config_dict

    config = OryxConfig.from_dict(tiny_config_dict("qwen2", **gpu_check.ORYX_7B_SHAPE))
    with torch.device("meta"):
        model = OryxForCausalLM(config)
    vit = sum(p.numel() for p in model.model.vision_tower.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert vit == 431_226_864  # spec §0
    assert total == pytest.approx(8.064e9, rel=1e-3)  # spec §0: Qwen2-7B 7.616 B → 8.064 B with the vision parts
    # decode reads the LLM without its embedding table: 7.07 B parameters (fp32 on meta: 4 bytes each)
    assert gpu_check.llm_weight_bytes(model) == pytest.approx(4 * (7.616e9 - 152064 * 3584), rel=1e-3)
    assert gpu_check.kv_bytes_per_position(model) == 2 * 28 * 4 * 128 * 4  # fp32 on meta: K and V, 28 layers


def test_bandwidth_lookup():
    sys.path.insert(0, str(BENCH))
    try:
        from gpu_check import bandwidth_for
    finally:
        sys.path.remove(str(BENCH))
    assert bandwidth_for("NVIDIA H100 80GB HBM3") == 3350.0  # SXM
    assert bandwidth_for("NVIDIA H100 PCIe") == 2000.0
    assert bandwidth_for("NVIDIA H200") == 4800.0
    assert bandwidth_for("Some Future GPU") is None


def test_tiny_run_writes_the_json(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    code = gpu_check.main(["--tiny", "--out", str(out), "--frames", "2", "--modes", "video", "video_long",
                           "--new-tokens", "4", "--bandwidth-gbs", "20", "--compile", "off"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["finished"] is True and data["skipped"] == []
    assert data["device"] == "cpu" and data["device_name"] and data["shape"] == "tiny"
    assert [(row["mode"], row["frames_used"]) for row in data["ttft"]] == [("video", 2), ("video_long", 2)]
    assert all(row["ttft_s"] > 0 and row["visual_tokens"] > 0 for row in data["ttft"])
    paths = [row["path"] for row in data["decode"]]
    assert paths == ["dynamic", "static"]
    for row in data["decode"]:
        assert row["new_tokens"] == 4 and row["decode_tok_s"] > 0
        assert row["ratio_to_bound"] > 0 and row["bound_tok_s"] > 0


def test_deadline_skips_phases(gpu_check, tmp_path):
    out = tmp_path / "cut.json"
    assert gpu_check.main(["--tiny", "--out", str(out), "--deadline-s", "12", "--compile", "off"]) == 0
    data = json.loads(out.read_text())
    assert "ttft" in data["skipped"] and "decode" in data["skipped"]  # each estimated longer than the rest


def test_shell_script_parses():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu_check.sh")]).returncode == 0
