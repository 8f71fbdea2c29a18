"""Headless simulation: world descriptions, MJCF / SDF, the simulators."""
from . import procgen  # noqa: F401  (registers the procedural worlds with worlds.get_world)
