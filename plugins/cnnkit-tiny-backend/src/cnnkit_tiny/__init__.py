"""cnnkit-tiny-backend: the ``tiny`` backend, a stranger's small implementation of a few cnnkit ops.

It lives outside cnnkit, registers through the same entry-point group and hooks
as the built-in backends, and proves itself with cnnkit's shared conformance
suite (see this distribution's README).
"""

from cnnkit_tiny.backend import TinyBackend

__version__ = "0.1.0"

__all__ = ["TinyBackend", "__version__"]
