"""Message types of the stack's topics and the rosbags typestore, shared by the bag tools."""
from __future__ import annotations

import importlib
from typing import Any

# Types of the stack's topics (relative names, matched on the name's tail).
KNOWN_TYPES = {
    'camera/image_raw': 'sensor_msgs/msg/Image',
    'camera/image_raw/compressed': 'sensor_msgs/msg/CompressedImage',
    'camera/camera_info': 'sensor_msgs/msg/CameraInfo',
    'vln/image': 'sensor_msgs/msg/Image',
    'vln/image/compressed': 'sensor_msgs/msg/CompressedImage',
    'vln/camera_info': 'sensor_msgs/msg/CameraInfo',
    'vln/fused_tokens': 'sensor_msgs/msg/Image',
    'vln/fused_tokens/info': 'std_msgs/msg/String',
    'odom': 'nav_msgs/msg/Odometry',
    'cmd_vel': 'geometry_msgs/msg/Twist',
    'vln/instruction': 'std_msgs/msg/String',
    'instruction': 'std_msgs/msg/String',
    'vln/action': 'std_msgs/msg/String',
    'vln/status': 'std_msgs/msg/String',
    'vln/move_done': 'std_msgs/msg/String',
    'vln/goal': 'geometry_msgs/msg/PoseStamped',
    'vln/episode_reset': 'std_msgs/msg/Empty',
    'diagnostics': 'diagnostic_msgs/msg/DiagnosticArray',
    'clock': 'rosgraph_msgs/msg/Clock',
}
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


def known_type(topic: str) -> str | None:
    """The stack's type for ``topic`` ('/ns/odom' -> nav_msgs/msg/Odometry), else None."""
    name = topic.strip('/')
    best = None
    for key, typ in KNOWN_TYPES.items():
        if name == key or name.endswith('/' + key):
            if best is None or len(key) > len(best[0]):
                best = (key, typ)
    return best[1] if best else None


def msg_class(type_name: str) -> type:
    """'pkg/msg/Name' -> the generated Python class (ImportError if not installed)."""
    pkg, kind, name = type_name.split('/')
    return getattr(importlib.import_module(f'{pkg}.{kind}'), name)


_TYPESTORE: Any = None


def typestore() -> Any:
    """The rosbags typestore of ROS 2 kilted (message definitions and RIHS01 hashes)."""
    global _TYPESTORE  # noqa: PLW0603 - built once, it is immutable in use
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_typestore  # noqa: PLC0415
        _TYPESTORE = get_typestore(Stores.ROS2_KILTED)
    return _TYPESTORE

