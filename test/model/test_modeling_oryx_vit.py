"""OryxViT: parameter names, position-embedding resampling, packed (varlen) pass, attention backends."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from oryx_ros.model.configuration_oryx import OryxVisionConfig
from oryx_ros.model.modeling_oryx_vit import (
    OryxVisionTower,
    OryxViT,
    eager_varlen_attention,
    sdpa_varlen_attention,
    vit_attention,
)

TINY = OryxVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        patch_size=16, image_size=256)


def _vit(attn: str = "eager", seed: int = 0, config: OryxVisionConfig = TINY) -> OryxViT:
    torch.manual_seed(seed)
    vit = OryxViT(config, attn)
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0.0, 0.05)
        for block in vit.blocks:
            block.norm1.weight.add_(1.0)
            block.norm2.weight.add_(1.0)
    return vit.eval()


def test_parameter_names_and_shapes_match_spec():
    official = OryxVisionConfig()
    with torch.device("meta"):
        vit = OryxViT(official)
    shapes = {name: tuple(t.shape) for name, t in vit.state_dict().items()}
    assert len(shapes) == 327
    assert shapes["patch_embed.proj.weight"] == (1152, 3, 16, 16)
    assert shapes["patch_embed.proj.bias"] == (1152,)
    assert shapes["pos_embed"] == (1, 16384, 1152)
    expected_block = {
        "norm1.weight": (1152,), "norm1.bias": (1152,),
        "attn.qkv.weight": (3456, 1152), "attn.qkv.bias": (3456,),
        "attn.proj.weight": (1152, 1152), "attn.proj.bias": (1152,),
        "norm2.weight": (1152,), "norm2.bias": (1152,),
        "mlp.fc1.weight": (4304, 1152), "mlp.fc1.bias": (4304,),
        "mlp.fc2.weight": (1152, 4304), "mlp.fc2.bias": (1152,),
    }
    for i in range(27):
        for suffix, shape in expected_block.items():
            assert shapes[f"blocks.{i}.{suffix}"] == shape
    assert sum(t.numel() for t in vit.state_dict().values()) == 431_226_864  # spec §0
    assert isinstance(vit.blocks[0].mlp.act, torch.nn.GELU) and vit.blocks[0].mlp.act.approximate == "none"
    assert vit.blocks[0].norm1.eps == 1e-6


@pytest.mark.parametrize("grid", [(16, 16), (8, 12), (30, 40), (3, 5), (20, 26)])
def test_pos_embed_interpolation_matches_f_interpolate(grid):
    vit = _vit()
    side = TINY.pos_embed_grid
    square = vit.pos_embed.detach().view(1, side, side, TINY.hidden_size).permute(0, 3, 1, 2)
    reference = F.interpolate(square, size=grid, mode="bilinear", align_corners=False)
    reference = reference.permute(0, 2, 3, 1).reshape(-1, TINY.hidden_size)
    with torch.no_grad():
        ours = vit.interpolated_pos_embed(grid)
    if grid == (side, side):
        assert torch.equal(ours, vit.pos_embed[0])
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_pos_embed_cache_follows_weight_changes():
    vit = _vit()
    with torch.no_grad():
        first = vit.interpolated_pos_embed((4, 6))
        assert vit.interpolated_pos_embed((4, 6)) is first  # cached
        vit.pos_embed.mul_(2.0)  # in-place update
        second = vit.interpolated_pos_embed((4, 6))
        torch.testing.assert_close(second, 2 * first)
        vit.to(torch.float64)  # dtype change
        third = vit.interpolated_pos_embed((4, 6))
        assert third.dtype == torch.float64
        vit.load_state_dict({k: torch.zeros_like(v) for k, v in vit.state_dict().items()}, assign=True)
        assert vit.interpolated_pos_embed((4, 6)).abs().max() == 0


def _images(sizes, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=generator) for (w, h) in sizes]


def test_packed_pass_equals_per_image_pass():
    vit = _vit("eager")
    images = _images([(64, 48), (128, 32), (64, 48), (32, 32)])
    with torch.no_grad():
        packed, grids = vit(images)
        single = [vit([im])[0][0] for im in images]
    assert grids == [(3, 4), (2, 8), (3, 4), (2, 2)]
    for p, s, (gh, gw) in zip(packed, single, grids, strict=True):
        assert p.shape == (gh * gw, TINY.hidden_size)
        torch.testing.assert_close(p, s, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_backends_agree_with_reference(backend):
    vit_eager = _vit("eager")
    vit_other = _vit(backend)
    images = _images([(64, 48), (96, 64), (64, 48)], seed=3)
    with torch.no_grad():
        reference, _ = vit_eager(images)
        ours, _ = vit_other(images)
    for a, b in zip(reference, ours, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


def test_varlen_attention_never_crosses_sequences():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(7, 2, 8, generator=generator) for _ in range(3))
    cu_seqlens = torch.tensor([0, 3, 7], dtype=torch.int32)
    for attention in (eager_varlen_attention, sdpa_varlen_attention):
        out = attention(q, k, v, cu_seqlens, 4, 8**-0.5)
        for start, end in ((0, 3), (3, 7)):
            ref = F.scaled_dot_product_attention(*(t[start:end].transpose(0, 1) for t in (q, k, v)))
            torch.testing.assert_close(out[start:end], ref.transpose(0, 1), atol=1e-6, rtol=1e-6)


def test_inputs_are_padded_to_the_patch_size():
    vit = _vit()
    image = _images([(40, 20)])[0]
    padded = F.pad(image, (0, 8, 0, 12))  # → 48×32
    with torch.no_grad():
        out, grids = vit([image])
        ref, _ = vit([padded])
    assert grids == [(2, 3)]
    torch.testing.assert_close(out[0], ref[0])


def test_backend_selection():
    cpu = torch.device("cpu")
    assert vit_attention("auto", cpu, torch.bfloat16) is sdpa_varlen_attention
    assert vit_attention("eager", cpu, torch.float32) is eager_varlen_attention
    with pytest.raises(ValueError, match="unknown ViT attention"):
        vit_attention("magic", cpu, torch.float32)
    with pytest.raises(ValueError):
        OryxViT(TINY, "magic")


def test_tower_wrapper_casts_to_its_dtype_and_keeps_prefix():
    tower = OryxVisionTower(TINY, "sdpa").to(torch.bfloat16)
    assert next(iter(tower.state_dict())).startswith("vision_tower.")
    out, _ = tower(_images([(32, 32)]))
    assert out[0].dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        tower([torch.zeros(2, 3, 32, 32)])
