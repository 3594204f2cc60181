"""The node's model: the Oryx engine in this process (``model.backend: local``) or a model server
(``remote``: ``oryx-ros serve`` or another OpenAI-compatible server), optionally falling back to a local
model when the server cannot be reached."""

from __future__ import annotations

import os
import time
from typing import Any

from oryx_ros.ros.parameters import NodeConfig
from oryx_ros.ros.startup import StartupError, check_model_settings, explain_load_error


def load_engine(config: NodeConfig, log: Any) -> Any:
    """The engine the node asks: an OryxEngine, a RemoteEngine, or a FallbackEngine over both.

    Raises StartupError (one line naming the parameter and the fix) for settings that cannot work; the cheap
    ones are checked before torch loads anything.
    """
    if config.model_backend not in ("local", "remote"):
        raise StartupError(f"model.backend must be local or remote, got {config.model_backend!r}", "model.backend")
    if config.model_backend == "local":
        return load_local_engine(config, log)
    if not config.model_endpoint.strip():
        raise StartupError("model.backend remote needs model.endpoint, the server's base URL (e.g. "
                           "http://gpu1:8000): set it, or set model.backend:=local", "model.endpoint")
    from oryx_ros.serving.remote_engine import RemoteEngine

    api_key = os.environ.get(config.model_api_key_env) if config.model_api_key_env else None
    remote = RemoteEngine(config.model_endpoint, api_key=api_key or None, timeout_s=config.model_timeout_s)
    log.info(f"model: remote server {config.model_endpoint} (key from ${config.model_api_key_env}: "
             f"{'set' if api_key else 'not set'})")
    if not config.model_fallback_local:
        return remote
    return FallbackEngine(remote, load_local_engine(config, log), log)


def load_local_engine(config: NodeConfig, log: Any) -> Any:
    check_model_settings(config.model_path, config.model_device, config.model_dtype, config.attn_implementation,
                         config.resize_backend)

    import torch

    from oryx_ros.model.engine import OryxEngine
    from oryx_ros.model.planner import PlanPolicy

    path = config.model_path
    if not path:
        from oryx_ros.model.tiny_checkpoint import ensure_tiny_checkpoint

        path = str(ensure_tiny_checkpoint())
        log.warning("=" * 78)
        log.warning("model.path is empty: using the bundled TINY RANDOM Oryx checkpoint at " + path)
        log.warning("Its answers are meaningless. Set model.path to a real checkpoint (e.g. Oryx-7B).")
        log.warning("=" * 78)
    started = time.monotonic()
    # "auto" spreads a 34B/32B checkpoint over all visible GPUs (accelerate placement, whole decoder layers).
    multi_gpu = config.model_device == "auto"
    try:
        engine = OryxEngine.from_pretrained(
            path, device="cuda" if multi_gpu else config.model_device, device_map="auto" if multi_gpu else None,
            dtype=getattr(torch, config.model_dtype),
            attn_implementation=config.attn_implementation, allow_pickle=config.allow_pickle,
            resize_backend=config.resize_backend,
            cache_bytes=int(config.token_cache_megabytes * 1024 * 1024),
            policy=PlanPolicy(min_frames_at_4x=config.min_frames_at_4x, auto_max_frames_4x=config.max_frames_4x,
                              auto_max_frames_16x=config.max_frames_16x),
            max_context=config.max_context_tokens or None)
    except Exception as error:
        explained = explain_load_error(error, path, config.model_device)
        if explained is None:
            raise
        raise explained from error
    log.info(f"loaded {engine.model_name} on {config.model_device} ({config.model_dtype}) "
             f"in {time.monotonic() - started:.1f} s, context {engine.context_limit} tokens")
    return engine


def server_errors(engine: Any) -> tuple[type[Exception], ...]:
    """The errors ``engine`` raises when its model server fails (empty for a local engine): the node answers
    them with the server's own words instead of an internal error."""
    if is_local(engine):
        return ()
    from oryx_ros.serving.remote_engine import RemoteEngineError

    return (RemoteEngineError,)


def model_name(engine: Any, config: NodeConfig, log: Any) -> str:
    """The engine's model name; for a server not reachable at start-up, its endpoint (questions retry it)."""
    errors = server_errors(engine)
    try:
        return engine.model_name
    except errors as error:
        log.warning(f"model server {config.model_endpoint} is not reachable yet ({error}); the node starts "
                    "anyway and each question tries it again")
        return f"remote:{config.model_endpoint}"


def is_local(engine: Any) -> bool:
    """Whether ``engine`` runs here (its token cache can be filled ahead of questions)."""
    return hasattr(engine, "encode_into_cache") and hasattr(engine, "cache")


class FallbackEngine:
    """Asks the server; when it cannot be reached (after the remote engine's retries, before any token came
    back), answers with the local model and counts it. A cancel or a bad request is never retried locally."""

    def __init__(self, remote: Any, local: Any, log: Any) -> None:
        self.remote, self.local, self.log = remote, local, log
        self.fallbacks = 0

    @property
    def model_name(self) -> str:
        return self.remote.model_name

    @property
    def context_limit(self) -> int:
        return self.remote.context_limit

    def answer(self, question: str, visuals: Any = (), **kwargs: Any) -> Any:
        from oryx_ros.serving.remote_engine import RemoteEngineError

        streamed = False
        on_token = kwargs.get("on_token")

        def relay(delta: str, n_tokens: int) -> None:
            nonlocal streamed
            streamed = True
            if on_token is not None:
                on_token(delta, n_tokens)

        try:
            return self.remote.answer(question, visuals, **{**kwargs, "on_token": relay})
        except RemoteEngineError as error:
            if streamed:
                raise
            self.fallbacks += 1
            self.log.warning(f"model server failed ({error}); answering with the local model "
                             f"(fallback {self.fallbacks})")
            return self.local.answer(question, visuals, **kwargs)
