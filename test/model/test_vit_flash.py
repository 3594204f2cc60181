"""OryxViT flash-attn varlen path: the call contract (on CPU, with a stand-in kernel), the backend choice,
and the real kernel against the eager reference (GPU only)."""

from __future__ import annotations

import pytest
import torch

from oryx_ros.model import modeling_oryx_vit
from oryx_ros.model.configuration_oryx import OryxVisionConfig
from oryx_ros.model.modeling_oryx_vit import (
    OryxViT,
    eager_varlen_attention,
    flash_varlen_attention,
    sdpa_varlen_attention,
    vit_attention,
)

TINY = OryxVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        patch_size=16, image_size=256)


def _vit(attn: str, dtype: torch.dtype = torch.float32, device: str = "cpu") -> OryxViT:
    torch.manual_seed(0)
    vit = OryxViT(TINY, attn)
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0.0, 0.05)
        for block in vit.blocks:
            block.norm1.weight.add_(1.0)
            block.norm2.weight.add_(1.0)
    return vit.eval().to(device=device, dtype=dtype)


def _inputs(dtype: torch.dtype = torch.float32, device: str = "cpu") -> list[torch.Tensor]:
    """Two video-frame-sized inputs (batched together by SDPA) and two images of other sizes."""
    generator = torch.Generator().manual_seed(5)
    sizes = [(64, 48), (96, 32), (64, 48), (32, 32)]  # (W, H)
    return [torch.randn(3, h, w, generator=generator).to(device=device, dtype=dtype) for w, h in sizes]


class _StandInFlash:
    """Records the arguments of ``flash_attn_varlen_func`` and answers with the eager reference."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal):
        self.calls.append(dict(q=q, cu_seqlens_q=cu_seqlens_q, cu_seqlens_k=cu_seqlens_k, max_seqlen_q=max_seqlen_q,
                               max_seqlen_k=max_seqlen_k, softmax_scale=softmax_scale, causal=causal))
        return eager_varlen_attention(q, k, v, cu_seqlens_q, max_seqlen_q, softmax_scale)


def test_flash_path_passes_the_varlen_contract(monkeypatch):
    stand_in = _StandInFlash()
    monkeypatch.setattr(modeling_oryx_vit, "_flash_attn_varlen_func", lambda: stand_in)
    images = _inputs()
    with torch.no_grad():
        reference, grids = _vit("eager")(images)
        ours, _ = _vit("flash_attention_2")(images)
    for a, b in zip(reference, ours, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    lengths = [gh * gw for gh, gw in grids]
    assert len(stand_in.calls) == TINY.num_hidden_layers  # one packed call per block, all inputs together
    for call in stand_in.calls:
        assert call["cu_seqlens_q"] is call["cu_seqlens_k"]
        assert call["cu_seqlens_q"].dtype == torch.int32  # what the kernel requires
        assert call["cu_seqlens_q"].tolist() == [0, *torch.tensor(lengths).cumsum(0).tolist()]
        assert call["max_seqlen_q"] == call["max_seqlen_k"] == max(lengths)
        assert call["causal"] is False
        assert call["softmax_scale"] == pytest.approx(TINY.head_dim**-0.5)
        assert call["q"].shape == (sum(lengths), TINY.num_attention_heads, TINY.head_dim)
        assert call["q"].is_contiguous()


def test_flash_path_without_the_package_raises(monkeypatch):
    monkeypatch.setattr(modeling_oryx_vit, "_flash_attn_varlen_func", lambda: None)
    q = torch.zeros(4, 2, 8)
    with pytest.raises(ImportError, match="flash_attn"):
        flash_varlen_attention(q, q, q, torch.tensor([0, 4], dtype=torch.int32), 4, 1.0)


def test_auto_picks_flash_only_on_cuda_in_half_precision(monkeypatch):
    monkeypatch.setattr(modeling_oryx_vit, "_flash_attn_varlen_func", lambda: _StandInFlash())
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert vit_attention("auto", cuda, torch.bfloat16) is flash_varlen_attention
    assert vit_attention("auto", cuda, torch.float16) is flash_varlen_attention
    assert vit_attention("auto", cuda, torch.float32) is sdpa_varlen_attention  # the kernel has no fp32
    assert vit_attention("auto", cpu, torch.bfloat16) is sdpa_varlen_attention
    monkeypatch.setattr(modeling_oryx_vit, "_flash_attn_varlen_func", lambda: None)
    assert vit_attention("auto", cuda, torch.bfloat16) is sdpa_varlen_attention  # not installed: SDPA


def test_sdpa_matches_eager_in_bfloat16():
    """The fallback the GPU path takes without flash-attn, in the inference dtype (bf16-level tolerance)."""
    images = _inputs(torch.bfloat16)
    with torch.no_grad():
        reference, _ = _vit("eager", torch.bfloat16)(images)
        ours, _ = _vit("sdpa", torch.bfloat16)(images)
    for a, b in zip(reference, ours, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


@pytest.mark.gpu
def test_real_flash_kernel_matches_eager_on_gpu():
    if not torch.cuda.is_available() or modeling_oryx_vit._flash_attn_varlen_func() is None:
        pytest.skip("needs CUDA and the flash_attn package")
    images = _inputs(torch.bfloat16, "cuda")
    with torch.no_grad():
        reference, _ = _vit("eager", torch.bfloat16, "cuda")(images)
        flash, _ = _vit("flash_attention_2", torch.bfloat16, "cuda")(images)
        sdpa, _ = _vit("sdpa", torch.bfloat16, "cuda")(images)
    for a, b, c in zip(reference, flash, sdpa, strict=True):
        torch.testing.assert_close(b.float(), a.float(), atol=3e-2, rtol=3e-2)
        torch.testing.assert_close(c.float(), a.float(), atol=3e-2, rtol=3e-2)
