"""``oryx-ros serve``: one Oryx server for a fleet of robots, on Ray Serve, OpenAI-compatible over HTTP.

    oryx-ros serve --config config/serve.yaml                      # local Ray, 127.0.0.1:8000
    oryx-ros serve --config config/serve.yaml --address auto       # the Ray cluster already running here
    oryx-ros serve --address ray://head:10001 --host 0.0.0.0       # a remote cluster, reachable by robots

stdout carries one line, the endpoint URL, once the server answers; progress and warnings go to stderr.
Runs until SIGINT or SIGTERM, then deletes the application (on a cluster it joined) or shuts Serve and the
local Ray down, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence

from .config import ServeConfig, ServeConfigError, load_serve_config


def _progress(message: str) -> None:
    print(f"[serve] {message}", file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oryx-ros serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="serve YAML (default: every default of config/serve.yaml)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join: 'auto' (one running on this machine) or ray://host:10001; "
                             "default: start a private local Ray")
    parser.add_argument("--host", default=None, help="HTTP bind address (default: http.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: http.port, 8000)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray (default: all)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_serve_config(args.config)
        overrides = {key: value for key, value in (("http.host", args.host), ("http.port", args.port))
                     if value is not None}
        config = config.with_overrides(overrides) if overrides else config
    except ServeConfigError as err:
        print(f"oryx-ros serve: {err}", file=sys.stderr)
        return 2
    api_key = _api_key(config)
    _warn_about(config, api_key)

    stop = threading.Event()
    _on_stop_signals(stop)
    try:
        return _serve(config, api_key, args, stop)
    except ServeStartError as err:
        print(f"oryx-ros serve: {err}", file=sys.stderr)
        return 1


class ServeStartError(RuntimeError):
    """Ray or the application could not start; the message says what to check."""


def _serve(config: ServeConfig, api_key: str | None, args: argparse.Namespace, stop: threading.Event) -> int:
    import ray
    from ray import serve

    from .deployment import APP_NAME, build_application

    joined_cluster = args.address is not None
    started = time.monotonic()
    _progress(f"starting Ray ({'joining ' + args.address if joined_cluster else 'local'})")
    # The driver's own logging stays quiet: replica logs live in Ray's session directory.
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        ray.init(address=args.address, num_cpus=None if joined_cluster else args.num_cpus,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as err:
        raise ServeStartError(f"cannot start or reach Ray ({args.address or 'local'}): {err}") from err
    _on_stop_signals(stop)  # again: ray.init installs its own SIGTERM handler (it prints a stack and exits 15)
    try:
        http = config.http
        http_options = {"host": http.host, "port": http.port}
        if http.request_timeout_s > 0:
            http_options["request_timeout_s"] = http.request_timeout_s
        serve.start(http_options=http_options)
        _progress(f"deploying {_replica_summary(config)}")
        try:
            serve.run(build_application(config, api_key), name=APP_NAME, route_prefix="/", blocking=False)
        except Exception as err:  # Serve reports a failed replica constructor as a RuntimeError subclass
            raise ServeStartError(f"the model server did not start: {err}") from err
        url = f"http://{_url_host(http.host)}:{http.port}"
        print(url, flush=True)
        _progress(f"serving at {url} (OpenAI-compatible: {url}/v1/chat/completions); Ctrl-C stops")
        while not stop.wait(0.5):
            pass
        _progress("stopping")
        started = time.monotonic()
        if joined_cluster:
            with contextlib.suppress(Exception):  # shutting down: report nothing but the outcome
                serve.delete(APP_NAME)  # leave the cluster and its other applications running
        # A private local Ray goes down whole with ray.shutdown(), Serve's actors included, in well under the
        # seconds serve.shutdown() spends draining replicas one by one.
        return 0
    finally:
        ray.shutdown()
        if stop.is_set():
            _progress(f"stopped in {time.monotonic() - started:.1f} s")


def _on_stop_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: the main loop then shuts down in order, without a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


def _api_key(config: ServeConfig) -> str | None:
    from .deployment import api_key_from_env

    return api_key_from_env(config)


def _warn_about(config: ServeConfig, api_key: str | None) -> None:
    if not config.model.path:
        _progress("WARNING: model.path is '' — serving the TINY RANDOM-WEIGHT checkpoint; answers are noise. "
                  "Set model.path to an Oryx checkpoint directory.")
    if api_key is None:
        name = config.http.api_key_env
        _progress(f"no API key ({name or 'http.api_key_env'} unset): every client that reaches the port is served")
        if not _is_loopback(config.http.host):
            _progress(f"WARNING: listening on {config.http.host} without an API key; set {name or 'an API key'}")


def _replica_summary(config: ServeConfig) -> str:
    replicas = config.replicas
    count = (f"{replicas.min_replicas}-{replicas.max_replicas} replicas (autoscaling)" if config.autoscaling
             else f"{replicas.num_replicas} replica(s)")
    return (f"{count} of {config.model.path or 'the tiny checkpoint'} on {config.model.device} "
            f"({replicas.num_gpus:g} GPU, {replicas.num_cpus:g} CPU each)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


if __name__ == "__main__":
    sys.exit(main())
