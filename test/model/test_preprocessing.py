"""Preprocessing: resize arithmetic (spec §2.5 table), resampling, normalisation, token counts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from oryx_ros.model.preprocessing import (
    ResizeConfig,
    grid_size,
    image_sizes,
    image_token_count,
    normalize,
    pooled_grid,
    preprocess_image,
    preprocess_video,
    preprocess_video_frame,
    resize_bicubic,
    resize_target,
    sample_frame_indices,
    tiny_image_guard,
    to_pil_rgb,
    video_frame_size,
    video_frame_token_count,
    video_token_count,
)

# (W, H): highres, lowres, image tokens, 4× frame size, 4× tokens/frame, 16× frame size, 16× tokens/frame.
# Spec §2.5 (the 16× path resizes with patch 128).
RESIZE_TABLE = [
    ((640, 480), (640, 480), (416, 320), 1773, (512, 384), 205, (512, 384), 55),
    ((1280, 720), (1280, 704), (512, 256), 4095, (640, 320), 211, (640, 256), 45),
    ((1920, 1080), (1920, 1056), (512, 256), 8517, (640, 320), 211, (640, 256), 45),
    ((848, 480), (832, 480), (480, 288), 2151, (576, 320), 191, (512, 256), 37),
    ((3840, 2160), (2048, 1152), (512, 288), 9885, (640, 320), 211, (640, 256), 45),
    ((320, 240), (320, 224), (448, 320), 877, (320, 192), 67, (256, 128), 11),
]


@pytest.mark.parametrize(("size", "highres", "lowres", "tokens", "frame4", "tokens4", "frame16", "tokens16"),
                         RESIZE_TABLE)
def test_resize_table(size, highres, lowres, tokens, frame4, tokens4, frame16, tokens16):
    sizes = image_sizes(*size)
    assert sizes.highres == highres
    assert sizes.lowres == lowres
    assert image_token_count(*size) == tokens
    assert video_frame_size(*size, "video") == frame4
    assert video_frame_token_count(*size, "video") == tokens4
    assert video_frame_size(*size, "video_long") == frame16
    assert video_frame_token_count(*size, "video_long") == tokens16


def test_lowres_1280x720_uses_double_precision_truncation():
    # 704 · sqrt(384² / (1280·704)) / 32 = 8.9… → 8 → 256 px, not 288.
    assert resize_target(1280, 704, patch=32, base=384, max_res=1536, min_res=0) == (512, 256)
    assert image_sizes(1280, 720).lowres == (512, 256)


def test_token_formulas():
    # image: 3 + lgh(lgw+1) + gh(gw+1); 640×480 → lowres grid 20×26, highres grid 30×40.
    assert image_token_count(640, 480) == 3 + 20 * 27 + 30 * 41
    # video: 2 + T(ph(pw+1)+1); 512×384 frame → grid 24×32 → pooled 12×16 (4×) or 6×8 (16×).
    assert video_token_count(640, 480, 64, "video") == 2 + 64 * (12 * 17 + 1)
    assert video_token_count(640, 480, 3, "video_long") == 2 + 3 * (6 * 9 + 1)
    assert grid_size(640, 480) == (30, 40)
    with pytest.raises(ValueError, match="at least one frame"):
        video_token_count(640, 480, 0)


def test_video_area_is_clamped_and_grids_divisible():
    for width, height in [(64, 48), (150, 1000), (4000, 3000), (1000, 150), (300, 300)]:
        for modality, factor in (("video", 4), ("video_long", 8)):
            fw, fh = video_frame_size(width, height, modality)
            gh, gw = grid_size(fw, fh)
            assert gh % factor == 0 and gw % factor == 0
            assert fw * fh <= 480 * 480
    # small frames are scaled up towards 288² before flooring to ×64
    assert video_frame_size(64, 48) == (320, 192)


def test_tiny_image_guard():
    assert tiny_image_guard(20, 10) == (128, 64)  # shorter side → 64
    assert tiny_image_guard(16, 100) == (64, 400)  # only the width < 32
    assert tiny_image_guard(100, 30) == (213, 64)  # int() truncation of 100·64/30
    assert tiny_image_guard(32, 32) == (32, 32)
    assert image_sizes(20, 10).highres == (128, 64)


@pytest.mark.parametrize("size", [(4000, 20), (20, 4000), (100000, 64)])
def test_extreme_aspect_ratio_raises(size):
    with pytest.raises(ValueError, match="aspect ratio"):
        image_sizes(*size)


def test_invalid_inputs_raise():
    with pytest.raises(ValueError, match="positive"):
        image_sizes(0, 10)
    with pytest.raises(ValueError, match="uint8"):
        normalize(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(TypeError):
        normalize([[0, 0, 0]])
    with pytest.raises(ValueError, match="video modality"):
        video_frame_size(640, 480, "image")
    with pytest.raises(ValueError, match="divisible"):
        pooled_grid((6, 10), "video_long")


def test_normalisation_matches_formula_and_clip_processor():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[0, :3] = [[0, 0, 0], [255, 255, 255], [128, 127, 1]]
    ours = normalize(image)
    assert ours.dtype == torch.float32 and ours.shape == (3, 37, 53)
    formula = (torch.from_numpy(image).permute(2, 0, 1).double() / 255 - 0.5) / 0.5
    torch.testing.assert_close(ours.double(), formula, atol=1e-6, rtol=0)
    assert ours.min() == -1.0 and ours.max() == 1.0

    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    processor = Processor(do_resize=False, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    reference = processor.preprocess(image, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(ours, reference)  # bit-exact, same rounding points


def _smooth_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR))


@pytest.mark.parametrize("target", [(416, 320), (1280, 960), (320, 224), (512, 384)])
@pytest.mark.parametrize("kind", ["smooth", "noise"])
def test_resampling_matches_pil_bicubic_semantics(target, kind):
    # Independent reference: torch's antialiased bicubic implements PIL's filter (a = -0.5, support
    # widened when shrinking). Mean absolute error must stay below one 8-bit level.
    image = _smooth_image(640, 480) if kind == "smooth" else np.random.default_rng(1).integers(
        0, 256, (480, 640, 3), dtype=np.uint8)
    ours = np.asarray(resize_bicubic(to_pil_rgb(image), target), dtype=np.float64)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].double()
    reference = F.interpolate(pixels, size=(target[1], target[0]), mode="bicubic", antialias=True,
                              align_corners=False).clamp(0, 255).round()[0].permute(1, 2, 0).numpy()
    assert ours.shape == (target[1], target[0], 3)
    assert np.abs(ours - reference).mean() < 1.0
    pil_direct = np.asarray(Image.fromarray(image).resize(target, Image.Resampling.BICUBIC), dtype=np.float64)
    assert np.array_equal(ours, pil_direct)


def test_preprocess_image_views():
    image = _smooth_image(1280, 720)
    out = preprocess_image(image)
    assert out.highres.shape == (3, 704, 1280) and out.lowres.shape == (3, 256, 512)
    assert out.highres.dtype == torch.float32
    # highres: a plain bicubic resize of the original; lowres: resized from the highres image.
    highres_pil = Image.fromarray(image).resize((1280, 704), Image.Resampling.BICUBIC)
    assert torch.equal(out.highres, normalize(np.asarray(highres_pil)))
    lowres_pil = highres_pil.resize((512, 256), Image.Resampling.BICUBIC)
    assert torch.equal(out.lowres, normalize(np.asarray(lowres_pil)))


def test_pil_inputs_are_converted_to_rgb():
    rgb = _smooth_image(64, 48)
    gray = Image.fromarray(rgb[..., 0], mode="L")
    out = preprocess_image(gray)
    assert out.highres.shape == (3, 32, 64)
    assert torch.equal(out.highres[0], out.highres[1])
    assert torch.equal(preprocess_image(Image.fromarray(rgb)).highres, preprocess_image(rgb).highres)


def test_no_resize_when_size_is_already_canonical():
    image = _smooth_image(640, 480)
    assert torch.equal(preprocess_image(image).highres, normalize(image))


def test_video_preprocessing():
    frames = [_smooth_image(640, 480, seed) for seed in range(3)]
    video = preprocess_video(frames, "video")
    assert video.shape == (3, 3, 384, 512)
    assert torch.equal(video[1], preprocess_video_frame(frames[1], "video"))
    assert preprocess_video(frames, "video_long").shape == (3, 3, 384, 512)
    with pytest.raises(ValueError, match="different sizes"):
        preprocess_video([frames[0], _smooth_image(1280, 720)])
    with pytest.raises(ValueError, match="at least one frame"):
        preprocess_video([])
    fast = preprocess_video(frames, "video", resize_backend="fast")
    assert fast.shape == video.shape and torch.equal(fast[2], preprocess_video_frame(frames[2], resize_backend="fast"))


def test_frame_sampling_matches_linspace():
    assert sample_frame_indices(100, 5) == [0, 24, 49, 74, 99]
    assert sample_frame_indices(3, 5) == [0, 0, 1, 1, 2]  # duplicates for short clips, as the original
    with pytest.raises(ValueError):
        sample_frame_indices(0, 4)


def test_resize_config_is_typed_and_overridable():
    config = ResizeConfig(image_max_res=512)
    sizes = image_sizes(3840, 2160, config)
    assert sizes.highres[0] * sizes.highres[1] <= 512 * 512
    assert math.isclose(sizes.highres[0] / sizes.highres[1], 16 / 9, rel_tol=0.1)
