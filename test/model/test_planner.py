"""Token budget planner: limits never exceeded, compression choice, frame spread, reporting."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from oryx_ros.model.planner import (
    DROP_BUDGET,
    DROP_MAX_FRAMES,
    DROP_ONE_PER_ITEM,
    ItemOffer,
    PlanError,
    PlanPolicy,
    default_token_counter,
    plan_visual_tokens,
    spread_indices,
)


class SpecCounter:
    """Independent re-statement of the spec §2.2-2.5 arithmetic, to check the model core's counts."""

    @staticmethod
    def _resize(w: int, h: int, patch: int, base: int, max_px: int, min_px: int) -> tuple[int, int]:
        if base == 0:
            if w * h > max_px * max_px:
                s = math.sqrt(max_px * max_px / (w * h))
            elif w * h < min_px * min_px:
                s = math.sqrt(min_px * min_px / (w * h))
            else:
                s = 1.0
        else:
            s = math.sqrt(base * base / (w * h))
        return int(w * s / patch) * patch, int(h * s / patch) * patch

    def image_tokens(self, width: int, height: int) -> int:
        w, h = width, height
        if w < 32 and h < 32:
            s = 64 / min(w, h)
            w, h = int(w * s), int(h * s)
        elif w < 32:
            s = 64 / w
            w, h = int(w * s), int(h * s)
        elif h < 32:
            s = 64 / h
            w, h = int(w * s), int(h * s)
        hw, hh = self._resize(w, h, 32, 0, 1536, 0)
        lw, lh = self._resize(hw, hh, 32, 384, 1536, 0)
        return 3 + (lh // 16) * (lw // 16 + 1) + (hh // 16) * (hw // 16 + 1)

    def video_frame_tokens(self, width: int, height: int, modality: str) -> int:
        patch, r = (64, 2) if modality == "video" else (128, 4)
        w, h = self._resize(width, height, patch, 0, 480, 288)
        ph, pw = h // 16 // r, w // 16 // r
        return ph * (pw + 1) + 1

    def video_overhead_tokens(self) -> int:
        return 2


SPEC = SpecCounter()


def offer(n: int, size: tuple[int, int] = (640, 480), step_ns: int = 100_000_000, label: str | None = None):
    return ItemOffer(sizes=[size] * n, stamps_ns=[i * step_ns for i in range(n)], label=label)


def plan(items, limit=32768, text=60, new=128, **kwargs):
    """The planner with its default counter (the model core's formulas)."""
    return plan_visual_tokens(items, context_limit=limit, text_tokens=text, max_new_tokens=new, **kwargs)


# ---- the spec's token table (§2.5) ---------------------------------------------------------------------------

SPEC_TABLE = [  # (W, H), image 1x tokens, 4x tokens/frame, 16x tokens/frame
    ((640, 480), 1773, 205, 55),
    ((1280, 720), 4095, 211, 45),
    ((1920, 1080), 8517, 211, 45),
    ((848, 480), 2151, 191, 37),
    ((3840, 2160), 9885, 211, 45),
    ((320, 240), 877, 67, 11),
]


@pytest.mark.parametrize(("size", "image", "video", "video_long"), SPEC_TABLE)
def test_reference_counter_matches_spec_table(size, image, video, video_long):
    assert SPEC.image_tokens(*size) == image
    assert SPEC.video_frame_tokens(*size, "video") == video
    assert SPEC.video_frame_tokens(*size, "video_long") == video_long


@pytest.mark.parametrize(("size", "image", "video", "video_long"), SPEC_TABLE)
def test_default_counter_is_the_model_cores_and_matches_spec(size, image, video, video_long):
    counter = default_token_counter()
    assert counter.image_tokens(*size) == image
    assert counter.video_frame_tokens(*size, "video") == video
    assert counter.video_frame_tokens(*size, "video_long") == video_long
    assert counter.video_overhead_tokens() == 2


def test_default_counter_agrees_with_reference_on_odd_sizes():
    counter = default_token_counter()
    rng = random.Random(7)
    sizes = [(20, 20), (20, 300), (300, 20), (33, 4000), (4000, 33)]
    sizes += [(rng.randint(32, 4000), rng.randint(32, 4000)) for _ in range(40)]
    for w, h in sizes:
        assert counter.image_tokens(w, h) == SPEC.image_tokens(w, h), (w, h)
        if max(w, h) > 4 * min(w, h):
            continue  # extreme aspect ratios resize to a zero side for video: the core raises (below)
        for modality in ("video", "video_long"):
            assert counter.video_frame_tokens(w, h, modality) == SPEC.video_frame_tokens(w, h, modality), (w, h)
    with pytest.raises(ValueError, match="aspect ratio"):
        counter.video_frame_tokens(20, 300, "video_long")


# ---- frame spread --------------------------------------------------------------------------------------------


def test_spread_includes_endpoints_and_is_even():
    assert spread_indices(10, 10) == list(range(10))
    assert spread_indices(10, 2) == [0, 9]
    assert spread_indices(9, 3) == [0, 4, 8]
    assert spread_indices(5, 1) == [4]  # the latest frame
    chosen = spread_indices(100, 8)
    assert chosen[0] == 0 and chosen[-1] == 99
    gaps = [b - a for a, b in itertools.pairwise(chosen)]
    assert max(gaps) - min(gaps) <= 1


def test_spread_follows_time_not_index():
    # 10 frames in a burst in the first second, then 10 frames one per second: a spread by time must
    # not spend half of its picks inside the burst.
    stamps = [i * 100_000_000 for i in range(10)] + [(i + 1) * 1_000_000_000 for i in range(10)]
    chosen = spread_indices(len(stamps), 5, stamps)
    assert chosen[0] == 0 and chosen[-1] == 19
    assert sum(1 for i in chosen if i < 10) <= 2
    by_index = spread_indices(len(stamps), 5)
    assert sum(1 for i in by_index if i < 10) == 3


def test_spread_is_unique_and_sorted_for_duplicate_stamps():
    rng = random.Random(3)
    for _ in range(200):
        n = rng.randint(1, 60)
        stamps = sorted(rng.choice([0, 5, 5, 9, 1000]) * 1_000_000 for _ in range(n))
        k = rng.randint(1, n)
        chosen = spread_indices(n, k, stamps)
        assert len(chosen) == k and chosen == sorted(set(chosen))
        if k >= 2:
            assert chosen[0] == 0 and chosen[-1] == n - 1


# ---- compression choice --------------------------------------------------------------------------------------


def test_text_only():
    p = plan([])
    assert (p.mode_used, p.compression, p.visual_tokens, p.frames_offered) == ("text", "none", 0, 0)
    assert p.prompt_tokens == 60


def test_single_still_image_is_1x():
    p = plan([offer(1, (1280, 720))])
    assert (p.mode_used, p.compression) == ("image", "1x")
    assert p.visual_tokens == 4095
    assert p.frames_used == 1 and p.frames_dropped == 0


def test_single_image_too_large_for_1x_falls_back_to_4x():
    p = plan([offer(1, (1920, 1080))], limit=4000)
    assert p.compression == "4x" and p.visual_tokens == 2 + 211
    assert any("1x" in note for note in p.notes)


def test_short_clip_is_4x_with_every_frame():
    p = plan([offer(12)])
    assert (p.mode_used, p.compression) == ("video", "4x")
    assert p.frames_used == 12 and p.visual_tokens == 2 + 12 * 205


def test_16x_when_4x_would_drop_too_many():
    # 40 frames of 640x480: 4x needs 2 + 40*205 = 8202; a 3000-token limit keeps only ~13 (< 16) at 4x.
    p = plan([offer(40)], limit=3000)
    assert (p.mode_used, p.compression) == ("video_long", "16x")
    assert p.frames_used == 40 and p.visual_tokens == 2 + 40 * 55
    assert any("16x" in note for note in p.notes)


def test_4x_kept_when_it_keeps_enough_frames():
    # 40 frames at 4x: a 4000-token limit keeps 18 frames (>= 16): 4x wins, the rest reported as budget drops.
    p = plan([offer(40)], limit=4000)
    assert p.compression == "4x"
    assert p.frames_used == 18
    assert p.drops_by_reason() == {DROP_BUDGET: 22}


def test_policy_threshold_is_a_parameter():
    p = plan([offer(40)], limit=4000, policy=PlanPolicy(min_frames_at_4x=20))
    assert p.compression == "16x"


def test_auto_cap_and_max_frames():
    p = plan([offer(100)])
    assert p.compression == "4x" and p.frames_used == 64
    assert p.drops_by_reason() == {DROP_MAX_FRAMES: 36}
    p = plan([offer(100)], max_frames=8)
    assert p.frames_used == 8 and p.used_frames(0)[0] == 0 and p.used_frames(0)[-1] == 99
    assert p.drops_by_reason() == {DROP_MAX_FRAMES: 92}
    p = plan([offer(300)], mode="video_long")
    assert p.frames_used == 256


def test_three_cameras_share_the_budget_evenly():
    items = [offer(30, label=name) for name in ("front", "left", "right")]
    p = plan(items, limit=10500)  # 10312 tokens for 3 x (2 + k * 205): k = 16
    assert p.compression == "4x"
    assert [len(item.frames) for item in p.items] == [16, 16, 16]
    p = plan(items, limit=9000)  # k = 14 < 16 at 4x: 16x fits all 3 x 30 frames
    assert p.compression == "16x"
    assert [len(item.frames) for item in p.items] == [30, 30, 30]
    p = plan(items, limit=20000)
    assert [len(item.frames) for item in p.items] == [30, 30, 30]
    assert [item.label for item in p.items] == ["front", "left", "right"]


def test_frames_spread_over_window_include_endpoints():
    p = plan([offer(200)], limit=4000, mode="video")
    used = p.used_frames(0)
    assert used[0] == 0 and used[-1] == 199 and len(used) == 18


def test_explicit_modes():
    assert plan([offer(5)], mode="video_long").compression == "16x"
    assert plan([offer(1)], mode="video").compression == "4x"
    p = plan([offer(5), offer(3)], mode="image")
    assert p.compression == "1x" and [item.frames for item in p.items] == [((0, 4),), ((1, 2),)]
    assert p.drops_by_reason() == {DROP_ONE_PER_ITEM: 6}
    with pytest.raises(PlanError, match="1x"):
        plan([offer(1, (1920, 1080))], limit=4000, mode="image")


def test_multiview_images_then_merged_video_then_16x():
    views = [offer(1, (640, 480), label=f"cam{i}") for i in range(4)]
    p = plan(views, mode="multiview")
    assert (p.compression, p.views_merged, len(p.items)) == ("1x", False, 4)
    p = plan(views, limit=2000, mode="multiview", merged_text_tokens=50)
    assert (p.compression, p.views_merged, len(p.items)) == ("4x", True, 1)
    assert p.items[0].frames == ((0, 0), (1, 0), (2, 0), (3, 0))
    assert p.visual_tokens == 2 + 4 * 205 and p.text_tokens == 50
    assert p.items[0].label == "cam0, cam1, cam2, cam3"
    p = plan(views, limit=500, mode="multiview")
    assert (p.compression, p.views_merged) == ("16x", True)
    with pytest.raises(PlanError, match="views"):
        plan(views, limit=300, mode="multiview")


def test_error_when_one_frame_per_item_at_16x_cannot_fit():
    with pytest.raises(PlanError, match="16x"):
        plan([offer(10) for _ in range(3)], limit=300)
    with pytest.raises(PlanError, match="text alone"):
        plan([], limit=100, text=60, new=50)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="mode"):
        plan([offer(2)], mode="zoom")
    with pytest.raises(ValueError, match="at least one frame"):
        ItemOffer(sizes=[])
    with pytest.raises(ValueError, match="non-decreasing"):
        ItemOffer(sizes=[(64, 64)] * 2, stamps_ns=[5, 1])
    with pytest.raises(ValueError, match="stamps"):
        ItemOffer(sizes=[(64, 64)] * 2, stamps_ns=[5])


