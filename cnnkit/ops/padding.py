"""The padding record: ``pad_nd`` (PyTorch's ``F.pad``), its function, cases and oracle.

The op: :class:`PadSpec`; the function :func:`pad` takes torch's pad tuple
(last axis first) and the modes ``constant``, ``reflect``, ``replicate`` and
``circular``. The NumPy kernel is ``cnnkit_numpy.ops.pad_nd_forward`` /
``pad_nd_backward``; the torch kernel ``cnnkit_torch.ops.PadNd``. The
convolutions' ``padding_mode`` pads through the same kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Seeds, error_cases
from cnnkit.dispatch import call
from cnnkit.ops._shared import BackendArg, check_pads, nan_propagates
from cnnkit.spec import OpSpec, _is_int, as_float

__all__ = ["FUNCTIONS", "MODES", "PadSpec", "check_pads", "pad"]

#: The modes, as torch names them.
MODES = ("constant", "reflect", "replicate", "circular")

rand = Seeds(30000)


def _pairs(where: str, pad: Any, ndim: int, mode: str) -> tuple[tuple[int, int], ...]:
    """torch's pad tuple ``(last_before, last_after, prev_before, ...)`` as one pair per axis, first first."""
    if not isinstance(pad, (tuple, list)) or not all(_is_int(p) for p in pad):
        raise TypeError(f"{where}: pad must be a tuple of ints (last axis first), got {pad!r}")
    if len(pad) % 2 or not pad:
        raise ValueError(f"{where}: pad must hold (before, after) pairs, an even number of ints, got {pad!r}")
    k = len(pad) // 2
    if mode == "constant":
        if k > ndim:
            raise ValueError(f"{where}: pad {tuple(pad)} pads {k} axes but input has only {ndim}")
    elif not (1 <= k <= 3 and ndim in (k + 1, k + 2)):
        raise ValueError(
            f"{where}: {mode} padding pads the last 1 to 3 axes of a (C, *spatial) or (N, C, *spatial) "
            f"input: pad {tuple(pad)} pads {k} axes of an input with {ndim} dimensions"
        )
    if any(p < 0 for p in pad):
        raise ValueError(f"{where}: pad must be >= 0, got {tuple(pad)}")
    pairs = [(0, 0)] * ndim
    for j in range(k):
        pairs[ndim - 1 - j] = (int(pad[2 * j]), int(pad[2 * j + 1]))
    return tuple(pairs)


def _pad_then_crop(run) -> None:
    """Cropping the padding off gives the input back, whatever the mode."""
    (x,) = run.inputs
    _, canonical = run.canonical()
    y = run.run([x])
    inner = tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, canonical["pads"]))
    run.compare("property: crop(pad(x)) == x", y[inner], x)


