"""Compressor, projector layout, visual token counts from the model, per-frame video blocks, merging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oryx_ros.model.modeling_oryx import (
    ContextLengthError,
    DynamicCompressor,
    ImageInput,
    SimpleMlpTwoView,
    VideoInput,
)
from oryx_ros.model.preprocessing import (
    image_sizes,
    image_token_count,
    preprocess_image,
    preprocess_video,
    video_frame_token_count,
    video_token_count,
)
from oryx_ros.model.prompting import IMAGE_TOKEN_INDEX


def _compressor(width: int = 24, seed: int = 0) -> DynamicCompressor:
    torch.manual_seed(seed)
    compressor = DynamicCompressor(width, mid_channels=16)
    with torch.no_grad():
        for p in compressor.parameters():
            p.normal_(0.0, 0.5)
    return compressor


def _loop_compressor(compressor: DynamicCompressor, features, grid, r):
    """Spec §4 written cell by cell."""
    T, _, C = features.shape
    gh, gw = grid
    fmap = features.view(T, gh, gw, C)
    out = torch.empty(T, (gh // r) * (gw // r), C)
    for t in range(T):
        for i in range(gh // r):
            for j in range(gw // r):
                cell = fmap[t, i * r:(i + 1) * r, j * r:(j + 1) * r].reshape(r * r, C)  # (dy, dx) row-major
                pooled = cell.mean(0)
                q = compressor.vlm_query_projector(pooled)
                k = compressor.vlm_key_projector(cell)
                weights = torch.softmax(k @ q / compressor.mid_channels**0.5, dim=0)
                out[t, i * (gw // r) + j] = pooled + weights @ cell
    return out


def test_compressor_image_mode_is_exactly_twice_the_input():
    compressor = _compressor().to(torch.bfloat16)
    features = torch.randn(1, 12, 24).to(torch.bfloat16)
    out, grid = compressor(features, (3, 4), "image")
    assert grid == (3, 4)
    assert torch.equal(out, features + features)
    assert torch.equal(out.float(), 2 * features.float())
    # ... and the generic attention formula with one key agrees (the shortcut is exact)
    with torch.no_grad():
        loop = _loop_compressor(_compressor(), features.float(), (3, 4), 1)
    torch.testing.assert_close(loop, 2 * features.float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("modality", "r"), [("video", 2), ("video_long", 4)])
def test_compressor_video_modes_match_direct_loop(modality, r):
    compressor = _compressor()
    features = torch.randn(2, 8 * 12, 24)
    with torch.no_grad():
        out, grid = compressor(features, (8, 12), modality)
        reference = _loop_compressor(compressor, features, (8, 12), r)
    assert grid == (8 // r, 12 // r)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_compressor_checks_grids():
    compressor = _compressor()
    with pytest.raises(ValueError, match="divisible"):
        compressor(torch.randn(1, 6 * 6, 24), (6, 6), "video_long")
    with pytest.raises(ValueError, match="grid"):
        compressor(torch.randn(1, 10, 24), (3, 4), "video")
    with pytest.raises(ValueError, match="unknown modality"):
        compressor(torch.randn(1, 12, 24), (3, 4), "audio")


def test_projector_image_layout():
    torch.manual_seed(0)
    projector = SimpleMlpTwoView(8, 6)
    with torch.no_grad():
        for p in projector.parameters():
            p.normal_()
    low, high = torch.randn(2 * 3, 8), torch.randn(4 * 5, 8)
    block = projector.image_block(low, (2, 3), high, (4, 5))
    assert block.shape == (3 + 2 * 4 + 4 * 6, 6)
    assert torch.equal(block[0], projector.image_begin)
    assert torch.equal(block[-1], projector.image_end)
    sep = 1 + 2 * 4
    assert torch.equal(block[sep], projector.image_sep)
    for row in range(2):  # lowres newlines after every row of 3
        assert torch.equal(block[1 + row * 4 + 3], projector.image_newline)
    for row in range(4):  # highres newlines after every row of 5
        assert torch.equal(block[sep + 1 + row * 6 + 5], projector.image_newline)
    torch.testing.assert_close(block[sep + 1], projector.proj(high[0]))
    torch.testing.assert_close(block[1 + 4 + 2], projector.proj(low[5]))  # lowres row 1, col 2


def test_projector_video_layout():
    projector = SimpleMlpTwoView(8, 6)
    frames = projector.frame_blocks(torch.randn(3, 2 * 2, 8), (2, 2))
    assert frames.shape == (3, 2 * 3 + 1, 6)
    assert all(torch.equal(f[-1], projector.image_sep) for f in frames)
    block = projector.video_block(list(frames))
    assert block.shape == (2 + 3 * 7, 6)
    assert torch.equal(block[0], projector.image_begin) and torch.equal(block[-1], projector.image_end)


def _random_u8(width, height, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (848, 480), (320, 240), (1920, 1080), (3840, 2160)])
def test_image_token_count_from_running_the_model(tiny_oryx, size):
    model = tiny_oryx.model
    pre = preprocess_image(_random_u8(*size))
    [block] = model.encode_images([pre])
    assert block.shape == (image_token_count(*size), model.config.hidden_size)
    sizes = image_sizes(*size)
    lgh, lgw = sizes.lowres[1] // 16, sizes.lowres[0] // 16
    projector = model.model.mm_projector
    assert torch.equal(block[1 + lgh * (lgw + 1)], projector.image_sep)
    assert torch.equal(block[lgw + 1], projector.image_newline)


def test_several_images_in_one_pass_equal_single_passes(tiny_oryx):
    model = tiny_oryx.model
    images = [preprocess_image(_random_u8(w, h, s)) for s, (w, h) in enumerate([(640, 480), (320, 240)])]
    together = model.encode_images(images)
    alone = [model.encode_images([im])[0] for im in images]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    tuples = model.encode_images([(im.lowres, im.highres) for im in images])
    torch.testing.assert_close(tuples[1], alone[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("size", "modality", "per_frame"), [
    ((640, 480), "video", 205), ((640, 480), "video_long", 55),
    ((1280, 720), "video", 211), ((1280, 720), "video_long", 45),
])
def test_video_token_counts_and_per_frame_blocks(tiny_oryx, size, modality, per_frame):
    model = tiny_oryx.model
    frames = preprocess_video([_random_u8(*size, seed) for seed in range(3)], modality)
    whole = model.encode_visual([VideoInput(frames, modality)])[0]
    assert whole.shape[0] == video_token_count(*size, 3, modality) == 2 + 3 * per_frame
    assert video_frame_token_count(*size, modality) == per_frame

    per_frame_embeds = model.encode_video_frames(frames, modality)
    assert [e.shape[0] for e in per_frame_embeds] == [per_frame] * 3
    # Frames encoded at different times (as a cache would) assemble into the same block.
    cached = model.encode_video_frames(frames[:1], modality) + model.encode_video_frames(frames[1:], modality)
    torch.testing.assert_close(model.assemble_video(cached), whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(per_frame_embeds[2], cached[2], atol=1e-5, rtol=1e-5)
    projector = model.model.mm_projector
    assert torch.equal(whole[0], projector.image_begin) and torch.equal(whole[-1], projector.image_end)
    assert torch.equal(whole[per_frame], projector.image_sep)  # frame 1 ends at position per_frame


def test_mixed_items_in_one_pass(tiny_oryx):
    model = tiny_oryx.model
    image = preprocess_image(_random_u8(320, 240))
    frames = preprocess_video([_random_u8(320, 240, s) for s in range(2)])
    blocks = model.encode_visual([image, VideoInput(frames), ImageInput(image.lowres, image.highres)])
    assert [b.shape[0] for b in blocks] == [877, 2 + 2 * 67, 877]
    torch.testing.assert_close(blocks[0], blocks[2])


def test_merge_places_text_and_visual_rows(tiny_oryx):
    model = tiny_oryx.model
    D = model.config.hidden_size
    blocks = [torch.randn(5, D), torch.randn(3, D)]
    ids = [11, 12, IMAGE_TOKEN_INDEX, 13, IMAGE_TOKEN_INDEX, 14, 15]
    embeds = model.merge_visual_embeddings(ids, blocks)
    assert embeds.shape == (1, 5 + 5 + 3, D)
    table = model.model.embed_tokens.weight
    assert torch.equal(embeds[0, :2], table[[11, 12]])
    assert torch.equal(embeds[0, 2:7], blocks[0])
    assert torch.equal(embeds[0, 7], table[13])
    assert torch.equal(embeds[0, 8:11], blocks[1])
    assert torch.equal(embeds[0, 11:], table[[14, 15]])
    # text-only prompts need no blocks
    assert model.merge_visual_embeddings([1, 2, 3], []).shape == (1, 3, D)


def test_merge_errors_name_both_counts(tiny_oryx):
    model = tiny_oryx.model
    D = model.config.hidden_size
    with pytest.raises(ValueError, match=r"placeholders .*2, visual blocks 1"):
        model.merge_visual_embeddings([IMAGE_TOKEN_INDEX, 5, IMAGE_TOKEN_INDEX], [torch.zeros(2, D)])
    with pytest.raises(ValueError, match=r"must be \(L, 64\)"):
        model.merge_visual_embeddings([IMAGE_TOKEN_INDEX], [torch.zeros(2, D + 1)])
    with pytest.raises(ValueError, match="token ids must lie"):
        model.merge_visual_embeddings([-5, 1], [])
    with pytest.raises(ContextLengthError, match="more than the limit 4"):
        model.merge_visual_embeddings([1, IMAGE_TOKEN_INDEX], [torch.zeros(4, D)], max_length=4)
    # the default limit is the config's tokenizer_model_max_length (32768 here)
    assert model.config.tokenizer_model_max_length == 32768
    with pytest.raises(ContextLengthError):
        model.merge_visual_embeddings([1, IMAGE_TOKEN_INDEX], [torch.zeros(32768, D)])


def test_state_dict_uses_official_names(tiny_model_factory):
    qwen = tiny_model_factory(llm="qwen2")
    keys = set(qwen.state_dict())
    prefixes = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.", "model.mm_projector.",
                "model.vision_resampler.", "model.vision_tower.vision_tower.")
    assert all(k.startswith(prefixes) for k in keys)
    for name in ("model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.bias", "model.norm.weight",
                 "lm_head.weight", "model.mm_projector.proj.0.weight", "model.mm_projector.proj.2.bias",
                 "model.mm_projector.image_newline", "model.mm_projector.image_begin",
                 "model.mm_projector.image_end", "model.mm_projector.image_sep",
                 "model.vision_resampler.vlm_query_projector.weight", "model.vision_resampler.vlm_key_projector.bias",
                 "model.vision_tower.vision_tower.pos_embed",
                 "model.vision_tower.vision_tower.blocks.1.attn.qkv.weight",
                 "model.layers.0.mlp.gate_proj.weight", "model.layers.0.post_attention_layernorm.weight"):
        assert name in keys, name
    llama_keys = set(tiny_model_factory(llm="llama").state_dict())
    assert "model.layers.0.self_attn.q_proj.bias" not in llama_keys
    assert "model.layers.0.self_attn.q_proj.weight" in llama_keys
    assert type(tiny_model_factory(llm="llama").model).__mro__[1].__name__ == "LlamaModel"


def test_text_forward_logits_are_trimmed(tiny_oryx):
    model = tiny_oryx.model
    out = model(input_ids=torch.tensor([[1, 2, 3]]))
    assert out.logits.shape == (1, 3, len(tiny_oryx.tokenizer))
    assert model.lm_head.weight.shape[0] == 152064
