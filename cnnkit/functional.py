"""The ops as functions, in PyTorch's names and argument order.

Each function validates its call once (through its op's record in
:mod:`cnnkit.ops`) and dispatches to the chosen backend; it returns the
backend's own array type (``numpy.ndarray``, ``torch.Tensor``, ...). Every
function takes ``backend=`` (a name or :class:`cnnkit.backend.Backend`);
without it the active backend runs (see :func:`cnnkit.use_backend`).

The functions are defined, with their docstrings, beside their op's record
(the families of ``cnnkit/ops/``); this module gathers them.

Layout is PyTorch's: inputs ``(N, C, *spatial)``, convolution weights
``(K, C/groups, *kernel)``, bias ``(K,)``. Gradients: :func:`cnnkit.vjp`.
"""

from __future__ import annotations

from cnnkit.ops import BUILTIN_FUNCTIONS

globals().update({fn.__name__: fn for fn in BUILTIN_FUNCTIONS})

__all__ = sorted(fn.__name__ for fn in BUILTIN_FUNCTIONS)
