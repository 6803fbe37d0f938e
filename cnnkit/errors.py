"""Exceptions cnnkit raises beyond ``ValueError`` and ``TypeError``."""

from __future__ import annotations

__all__ = [
    "BackendNotFoundError",
    "BackendUnavailableError",
    "OpNotImplementedError",
    "PluginConflictError",
    "PluginError",
]


class BackendNotFoundError(LookupError):
    """No backend of that name is registered; the message lists the ones that are."""


class BackendUnavailableError(ImportError):
    """The backend is registered but its dependencies are missing; the message says what to install."""


class OpNotImplementedError(NotImplementedError):
    """The chosen backend has no implementation of the op."""


class PluginError(RuntimeError):
    """A plugin failed to import or register (raised only in strict mode)."""


class PluginConflictError(PluginError):
    """Two plugins claimed the same op, backend, or (backend, op) implementation."""