class PadSpec(OpSpec):
    """Padding of any axes: ``constant`` (``value``), ``reflect``, ``replicate`` or ``circular``.

    Forward, along each padded axis of length ``n`` with ``(b, a)`` units added::

        out[j] = x[src(j - b)]   for j in [0, n + b + a)
        src(t) = t                             inside (0 <= t < n)
        reflect:   reflected about the edges, the edge unit not repeated (period 2(n - 1))
        replicate: clip(t, 0, n - 1)
        circular:  t mod n
        constant:  value outside (no source)

    Backward (the adjoint of the gather)::

        δ_prev[s] = Σ_{j : src(j - b) = s} δ[j]     (constant: δ cropped to the input)

    Shape: input ``(*)`` -> each padded axis grows by ``before + after``.

    Canonical attributes: ``pads: one (before, after) per input axis, first axis first``,
    ``mode: str``, ``value: float``.
    """

    name = "pad_nd"
    inputs = ("input",)
    defaults: Mapping[str, Any] = {"pad": OpSpec.REQUIRED, "mode": "constant", "value": None}

    def check(self, where, infos, attrs):
        (x,) = infos
        mode = attrs["mode"]
        if mode not in MODES:
            raise ValueError(f"{where}: mode must be one of {', '.join(MODES)}, got {mode!r}")
        value = attrs["value"]
        if value is not None and mode != "constant":
            raise ValueError(f"{where}: value is for mode 'constant' only, got value={value!r} with {mode!r}")
        value = 0.0 if value is None else as_float(value, "value", where)
        pads = _pairs(where, attrs["pad"], x.ndim, mode)
        check_pads(where, x.shape, pads, mode)
        return {"pads": pads, "mode": mode, "value": value}

    def output_shape(self, infos, attrs):
        (x,) = infos
        return tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, attrs["pads"]))

    def cases(self):
        return _all_cases()

    def oracle(self, x, *, pads, mode, value):
        if mode == "constant":
            return np.pad(x, pads, mode="constant", constant_values=value)
        return np.pad(x, pads, mode={"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])

    properties = (_pad_then_crop, nan_propagates)


_SHAPES = {1: (2, 3, 5), 2: (2, 2, 4, 3), 3: (1, 2, 3, 3, 4)}


def _cases() -> Iterator[Case]:
    for mode in MODES:
        for d, pad in ((1, (2, 1)), (2, (1, 2, 2, 0)), (3, (1, 0, 2, 2, 0, 1)), (2, (0, 2, 0, 0))):
            attrs: dict[str, Any] = {"pad": pad, "mode": mode}
            tag = "x".join(f"{pad[i]}{pad[i + 1]}" for i in range(0, len(pad), 2))
            yield Case(f"pad{d}d-{mode}-{tag}", "pad_nd", (rand(*_SHAPES[d]),), attrs, tags=("pad", f"{d}d"))
    # the widest each mode allows: reflect n - 1, circular n
    yield Case("pad1d-reflect-widest", "pad_nd", (rand(1, 2, 4),), {"pad": (3, 3), "mode": "reflect"})
    yield Case("pad1d-circular-widest", "pad_nd", (rand(1, 2, 3),), {"pad": (3, 3), "mode": "circular"})
    yield Case("pad2d-constant-value", "pad_nd", (rand(2, 3, 3),), {"pad": (1, 1, 2, 0), "value": 1.5})
    yield Case("pad-constant-channels", "pad_nd", (rand(2, 3, 2),), {"pad": (1, 0, 0, 1, 1, 1)})
    # a hand-computed golden per mode: 1 2 3 padded by (2, 2)
    for mode, want in (
        ("constant", [0.0, 0, 1, 2, 3, 0, 0]),
        ("reflect", [3.0, 2, 1, 2, 3, 2, 1]),
        ("replicate", [1.0, 1, 1, 2, 3, 3, 3]),
        ("circular", [2.0, 3, 1, 2, 3, 1, 2]),
    ):
        yield Case(
            f"pad1d-golden-{mode}",
            "pad_nd",
            ([[[1.0, 2, 3]]],),
            {"pad": (2, 2), "mode": mode},
            expected=[[want]],
            tags=("golden", "pad"),
        )


def _error_cases() -> Iterator[Case]:
    x = rand(1, 2, 3)
    yield from error_cases(
        [
            (
                "pad-error-reflect-too-wide",
                "pad_nd",
                (x,),
                {"pad": (3, 0), "mode": "reflect"},
                ValueError,
                "reflect padding must be smaller than the input",
            ),
            (
                "pad-error-circular-too-wide",
                "pad_nd",
                (x,),
                {"pad": (0, 4), "mode": "circular"},
                ValueError,
                "circular padding must be at most",
            ),
            ("pad-error-odd-length", "pad_nd", (x,), {"pad": (1, 2, 3)}, ValueError, "even number"),
            ("pad-error-negative", "pad_nd", (x,), {"pad": (1, -1)}, ValueError, "pad must be >= 0"),
            (
                "pad-error-mode",
                "pad_nd",
                (x,),
                {"pad": (1, 1), "mode": "zeros"},
                ValueError,
                "mode must be one of",
            ),
            (
                "pad-error-value-with-reflect",
                "pad_nd",
                (x,),
                {"pad": (1, 1), "mode": "reflect", "value": 1.0},
                ValueError,
                "value is for mode 'constant' only",
            ),
            (
                "pad-error-too-many-axes",
                "pad_nd",
                (x,),
                {"pad": (1, 1) * 3, "mode": "replicate"},
                ValueError,
                "replicate padding pads the last 1 to 3 axes",
            ),
            (
                "pad-error-float-pad",
                "pad_nd",
                (x,),
                {"pad": (1.5, 1)},
                TypeError,
                "pad must be a tuple of ints",
            ),
        ]
    )


@functools.cache
def _all_cases() -> tuple[Case, ...]:
    return (*_cases(), *_error_cases())


def pad(
    input: Any,
    pad: Sequence[int],
    mode: str = "constant",
    value: float | None = None,
    *,
    backend: BackendArg = None,
) -> Any:
    """Pad ``input``: torch's ``F.pad``, its pad tuple listing the last axis first.

    ``pad = (last_before, last_after, prev_before, prev_after, ...)`` pads the
    last ``len(pad) // 2`` axes. ``reflect`` mirrors about the edge unit (not
    repeating it), ``replicate`` repeats the edge, ``circular`` wraps around,
    ``constant`` fills with ``value`` (default 0). The gradient sums ``δ`` of
    every copy back onto the unit it came from.

    Args:
        input: an array; ``reflect``, ``replicate`` and ``circular`` pad the
            last 1 to 3 axes of a ``(C, *spatial)`` or ``(N, C, *spatial)`` input.
        pad: an even number of ints >= 0, ``(before, after)`` per axis, last axis first.
        mode: ``"constant"``, ``"reflect"``, ``"replicate"`` or ``"circular"``.
        value: the fill of ``constant`` padding (``None``: 0).
        backend: the backend to run on (default: the active one).

    Shape:
        each padded axis of length ``n`` becomes ``n + before + after``.

    Returns:
        The padded array, in the input's dtype, as the backend's array type.

    Raises:
        ValueError: an odd or negative pad, more axes than the mode pads,
            reflect padding not smaller than the axis, circular padding wider
            than the axis, an unknown mode, a value with a mode other than constant.
        TypeError: a pad that is not ints, a non-floating input.

    Example:
        >>> import numpy as np
        >>> pad(np.array([[[1.0, 2, 3]]]), (2, 2), mode="reflect").tolist()
        [[[3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]]]
    """
    return call("pad_nd", input, backend=backend, where="pad", pad=pad, mode=mode, value=value)


#: What :mod:`cnnkit.functional` shows of this family.
FUNCTIONS = (pad,)
LAYERS = ()
#: The family's op records.
SPECS = (PadSpec(),)
