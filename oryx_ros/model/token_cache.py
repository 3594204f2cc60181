"""Per-frame visual-token cache: encode each video frame once, reuse it across questions.

A frame's contribution to a video block (spec §5: ViT → compressor → projector → rows with newlines and
the trailing ``image_sep``) depends only on the frame's pixels, the compression (modality tag) and its
pixel size, plus the dtype/device it was computed in. A robot that asks several questions about the same
buffer of frames, or describes the scene every few seconds over an overlapping window, therefore needs
to run the 431 M-parameter ViT only on the frames it has not seen before.

Keys are :class:`VisualCacheKey`; the caller supplies the frame identity (``Frame.uid``, which is unique
per process and never reused). Values are tensors kept on the device they were computed on. The cache is
an LRU bounded in bytes, safe to share between threads, and counts hits, misses and evictions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

import torch

logger = logging.getLogger(__name__)


class VisualCacheKey(NamedTuple):
    """Everything a cached embedding depends on."""

    frame: Hashable  # caller's identity of the pixels, e.g. Frame.uid
    modality: str  # 'image' | 'video' | 'video_long' (the compression)
    size_wh: tuple[int, int]  # the frame's pixel size before preprocessing
    dtype: str  # e.g. 'torch.bfloat16'
    device: str  # e.g. 'cuda:0'


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    evictions: int
    rejected: int  # entries larger than the whole budget, never stored
    entries: int
    bytes_used: int
    max_bytes: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


def tensor_bytes(value: torch.Tensor) -> int:
    return value.numel() * value.element_size()


class VisualTokenCache:
    """Thread-safe LRU of per-frame embeddings, bounded by ``max_bytes`` (0 disables storing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._max_bytes = int(max_bytes)
        self._entries: OrderedDict[VisualCacheKey, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = self._rejected = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def get(self, key: VisualCacheKey) -> torch.Tensor | None:
        """The cached tensor (marked most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._entries.get(key)
            if value is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return value

    def put(self, key: VisualCacheKey, value: torch.Tensor) -> bool:
        """Store ``value`` (detached), evicting least recently used entries; False if it can never fit."""
        size = tensor_bytes(value)
        with self._lock:
            if size > self._max_bytes:
                self._rejected += 1
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= tensor_bytes(old)
            self._entries[key] = value.detach()
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= tensor_bytes(evicted)
                self._evictions += 1
            return True

    def clear(self) -> None:
        """Drop every entry (e.g. after the weights change); counters keep their totals."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                rejected=self._rejected,
                entries=len(self._entries),
                bytes_used=self._bytes,
                max_bytes=self._max_bytes,
            )
