"""Oryx image and video preprocessing (spec §2): resize arithmetic, bicubic resampling, normalisation.

Everything here is a pure function of its inputs. The canonical settings of every shipped Oryx script
(``LOWRES_RESIZE=384x32``, ``HIGHRES_BASE=0x32``, ``VIDEO_RESIZE=0x64``, ``MAXRES=1536``, ``MINRES=0``,
``VIDEO_MAXRES=480``, ``VIDEO_MINRES=288``) are typed defaults of :class:`ResizeConfig`, not environment
variables.

Sizes are written ``(width, height)`` in pixels, as PIL's ``Image.size``. Pixel tensors are
channels-first ``(3, H, W)`` float32 with values ``(u8/255 - 0.5)/0.5`` in ``[-1, 1]``.

Resampling is bicubic with a selectable backend (:mod:`.resampling`): ``resize_backend="exact"`` (the
default here) is PIL's own ``Image.resize(..., BICUBIC)`` (the original's default filter), so the pixels
equal the original's; ``"fast"`` is torch's uint8 antialiased bicubic kernel, several times faster, with
about 0.2 % of values one 8-bit level off PIL's on noise (at most 2 levels per resize).
The engine picks the backend (``OryxEngine(resize_backend=...)``). Inputs are numpy RGB ``uint8`` arrays
``(H, W, 3)`` or PIL images (converted to RGB first, as training does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from .resampling import ResizeBackend, check_backend, normalize_rgb, resize_rgb, rgb_tensor

Modality = Literal["image", "video", "video_long"]
VideoModality = Literal["video", "video_long"]
ImageLike = npt.NDArray[np.uint8] | Image.Image

VIT_PATCH_SIZE: Final = 16  # px per ViT patch (spec §3.1)
# Tiny-image guard (spec §2.3): sides below this are scaled up so that side becomes TINY_TARGET_PX.
TINY_SIDE_PX: Final = 32
TINY_TARGET_PX: Final = 64
# Token reduction factor r of the compressor per modality (spec §4): r×r cells become one token.
POOL_FACTOR: Final[dict[str, int]] = {"image": 1, "text": 1, "video": 2, "video_long": 4}


@dataclass(frozen=True)
class ResizeConfig:
    """Canonical resize settings (spec §2.1). ``base`` 0 = keep the native size within the area limits."""

    lowres_base: int = 384
    lowres_patch: int = 32
    highres_base: int = 0
    highres_patch: int = 32
    image_max_res: int = 1536  # MAXRES: highres area ≤ 1536²
    image_min_res: int = 0  # MINRES
    video_base: int = 0
    video_patch: int = 64  # the 16× path ('video_long') uses twice this: 128
    video_max_res: int = 480  # VIDEO_MAXRES: frame area ≤ 480²
    video_min_res: int = 288  # VIDEO_MINRES: frame area ≥ 288²


DEFAULT_RESIZE: Final = ResizeConfig()


@dataclass(frozen=True)
class ImageSizes:
    """Target sizes ``(width, height)`` in px for one image (spec §2.3)."""

    original: tuple[int, int]
    guarded: tuple[int, int]  # after the tiny-image guard (== original for normal images)
    highres: tuple[int, int]  # native view, ≤1536² px area, sides ×32
    lowres: tuple[int, int]  # global view, area ≈384², sides ×32


@dataclass(frozen=True)
class PreprocessedImage:
    """Normalised views of one image: ``lowres (3, h, w)`` and ``highres (3, H, W)`` float32."""

    lowres: torch.Tensor
    highres: torch.Tensor
    sizes: ImageSizes


# ----------------------------------------------------------------------------------------- sizes
def resize_target(
    width: int, height: int, *, patch: int, base: int, max_res: int, min_res: int
) -> tuple[int, int]:
    """The generic resize rule of spec §2.2 → ``(new_width, new_height)``.

    Evaluated in Python double precision in the original's order (product, divide by ``patch``,
    truncate), e.g. 1280×704 with base 384, patch 32 → 512×256. Raises ``ValueError`` when a side
    would become 0 (extreme aspect ratios, spec §12.14).
    """
    _check_size(width, height)
    area = width * height
    if base == 0:
        if area > max_res * max_res:
            scale = math.sqrt(max_res * max_res / area)
        elif area < min_res * min_res:
            scale = math.sqrt(min_res * min_res / area)
        else:
            scale = 1.0
    else:
        scale = math.sqrt(base * base / area)
    new_width = int(width * scale / patch) * patch
    new_height = int(height * scale / patch) * patch
    if new_width <= 0 or new_height <= 0:
        raise ValueError(
            f"a {width}x{height} px input resizes to {new_width}x{new_height} px (patch {patch}, base {base}); "
            f"its aspect ratio {max(width, height) / min(width, height):.1f}:1 is too extreme"
        )
    return new_width, new_height


def tiny_image_guard(width: int, height: int) -> tuple[int, int]:
    """Spec §2.3 step 1: upscale images with a side < 32 px so that side (or the shorter one) is 64."""
    _check_size(width, height)
    if width < TINY_SIDE_PX and height < TINY_SIDE_PX:
        ratio = TINY_TARGET_PX / min(width, height)
    elif width < TINY_SIDE_PX:
        ratio = TINY_TARGET_PX / width
    elif height < TINY_SIDE_PX:
        ratio = TINY_TARGET_PX / height
    else:
        return width, height
    new_width, new_height = int(width * ratio), int(height * ratio)
    if new_width <= 0 or new_height <= 0:
        raise ValueError(f"a {width}x{height} px image cannot be upscaled by the tiny-image guard")
    return new_width, new_height


def image_sizes(width: int, height: int, config: ResizeConfig = DEFAULT_RESIZE) -> ImageSizes:
    """Target sizes of the two image views, e.g. 1280×720 → highres 1280×704, lowres 512×256."""
    guarded = tiny_image_guard(width, height)
    highres = resize_target(
        *guarded, patch=config.highres_patch, base=config.highres_base,
        max_res=config.image_max_res, min_res=config.image_min_res,
    )
    # The lowres view is derived from the already highres-resized image (spec §2.3 step 3).
    lowres = resize_target(
        *highres, patch=config.lowres_patch, base=config.lowres_base,
        max_res=config.image_max_res, min_res=config.image_min_res,
    )
    return ImageSizes(original=(width, height), guarded=guarded, highres=highres, lowres=lowres)


def video_frame_size(
    width: int, height: int, modality: VideoModality = "video", config: ResizeConfig = DEFAULT_RESIZE
) -> tuple[int, int]:
    """Frame size for the 4× (``'video'``, sides ×64) or 16× (``'video_long'``, sides ×128) path.

    The frame area is clamped into [288², 480²] px, e.g. 640×480 → 512×384, 1280×720 → 640×320
    ('video') or 640×256 ('video_long').
    """
    patch = _video_patch(modality, config)
    return resize_target(
        width, height, patch=patch, base=config.video_base,
        max_res=config.video_max_res, min_res=config.video_min_res,
    )


# ----------------------------------------------------------------------------------------- token counts
def grid_size(width: int, height: int, patch_size: int = VIT_PATCH_SIZE) -> tuple[int, int]:
    """ViT patch grid ``(rows, cols)`` of a ``width×height`` px input (the ViT zero-pads to ×patch)."""
    return math.ceil(height / patch_size), math.ceil(width / patch_size)


def image_token_count_for_sizes(sizes: ImageSizes, patch_size: int = VIT_PATCH_SIZE) -> int:
    """``3 + lgh·(lgw+1) + gh·(gw+1)``: begin, lowres rows + newlines, sep, highres rows + newlines, end."""
    lgh, lgw = grid_size(*sizes.lowres, patch_size)
    gh, gw = grid_size(*sizes.highres, patch_size)
    return 3 + lgh * (lgw + 1) + gh * (gw + 1)


def image_token_count(
    width: int, height: int, config: ResizeConfig = DEFAULT_RESIZE, patch_size: int = VIT_PATCH_SIZE
) -> int:
    """LLM positions taken by one image of ``width×height`` px, e.g. 640×480 → 1773, 1280×720 → 4095."""
    return image_token_count_for_sizes(image_sizes(width, height, config), patch_size)


def video_frame_token_count(
    width: int,
    height: int,
    modality: VideoModality = "video",
    config: ResizeConfig = DEFAULT_RESIZE,
    patch_size: int = VIT_PATCH_SIZE,
) -> int:
    """``ph·(pw+1) + 1`` positions per frame (rows + newlines + the trailing image_sep).

    ``(ph, pw)`` is the patch grid divided by 2 ('video') or 4 ('video_long'): 640×480 → 205 / 55.
    """
    frame_w, frame_h = video_frame_size(width, height, modality, config)
    ph, pw = pooled_grid(grid_size(frame_w, frame_h, patch_size), modality)
    return ph * (pw + 1) + 1


def video_token_count(
    width: int,
    height: int,
    num_frames: int,
    modality: VideoModality = "video",
    config: ResizeConfig = DEFAULT_RESIZE,
    patch_size: int = VIT_PATCH_SIZE,
) -> int:
    """``2 + T·(ph·(pw+1) + 1)``: image_begin, T frames, image_end."""
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    return 2 + num_frames * video_frame_token_count(width, height, modality, config, patch_size)


def pooled_grid(grid: tuple[int, int], modality: str) -> tuple[int, int]:
    """Grid after the compressor's r×r pooling; raises ``ValueError`` if not divisible (spec §4)."""
    r = pool_factor(modality)
    gh, gw = grid
    if gh % r or gw % r:
        raise ValueError(f"patch grid {gh}x{gw} is not divisible by the {modality!r} pooling factor {r}")
    return gh // r, gw // r


