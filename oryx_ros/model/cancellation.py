"""Cancel points inside a model pass: stop a request within one ViT block or one LLM layer (pure torch).

Between steps (before the vision pass, between generated tokens) a request's cancel flag is read by the
loops themselves. One step can take seconds, though: the packed ViT pass over every frame of a request,
or the prefill of a long prompt. :func:`cancel_points` gives each ViT block and LLM decoder layer a forward
pre-hook that raises :class:`RequestCancelledError` once the flag is set, so a cancel takes effect within
one layer. The pass's partial results are discarded by whoever catches it (nothing half-encoded is cached).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from torch import nn

Cancel = threading.Event | Callable[[], bool] | None


class RequestCancelledError(Exception):
    """A cancel point found the request's cancel flag set."""


def is_cancelled(cancel: Cancel) -> bool:
    """``cancel`` is a ``threading.Event`` (set = cancelled), a callable returning True, or None."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set()) if callable(is_set) else bool(cancel())


def raise_if_cancelled(cancel: Cancel) -> None:
    if is_cancelled(cancel):
        raise RequestCancelledError


def cancel_point_modules(model: nn.Module) -> list[nn.Module]:
    """Where an ``OryxForCausalLM`` pass may stop: each patch-embedding call (a few frames each), and the
    attention and the MLP of every ViT block and LLM decoder layer (half a layer apart: on a CPU one
    tiny-model layer over a whole request takes ~0.5 s)."""
    inner: Any = getattr(model, "model", model)
    tower = getattr(getattr(inner, "vision_tower", None), "vision_tower", None)
    points: list[nn.Module] = [tower.patch_embed] if hasattr(tower, "patch_embed") else []
    for layer in [*getattr(tower, "blocks", ()), *getattr(inner, "layers", ())]:
        parts = [getattr(layer, name) for name in ("attn", "self_attn", "mlp") if hasattr(layer, name)]
        points += parts or [layer]
    return points


@contextlib.contextmanager
def cancel_points(modules: Iterable[nn.Module], cancel: Cancel) -> Iterator[None]:
    """While open, each of ``modules`` raises :class:`RequestCancelledError` before its forward once
    ``cancel`` is set.

    The hooks are removed on exit, however the block ends; with ``cancel`` None nothing is installed.
    """
    if cancel is None:
        yield
        return

    def check(_module: nn.Module, _args: Any) -> None:
        raise_if_cancelled(cancel)

    handles = [module.register_forward_pre_hook(check) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
