"""Oryx multimodal model: dynamic compressor, two-view projector, token layout and the LLM (spec §4–§7).

Module tree (= the official checkpoint keys, so weights load with ``strict=True`` and no converter)::

    OryxForCausalLM
    ├── model: OryxQwen2Model(Qwen2Model) | OryxLlamaModel(LlamaModel)   (transformers' own LLM)
    │   ├── embed_tokens, layers.{i}.*, norm     → model.embed_tokens.weight, model.layers.{i}.* …
    │   ├── vision_tower: OryxVisionTower        → model.vision_tower.vision_tower.*
    │   ├── vision_resampler: DynamicCompressor  → model.vision_resampler.vlm_{query,key}_projector.*
    │   └── mm_projector: SimpleMlpTwoView       → model.mm_projector.proj.{0,2}.*,
    │                                              model.mm_projector.image_{newline,begin,end,sep}
    └── lm_head                                  → lm_head.weight

Building blocks for the inference engine (``D`` = LLM width, ``C`` = vision width):

* :meth:`OryxForCausalLM.encode_images`: ``[(lowres (3,h,w), highres (3,H,W))]`` → ``[(L_i, D)]``;
* :meth:`OryxForCausalLM.encode_video_frames`: frames → per-frame embeddings ``[(L_t, D)]``, each frame's
  rows + newlines + trailing ``image_sep``, depending on that frame only (cacheable);
* :meth:`OryxForCausalLM.assemble_video`: ``[image_begin] + frames + [image_end]`` → ``(L, D)``;
* :meth:`OryxForCausalLM.encode_visual`: any mix of images and videos in ONE ViT pass;
* :meth:`OryxForCausalLM.merge_visual_embeddings`: ids with -200 placeholders + blocks → ``(1, S, D)``.

Logits cover ``logits_vocab_size`` rows (set to ``len(tokenizer)`` by the loader, spec end of §7).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaModel, Qwen2Model

from .configuration_oryx import OryxConfig
from .modeling_oryx_vit import OryxVisionTower, VitAttention
from .preprocessing import PreprocessedImage, pool_factor, pooled_grid
from .prompting import IMAGE_TOKEN_INDEX

logger = logging.getLogger(__name__)

COMPRESSOR_MID_CHANNELS: Final = 256
# merge_visual_embeddings(max_length=CONFIG_MAX_LENGTH) uses config.tokenizer_model_max_length.
CONFIG_MAX_LENGTH: Final = -1
VIDEO_MODALITIES: Final = ("video", "video_long")

# transformers ≥ 5.2x names the KV-cache argument ``cache`` (``past_key_values`` before).
_CACHE_KWARG: Final = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"


class ContextLengthError(ValueError):
    """The multimodal prompt is longer than the allowed context (the original truncates silently)."""


# ----------------------------------------------------------------------------------------- compressor
class DynamicCompressor(nn.Module):
    """Spec §4: r×r average pooling plus attention over each cell's r×r neighbourhood.

    ``r`` = 1 ('image'/'text'), 2 ('video'), 4 ('video_long'). No value/output projection, no norm.
    """

    def __init__(self, width: int, mid_channels: int = COMPRESSOR_MID_CHANNELS) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.vlm_query_projector = nn.Linear(width, mid_channels)
        self.vlm_key_projector = nn.Linear(width, mid_channels)

    def forward(
        self, features: torch.Tensor, grid: tuple[int, int], modality: str
    ) -> tuple[torch.Tensor, tuple[int, int]]:
        """``(T, N, C)`` features on grid ``(gh, gw)`` → ``(T, M, C)`` on grid ``(gh/r, gw/r)``."""
        T, N, C = features.shape
        gh, gw = grid
        if gh * gw != N:
            raise ValueError(f"{N} feature tokens do not fill a {gh}x{gw} grid")
        r = pool_factor(modality)
        new_grid = pooled_grid(grid, modality)
        if r == 1:
            # With one key the softmax is exactly 1, so the output is pooled + neighbour = x + x
            # (bit-exact; the projections have no effect on images).
            return features + features, new_grid
        ph, pw = new_grid
        M = ph * pw
        fmap = features.view(T, gh, gw, C).permute(0, 3, 1, 2)  # (T, C, gh, gw)
        pooled = F.avg_pool2d(fmap, r, r).flatten(2).transpose(1, 2)  # (T, M, C)
        neighbours = (
            fmap.reshape(T, C, ph, r, pw, r)
            .permute(0, 2, 4, 3, 5, 1)  # (T, ph, pw, dy, dx, C): neighbourhood ordered (dy, dx) row-major
            .reshape(T * M, r * r, C)
        )
        query = self.vlm_query_projector(pooled).reshape(T * M, 1, self.mid_channels)  # (T·M, 1, 256)
        key = self.vlm_key_projector(neighbours)  # (T·M, r², 256)
        scores = query @ (key.transpose(-1, -2) / self.mid_channels**0.5)  # (T·M, 1, r²)
        weights = scores.nan_to_num().softmax(dim=-1)
        attended = (weights @ neighbours).reshape(T, M, C)  # values are the raw neighbour features
        return pooled + attended, new_grid


class IdentityResampler(nn.Module):
    """``mm_resampler_type: null``: features pass unchanged (images not doubled, videos not pooled)."""

    def forward(self, features, grid, modality):
        if modality in VIDEO_MODALITIES:
            raise ValueError(f"modality {modality!r} needs mm_resampler_type 'dynamic_compressor'")
        return features, tuple(grid)


# ----------------------------------------------------------------------------------------- projector
class SimpleMlpTwoView(nn.Module):
    """``simple_mlp_twoview`` projector (spec §5): ``proj = Linear(C→D), GELU, Linear(D→D)`` plus
    four learned ``[D]`` vectors that frame the visual tokens."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(in_channels, out_channels), nn.GELU(), nn.Linear(out_channels, out_channels)
        )
        self.image_newline = nn.Parameter(torch.zeros(out_channels))
        self.image_begin = nn.Parameter(torch.zeros(out_channels))
        self.image_end = nn.Parameter(torch.zeros(out_channels))
        self.image_sep = nn.Parameter(torch.zeros(out_channels))

    def rows_with_newlines(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, gh·gw, C)`` → ``(B, gh·(gw+1), D)``: projected rows, ``image_newline`` after each row."""
        B = features.shape[0]
        gh, gw = grid
        x = self.proj(features.to(self.image_newline.dtype)).view(B, gh, gw, -1)  # (B, gh, gw, D)
        newline = self.image_newline.to(x.dtype).view(1, 1, 1, -1).expand(B, gh, 1, -1)
        return torch.cat([x, newline], dim=2).reshape(B, gh * (gw + 1), -1)

    def image_block(
        self,
        lowres: torch.Tensor,
        lowres_grid: tuple[int, int],
        highres: torch.Tensor,
        highres_grid: tuple[int, int],
    ) -> torch.Tensor:
        """``(N_lo, C)``, ``(N_hi, C)`` → ``(L, D)`` = begin, lowres rows, sep, highres rows, end.

        ``L = 3 + lgh·(lgw+1) + gh·(gw+1)``.
        """
        global_view = self.rows_with_newlines(lowres[None], lowres_grid)[0]
        native_view = self.rows_with_newlines(highres[None], highres_grid)[0]
        dtype = global_view.dtype
        return torch.cat([
            self.image_begin.to(dtype)[None],
            global_view,
            self.image_sep.to(dtype)[None],
            native_view,
            self.image_end.to(dtype)[None],
        ])

    def frame_blocks(self, frames: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(T, ph·pw, C)`` compressed frames → ``(T, ph·(pw+1)+1, D)``: rows, newlines, trailing sep."""
        rows = self.rows_with_newlines(frames, grid)  # (T, ph·(pw+1), D)
        sep = self.image_sep.to(rows.dtype).view(1, 1, -1).expand(rows.shape[0], 1, -1)
        return torch.cat([rows, sep], dim=1)

    def video_block(self, frame_blocks: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(L_t, D)]`` → ``(2 + ΣL_t, D)`` = ``[image_begin] + frames + [image_end]``."""
        if len(frame_blocks) == 0:
            raise ValueError("a video block needs at least one frame")
        dtype = frame_blocks[0].dtype
        device = frame_blocks[0].device
        begin = self.image_begin.to(device=device, dtype=dtype)[None]
        end = self.image_end.to(device=device, dtype=dtype)[None]
        return torch.cat([begin, *frame_blocks, end])


# ----------------------------------------------------------------------------------------- LLM + vision
def _attach_multimodal_modules(model: nn.Module, config: OryxConfig, vit_attn: VitAttention) -> None:
    model.vision_tower = OryxVisionTower(config.vision, vit_attn)
    if config.mm_resampler_type == "dynamic_compressor":
        model.vision_resampler = DynamicCompressor(config.mm_hidden_size)
    else:
        model.vision_resampler = IdentityResampler()
    model.mm_projector = SimpleMlpTwoView(config.mm_hidden_size, config.hidden_size)


class OryxQwen2Model(Qwen2Model):
    """transformers' ``Qwen2Model`` plus ``vision_tower`` / ``vision_resampler`` / ``mm_projector``."""

    def __init__(self, llm_config, config: OryxConfig, vit_attn: VitAttention = "auto") -> None:
        super().__init__(llm_config)
        _attach_multimodal_modules(self, config, vit_attn)


