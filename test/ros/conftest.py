"""Fixtures shared by the ROS tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import rclpy
from rclpy.context import Context


@pytest.fixture
def ros_context() -> Iterator[Context]:
    """An rclpy context of the test's own (not the global one), shut down afterwards."""
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()
