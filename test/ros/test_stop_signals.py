"""The node's stop signals while it starts: a SIGINT whose KeyboardInterrupt lands in a finalizer (where Python
swallows it, as it did during model loading in 4 of 9 timed signals) still stops the start-up, quietly."""

from __future__ import annotations

import gc
import signal

import pytest

pytest.importorskip("rclpy")

from oryx_ros.ros import node as node_module


class _SignalledInFinalizer:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)  # the handler runs here, inside the finalizer


def test_a_stop_swallowed_by_a_finalizer_still_stops_the_start_up(capsys) -> None:
    signals = node_module._StopSignals()
    try:
        node_module._stop_if_requested_while_starting()  # nothing requested yet: no stop
        holder = _SignalledInFinalizer()
        del holder
        gc.collect()
        # Python swallowed the KeyboardInterrupt in __del__; the start-up still sees the stop at its next stage.
        with pytest.raises(KeyboardInterrupt):
            node_module._stop_if_requested_while_starting()
    finally:
        signals.restore()
    assert "Exception ignored" not in capsys.readouterr().err  # no traceback for our own stop


def test_once_serving_a_signal_only_requests_the_stop() -> None:
    signals = node_module._StopSignals()
    try:
        signals.serving = True
        signal.raise_signal(signal.SIGTERM)
        assert signals.requested.is_set()
        node_module._stop_if_requested_while_starting()  # not a start-up stop
    finally:
        signals.restore()
