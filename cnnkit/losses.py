"""Losses with a forward and a hand-derived backward, as the layers have.

Each loss is defined beside its op's record (``cnnkit/ops/loss.py``) and gathered here.
"""

from __future__ import annotations

from cnnkit.ops import BUILTIN_LOSSES

globals().update({cls.__name__: cls for cls in BUILTIN_LOSSES})

__all__ = sorted(cls.__name__ for cls in BUILTIN_LOSSES)
