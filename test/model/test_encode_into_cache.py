"""OryxEngine.encode_into_cache: frames encoded ahead of a question are the question's cache hits (tiny
random checkpoint, CPU, fp32)."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest
import torch

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.preprocessing import video_frame_token_count
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint
from oryx_ros.model.token_cache import VisualCacheKey

MAX_NEW = 6
_namespaces = itertools.count()


@pytest.fixture(scope="module")
def engine() -> OryxEngine:
    return OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu")


def cameras(n_frames: int = 4, names: tuple[str, ...] = ("front", "left", "right"), h: int = 96, w: int = 128
            ) -> list[VisualInput]:
    """Three cameras of seeded random frames; every call gets keys never used before (same pixels)."""
    namespace = next(_namespaces)
    visuals = []
    for c, name in enumerate(names):
        rng = np.random.default_rng(c)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n_frames)]
        visuals.append(VisualInput(frames, keys=[(namespace, name, i) for i in range(n_frames)],
                                   stamps_ns=[i * 100_000_000 for i in range(n_frames)], label=f"Camera {name}"))
    return visuals


def key(engine: OryxEngine, visual: VisualInput, frame: int, modality: str) -> VisualCacheKey:
    return VisualCacheKey(visual.keys[frame], modality, visual.size_wh(frame), str(engine.dtype), "cpu")


def calls_until(n: int) -> Callable[[], bool]:
    """A cancel flag that is set from its ``n``-th read on."""
    reads = itertools.count(1)
    return lambda: next(reads) >= n


def test_pre_encoded_frames_are_cache_hits_and_the_answer_is_the_cold_one(engine: OryxEngine) -> None:
    cold = engine.answer("What changed?", cameras(), max_new_tokens=MAX_NEW)
    assert (cold.frames_encoded, cold.frames_from_cache) == (12, 0)

    visuals = cameras()  # the same pixels under new keys: nothing of them is cached yet
    report = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW)
    assert (report.planned, report.encoded, report.already_cached, report.over_budget) == (12, 12, 0, 0)
    assert report.modality == "video" and not report.cancelled
    warm = engine.answer("What changed?", visuals, max_new_tokens=MAX_NEW)
    assert (warm.frames_encoded, warm.frames_from_cache, warm.frames_used) == (0, 12, 12)
    assert warm.token_ids == cold.token_ids and warm.text == cold.text
    # Encoded in batches of 4 per pass here, all 12 in one pass by the cold answer: the same embeddings.
    cold_visuals = cameras()
    engine.answer("What changed?", cold_visuals, max_new_tokens=MAX_NEW)
    for item in range(3):
        for frame in range(4):
            torch.testing.assert_close(engine.cache.get(key(engine, visuals[item], frame, "video")),
                                       engine.cache.get(key(engine, cold_visuals[item], frame, "video")),
                                       atol=1e-5, rtol=1e-5)

    again = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW)
    assert (again.encoded, again.already_cached) == (0, 12)  # nothing is encoded twice


def test_only_the_planned_frames_at_the_planned_compression_are_encoded(engine: OryxEngine) -> None:
    visuals = cameras(6)
    report = engine.encode_into_cache(visuals, "video_long", max_frames=2, max_new_tokens=MAX_NEW)
    assert (report.planned, report.encoded, report.modality) == (6, 6, "video_long")
    answer = engine.answer("Long view?", visuals, mode="video_long", max_frames=2, max_new_tokens=MAX_NEW)
    assert (answer.frames_encoded, answer.frames_from_cache) == (0, 6)
    assert all(key(engine, visuals[0], frame, "video") not in engine.cache for frame in range(6))  # not at 4x

    single = cameras(1)  # one frame per camera: auto plans 1x images
    report = engine.encode_into_cache(single, "auto", max_new_tokens=MAX_NEW)
    assert (report.encoded, report.modality) == (3, "image")
    assert engine.answer("Now?", single, max_new_tokens=MAX_NEW).frames_from_cache == 3


def test_the_byte_budget_keeps_the_newest_frames_and_never_evicts_them() -> None:
    engine = OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu")
    visuals = cameras(4)
    frame_bytes = video_frame_token_count(128, 96, "video") * engine.config.hidden_size * 4  # fp32
    report = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW, byte_budget=5 * frame_bytes)
    assert (report.planned, report.encoded, report.over_budget) == (12, 5, 7)
    stats = engine.cache_stats()
    assert stats.bytes_used == report.bytes_planned == 5 * frame_bytes and stats.evictions == 0
    # Newest first: the three frames of the last stamp, then two of the one before.
    newest = [key(engine, v, 3, "video") for v in visuals]
    assert all(k in engine.cache for k in newest)
    assert sum(key(engine, v, 2, "video") in engine.cache for v in visuals) == 2
    assert all(key(engine, v, f, "video") not in engine.cache for v in visuals for f in (0, 1))

    tight = OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu", cache_bytes=3 * frame_bytes)
    report = tight.encode_into_cache(cameras(4), "auto", max_new_tokens=MAX_NEW)  # the cache's own budget
    assert (report.encoded, report.over_budget) == (3, 9) and tight.cache_stats().evictions == 0


def test_a_cancel_between_batches_keeps_the_finished_ones_and_within_a_pass_caches_nothing() -> None:
    engine = OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu")
    visuals = cameras(4)
    # Set once the first batch of 4 is stored: read before the second batch, which never runs.
    report = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW, batch_frames=4,
                                      cancel=lambda: len(engine.cache) >= 4)
    assert report.cancelled and report.encoded == 4 and len(engine.cache) == 4

    # Reads 1-5 come before the ViT (the batch, then each of its 4 frames); read 7 is inside a ViT block.
    before = engine.cache_stats()
    report = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW, batch_frames=4, cancel=calls_until(7))
    assert report.cancelled and report.encoded == 0
    assert len(engine.cache) == 4 and engine.cache_stats().bytes_used == before.bytes_used

    rest = engine.encode_into_cache(visuals, "auto", max_new_tokens=MAX_NEW)  # resumes where it stopped
    assert (rest.encoded, rest.already_cached) == (8, 4) and not rest.cancelled


def test_bad_arguments_raise(engine: OryxEngine) -> None:
    with pytest.raises(ValueError, match="mode"):
        engine.encode_into_cache(cameras(1), "telepathy")
    with pytest.raises(ValueError, match="batch_frames"):
        engine.encode_into_cache(cameras(1), batch_frames=0)
    with pytest.raises(TypeError):
        engine.encode_into_cache([np.zeros((4, 4, 3), np.uint8)])  # type: ignore[list-item]
    uncached = OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu", cache_bytes=0)
    assert uncached.encode_into_cache(cameras(2)).encoded == 0  # no cache: nothing to fill
