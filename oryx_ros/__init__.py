"""oryx_ros: long-horizon, multi-camera, 3D-aware visual question answering for ROS 2 with Oryx.

The ROS build (rosidl) generates ``oryx_ros.msg``, ``oryx_ros.srv`` and ``oryx_ros.action`` into the
install tree, while this source tree holds the Python code. ``extend_path`` merges both directories
into one package, so ``from oryx_ros.srv import Ask`` works from a source checkout whose install
tree is on ``PYTHONPATH`` as well as from a colcon install.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