def test_randomised_plans_never_exceed_the_context_and_counts_add_up():
    rng = random.Random(12345)
    sizes = [(640, 480), (1280, 720), (320, 240), (848, 480), (1920, 1080), (200, 700)]
    checked = 0
    for _ in range(400):
        items = []
        for _ in range(rng.randint(0, 4)):
            n = rng.randint(1, 90)
            size = rng.choice(sizes)
            mixed = [rng.choice(sizes) if rng.random() < 0.1 else size for _ in range(n)]
            stamps = sorted(rng.randrange(0, 10**10) for _ in range(n))
            items.append(ItemOffer(mixed, stamps if rng.random() < 0.7 else None))
        limit = rng.choice([512, 2048, 4096, 8192, 16384, 32768])
        text, new = rng.randint(5, 300), rng.randint(0, 512)
        mode = rng.choice(["auto", "auto", "video", "video_long", "image", "multiview"])
        max_frames = rng.choice([0, 0, 1, 7, 32])
        try:
            p = plan(items, limit=limit, text=text, new=new, mode=mode, max_frames=max_frames)
        except PlanError:
            continue
        checked += 1
        assert p.prompt_tokens + new <= limit
        assert p.frames_offered == sum(item.n_frames for item in items)
        assert p.frames_used + sum(d.count for d in p.dropped) == p.frames_offered
        assert p.visual_tokens == sum(item.visual_tokens for item in p.items)
        for planned in p.items:  # each item's count is the formula for exactly its frames
            if planned.modality == "image":
                ((i, f),) = planned.frames
                assert planned.visual_tokens == SPEC.image_tokens(*items[i].sizes[f])
            else:
                assert planned.visual_tokens == 2 + sum(
                    SPEC.video_frame_tokens(*items[i].sizes[f], planned.modality) for i, f in planned.frames
                )
        if max_frames and not p.views_merged:
            assert all(len(planned.frames) <= max_frames for planned in p.items)
        for i in range(len(items)):
            used = p.used_frames(i)
            assert used == sorted(set(used))
            if len(used) >= 2 and not p.views_merged and p.mode_used != "image":
                assert used[0] == 0 and used[-1] == items[i].n_frames - 1
    assert checked > 150
