"""The op records: one module per family, each op declared once.

==================  ==============================================================
family              what it holds (each op's record, functions and layers)
==================  ==============================================================
:mod:`.convolution` convolution in 1-3 D, true and cross-correlation
:mod:`.pooling`     max, average and Lp pooling in 1-3 D, and the global pools
:mod:`.padding`     padding of any axes: constant, reflect, replicate, circular
:mod:`.activation`  the element-wise activations
:mod:`.dense`       flattening and the dense layer
:mod:`.loss`        softmax cross-entropy and its loss object
:mod:`.normalization` batch norm (running statistics as state) and BatchNorm1d/2d/3d
:mod:`.dropout`     dropout, dropout1d/2d/3d (whole channels), their layers
==================  ==============================================================

A record (:class:`cnnkit.spec.OpSpec`) holds an op's inputs, attributes,
validation, output shape, formulas, conformance cases, properties and oracle.
Adding an op to a family means its record (with its function and layer) in
that family's module, a NumPy kernel in ``cnnkit_numpy.ops`` and a torch
kernel in ``cnnkit_torch.ops``; :mod:`cnnkit.functional`, :mod:`cnnkit.layers`,
the conformance suite and ``cnnkit_torch.nn`` pick it up from here.

Canonical attributes, as kernels receive them, are in each record's docstring.
"""

from __future__ import annotations

from cnnkit.ops import activation, convolution, dense, dropout, loss, normalization, padding, pooling
from cnnkit.ops.activation import ActivationSpec
from cnnkit.ops.convolution import ConvSpec
from cnnkit.ops.dense import FlattenSpec, LinearSpec
from cnnkit.ops.dropout import DropoutSpec
from cnnkit.ops.loss import CrossEntropySpec
from cnnkit.ops.normalization import BatchNormSpec
from cnnkit.ops.pooling import AvgPoolSpec, LpPoolSpec, MaxPoolSpec
from cnnkit.spec import FLOAT_DTYPES, OpSpec, TensorInfo, as_bool, as_float, as_int_tuple

__all__ = [
    "BUILTIN_CASES",
    "BUILTIN_FUNCTIONS",
    "BUILTIN_LAYERS",
    "BUILTIN_LOSSES",
    "BUILTIN_SPECS",
    "FAMILIES",
    "FLOAT_DTYPES",
    "ActivationSpec",
    "AvgPoolSpec",
    "BatchNormSpec",
    "ConvSpec",
    "CrossEntropySpec",
    "DropoutSpec",
    "FlattenSpec",
    "LinearSpec",
    "LpPoolSpec",
    "MaxPoolSpec",
    "OpSpec",
    "TensorInfo",
    "as_bool",
    "as_float",
    "as_int_tuple",
]

#: The families, in the order their ops are listed and their cases run.
FAMILIES = (convolution, pooling, padding, activation, dense, loss, normalization, dropout)

BUILTIN_SPECS: tuple[OpSpec, ...] = tuple(spec for family in FAMILIES for spec in family.SPECS)
BUILTIN_FUNCTIONS = tuple(fn for family in FAMILIES for fn in family.FUNCTIONS)
BUILTIN_LAYERS = tuple(cls for family in FAMILIES for cls in getattr(family, "LAYERS", ()))
BUILTIN_LOSSES = tuple(cls for family in FAMILIES for cls in getattr(family, "LOSSES", ()))


def _cases() -> tuple:
    cases = [case for spec in BUILTIN_SPECS for case in spec.cases()]
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise AssertionError(f"duplicate conformance case id {c.id!r}")
        seen.add(c.id)
    return tuple(cases)


#: Every case the core's records bring, in a fixed order (the same on every process).
BUILTIN_CASES = _cases()
