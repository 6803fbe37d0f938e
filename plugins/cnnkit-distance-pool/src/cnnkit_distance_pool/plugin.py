"""The entry point: registers the op, its kernels, its layer, its conformance cases and a command.

``pyproject.toml`` points the ``cnnkit`` entry-point group here. Importing this
module imports neither torch nor the kernels: each hook imports what it needs.
"""

from __future__ import annotations

from cnnkit import Kernel, hookimpl


@hookimpl
def cnnkit_register_ops(register):
    from cnnkit_distance_pool.spec import DistancePoolSpec

    register(DistancePoolSpec())


@hookimpl
def cnnkit_register_kernels(backend, register):
    if backend == "numpy":
        from cnnkit_distance_pool import numpy_kernel as k

        register("distance_pool", Kernel(forward=k.distance_pool, backward=k.distance_pool_backward))
    elif backend == "torch":
        from cnnkit_distance_pool import torch_kernel as t

        register(
            "distance_pool",
            Kernel(forward=t.distance_pool, backward=t.distance_pool_backward, call=t.distance_pool_call),
        )


@hookimpl
def cnnkit_register_layers(register):
    from cnnkit_distance_pool.functional import DistancePool2d

    register(DistancePool2d)


@hookimpl
def cnnkit_conformance_cases(register):
    from cnnkit_distance_pool.cases import CASES

    for case in CASES:
        register(case)


@hookimpl
def cnnkit_register_commands(register):
    from cnnkit_distance_pool.command import COMMAND

    register(COMMAND)  # cnnkit distance-weights 3 --sigma 1
