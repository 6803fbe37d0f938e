"""One output unit of a convolution or a pooling, written out as the lecture's sum, with the numbers.

The lecture computes an output unit by hand: for the true convolution
``S(m, n) = Σ_i Σ_j I(i, j) K(m - i, n - j)`` with the kernel indexed from its
centre (``K(-1, -1)`` .. ``K(1, 1)`` for 3x3), e.g.
``S(0,0) = I(0,0)K(0,0) + I(0,1)K(0,-1) + I(1,0)K(-1,0) + I(1,1)K(-1,-1) = -13``;
for the cross-correlation of a volume of depth ``D``, as every deep-learning
library computes it,
``o(i, j) = Σ_d Σ_m Σ_n x(iS + m - P, jS + n - P, d) w(m, n, d) + b``
with the kernel indexed from 0, e.g. ``o[0,0,0] = 6 + (-3) + 3 + 1 = 7``.

:func:`explain_conv2d` and :func:`explain_pool2d` return an
:class:`Explanation`: the terms (input position, kernel position, the two
values), the partial sum per depth slice, the bias, the result (checked
against :mod:`cnnkit.functional`, which computes it on the chosen backend)
and the unit's receptive field in the input. Terms that fall in the zero
padding are 0 and left out, as on the slides. ``cnnkit explain`` prints them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "LECTURE_SOBEL",
    "LECTURE_VOLUME",
    "Explanation",
    "Term",
    "explain_conv2d",
    "explain_pool2d",
    "lecture_example",
]


@dataclass(frozen=True)
class Term:
    """One product of the sum: input ``x`` at ``(row, col, depth)`` times the kernel at ``kernel``."""

    row: int
    col: int
    depth: int
    kernel: tuple[int, ...]
    x: float
    w: float


@dataclass
class Explanation:
    """An output unit written out: what :meth:`text` prints."""

    op: str
    at: tuple[int, int, int]  # (filter or channel, row, column)
    terms: list[Term]
    partial: list[float]  # per depth slice
    bias: float | None
    value: float
    computed: float  # what cnnkit.functional returned for this unit
    rows: tuple[int, int]  # receptive field, input rows (inclusive; may reach into the padding)
    cols: tuple[int, int]
    input_shape: tuple[int, int, int]  # (depth, rows, columns)
    notes: list[str] = field(default_factory=list)
    count: int = 0  # average pooling: the divisor

    def text(self, *, output: str = "", input: str = "", kernel: str = "") -> str:
        """The explanation as the lecture writes it, one line per depth slice, then the total."""
        k, i, j = self.at
        if self.op == "conv-flip":
            return self._text_flip(output or "S", input or "I", kernel or "K")
        o, x, w = output or "o", input or "x", kernel or f"w{k}"
        D = self.input_shape[0]
        lines = [self._header(f"{o}[{k},{i},{j}]")]
        if self.op in ("max-pool", "avg-pool"):
            vals = [t.x for t in self.terms]
            pos = " ".join(f"{x}({t.row},{t.col},{t.depth})={_val(t.x)}" for t in self.terms)
            lines.append(f"  window: {pos}")
            if self.op == "max-pool":
                lines.append(f"  {o}[{k},{i},{j}] = max({', '.join(map(_val, vals))}) = {_val(self.value)}")
            else:
                lines.append(
                    f"  {o}[{k},{i},{j}] = ({' + '.join(map(_val, vals))}) / {self.count} "
                    f"= {_val(self.value)}"
                )
        else:
            for d in range(D):
                ts = [t for t in self.terms if t.depth == d]
                sym = " + ".join(f"{x}({t.row},{t.col},{d}){w}({t.kernel[0]},{t.kernel[1]},{d})" for t in ts)
                nums = " + ".join(f"{_num(t.x)}×{_num(t.w)}" for t in ts)
                lines.append(f"  d={d}: {sym or '0 (every term in the padding)'}")
                lines.append(f"       = {nums or '0'} = {_val(self.partial[d])}")
            parts = [_num(p, signed=n > 0) for n, p in enumerate(self.partial)]
            if self.bias is not None:
                lines.append(f"  bias b{k} = {_num(self.bias)}")
                parts.append(_num(self.bias, signed=True))
            lines.append(f"  {o}[{k},{i},{j}] = {' '.join(parts)} = {_val(self.value)}")
        lines.append(f"  cnnkit.functional gives {_val(self.computed)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _text_flip(self, s: str, x: str, kname: str) -> str:
        _, i, j = self.at
        lines = [self._header(f"{s}({i},{j})")]
        by_row: dict[int, list[Term]] = {}
        for t in self.terms:
            by_row.setdefault(t.row, []).append(t)
        pad = " " * len(f"{s}({i},{j})")
        sym = f" +\n  {pad}   ".join(
            " + ".join(f"{x}({t.row},{t.col}){kname}({t.kernel[0]},{t.kernel[1]})" for t in ts)
            for ts in by_row.values()
        )
        nums = " + ".join(f"{_num(t.x)}×{_num(t.w)}" for t in self.terms)
        lines.append(f"  {s}({i},{j}) = {sym}")
        tail = f" + {_num(self.bias)} (bias)" if self.bias else ""
        lines.append(f"  {pad} = {nums}{tail}")
        lines.append(f"  {pad} = {_val(self.value)}")
        lines.append(f"  cnnkit.functional gives {_val(self.computed)}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    def _header(self, unit: str) -> str:
        D, H, W = self.input_shape
        (r0, r1), (c0, c1) = self.rows, self.cols
        inside_r, inside_c = (max(r0, 0), min(r1, H - 1)), (max(c0, 0), min(c1, W - 1))
        field_ = f"rows {r0}..{r1}, columns {c0}..{c1}"
        if (inside_r, inside_c) != (self.rows, self.cols):
            rows, cols = f"{inside_r[0]}..{inside_r[1]}", f"{inside_c[0]}..{inside_c[1]}"
            field_ += f" (inside the input: rows {rows}, columns {cols}; the rest is zero padding)"
        depth = f", depth 0..{D - 1}" if D > 1 and self.op.startswith("conv") else ""
        return f"{unit}: receptive field {field_}{depth}"


def _num(v: float, signed: bool = False) -> str:
    r = round(float(v), 6)
    s = f"{int(r)}" if r == int(r) else f"{r:g}"
    if r < 0:
        s = f"({s})" if not signed else f"- {s[1:]}"
    elif signed:
        s = f"+ {s}"
    return s


def _val(v: float) -> str:
    r = round(float(v), 6)
    return f"{int(r)}" if r == int(r) else f"{r:g}"


def _as_volume(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"explain: input must be (H, W) or (C, H, W), got shape {a.shape}")
    return a


def _pads(padding: Any, kernel: tuple[int, int], stride: tuple[int, int], size: tuple[int, int]) -> Any:
    from cnnkit.geometry import resolve_padding

    return resolve_padding(padding, kernel, stride, (1, 1), size, where="explain")


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def explain_conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    flip: bool = False,
    *,
    at: Sequence[int],
    backend: str | None = None,
) -> Explanation:
    """Write out output unit ``at = (filter, row, column)`` (or ``(row, column)``) of ``conv2d``.

    Args:
        input: ``(H, W)`` or ``(C, H, W)`` (one example).
        weight: ``(F, F)``, ``(C, F, F)`` or ``(K, C, F, F)``.
        bias: ``(K,)``, a number, or ``None``.
        stride, padding, flip: as :func:`cnnkit.functional.conv2d` (``flip=True``: true convolution).
        at: the output unit.
        backend: where :func:`cnnkit.functional.conv2d` computes the check value.

    Returns:
        An :class:`Explanation` (``op`` ``"conv"`` or ``"conv-flip"``).

    Raises:
        ValueError: shapes that do not fit, a unit outside the output.

    Example:
        >>> e = explain_conv2d([[1, 2, 3], [4, 5, 6], [7, 8, 9]], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
        ...                    padding="same", flip=True, at=(0, 0))
        >>> e.value, [t.kernel for t in e.terms]
        (-13.0, [(0, 0), (0, -1), (-1, 0), (-1, -1)])
    """
    from cnnkit import functional as F

    x = _as_volume(input)
    w = np.asarray(weight, dtype=np.float64)
    w = w.reshape((1,) * (4 - w.ndim) + w.shape) if w.ndim < 4 else w
    if w.ndim != 4 or w.shape[1] != x.shape[0]:
        raise ValueError(
            f"explain: weight {w.shape} does not fit input {x.shape} (need (K, C, F, F), C = {x.shape[0]})"
        )
    b = None if bias is None else np.atleast_1d(np.asarray(bias, dtype=np.float64))
    at = tuple(int(a) for a in at)
    k, i, j = (0, *at) if len(at) == 2 else at
    S, kern = _pair(stride), (w.shape[2], w.shape[3])
    (pt, _), (pl, _) = _pads(padding, kern, S, x.shape[1:])
    full = np.asarray(F.conv2d(x[None], w, b, stride=S, padding=padding, flip=flip, backend=backend))
    if not (0 <= k < full.shape[1] and 0 <= i < full.shape[2] and 0 <= j < full.shape[3]):
        raise ValueError(f"explain: unit {(k, i, j)} is outside the output of shape {full.shape[1:]}")
    wk = w[k][:, ::-1, ::-1] if flip else w[k]  # the kernel as it slides (rot180 for true convolution)
    r0, c0 = i * S[0] - pt, j * S[1] - pl
    terms = []
    C, H, W = x.shape
    ci = (kern[0] - 1) // 2, (kern[1] - 1) // 2  # the centre, for the lecture's K(-1..1) indices
    for d in range(C):
        for m in range(kern[0]):
            for n in range(kern[1]):
                r, c = r0 + m, c0 + n
                if not (0 <= r < H and 0 <= c < W):
                    continue  # zero padding: the term is 0
                if flip:  # K(i - r, j - c) from the centre: the unflipped index minus the centre
                    label = (kern[0] - 1 - m - ci[0], kern[1] - 1 - n - ci[1])
                else:
                    label = (m, n)
                terms.append(Term(r, c, d, label, float(x[d, r, c]), float(wk[d, m, n])))
    partial = [sum(t.x * t.w for t in terms if t.depth == d) for d in range(C)]
    bias_k = None if b is None else float(b[k % len(b)])
    value = sum(partial) + (bias_k or 0.0)
    return Explanation(
        "conv-flip" if flip else "conv",
        (k, i, j),
        terms,
        partial,
        bias_k,
        value,
        float(full[0, k, i, j]),
        (r0, r0 + kern[0] - 1),
        (c0, c0 + kern[1] - 1),
        (C, H, W),
    )


def explain_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    kind: str = "max",
    *,
    at: Sequence[int],
    backend: str | None = None,
) -> Explanation:
    """Write out output unit ``at = (channel, row, column)`` (or ``(row, column)``) of a max or average pool.

    Example:
        >>> e = explain_pool2d([[1, 3], [2, 0]], 2, kind="max", at=(0, 0))
        >>> e.value
        3.0
    """
    from cnnkit import functional as F

    if kind not in ("max", "avg"):
        raise ValueError(f"explain: kind must be 'max' or 'avg', got {kind!r}")
    x = _as_volume(input)
    at = tuple(int(a) for a in at)
    k, i, j = (0, *at) if len(at) == 2 else at
    kern = _pair(kernel_size)
    S = kern if stride is None else _pair(stride)
    (pt, _), (pl, _) = _pads(padding, kern, S, x.shape[1:])
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    full = np.asarray(fn(x[None], kern, S, padding, backend=backend))
    if not (0 <= k < full.shape[1] and 0 <= i < full.shape[2] and 0 <= j < full.shape[3]):
        raise ValueError(f"explain: unit {(k, i, j)} is outside the output of shape {full.shape[1:]}")
    C, H, W = x.shape
    r0, c0 = i * S[0] - pt, j * S[1] - pl
    terms = [
        Term(r, c, k, (r - r0, c - c0), float(x[k, r, c]), 1.0)
        for r in range(max(r0, 0), min(r0 + kern[0], H))
        for c in range(max(c0, 0), min(c0 + kern[1], W))
    ]
    vals = [t.x for t in terms]
    notes = []
    if kind == "max":
        value = max(vals)
        win = next(t for t in terms if t.x == value)
        notes.append(
            f"the gradient of this unit goes to x({win.row},{win.col},{k}) alone (the first maximum)"
        )
    else:
        count = kern[0] * kern[1]  # count_include_pad=True, the default
        value = sum(vals) / count
        notes.append(f"each input of the window gets 1/{count} of this unit's gradient")
    return Explanation(
        f"{kind}-pool",
        (k, i, j),
        terms,
        [],
        None,
        value,
        float(full[0, k, i, j]),
        (r0, r0 + kern[0] - 1),
        (c0, c0 + kern[1] - 1),
        (C, H, W),
        notes,
        count=kern[0] * kern[1] if kind == "avg" else 0,
    )


#: The lecture's Sobel example: the 3x3 image, the kernel, true convolution, padding "same".
LECTURE_SOBEL = {
    "input": [[1, 2, 3], [4, 5, 6], [7, 8, 9]],
    "weight": [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
    "padding": "same",
    "flip": True,
}


def _digits(*rows: str) -> list[list[float]]:
    return [[float(c) for c in row] for row in rows]


#: The lecture's volume example: 5x5x3 input, two 3x3x3 filters, stride 2, padding 1, biases 1 and 0.
LECTURE_VOLUME = {
    "input": [
        _digits("20000", "22210", "21122", "11122", "00100"),
        _digits("11121", "12100", "12021", "20111", "11122"),
        _digits("00020", "21112", "11202", "12120", "00021"),
    ],
    "weight": [
        [
            [[1, -1, 0], [1, 1, 1], [0, 1, 1]],
            [[1, 1, 0], [-1, -1, 1], [1, -1, -1]],
            [[1, -1, 1], [-1, 0, 1], [1, 1, 1]],
        ],
        [
            [[-1, 1, 0], [1, -1, -1], [0, 1, 1]],
            [[0, -1, -1], [0, -1, 0], [0, 1, 1]],
            [[0, -1, -1], [0, 0, 0], [-1, 1, 0]],
        ],
    ],
    "bias": [1.0, 0.0],
    "stride": 2,
    "padding": 1,
}


def lecture_example(name: str, at: Sequence[int] | None = None, *, backend: str | None = None) -> Explanation:
    """The lecture's worked example ``"sobel"`` (default unit S(0,0)) or ``"volume"`` (default o[0,0,0]).

    Example:
        >>> e = lecture_example("volume")
        >>> e.partial, e.bias, e.value
        ([6.0, -3.0, 3.0], 1.0, 7.0)
    """
    if name == "sobel":
        return explain_conv2d(**LECTURE_SOBEL, at=tuple(at) if at else (0, 0), backend=backend)
    if name == "volume":
        return explain_conv2d(**LECTURE_VOLUME, at=tuple(at) if at else (0, 0, 0), backend=backend)
    raise ValueError(f"explain: unknown lecture example {name!r}; known: sobel, volume")
