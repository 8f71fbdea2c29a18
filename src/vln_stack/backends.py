"""Every policy backend, registered: import this module, then pick one by name.

``vln_stack.core.policies`` holds the registry (:data:`BACKENDS`, :func:`register_backend`,
:func:`make_backend`) and the ``oracle`` and ``random`` backends; the plug-ins live above the core
with what they need and register themselves when imported here:

- ``janus``: :mod:`vln_stack.models.janus_backend` (torch/transformers load when it is built),
- ``openai``: :mod:`vln_stack.zero_shot.backend`.

A new backend: decorate its class with ``@register_backend('name')`` in its own module and add
the import below. Importing this module stays cheap (no torch, no rclpy).
"""
from __future__ import annotations

from .core.policies import (BACKENDS, Decision, Observation, PolicyBackend, make_backend,
                            register_backend)
from .models import janus_backend as _janus_backend  # noqa: F401  registers 'janus'
from .zero_shot import backend as _openai_backend  # noqa: F401  registers 'openai'

__all__ = ['BACKENDS', 'Decision', 'Observation', 'PolicyBackend', 'make_backend',
           'register_backend']
