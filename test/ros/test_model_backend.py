"""The node's model choice (oryx_ros.ros.model_backend): a remote server that is down is answered by the local
model with ``model.fallback_local``, counted; without it, the server's error comes through unchanged."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from ray_server import free_port

from oryx_ros.model.engine import VisualInput
from oryx_ros.ros.model_backend import FallbackEngine, is_local, load_engine, model_name, server_errors
from oryx_ros.ros.parameters import NodeConfig
from oryx_ros.ros.startup import StartupError
from oryx_ros.serving.remote_engine import RemoteEngineError


@pytest.fixture(scope="module")
def config() -> NodeConfig:
    return NodeConfig(cameras=[], mounts={}, sync_slop_s=0.05, sync_queue_size=10, dead_camera_timeout_s=1.0,
                      buffer_window_s=120.0, buffer_max_rate_hz=2.0, buffer_max_megabytes=64.0, model_path="",
                      model_device="cpu", model_dtype="float32", attn_implementation="sdpa",
                      token_cache_megabytes=16.0, allow_pickle=False, resize_backend="fast", min_frames_at_4x=16,
                      max_frames_4x=64, max_frames_16x=256, max_context_tokens=0, default_mode="auto",
                      default_window_s=10.0, max_new_tokens=8, queue_size=2, deadline_s=0.0,
                      description_enabled=False, description_period_s=10.0, description_window_s=30.0,
                      description_prompt="Describe.", description_mode="video_long", description_max_frames=8,
                      description_max_new_tokens=8, description_spatial=False, base_frame="base_link",
                      pose_topic="", pose_type="odometry", max_objects=8, publish_marked_views=False,
                      sensor_qos_reliable=False, sensor_qos_depth=10,
                      model_backend="remote", model_endpoint=f"http://127.0.0.1:{free_port()}",
                      model_timeout_s=2.0)


def _frames() -> list[VisualInput]:
    rng = np.random.default_rng(0)
    return [VisualInput(frames=[rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)],
                        label="Camera front")]


def test_a_server_that_is_down_falls_back_to_the_local_model(config: NodeConfig) -> None:
    log = logging.getLogger("test_model_backend")
    engine = load_engine(replace(config, model_fallback_local=True), log)
    assert isinstance(engine, FallbackEngine) and not is_local(engine)
    local = engine.local.answer("What is there?", _frames(), max_new_tokens=4)
    answer = engine.answer("What is there?", _frames(), max_new_tokens=4)
    assert engine.fallbacks == 1 and answer.token_ids == local.token_ids  # the local model answered


def test_without_fallback_the_server_error_comes_through(config: NodeConfig) -> None:
    log = logging.getLogger("test_model_backend")
    engine = load_engine(config, log)
    assert server_errors(engine) and model_name(engine, config, log).startswith("remote:")
    with pytest.raises(RemoteEngineError, match="unreachable"):
        engine.answer("What is there?", _frames(), max_new_tokens=4)


def test_remote_needs_an_endpoint(config: NodeConfig) -> None:
    with pytest.raises(StartupError, match=r"model\.endpoint"):
        load_engine(replace(config, model_endpoint=" "), logging.getLogger("test_model_backend"))
