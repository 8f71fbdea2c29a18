"""The ROS-free core: actions, geometry, episodes, decision loop, controller, safety, policies.

``core`` imports nothing above it (no ``models``, ``zero_shot``, ``tools``, ``ros``, ``nodes``,
not even inside functions; tests/test_core.py checks). Plug-ins register into its registries
(:func:`vln_stack.core.policies.register_backend`); :mod:`vln_stack.backends` imports them all.
"""