def pool_factor(modality: str) -> int:
    try:
        return POOL_FACTOR[modality]
    except KeyError:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(POOL_FACTOR)}") from None


# ----------------------------------------------------------------------------------------- pixels
def to_pil_rgb(image: ImageLike) -> Image.Image:
    """A PIL RGB image from a numpy ``(H, W, 3)`` uint8 array or any PIL image (converted to RGB)."""
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    _check_rgb_array(image)
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def resize_bicubic(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL bicubic resize to ``size = (width, height)``; a copy-free no-op when the size already matches."""
    if image.size == tuple(size):
        return image
    return image.resize(size, resample=Image.Resampling.BICUBIC)


def normalize(image: ImageLike) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` → float32 ``(3, H, W)`` = ``(u8/255 - 0.5)/0.5`` (CLIP processor, mean=std=0.5)."""
    return normalize_rgb(_rgb_pixels(image))


def preprocess_image(
    image: ImageLike, config: ResizeConfig = DEFAULT_RESIZE, resize_backend: ResizeBackend = "exact"
) -> PreprocessedImage:
    """One image → lowres ``(3, h, w)`` and highres ``(3, H, W)`` float32 views (spec §2.3).

    Both views come from one uint8 copy of the input; the lowres view is resized from the highres one.
    """
    check_backend(resize_backend)
    pixels = _rgb_pixels(image)
    sizes = image_sizes(pixels.shape[1], pixels.shape[0], config)
    guarded = resize_rgb(pixels, sizes.guarded, resize_backend)
    highres = resize_rgb(guarded, sizes.highres, resize_backend)
    lowres = resize_rgb(highres, sizes.lowres, resize_backend)  # from the highres-resized image, as the original
    return PreprocessedImage(lowres=normalize_rgb(lowres), highres=normalize_rgb(highres), sizes=sizes)


def preprocess_video_frame(
    frame: ImageLike,
    modality: VideoModality = "video",
    config: ResizeConfig = DEFAULT_RESIZE,
    resize_backend: ResizeBackend = "exact",
) -> torch.Tensor:
    """One video frame → float32 ``(3, H, W)`` at :func:`video_frame_size` (spec §2.4)."""
    check_backend(resize_backend)
    pixels = _rgb_pixels(frame)
    size = video_frame_size(pixels.shape[1], pixels.shape[0], modality, config)
    return normalize_rgb(resize_rgb(pixels, size, resize_backend))


def preprocess_video(
    frames: Sequence[ImageLike],
    modality: VideoModality = "video",
    config: ResizeConfig = DEFAULT_RESIZE,
    resize_backend: ResizeBackend = "exact",
) -> torch.Tensor:
    """Frames of one video → float32 ``(T, 3, H, W)``; all frames must resize to the same size."""
    if len(frames) == 0:
        raise ValueError("a video needs at least one frame")
    tensors = [preprocess_video_frame(frame, modality, config, resize_backend) for frame in frames]
    shapes = sorted({tuple(t.shape) for t in tensors})
    if len(shapes) > 1:
        raise ValueError(f"video frames resize to different sizes {shapes}; pass them as separate videos")
    return torch.stack(tensors)


def sample_frame_indices(total_frames: int, num_frames: int) -> list[int]:
    """``linspace(0, total-1, N)`` cast to int, as the official video entry points sample frames."""
    if total_frames < 1 or num_frames < 1:
        raise ValueError(f"need total_frames ≥ 1 and num_frames ≥ 1, got {total_frames}, {num_frames}")
    return [int(i) for i in np.linspace(0, total_frames - 1, num_frames)]


# ----------------------------------------------------------------------------------------- helpers
def _rgb_pixels(image: ImageLike) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` tensor of an RGB array (shared memory when possible) or of any PIL image."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(to_pil_rgb(image)))  # np.array: PIL's array interface is read-only
    _check_rgb_array(image)
    return rgb_tensor(image)


def _video_patch(modality: str, config: ResizeConfig) -> int:
    if modality == "video":
        return config.video_patch
    if modality == "video_long":
        return 2 * config.video_patch  # process_anyres_video_genli_long
    raise ValueError(f"video modality must be 'video' or 'video_long', got {modality!r}")


def _check_rgb_array(image: object) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy uint8 (H, W, 3) array or a PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB array, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB array of shape (H, W, 3), got {image.shape}")
    _check_size(image.shape[1], image.shape[0])


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
