"""OryxEngine end to end on the tiny random checkpoint (CPU, fp32)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.planner import PlanError
from oryx_ros.model.preprocessing import image_token_count, video_frame_token_count
from oryx_ros.model.prompting import build_prompt_ids, count_placeholders
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

MAX_NEW = 6


@pytest.fixture(scope="module")
def engine() -> OryxEngine:
    return OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu")


def frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def cameras(n_frames: int = 4, names=("front", "left", "right")) -> list[VisualInput]:
    return [
        VisualInput(frames(n_frames, seed=c), keys=[(name, i) for i in range(n_frames)],
                    stamps_ns=[i * 100_000_000 for i in range(n_frames)], label=f"Camera {name}")
        for c, name in enumerate(names)
    ]


def text_tokens(engine: OryxEngine, user_text: str) -> int:
    ids = build_prompt_ids(engine.tokenizer, user_text)
    return len(ids) - count_placeholders(ids)


def test_properties(engine):
    assert engine.context_limit == 32768  # tokenizer_model_max_length of the tiny config
    assert engine.device.type == "cpu"
    assert engine.model_name == ensure_tiny_checkpoint().name


def test_text_only(engine):
    answer = engine.answer("What is the capital of France?", max_new_tokens=MAX_NEW)
    assert (answer.mode_used, answer.compression, answer.visual_tokens) == ("text", "none", 0)
    assert answer.prompt_tokens == len(build_prompt_ids(engine.tokenizer, "What is the capital of France?"))
    assert 1 <= answer.new_tokens <= MAX_NEW and answer.new_tokens == len(answer.token_ids)
    assert answer.stop_reason in ("eos", "max_tokens")
    assert answer.text == engine.tokenizer.decode(answer.token_ids, skip_special_tokens=True)
    assert set(answer.timings) == {"preprocess_s", "vision_s", "prefill_s", "decode_s", "total_s"}
    assert answer.timings["total_s"] >= answer.timings["prefill_s"] > 0


def test_one_image_is_1x_and_counts_match_the_formula(engine):
    image = frames(1, h=120, w=160)
    answer = engine.answer("Describe the image.", [VisualInput(image)], max_new_tokens=MAX_NEW)
    assert (answer.mode_used, answer.compression) == ("image", "1x")
    assert answer.visual_tokens == image_token_count(160, 120)
    assert answer.prompt_tokens == answer.visual_tokens + text_tokens(engine, "<image>\nDescribe the image.")
    assert (answer.frames_offered, answer.frames_used, answer.frames_encoded) == (1, 1, 1)


def test_three_camera_video_counts_match_the_formula(engine):
    answer = engine.answer("What changed?", cameras(4), max_new_tokens=MAX_NEW)
    assert (answer.mode_used, answer.compression) == ("video", "4x")
    per_frame = video_frame_token_count(128, 96, "video")
    assert answer.visual_tokens == 3 * (2 + 4 * per_frame)
    user = "Camera front: <image>\nCamera left: <image>\nCamera right: <image>\nWhat changed?"
    assert answer.prompt_tokens == answer.visual_tokens + text_tokens(engine, user)
    assert (answer.frames_offered, answer.frames_used) == (12, 12)
    assert [item.label for item in answer.plan.items] == ["Camera front", "Camera left", "Camera right"]


def test_context_limit_forces_16x_and_is_never_exceeded():
    small = OryxEngine.from_pretrained(ensure_tiny_checkpoint(), max_context=1200)
    answer = small.answer("What changed?", cameras(12), max_new_tokens=MAX_NEW)
    at_4x = 3 * (2 + 12 * video_frame_token_count(128, 96, "video"))  # 2418: only ~5 frames/camera fit
    at_16x = 3 * (2 + 12 * video_frame_token_count(128, 96, "video_long"))  # 402: all fit
    assert at_16x < 1200 < at_4x
    assert answer.compression == "16x" and answer.frames_used == 36 and answer.visual_tokens == at_16x
    assert answer.prompt_tokens + MAX_NEW <= 1200
    with pytest.raises(PlanError):
        small.answer("What changed?", cameras(12), max_new_tokens=1190)


def test_streaming_sees_every_token_in_order(engine):
    calls: list[tuple[str, int]] = []
    answer = engine.answer("Describe.", cameras(2), max_new_tokens=12, on_token=lambda d, n: calls.append((d, n)))
    counts = [n for _, n in calls]
    assert counts[: answer.new_tokens] == list(range(1, answer.new_tokens + 1))
    assert all(n == answer.new_tokens for n in counts[answer.new_tokens:])  # at most a final flush
    assert "".join(d for d, _ in calls) == answer.text


def test_cancellation_stops_within_one_token(engine):
    cancel = threading.Event()
    seen: list[int] = []

    def on_token(_delta: str, n: int) -> None:
        seen.append(n)
        if n == 3:
            cancel.set()

    answer = engine.answer("Describe.", cameras(2), max_new_tokens=40, on_token=on_token, cancel=cancel)
    assert answer.stop_reason == "cancelled"
    assert answer.new_tokens <= 4 and max(seen) <= 4

    before = engine.cache_stats()
    answer = engine.answer("Describe.", cameras(2, names=("rear",)), cancel=lambda: True)
    assert (answer.stop_reason, answer.new_tokens, answer.frames_encoded) == ("cancelled", 0, 0)
    assert engine.cache_stats().misses == before.misses  # cancelled before any vision work


def test_greedy_is_deterministic_across_calls(engine):
    first = engine.answer("Describe.", cameras(3), max_new_tokens=10)
    second = engine.answer("Describe.", cameras(3), max_new_tokens=10)
    assert first.token_ids == second.token_ids and first.text == second.text


def test_multiview_and_explicit_modes(engine):
    views = [VisualInput(frames(1, seed=s), label=f"view {s}") for s in range(3)]
    answer = engine.answer("Where is the door?", views, mode="multiview", max_new_tokens=2)
    assert (answer.compression, len(answer.plan.items)) == ("1x", 3)
    answer = engine.answer("Describe.", cameras(3), mode="video_long", max_new_tokens=2)
    assert answer.compression == "16x"
    assert answer.visual_tokens == 3 * (2 + 3 * video_frame_token_count(128, 96, "video_long"))
    answer = engine.answer("Describe.", cameras(8), max_frames=3, max_new_tokens=2)
    assert answer.frames_used == 9 and answer.plan.drops_by_reason() == {"max_frames": 15}


def test_bad_input_raises(engine):
    with pytest.raises(ValueError, match="RGB uint8"):
        VisualInput([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="keys"):
        VisualInput(frames(2), keys=[1])
    with pytest.raises(ValueError, match="mode"):
        engine.answer("x", mode="panorama")
    with pytest.raises(ValueError, match="<image>"):
        engine.answer("look at <image>")
    with pytest.raises(TypeError):
        engine.answer("x", [frames(1)[0]])


# ---- the `oryx-ros ask` command (ask.py) drives the same engine -------------------------------------------------


def test_video_sampling_follows_linspace(tmp_path):
    import cv2

    from oryx_ros.model.ask import sample_video_rgb

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(21):  # frame i is uniformly grey at level 10·i, so decoded frames reveal their index
        writer.write(np.full((48, 64, 3), 10 * i, dtype=np.uint8))
    writer.release()
    clip, stamps, total = sample_video_rgb(path, 5)
    assert total == 21
    levels = [round(float(frame.mean()) / 10) for frame in clip]
    assert levels == [0, 5, 10, 15, 20]  # linspace(0, 20, 5)
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] == pytest.approx(2e9, rel=0.01)
    assert clip[0].shape == (48, 64, 3) and clip[0].dtype == np.uint8


def test_ask_cli_answers_about_an_image(tmp_path, capsys):
    import cv2

    from oryx_ros.model.ask import main, read_image_rgb

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.full((60, 80, 3), (255, 0, 0), dtype=np.uint8))  # BGR blue
    assert read_image_rgb(image)[0, 0].tolist() == [0, 0, 255]  # RGB blue
    assert main(["--image", str(image), "--max-new-tokens", "3", "What colour is it?"]) == 0
    err = capsys.readouterr().err
    assert "RANDOM" in err and "compression: 1x" in err and "prefill_s" in err
    assert main(["--image", str(tmp_path / "missing.png"), "x"]) == 2