class OryxLlamaModel(LlamaModel):
    """transformers' ``LlamaModel`` (Yi-1.5 based Oryx-34B) plus the multimodal modules."""

    def __init__(self, llm_config, config: OryxConfig, vit_attn: VitAttention = "auto") -> None:
        super().__init__(llm_config)
        _attach_multimodal_modules(self, config, vit_attn)


@dataclass(frozen=True)
class ImageInput:
    """One image: normalised ``lowres (3, h, w)`` and ``highres (3, H, W)`` views."""

    lowres: torch.Tensor
    highres: torch.Tensor


@dataclass(frozen=True)
class VideoInput:
    """One video: frames ``(T, 3, H, W)`` (or a sequence of ``(3, H, W)``) and its modality tag."""

    frames: torch.Tensor | Sequence[torch.Tensor]
    modality: str = "video"

    def __post_init__(self) -> None:
        if self.modality not in VIDEO_MODALITIES:
            raise ValueError(f"video modality must be one of {VIDEO_MODALITIES}, got {self.modality!r}")
        if len(self.frames) == 0:
            raise ValueError("a video needs at least one frame")


VisualInput = ImageInput | VideoInput


@dataclass
class OryxOutput:
    """``logits (B, S_kept, logits_vocab_size)`` and the KV cache (when ``use_cache``)."""

    logits: torch.Tensor
    cache: Any = None


