"""cnnkit's NumPy reference backend: the lecture's formulas, vectorised.

``ops`` holds one forward and one backward function per op; ``reference``
holds the literal-loop definitions the tests hold the fast path to; ``threads``
splits a kernel's batch over threads; ``plugin`` registers both the backend and
its kernels through cnnkit's hooks.
"""

from cnnkit_numpy.backend import NumpyBackend

__all__ = ["NumpyBackend"]
