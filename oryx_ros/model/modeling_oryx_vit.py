"""OryxViT: the SigLIP-so400m/16-shaped vision transformer of Oryx (spec §3), in pure torch.

Attribute names are the checkpoint keys (``patch_embed.proj``, ``pos_embed``, ``blocks.{i}.norm1``,
``blocks.{i}.attn.qkv`` …), so the official weights load with ``strict=True`` and no renaming.

All inputs of a request (lowres and highres views of every image, every video frame) go through the
tower in ONE packed pass: each input is patch-embedded and position-embedded on its own grid, the
token sequences are concatenated into ``(ΣN, C)`` and every block attends within each sequence only
(``cu_seqlens`` as in flash-attn's varlen API). :func:`vit_attention` is the one place that picks the
attention backend:

* ``"flash_attention_2"``: ``flash_attn_varlen_func`` (imported lazily; CUDA, fp16/bf16 only);
* ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention``, one call per group of equally long
  sequences (no cross-image attention, no quadratic block-diagonal mask);
* ``"eager"``: the readable reference (explicit softmax in float32), used by the CPU parity tests;
* ``"auto"``: flash-attn on CUDA in half precision when it is importable, else sdpa.

Differences to the original, on purpose: no ``flash_attn`` import at module load, no dummy-image pass for
videos, and the position embedding resampled once per grid size and cached.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Final, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_oryx import OryxVisionConfig

logger = logging.getLogger(__name__)

VitAttention = Literal["auto", "flash_attention_2", "sdpa", "eager"]
VIT_ATTENTION_BACKENDS: Final = ("auto", "flash_attention_2", "sdpa", "eager")
# Inputs patch-embedded per call: each call is a cancel point (oryx_ros.model.cancellation), so a request
# of hundreds of frames can stop before the first block; small enough for that, large enough to batch.
PATCH_EMBED_CHUNK: Final = 8

# Signature shared by the backends: q, k, v (ΣN, heads, head_dim), cu_seqlens (S+1,) int32,
# max_seqlen, softmax scale → (ΣN, heads, head_dim).
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float], torch.Tensor]


# ----------------------------------------------------------------------------------------- attention
def _segments(cu_seqlens: torch.Tensor) -> list[tuple[int, int]]:
    bounds = cu_seqlens.tolist()
    return list(itertools.pairwise(bounds))


def eager_varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale):
    """Reference: softmax(q kᵀ · scale) v per sequence, scores and softmax in float32."""
    out = torch.empty_like(q)
    for start, end in _segments(cu_seqlens):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # (heads, n, head_dim)
        scores = torch.matmul(qs.float(), ks.float().transpose(-1, -2)) * scale  # (heads, n, n)
        probs = scores.softmax(dim=-1)
        out[start:end] = torch.matmul(probs, vs.float()).transpose(0, 1).to(q.dtype)
    return out


def sdpa_varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale):
    """SDPA batched over sequences of equal length (frames of one video share one call)."""
    out = torch.empty_like(q)
    by_length: dict[int, list[int]] = {}
    for start, end in _segments(cu_seqlens):
        by_length.setdefault(end - start, []).append(start)
    for length, starts in by_length.items():
        index = torch.cat([torch.arange(s, s + length, device=q.device) for s in starts])
        q_g, k_g, v_g = (  # (n, heads, length, head_dim)
            t[index].view(len(starts), length, *t.shape[1:]).transpose(1, 2) for t in (q, k, v)
        )
        attended = F.scaled_dot_product_attention(q_g, k_g, v_g, scale=scale)
        out[index] = attended.transpose(1, 2).reshape(-1, *q.shape[1:])
    return out


@functools.cache
def _flash_attn_varlen_func() -> Callable | None:
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def flash_varlen_attention(q, k, v, cu_seqlens, max_seqlen, scale):
    """flash-attn 2 varlen kernel, as the original's list path (spec §3.3)."""
    func = _flash_attn_varlen_func()
    if func is None:
        raise ImportError("ViT attention 'flash_attention_2' needs the flash_attn package")
    q, k, v = (t.contiguous() for t in (q, k, v))  # (ΣN, heads, head_dim), as the kernel expects
    return func(q, k, v, cu_seqlens_q=cu_seqlens, cu_seqlens_k=cu_seqlens, max_seqlen_q=max_seqlen,
                max_seqlen_k=max_seqlen, softmax_scale=scale, causal=False)


