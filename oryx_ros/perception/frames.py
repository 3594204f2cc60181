"""Plain data types shared by the sensor side, the model and the ROS adapter (no ROS imports).

Timestamps are integer nanoseconds (``stamp_ns``); the node converts ``builtin_interfaces/Time`` once,
at the boundary. Images are RGB ``uint8`` arrays of shape ``(H, W, 3)``; depth is ``float32`` metres of
shape ``(H, W)`` with NaN where the sensor gave no return.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

_frame_ids = itertools.count(1)


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image size (sensor_msgs/CameraInfo's K, D and size)."""

    width: int
    height: int
    k: npt.NDArray[np.float64]  # (3, 3) camera matrix
    d: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"

    @property
    def fx(self) -> float:
        return float(self.k[0, 0])

    @property
    def fy(self) -> float:
        return float(self.k[1, 1])

    @property
    def cx(self) -> float:
        return float(self.k[0, 2])

    @property
    def cy(self) -> float:
        return float(self.k[1, 2])

    def scaled(self, width: int, height: int) -> CameraIntrinsics:
        """The same camera seen through an image resized to ``width`` x ``height``."""
        sx, sy = width / self.width, height / self.height
        k = self.k.copy()
        k[0, 0] *= sx
        k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5  # pixel centres, not edges, keep their meaning
        k[1, 1] *= sy
        k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
        return CameraIntrinsics(width, height, k, self.d.copy(), self.distortion_model)


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera image (optionally with registered depth) at one instant.

    ``uid`` is unique in the process and never reused, so it can key caches of per-frame work
    (the model's visual-token cache) for as long as the frame lives.
    """

    camera: str
    stamp_ns: int
    rgb: npt.NDArray[np.uint8]  # (H, W, 3) RGB
    depth_m: npt.NDArray[np.float32] | None = None  # (H, W) metres, NaN = no return
    intrinsics: CameraIntrinsics | None = None  # for the rgb/depth size above
    frame_id: str = ""  # optical frame of the camera (REP 103: z forward, x right, y down)
    uid: int = field(default_factory=lambda: next(_frame_ids))

    @property
    def nbytes(self) -> int:
        return int(self.rgb.nbytes + (0 if self.depth_m is None else self.depth_m.nbytes))
