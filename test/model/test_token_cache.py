"""Per-frame visual-token cache: LRU by bytes, counters, thread safety, and engine equivalence."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from oryx_ros.model.token_cache import VisualCacheKey, VisualTokenCache, tensor_bytes


def key(frame: int, modality: str = "video") -> VisualCacheKey:
    return VisualCacheKey(frame, modality, (640, 480), "torch.float32", "cpu")


def block(rows: int, width: int = 8) -> torch.Tensor:
    return torch.arange(rows * width, dtype=torch.float32).reshape(rows, width)


def test_hit_miss_counters_and_identity():
    cache = VisualTokenCache(max_bytes=10_000)
    assert cache.get(key(1)) is None
    value = block(4)
    assert cache.put(key(1), value)
    assert torch.equal(cache.get(key(1)), value)
    assert cache.get(key(1, "video_long")) is None  # another compression is another entry
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.bytes_used) == (1, 2, 1, tensor_bytes(value))
    assert stats.hit_rate == pytest.approx(1 / 3)


def test_lru_eviction_under_byte_budget():
    one = tensor_bytes(block(4))
    cache = VisualTokenCache(max_bytes=3 * one)
    for frame in range(3):
        cache.put(key(frame), block(4))
    cache.get(key(0))  # 0 becomes most recently used, so 1 is the oldest
    cache.put(key(3), block(4))
    assert key(1) not in cache and key(0) in cache and key(3) in cache
    stats = cache.stats()
    assert (stats.evictions, stats.entries, stats.bytes_used) == (1, 3, 3 * one)
    assert stats.bytes_used <= stats.max_bytes


def test_too_large_entry_rejected_and_zero_budget_stores_nothing():
    cache = VisualTokenCache(max_bytes=tensor_bytes(block(2)))
    assert not cache.put(key(0), block(3))
    assert cache.stats().rejected == 1 and len(cache) == 0
    off = VisualTokenCache(max_bytes=0)
    assert not off.put(key(0), block(1)) and len(off) == 0
    with pytest.raises(ValueError):
        VisualTokenCache(max_bytes=-1)


def test_replacing_a_key_keeps_byte_count_exact():
    cache = VisualTokenCache(max_bytes=10_000)
    cache.put(key(0), block(4))
    cache.put(key(0), block(2))
    assert cache.stats().bytes_used == tensor_bytes(block(2)) and len(cache) == 1


def test_concurrent_use_keeps_invariants():
    one = tensor_bytes(block(2))
    cache = VisualTokenCache(max_bytes=20 * one)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(500):
                frame = int(rng.integers(0, 60))
                if cache.get(key(frame)) is None:
                    cache.put(key(frame), block(2))
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stats = cache.stats()
    assert stats.hits + stats.misses == 4 * 500
    assert stats.bytes_used == stats.entries * one <= stats.max_bytes


# ---- the cache inside the engine: cached and uncached answers are identical ------------------------------------


@pytest.fixture(scope="module")
def checkpoint():
    from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

    return ensure_tiny_checkpoint()


def camera_inputs(first: int, count: int, names=("front", "left")):
    from oryx_ros.model.engine import VisualInput

    visuals = []
    for c, name in enumerate(names):
        rng = np.random.default_rng(c)
        clip = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(first + count)]
        indices = range(first, first + count)
        visuals.append(VisualInput([clip[i] for i in indices], keys=[(name, i) for i in indices], label=name))
    return visuals


def test_engine_answers_identically_with_and_without_cache(checkpoint):
    from oryx_ros.model.engine import OryxEngine

    cached = OryxEngine.from_pretrained(checkpoint, cache_bytes=64 << 20)
    uncached = OryxEngine.from_pretrained(checkpoint, cache_bytes=0)
    for first in (0, 2):  # the second window overlaps the first: a mix of hits and misses
        a = cached.answer("What moved?", camera_inputs(first, 5), max_new_tokens=8)
        b = uncached.answer("What moved?", camera_inputs(first, 5), max_new_tokens=8)
        assert a.token_ids == b.token_ids and a.text == b.text
    assert cached.cache_stats().hits == 2 * 3  # frames 2..4 of both cameras were seen before
    assert uncached.cache_stats().entries == 0

    before = cached.cache_stats()
    again = cached.answer("What moved?", camera_inputs(2, 5), max_new_tokens=8)
    assert (again.frames_encoded, again.frames_from_cache) == (0, 10)  # second call: all hits
    after = cached.cache_stats()
    assert (after.hits - before.hits, after.misses - before.misses) == (10, 0)
    assert again.token_ids == b.token_ids


def test_engine_cache_evicts_under_a_tiny_budget_and_stays_correct(checkpoint):
    from oryx_ros.model.engine import OryxEngine

    probe = OryxEngine.from_pretrained(checkpoint)
    probe.answer("x", camera_inputs(0, 1, names=("front",)), mode="video", max_new_tokens=1)
    frame_bytes = probe.cache_stats().bytes_used

    tiny = OryxEngine.from_pretrained(checkpoint, cache_bytes=3 * frame_bytes)
    reference = OryxEngine.from_pretrained(checkpoint, cache_bytes=0)
    a = tiny.answer("What moved?", camera_inputs(0, 4), max_new_tokens=6)
    stats = tiny.cache_stats()
    assert stats.evictions == 8 - 3 and stats.entries == 3 and stats.bytes_used <= stats.max_bytes
    b = reference.answer("What moved?", camera_inputs(0, 4), max_new_tokens=6)
    assert a.token_ids == b.token_ids
