"""A hidden helper node, spun by a SingleThreadedExecutor on a thread of its own, for sensor subscriptions.

Why: sensor intake must not depend on the node's main executor. Its pool threads are held by requests
waiting for the model, and rclpy's MultiThreadedExecutor itself re-submits tasks still waiting in its
pool and re-scans a list of pending futures that grows to thousands under a steady stream of messages
(ros2/rclpy#1452; the node's main executor carries the upstream fix, oryx_ros.ros.executors). Measured
here (2 cores, bench/bench_ingest_rgbd.py, bench/bench_executor.py): on rclpy's MultiThreadedExecutor 4
RGB-D cameras at 15 Hz lost 10-45 % of their messages even to bare counting callbacks, and a 100 Hz
Odometry subscription cost 0.67 of a core and lost 39 %; spun by this node's SingleThreadedExecutor they
took every message at 0.7-0.9 ms (cameras) and 0.6 ms (odometry) of CPU a message. Subscriptions whose
callbacks only hand a message off or record it (cameras, poses) get this node; services, actions and
timers stay on the owner's executor.

The node's name starts with ``_`` (hidden from ``ros2 node list`` without ``--all``) and it ignores the
process's command-line arguments, so a ``__node`` remap cannot give it the owner's name. Topic names are
resolved (namespace and remaps) by the owner, so the helper subscribes where the owner would have.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Final

from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

__all__ = ["SideNode"]

CLOSE_TIMEOUT_S: Final = 1.0


class SideNode:
    """``node``: a hidden node in ``owner``'s context, spun on the thread ``oryx-<suffix>-executor``."""

    def __init__(self, owner: Node, suffix: str) -> None:
        self._owner = owner
        self.node = Node(f"_{owner.get_name()}_{suffix}", namespace=owner.get_namespace(), context=owner.context,
                         use_global_arguments=False, start_parameter_services=False, enable_rosout=False)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name=f"oryx-{suffix}-executor", daemon=True)
        self._thread.start()

    def resolve(self, topic: str) -> str:
        """``topic`` as the owner resolves it (its namespace, the process's remaps)."""
        # An rclpy without Node.resolve_topic_name: the helper still shares the namespace, not the remaps.
        resolve = getattr(self._owner, "resolve_topic_name", None)
        return resolve(topic) if resolve is not None else topic

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop spinning and destroy the node (its subscriptions with it)."""
        self._executor.shutdown(timeout_sec=timeout_s)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)
        self.node.destroy_node()

    def _spin(self) -> None:
        # The context may end first (Ctrl-C): that is a normal end of spinning.
        with contextlib.suppress(ExternalShutdownException):
            self._executor.spin()
