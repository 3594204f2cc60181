"""Launch the oryx node: `ros2 launch oryx_ros oryx.launch.py [params_file:=...] [model_path:=...]`."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory("oryx_ros"), "config", "oryx.yaml")
    params_file = LaunchConfiguration("params_file")
    # Typed explicitly: an empty model_path must stay the string "", not become YAML null.
    overrides = {
        "model.path": ParameterValue(LaunchConfiguration("model_path"), value_type=str),
        "model.device": ParameterValue(LaunchConfiguration("device"), value_type=str),
        "model.dtype": ParameterValue(LaunchConfiguration("dtype"), value_type=str),
        "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
    }
    common = dict(
        package="oryx_ros",
        name="oryx",
        namespace=LaunchConfiguration("namespace"),
        parameters=[params_file, overrides],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
        output="screen",
    )
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the node's parameters"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Oryx checkpoint directory; empty = bundled tiny random model"),
        DeclareLaunchArgument("device", default_value="cpu", description="torch device (cpu, cuda, cuda:N)"),
        DeclareLaunchArgument("dtype", default_value="float32", description="float32, bfloat16 or float16"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="follow /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="run the managed node (configure/activate it yourself)"),
        Node(executable="oryx_node", condition=UnlessCondition(LaunchConfiguration("lifecycle")), **common),
        LifecycleNode(executable="oryx_lifecycle_node", condition=IfCondition(LaunchConfiguration("lifecycle")),
                      **common),
    ])