def vit_attention(name: str, device: torch.device, dtype: torch.dtype) -> AttentionFn:
    """The one place that selects the ViT attention backend (see the module docstring)."""
    if name not in VIT_ATTENTION_BACKENDS:
        raise ValueError(f"unknown ViT attention {name!r}; expected one of {VIT_ATTENTION_BACKENDS}")
    if name == "auto":
        usable = device.type == "cuda" and dtype in (torch.float16, torch.bfloat16)
        name = "flash_attention_2" if usable and _flash_attn_varlen_func() is not None else "sdpa"
    return {"flash_attention_2": flash_varlen_attention, "sdpa": sdpa_varlen_attention,
            "eager": eager_varlen_attention}[name]


# ----------------------------------------------------------------------------------------- modules
class PatchEmbed(nn.Module):
    """``Conv2d(3, C, kernel=stride=patch)``; tokens flattened row-major (index = row·gw + col)."""

    def __init__(self, config: OryxVisionConfig) -> None:
        super().__init__()
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(3, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` → ``(B, gh·gw, C)``; H and W must be multiples of the patch size."""
        return self.proj(pixels).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, config: OryxVisionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, attention: AttentionFn):
        """``x (ΣN, C)`` packed tokens → ``(ΣN, C)``."""
        # qkv output channels are laid out [q | k | v], each heads × head_dim.
        qkv = self.qkv(x).view(x.shape[0], 3, self.num_heads, self.head_dim)  # (ΣN, 3, heads, head_dim)
        q, k, v = qkv.unbind(1)  # each (ΣN, heads, head_dim)
        out = attention(q, k, v, cu_seqlens, max_seqlen, self.scale)
        return self.proj(out.reshape(x.shape[0], -1))


class Mlp(nn.Module):
    def __init__(self, config: OryxVisionConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = nn.GELU()  # exact erf GELU (SigLIP proper uses tanh; Oryx-ViT does not)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm block: ``x += proj(attn(LN1 x))``; ``x += fc2(GELU(fc1(LN2 x)))``."""

    def __init__(self, config: OryxVisionConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = Attention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = Mlp(config)

    def forward(self, x, cu_seqlens, max_seqlen, attention):
        x = x + self.attn(self.norm1(x), cu_seqlens, max_seqlen, attention)
        return x + self.mlp(self.norm2(x))


class OryxViT(nn.Module):
    """The Oryx vision transformer: no class token, no final norm, no head (spec §3.1).

    The feature handed on is the raw output of the last block, ``C`` = ``config.hidden_size`` wide.
    """

    def __init__(self, config: OryxVisionConfig, attn_implementation: VitAttention = "auto") -> None:
        super().__init__()
        if attn_implementation not in VIT_ATTENTION_BACKENDS:
            raise ValueError(f"unknown ViT attention {attn_implementation!r}; expected {VIT_ATTENTION_BACKENDS}")
        self.config = config
        self.attn_implementation: VitAttention = attn_implementation
        self.patch_embed = PatchEmbed(config)
        grid = config.pos_embed_grid
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, config.hidden_size))  # row-major grid
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_hidden_layers))
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._pos_cache_key: tuple | None = None

    # ------------------------------------------------------------------ position embedding
    def interpolated_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embedding for a ``(gh, gw)`` grid → ``(gh·gw, C)``, in the parameter dtype.

        Bilinear resampling of the stored square grid (``align_corners=False``, no antialias),
        cached per grid size; the cache is dropped whenever ``pos_embed`` changes (new tensor,
        in-place update, dtype or device).
        """
        param = self.pos_embed
        if torch.is_grad_enabled() and param.requires_grad:
            return self._resample_pos_embed(grid)  # training: keep the autograd graph, no caching
        key = (param.data_ptr(), param._version, param.dtype, param.device)
        if key != self._pos_cache_key:
            self._pos_cache.clear()
            self._pos_cache_key = key
        cached = self._pos_cache.get(grid)
        if cached is None:
            with torch.no_grad():
                cached = self._resample_pos_embed(grid)
            self._pos_cache[grid] = cached
        return cached

    def _resample_pos_embed(self, grid: tuple[int, int]) -> torch.Tensor:
        side = self.config.pos_embed_grid
        width = self.config.hidden_size
        if tuple(grid) == (side, side):
            return self.pos_embed[0]
        square = self.pos_embed.view(1, side, side, width).permute(0, 3, 1, 2)  # (1, C, side, side)
        resampled = F.interpolate(square, size=tuple(grid), mode="bilinear", align_corners=False)
        return resampled.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], width)  # (gh·gw, C)

    # ------------------------------------------------------------------ forward
    def forward(self, pixels: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """Packed forward of several inputs of any sizes.

        ``pixels``: sequence of ``(3, H_i, W_i)`` (or ``(1, 3, H_i, W_i)``) tensors in the tower's dtype
        and device. Each is zero-padded on the right/bottom to a multiple of the patch size (a no-op
        with the canonical resizes). Returns the features ``[(N_i, C)]`` with ``N_i = gh_i·gw_i`` and the
        grids ``[(gh_i, gw_i)]``, in input order. One pass: sequences never attend to each other.
        """
        if len(pixels) == 0:
            return [], []
        patch = self.config.patch_size
        images = []
        for index, image in enumerate(pixels):
            if image.dim() == 4 and image.shape[0] == 1:
                image = image[0]
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"ViT input {index} must be (3, H, W), got {tuple(image.shape)}")
            pad_h, pad_w = -image.shape[1] % patch, -image.shape[2] % patch
            if pad_h or pad_w:
                image = F.pad(image, (0, pad_w, 0, pad_h))
            images.append(image)
        grids = [(im.shape[1] // patch, im.shape[2] // patch) for im in images]

        # Patch-embed inputs of equal size together (video frames), then restore the input order.
        tokens: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, im in enumerate(images):
            by_size.setdefault(tuple(im.shape[1:]), []).append(index)
        for same_size in by_size.values():
            pos = self.interpolated_pos_embed(grids[same_size[0]])
            for start in range(0, len(same_size), PATCH_EMBED_CHUNK):
                indices = same_size[start : start + PATCH_EMBED_CHUNK]
                embedded = self.patch_embed(torch.stack([images[i] for i in indices]))  # (n, gh·gw, C)
                for row, i in enumerate(indices):
                    tokens[i] = embedded[row] + pos.to(embedded.dtype)
        lengths = [g[0] * g[1] for g in grids]
        x = torch.cat(tokens)  # (ΣN, C)
        cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        cu_seqlens[1:] = torch.cumsum(torch.tensor(lengths), 0)
        cu_seqlens = cu_seqlens.to(x.device)
        attention = vit_attention(self.attn_implementation, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, cu_seqlens, max(lengths), attention)
        return list(x.split(lengths)), grids


class OryxVisionTower(nn.Module):
    """The ``model.vision_tower`` wrapper: holds the ViT as ``.vision_tower`` (checkpoint prefix
    ``model.vision_tower.vision_tower.``), casts inputs to the tower dtype and runs without grad."""

    def __init__(self, config: OryxVisionConfig, attn_implementation: VitAttention = "auto") -> None:
        super().__init__()
        self.vision_tower = OryxViT(config, attn_implementation)

    @property
    def hidden_size(self) -> int:
        return self.vision_tower.config.hidden_size

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.pos_embed.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.pos_embed.device

    @torch.no_grad()
    def forward(self, pixels: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        """``[(3, H_i, W_i)]`` float pixels → ``[(N_i, C)]`` features in the tower dtype, grids ``[(gh, gw)]``."""
        cast = [p.to(device=self.device, dtype=self.dtype) for p in pixels]
        return self.vision_tower(cast)