class OryxForCausalLM(nn.Module):
    """Oryx: vision tower → compressor → projector → visual blocks in the prompt → LLM → logits."""

    # Placement hints for device_map='auto' (accelerate): never split these modules across devices.
    _no_split_modules: Final = [
        "Qwen2DecoderLayer", "LlamaDecoderLayer", "OryxVisionTower", "DynamicCompressor", "SimpleMlpTwoView",
    ]

    def __init__(
        self,
        config: OryxConfig,
        attn_implementation: str = "sdpa",
        vit_attn_implementation: VitAttention = "auto",
    ) -> None:
        super().__init__()
        self.config = config
        self.llm_config = config.to_llm_config(attn_implementation)
        model_cls = OryxQwen2Model if config.llm_family == "qwen2" else OryxLlamaModel
        self.model = model_cls(self.llm_config, config, vit_attn_implementation)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        # Rows of the logits that are real tokens; the loader sets it to len(tokenizer).
        self.logits_vocab_size: int = config.vocab_size

    # ------------------------------------------------------------------ properties
    @property
    def embed_device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    # ------------------------------------------------------------------ LLM forward
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: Any = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> OryxOutput:
        """Text-only LLM forward (visual tokens are already in ``inputs_embeds``).

        ``input_ids (B, S)`` or ``inputs_embeds (B, S, D)`` → logits ``(B, S_kept, logits_vocab_size)``;
        ``logits_to_keep`` = k > 0 keeps the last k positions only (1 during generation).
        """
        outputs = self.model(
            input_ids=input_ids,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{_CACHE_KWARG: cache},
        )
        hidden = outputs.last_hidden_state
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)[..., : self.logits_vocab_size]
        new_cache = getattr(outputs, _CACHE_KWARG, None) if use_cache else None
        return OryxOutput(logits=logits, cache=new_cache if new_cache is not None else cache)

    # ------------------------------------------------------------------ vision
    def encode_visual(self, items: Sequence[VisualInput | PreprocessedImage]) -> list[torch.Tensor]:
        """Visual blocks ``[(L_i, D)]`` for images and videos, all through the ViT in one packed pass."""
        per_item = self._encode(items)
        return [self.assemble_video(out) if isinstance(out, list) else out for out in per_item]

    def encode_images(
        self, images: Sequence[tuple[torch.Tensor, torch.Tensor] | ImageInput | PreprocessedImage]
    ) -> list[torch.Tensor]:
        """``[(lowres (3,h,w), highres (3,H,W))]`` → ``[(L_i, D)]``, ``L = 3 + lgh(lgw+1) + gh(gw+1)``."""
        items = [im if isinstance(im, ImageInput | PreprocessedImage) else ImageInput(*im) for im in images]
        return self._encode(items)

    def encode_video_frames(
        self, frames: torch.Tensor | Sequence[torch.Tensor], modality: str = "video"
    ) -> list[torch.Tensor]:
        """Frames ``(T, 3, H, W)`` (or ``[(3, H_t, W_t)]``) → per-frame embeddings ``[(L_t, D)]``.

        ``L_t = ph·(pw+1) + 1`` (rows, newlines, trailing ``image_sep``); each depends only on its own
        frame, so cached frames can be reused: :meth:`assemble_video` of the concatenated per-frame
        lists equals the whole-video block.
        """
        return self._encode([VideoInput(frames, modality)])[0]

    def assemble_video(self, frame_embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[(L_t, D)]`` → video block ``(2 + ΣL_t, D)`` = ``[image_begin] + frames + [image_end]``."""
        return self.model.mm_projector.video_block(frame_embeddings)

    @torch.no_grad()
    def _encode(self, items: Sequence[VisualInput | PreprocessedImage]) -> list:
        """Images → ``(L, D)`` blocks; videos → lists of per-frame ``(L_t, D)`` embeddings."""
        pixels: list[torch.Tensor] = []
        plan: list[tuple[str, int, int, str]] = []  # (kind, first pixel index, count, modality)
        for item in items:
            if isinstance(item, ImageInput | PreprocessedImage):
                plan.append(("image", len(pixels), 2, "image"))
                pixels += [item.lowres, item.highres]
            elif isinstance(item, VideoInput):
                frames = list(item.frames)
                plan.append(("video", len(pixels), len(frames), item.modality))
                pixels += frames
            else:
                raise TypeError(f"expected ImageInput, PreprocessedImage or VideoInput, got {type(item).__name__}")
        # No dummy-image pass for videos: the original adds proj(dummy).mean()*0, exactly +0.
        features, grids = self.model.vision_tower(pixels)

        resampler = self.model.vision_resampler
        projector = self.model.mm_projector
        param_dtype = projector.image_newline.dtype
        outputs: list = []
        for kind, start, count, modality in plan:
            if kind == "image":
                (low, high), (low_grid, high_grid) = features[start : start + 2], grids[start : start + 2]
                low, low_grid = resampler(low[None].to(param_dtype), low_grid, "image")
                high, high_grid = resampler(high[None].to(param_dtype), high_grid, "image")
                outputs.append(projector.image_block(low[0], low_grid, high[0], high_grid))
                continue
            frame_outputs: list[torch.Tensor | None] = [None] * count
            by_grid: dict[tuple[int, int], list[int]] = {}
            for offset in range(count):
                by_grid.setdefault(grids[start + offset], []).append(offset)
            for grid, offsets in by_grid.items():
                stacked = torch.stack([features[start + o] for o in offsets]).to(param_dtype)  # (T, N, C)
                compressed, new_grid = resampler(stacked, grid, modality)  # (T, M, C)
                blocks = projector.frame_blocks(compressed, new_grid)  # (T, L_t, D)
                for row, offset in enumerate(offsets):
                    frame_outputs[offset] = blocks[row]
            outputs.append(frame_outputs)
        return outputs

    # ------------------------------------------------------------------ prompt merge
    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(S,)`` ids → ``(S, D)`` embeddings (ids must be real tokens, no placeholders)."""
        return self.model.embed_tokens(input_ids.to(self.embed_device))

    @torch.no_grad()
    def merge_visual_embeddings(
        self,
        input_ids: torch.Tensor | Sequence[int],
        visual_blocks: Sequence[torch.Tensor],
        max_length: int | None = CONFIG_MAX_LENGTH,
    ) -> torch.Tensor:
        """Ids with ``-200`` placeholders + visual blocks ``[(L_i, D)]`` → ``inputs_embeds (1, S, D)``.

        Placeholders are replaced in order, one block each; text pieces are embedded in one call.
        ``max_length`` (``CONFIG_MAX_LENGTH``: ``config.tokenizer_model_max_length``; None = no limit) bounds the
        result: a longer prompt raises :class:`ContextLengthError` instead of the original's silent
        truncation. Raises ``ValueError`` naming both counts when placeholders and blocks differ.
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
        is_placeholder = ids == IMAGE_TOKEN_INDEX
        num_placeholders = int(is_placeholder.sum())
        if num_placeholders != len(visual_blocks):
            raise ValueError(
                f"visual items and <image> placeholders do not match: placeholders (id {IMAGE_TOKEN_INDEX}) "
                f"{num_placeholders}, visual blocks {len(visual_blocks)}"
            )
        text_ids = ids[~is_placeholder]
        vocab_rows = self.model.embed_tokens.num_embeddings
        if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= vocab_rows):
            raise ValueError(
                f"token ids must lie in [0, {vocab_rows}) apart from the {IMAGE_TOKEN_INDEX} placeholders; "
                f"got min {int(text_ids.min())}, max {int(text_ids.max())}"
            )
        width = self.config.hidden_size
        for index, block in enumerate(visual_blocks):
            if block.dim() != 2 or block.shape[1] != width:
                raise ValueError(f"visual block {index} must be (L, {width}), got {tuple(block.shape)}")
        total = int(text_ids.numel()) + sum(int(b.shape[0]) for b in visual_blocks)
        if max_length == CONFIG_MAX_LENGTH:
            max_length = self.config.tokenizer_model_max_length
        if max_length is not None and total > max_length:
            raise ContextLengthError(
                f"the multimodal prompt has {total} positions ({int(text_ids.numel())} text, "
                f"{total - int(text_ids.numel())} visual), more than the limit {max_length}"
            )

        text_embeds = self.embed_text(text_ids)  # (S_text, D)
        pieces: list[torch.Tensor] = []
        placeholder_positions = torch.nonzero(is_placeholder).flatten().tolist()
        text_cursor = 0
        previous = -1
        for block_index, position in enumerate(placeholder_positions):
            text_len = position - previous - 1
            pieces.append(text_embeds[text_cursor : text_cursor + text_len])
            text_cursor += text_len
            pieces.append(visual_blocks[block_index].to(device=text_embeds.device, dtype=text_embeds.dtype))
            previous = position
        pieces.append(text_embeds[text_cursor:])
        return torch.cat(pieces)[None]

    def prepare_inputs_embeds(
        self,
        input_ids: torch.Tensor | Sequence[int],
        items: Sequence[VisualInput | PreprocessedImage] = (),
        max_length: int | None = CONFIG_MAX_LENGTH,
    ) -> torch.Tensor:
        """Encode ``items`` (one ViT pass) and merge them into the prompt → ``(1, S, D)``."""
        return self.merge_visual_embeddings(input_ids, self.encode_visual(items) if items else [], max_length)
