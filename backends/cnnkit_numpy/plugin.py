"""Registers the NumPy backend and its kernels through cnnkit's hooks (entry point ``numpy``)."""

from __future__ import annotations

import numpy as np

from cnnkit import BackendInfo, Kernel, hookimpl


def _make_backend(**options):
    from cnnkit_numpy.backend import NumpyBackend

    return NumpyBackend(**options)


@hookimpl
def cnnkit_register_backends(register):
    register(
        BackendInfo(
            name="numpy",
            factory=_make_backend,
            version=np.__version__,
            description="the reference: the lecture's formulas in NumPy",
            options=("dtype",),
        )
    )


@hookimpl
def cnnkit_register_mutants(register):
    """The NumPy backend with one realistic bug each (``cnnkit conformance --self-check``)."""
    from cnnkit_numpy.mutants import MUTANTS

    for mutant in MUTANTS:
        register(mutant)


@hookimpl
def cnnkit_conformance_cases(register):
    """Cases sized from this backend's own limits: the columns of a convolution take more than
    ``KEEP_COLUMNS_BYTES`` (the backward rebuilds them) in several ``CHUNK_BYTES`` batch chunks,
    on the padded-grid path (stride 1) and the strided one. Every backend runs them."""
    from cnnkit.ops.convolution import sized_case
    from cnnkit_numpy.ops import KEEP_COLUMNS_BYTES

    f = 3
    for stride, c, size in ((1, 4, 12), (2, 8, 24)):
        out = (size - f) // stride + 1
        grid = out * (size if stride == 1 else out)  # the padded grid keeps whole rows
        n = KEEP_COLUMNS_BYTES // (c * f * f * grid * 4) + 2  # float32 columns: past the keep limit
        case_id = f"conv2d-numpy-chunks-stride{stride}"
        register(sized_case(case_id, batch=n, channels=c, size=size, stride=stride, seed=70 + 3 * stride))


@hookimpl
def cnnkit_register_kernels(backend, register):
    if backend != "numpy":
        return
    from cnnkit_numpy import ops

    for name, (forward, backward) in ops.KERNELS.items():
        register(name, Kernel(forward=forward, backward=backward))
