"""ament_python / pip package for the VLN stack (sources live under src/)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'vln_stack'

setup(
    name=PACKAGE,
    version='0.1.0',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    package_data={PACKAGE: ['py.typed']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
        (f'share/{PACKAGE}/config/robots', glob('config/robots/*.yaml')),
        (f'share/{PACKAGE}/config/episodes', glob('config/episodes/*.yaml')),
        (f'share/{PACKAGE}/gazebo', glob('gazebo/*.sdf')),
    ],
    install_requires=['setuptools'],
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
            f'vln_demo = {PACKAGE}.tools.run_episode:main',
            f'vln_bag_play = {PACKAGE}.tools.bag_play:main',
            f'vln_action_report = {PACKAGE}.tools.action_report:main',
            f'vln_safety_report = {PACKAGE}.tools.safety_report:main',
        ],
    },
)
