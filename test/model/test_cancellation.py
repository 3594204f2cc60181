"""Cancel points inside a pass: a cancel set part-way through the ViT, the prefill or a decode step stops
the request there (tiny random checkpoint, CPU). Each cancel is triggered by the model's own progress
(a forward hook), never by a clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from oryx_ros.model.cancellation import RequestCancelledError, cancel_point_modules, cancel_points
from oryx_ros.model.engine import OryxEngine, VisualInput
from oryx_ros.model.modeling_oryx_vit import PATCH_EMBED_CHUNK
from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint


@pytest.fixture(scope="module")
def engine() -> OryxEngine:
    return OryxEngine.from_pretrained(ensure_tiny_checkpoint(), device="cpu")


@pytest.fixture(autouse=True)
def no_hooks_left_behind(engine: OryxEngine) -> Iterator[None]:
    yield
    modules = cancel_point_modules(engine.model)
    assert modules and not any(module._forward_pre_hooks or module._forward_hooks for module in modules)


def cameras(n_frames: int, seed: int) -> list[VisualInput]:
    rng = np.random.default_rng(seed)
    return [VisualInput([rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(n_frames)],
                        keys=[(seed, camera, i) for i in range(n_frames)], label=f"Camera {camera}")
            for camera in range(3)]


class Calls:
    """Counts a module's forward calls; sets ``event`` on call number ``at``."""

    def __init__(self, module: torch.nn.Module, event: threading.Event | None = None, at: int = 0) -> None:
        self.count, self.event, self.at = 0, event, at
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1
        if self.event is not None and self.count == self.at:
            self.event.set()


def test_cancel_inside_the_vit_stops_the_pass_and_caches_nothing(engine: OryxEngine) -> None:
    vit_blocks = engine.model.model.vision_tower.vision_tower.blocks
    cancel = threading.Event()
    first_block, last_block = Calls(vit_blocks[0], cancel, at=1), Calls(vit_blocks[-1])
    llm = Calls(engine.model.model.layers[0])
    entries_before = engine.cache_stats().entries
    try:
        answer = engine.answer("What changed?", cameras(6, seed=1), max_new_tokens=8, cancel=cancel)
    finally:
        for calls in (first_block, last_block, llm):
            calls.handle.remove()
    assert answer.stop_reason == "cancelled" and answer.new_tokens == 0 and answer.text == ""
    assert (first_block.count, last_block.count, llm.count) == (1, 0, 0)  # stopped between two ViT blocks
    assert answer.frames_encoded == 0 and engine.cache_stats().entries == entries_before

    again = engine.answer("What changed?", cameras(6, seed=1), max_new_tokens=2)  # the same frames, no cancel
    assert again.stop_reason != "cancelled" and again.frames_encoded == 18 and again.frames_from_cache == 0


def test_cancel_during_patch_embedding_stops_before_the_first_block(engine: OryxEngine) -> None:
    tower = engine.model.model.vision_tower.vision_tower
    cancel = threading.Event()
    patch_calls, first_block = Calls(tower.patch_embed, cancel, at=1), Calls(tower.blocks[0])
    try:  # 3 cameras x 12 frames of one size: patch-embedded in chunks, each chunk a cancel point
        answer = engine.answer("What changed?", cameras(12, seed=4), max_new_tokens=8, cancel=cancel)
    finally:
        patch_calls.handle.remove()
        first_block.handle.remove()
    assert answer.stop_reason == "cancelled" and answer.frames_encoded == 0
    assert (patch_calls.count, first_block.count) == (1, 0)  # the 2nd of several chunks never ran

    uncancelled = Calls(tower.patch_embed)
    try:
        engine.answer("What changed?", cameras(12, seed=4), max_new_tokens=1)
    finally:
        uncancelled.handle.remove()
    assert uncancelled.count == -(-36 // PATCH_EMBED_CHUNK) > 1  # the chunks the cancel cut short


def test_cancel_during_preprocessing_never_starts_the_vit(engine: OryxEngine) -> None:
    checks = 0

    def cancel() -> bool:  # false for the check before preprocessing and the first frame's, then true
        nonlocal checks
        checks += 1
        return checks > 2

    vit = Calls(engine.model.model.vision_tower.vision_tower.blocks[0])
    try:
        answer = engine.answer("What changed?", cameras(6, seed=2), max_new_tokens=8, cancel=cancel)
    finally:
        vit.handle.remove()
    assert answer.stop_reason == "cancelled" and answer.frames_encoded == 0 and vit.count == 0


def test_cancel_inside_the_prefill_gives_no_token(engine: OryxEngine) -> None:
    cancel = threading.Event()
    layers = engine.model.model.layers
    first_layer, last_layer = Calls(layers[0], cancel, at=1), Calls(layers[-1])
    streamed: list[str] = []
    try:
        answer = engine.answer("Describe it.", cameras(2, seed=3), max_new_tokens=8,
                               on_token=lambda delta, _n: streamed.append(delta), cancel=cancel)
    finally:
        first_layer.handle.remove()
        last_layer.handle.remove()
    assert answer.stop_reason == "cancelled" and answer.new_tokens == 0 and streamed == []
    assert (first_layer.count, last_layer.count) == (1, 0)
    assert answer.frames_encoded == 6  # the vision pass had finished: its frames are cached


def test_cancel_inside_a_decode_step_keeps_the_tokens_before_it(engine: OryxEngine) -> None:
    cancel = threading.Event()
    # Call 1 of the first layer is the prefill (token 1), calls 2 and 3 decode tokens 2 and 3, call 4 is cancelled.
    first_layer = Calls(engine.model.model.layers[0], cancel, at=4)
    try:
        answer = engine.answer("Tell me everything.", max_new_tokens=50, cancel=cancel)
    finally:
        first_layer.handle.remove()
    assert answer.stop_reason == "cancelled" and answer.new_tokens == 3
    assert answer.text == engine.tokenizer.decode(answer.token_ids, skip_special_tokens=True)


def test_cancel_points_remove_their_hooks_whatever_happens() -> None:
    layers = [torch.nn.Linear(2, 2) for _ in range(3)]
    with pytest.raises(RequestCancelledError), cancel_points(layers, lambda: True):
        layers[0](torch.zeros(2))
    with pytest.raises(ValueError), cancel_points(layers, lambda: False):
        raise ValueError("not a cancel")
    with cancel_points(layers, None):
        assert not any(layer._forward_pre_hooks for layer in layers)  # no flag: nothing installed
    assert not any(layer._forward_pre_hooks for layer in layers)
