"""A real Ray Serve fleet server for tests: Ray in a private temp dir, the tiny checkpoint, a free port.

    from ray_server import ray_server

    with ray_server() as url:                      # e.g. "http://127.0.0.1:41237"
        engine = RemoteEngine(url)
        ...

Ray runs in this process (``ray.init``), so a test can also reach the replicas (``ray.get_actor``). Ray and
Serve are always shut down on exit, also when the body raises. Startup on a loaded 2-core machine takes
seconds to tens of seconds; ``startup_timeout_s`` bounds it (TimeoutError, never a hang).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

from oryx_ros.serving.config import ServeConfig
from oryx_ros.serving.deployment import APP_NAME, build_application

# Small replicas on a shared 2-core machine: Ray's own processes need the rest.
TEST_REPLICA_CPUS = 0.5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def ray_instance(num_cpus: int = 2, log_to_driver: bool = False) -> Iterator[int]:
    """A local Ray with Serve's HTTP proxy on a free loopback port (yields the port); always shut down."""
    import ray
    from ray import serve

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; nest serve_app() in one ray_instance()")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    port = free_port()
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, _temp_dir=temp_dir,
                 configure_logging=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextlib.contextmanager
def serve_app(port: int, *, num_replicas: int = 1, api_key: str | None = None,
              overrides: Mapping[str, Any] | None = None, name: str = APP_NAME, route_prefix: str = "/",
              startup_timeout_s: float = 240.0) -> Iterator[str]:
    """Deploy the tiny-checkpoint server into a running :func:`ray_instance` as application ``name`` under
    ``route_prefix`` (several can run side by side); yields its URL, then deletes it. ``overrides`` are
    ``{"section.key": value}`` of :class:`~oryx_ros.serving.config.ServeConfig`."""
    from ray import serve

    config = ServeConfig().with_overrides({"replicas.num_replicas": num_replicas,
                                           "replicas.num_cpus": TEST_REPLICA_CPUS, **(overrides or {})})
    url = f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}"
    serve.run(build_application(config, api_key), name=name, route_prefix=route_prefix, blocking=False)
    try:
        wait_until_healthy(url, num_replicas, startup_timeout_s, name=name)
        yield url
    finally:
        with contextlib.suppress(Exception):
            serve.delete(name)


@contextlib.contextmanager
def ray_server(*, num_replicas: int = 1, api_key: str | None = None, overrides: Mapping[str, Any] | None = None,
               startup_timeout_s: float = 240.0) -> Iterator[str]:
    """Ray + the tiny-checkpoint server on a free port; yields the endpoint URL (``http://127.0.0.1:PORT``)."""
    with ray_instance() as port, serve_app(port, num_replicas=num_replicas, api_key=api_key, overrides=overrides,
                                           startup_timeout_s=startup_timeout_s) as url:
        yield url


def wait_until_healthy(url: str, num_replicas: int = 1, timeout_s: float = 240.0, name: str = APP_NAME) -> None:
    """Wait until application ``name`` runs ``num_replicas`` replicas and ``url``/health answers
    (TimeoutError after ``timeout_s``)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            status = serve.status().applications.get(name)
            if status is not None and str(status.status).endswith("RUNNING"):
                replicas = status.deployments[next(iter(status.deployments))].replica_states.get("RUNNING", 0)
                if replicas >= num_replicas and httpx.get(f"{url}/health", timeout=10).status_code == 200:
                    return
            last = f"application status {status.status if status else 'missing'}"
        except (httpx.HTTPError, StopIteration, KeyError) as err:
            last = f"{type(err).__name__}: {err}"
        time.sleep(0.5)
    raise TimeoutError(f"the Ray Serve app at {url} was not healthy within {timeout_s:.0f} s ({last})")
