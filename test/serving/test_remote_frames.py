"""RemoteEngine's frame preparation: a frame it sends resized preprocesses on the server to exactly the tensors its
original would give locally (so greedy token ids stay equal), and it declines to resize where that would fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oryx_ros.model.planner import PlanPolicy
from oryx_ros.model.preprocessing import DEFAULT_RESIZE, preprocess_image, preprocess_video_frame
from oryx_ros.serving.remote_engine import RemoteEngine, ServerInfo


@pytest.fixture(params=["fast", "exact"])
def engine(request):
    remote = RemoteEngine("http://127.0.0.1:9")
    remote._info = ServerInfo(model_name="m", context_limit=32768, default_max_new_tokens=16, max_new_tokens=64,
                              patch_size=16, resize_backend=request.param, resize=DEFAULT_RESIZE,
                              policy=PlanPolicy(), max_images=64, token_cache_bytes=0)
    yield remote
    remote.close()


def frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    smooth = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return (smooth + rng.integers(0, 20, smooth.shape)).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080), (333, 250), (20, 90), (4000, 3000)])
def test_resized_image_preprocesses_like_the_original(engine, size):
    original = frame(*size)
    sent = engine._model_input(original, "image")
    assert sent is not None
    local = preprocess_image(original, resize_backend=engine.server_info.resize_backend)
    served = preprocess_image(sent, resize_backend=engine.server_info.resize_backend)
    assert torch.equal(local.highres, served.highres) and torch.equal(local.lowres, served.lowres)


@pytest.mark.parametrize("modality", ["video", "video_long"])
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080), (160, 120), (320, 240), (700, 300)])
def test_resized_video_frame_preprocesses_like_the_original_or_is_not_resized(engine, modality, size):
    original = frame(*size)
    sent = engine._model_input(original, modality)
    backend = engine.server_info.resize_backend
    local = preprocess_video_frame(original, modality, resize_backend=backend)
    if sent is None:  # the resized frame would be resized again: the client sends the original instead
        once = preprocess_video_frame(original, modality, resize_backend=backend)
        assert tuple(once.shape[1:]) != tuple(engine._model_input_size(*size, modality) or ())
        return
    assert torch.equal(preprocess_video_frame(sent, modality, resize_backend=backend), local)


def test_camera_frames_shrink_for_video(engine):
    sent = engine._model_input(frame(1280, 720), "video")
    assert sent is not None and sent.shape[:2] == (320, 640)
