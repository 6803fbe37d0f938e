"""What the op families share: docstring fragments, the window gather of the oracles, a property.

Private to :mod:`cnnkit.ops`; a family module imports from here, never from another family.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnkit.backend import Backend

BackendArg = str | Backend | None

#: Docstring fragments per number of spatial dimensions.
AXES = {1: "L", 2: "H, W", 3: "D, H, W"}
OUT_AXES = {1: "L_out", 2: "H_out, W_out", 3: "D_out, H_out, W_out"}


def doc(template: str, **notes: Any) -> Callable[[Callable], Callable]:
    """Give a function or class the docstring ``template.format(**notes)``.

    The template and the notes stand beside the function they document; the
    notes ``axes``, ``out_axes`` and ``kernel`` follow from ``d``.
    """
    d = notes.get("d")
    if d is not None:
        notes = {"axes": AXES[d], "out_axes": OUT_AXES[d], "kernel": ", ".join(["F"] * d), **notes}

    def apply(obj: Callable) -> Callable:
        obj.__doc__ = template.format(**notes)
        return obj

    return apply


# -- oracle helpers --------------------------------------------------------------------------


def windows(
    xp: np.ndarray, kernel: Sequence[int], stride: Sequence[int], dilation: Sequence[int], out: Sequence[int]
) -> np.ndarray:
    """Every window of an (already padded) ``(N, C, *spatial)`` array: ``(N, C, *out, *kernel)``.

    Window ``o`` along an axis reads positions ``S·o + D·m`` for ``m < F``.
    """
    d = len(kernel)
    index = []
    for axis, (f, s, dil, o) in enumerate(zip(kernel, stride, dilation, out)):
        pos = s * np.arange(o)[:, None] + dil * np.arange(f)[None, :]  # (O, F)
        shape = [1] * (2 * d)
        shape[axis], shape[d + axis] = o, f
        index.append(pos.reshape(shape))
    return xp[(slice(None), slice(None), *index)]


def pad(x: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Pad the spatial axes of ``(N, C, *spatial)`` by ``(before, after)`` per axis."""
    return np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value)


# -- padding modes (the pad op and the convolutions' padding_mode) --------------------------------


def check_pads(where: str, shape: Sequence[int], pads: Sequence[tuple[int, int]], mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` can pad each axis of ``shape`` by its ``(before, after)``.

    ``reflect`` needs padding smaller than the axis (the edge is not repeated),
    ``circular`` at most the axis (it wraps around once), ``replicate`` an axis
    of at least one unit.
    """
    for axis, (n, (lo, hi)) in enumerate(zip(shape, pads)):
        if not (lo or hi) or mode == "constant":
            continue
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"{where}: reflect padding must be smaller than the input along each padded axis, "
                f"got pad ({lo}, {hi}) on axis {axis} of length {n} (input {tuple(shape)})"
            )
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"{where}: circular padding must be at most the input's length along each padded axis "
                f"(it wraps around once), got pad ({lo}, {hi}) on axis {axis} of length {n} "
                f"(input {tuple(shape)})"
            )
        if mode == "replicate" and n < 1:
            raise ValueError(f"{where}: replicate padding needs at least 1 unit on axis {axis}")


# -- a property every op with an oracle has ----------------------------------------------------


def nan_propagates(run: Any, with_inf: bool = False) -> None:
    """NaN (and, with ``with_inf``, ±inf) in the input reach the output as the oracle says."""
    inputs = list(run.inputs)
    x = inputs[0].copy()
    flat = x.reshape(-1)
    flat[:2] = np.nan  # two neighbours, so that every dilated window pattern reads one
    if with_inf and flat.size > 2:
        flat[flat.size // 2] = np.inf
        flat[-1] = -np.inf
    inputs[0] = x
    want = run.oracle(inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with np.errstate(all="ignore"):
            got = run.run(inputs)
    run.compare("property: NaN and inf propagate as in the definition", got, want)


def nan_and_inf_propagate(run: Any) -> None:
    """As :func:`nan_propagates`, with +inf and -inf too (ops that keep infinities finite-safe)."""
    nan_propagates(run, with_inf=True)
