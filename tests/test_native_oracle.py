"""An independent oracle: torch.nn.functional's native ops under native autograd.

For every conformance case of the records this covers (all cases of the newer
ops, every few cases of conv and the pools), the native op runs with torch's
own autograd; cnnkit's torch backend and its NumPy backend must give the same
output and the same gradient of every input, in float64 and float32. Cases the
native op cannot express (padding torch's pools refuse, ``"same"`` with a
stride) are left out of the list, never silently passed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import cnnkit  # noqa: E402
from cnnkit.conformance.cases import Case, Random  # noqa: E402
from cnnkit.ops import BUILTIN_CASES, BUILTIN_SPECS  # noqa: E402
from cnnkit.spec import TensorInfo  # noqa: E402

TOL = {"float64": dict(rtol=1e-9, atol=1e-11), "float32": dict(rtol=2e-4, atol=2e-5)}
SPECS = {spec.name: spec for spec in BUILTIN_SPECS}


def _pad_list(pads) -> list[int]:
    """``(before, after)`` per axis, first axis first -> F.pad's last-axis-first list."""
    out: list[int] = []
    for lo, hi in reversed(pads):
        out += [lo, hi]
    return out


def _symmetric(pads) -> bool:
    return all(lo == hi for lo, hi in pads)


# -- the native ops, on canonical attributes (None: torch cannot express the case) ------------


def _native_conv(x, w, b, *, stride, padding, dilation, groups, flip, padding_mode):
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[x.dim() - 2]
    if flip:
        w = w.flip(tuple(range(2, w.dim())))
    if padding_mode != "zeros":  # as torch.nn.Conv*d does it: F.pad in that mode, then no padding
        x = F.pad(x, _pad_list(padding), mode=padding_mode)
        padding = [(0, 0)] * len(padding)
    if not _symmetric(padding):
        x = F.pad(x, _pad_list(padding))
        padding = [(0, 0)] * len(padding)
    return conv(x, w, b, stride, [lo for lo, _ in padding], dilation, groups)


def _native_conv_transpose(x, w, b, *, stride, padding, output_padding, dilation, groups):
    conv_t = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[x.dim() - 2]
    if _symmetric(padding):
        return conv_t(x, w, b, stride, [lo for lo, _ in padding], output_padding, groups, dilation)
    y = conv_t(x, w, b, stride, 0, output_padding, groups, dilation)  # uncropped, then cropped
    return y[(Ellipsis, *(slice(lo, n - hi) for n, (lo, hi) in zip(y.shape[2:], padding)))]


def _pool_fits(x, kernel_size, padding, dilation) -> bool:
    """What torch's pools take: symmetric padding of at most half the window."""
    return _symmetric(padding) and all(2 * lo <= f for (lo, _), f in zip(padding, kernel_size))


def _native_max_pool(x, *, kernel_size, stride, padding, dilation, ceil_mode):
    if not _pool_fits(x, kernel_size, padding, dilation):
        return None
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[x.dim() - 2]
    return pool(x, kernel_size, stride, [lo for lo, _ in padding], dilation, ceil_mode)


def _native_avg_pool(
    x, *, kernel_size, stride, padding, dilation, ceil_mode, count_include_pad, divisor_override
):
    if any(d != 1 for d in dilation) or not _pool_fits(x, kernel_size, padding, dilation):
        return None
    pads = [lo for lo, _ in padding]
    if divisor_override is not None:
        pool = {2: F.avg_pool2d, 3: F.avg_pool3d}[x.dim() - 2]
        return pool(x, kernel_size, stride, pads, ceil_mode, count_include_pad, divisor_override)
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[x.dim() - 2]
    return pool(x, kernel_size, stride, pads, ceil_mode, count_include_pad)


def _native_pad(x, *, pads, mode, value):
    pads = list(pads)
    if mode != "constant":  # torch's reflect/replicate/circular pad all axes of (N, C, *) but N and C
        pads = pads[2:] if pads[:2] == [(0, 0), (0, 0)] and len(pads) > 2 else pads[1:]
    return F.pad(x, _pad_list(pads), mode=mode, value=value if mode == "constant" else None)


def _native_adaptive_avg_pool(x, *, output_size):
    return {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[x.dim() - 2](
        x, output_size
    )


def _native_adaptive_max_pool(x, *, output_size):
    return {1: F.adaptive_max_pool1d, 2: F.adaptive_max_pool2d, 3: F.adaptive_max_pool3d}[x.dim() - 2](
        x, output_size
    )


def _native_max_unpool(x, indices, *, output_size, kernel_size, stride=None, padding=0):
    unpool = {1: F.max_unpool1d, 2: F.max_unpool2d, 3: F.max_unpool3d}[x.dim() - 2]
    return unpool(x, indices, kernel_size, stride, padding, output_size)


def _native_kwargs(case: Case, canonical: dict) -> dict:
    """The native op's keywords: the canonical attributes (unpooling: and the pooling's geometry)."""
    if case.op != "max_unpool":
        return canonical
    geometry = {k: v for k, v in case.attrs.items() if k in ("kernel_size", "stride", "padding")}
    return {**canonical, **geometry}


#: op -> (native function, how many of its cases to take: every k-th)
NATIVE: dict[str, tuple[Callable[..., Any], int]] = {
    "conv": (_native_conv, 10),
    "conv_transpose": (_native_conv_transpose, 1),
    "pad_nd": (_native_pad, 1),
    "adaptive_avg_pool": (_native_adaptive_avg_pool, 1),
    "adaptive_max_pool": (_native_adaptive_max_pool, 1),
    "max_unpool": (_native_max_unpool, 1),
    "max_pool": (_native_max_pool, 12),
    "avg_pool": (_native_avg_pool, 12),
}


def _materialize(value: Any, dtype: str) -> Any:
    if value is None:
        return None
    if isinstance(value, Random):
        return value.make(dtype)
    arr = np.asarray(value)
    if arr.dtype.kind in "iub" and not isinstance(value, np.ndarray):
        arr = arr.astype(np.float64)  # a literal of ints is a float input
    return arr.astype(dtype) if arr.dtype.kind == "f" else arr


def _canonical(case: Case, arrays: list) -> dict:
    infos = [None if a is None else TensorInfo(tuple(a.shape), a.dtype.name) for a in arrays]
    return SPECS[case.op].bind(case.op, infos, dict(case.attrs))


def _finite(case: Case) -> bool:
    arrays = [_materialize(v, "float64") for v in case.inputs]
    return all(a is None or np.isfinite(a).all() for a in arrays)


def _selected() -> list[Case]:
    chosen = []
    for op, (native, every) in NATIVE.items():
        cases = [c for c in BUILTIN_CASES if c.op == op and c.raises is None and c.differentiable]
        for case in [
            c
            for i, c in enumerate(cases)
            if i % every == 0 or {"divisor_override", "padding_mode"} & set(c.attrs)
        ]:
            if not _finite(case):
                continue
            arrays = [_materialize(v, "float64") for v in case.inputs]
            tensors = [None if a is None else torch.from_numpy(a) for a in arrays]
            if native(*tensors, **_native_kwargs(case, _canonical(case, arrays))) is None:
                continue
            chosen.append(case)
    return chosen


CASES = _selected()
#: The records of issue 10a: every one of their cases is held to the native op.
NEW_OPS = ("conv_transpose", "pad_nd", "adaptive_avg_pool", "adaptive_max_pool", "max_unpool")


def test_every_new_record_is_covered():
    """Every case of the new records reaches the native oracle (conv and pool cases are sampled)."""
    covered = {c.id for c in CASES}
    for case in BUILTIN_CASES:
        if case.op in NEW_OPS and case.raises is None and case.differentiable:
            assert case.id in covered, case.id
    assert {c.op for c in CASES} == set(NATIVE)


def _items() -> list:
    """New records and arguments in float64 and float32; the sampled conv and pool cases in float64."""
    items = []
    for case in CASES:
        new = case.op in NEW_OPS or {"padding_mode", "divisor_override"} & set(case.attrs)
        for dtype in ("float64", "float32") if new else ("float64",):
            items.append(pytest.param(case, dtype, id=f"{case.id}-{dtype}"))
    return items


@pytest.mark.parametrize(("case", "dtype"), _items())
def test_matches_native_autograd(case: Case, dtype: str) -> None:
    native, _ = NATIVE[case.op]
    arrays = [_materialize(v, dtype) for v in case.inputs]
    canonical = _canonical(case, arrays)
    leaves = [
        None if a is None else torch.from_numpy(a.copy()).requires_grad_(a.dtype.kind == "f") for a in arrays
    ]
    want = native(*leaves, **_native_kwargs(case, canonical))
    g = (
        np.random.default_rng(zlib.crc32(case.id.encode()))
        .uniform(-1, 1, size=tuple(want.shape))
        .astype(dtype)
    )
    want.backward(torch.from_numpy(g))
    want_grads = [None if t is None or t.grad is None else t.grad.numpy() for t in leaves]
    for backend in ("torch", "numpy"):
        out, pullback = cnnkit.vjp(case.op, *arrays, backend=backend, **case.attrs)
        be = cnnkit.get_backend(backend)
        np.testing.assert_allclose(
            be.to_numpy(out), want.detach().numpy(), **TOL[dtype], err_msg=f"{backend} forward"
        )
        grads = pullback(g)
        for name, got, exp in zip(SPECS[case.op].inputs, grads, want_grads):
            if exp is None:
                assert got is None, f"{backend}: {name} has a gradient but no input"
                continue
            np.testing.assert_allclose(be.to_numpy(got), exp, **TOL[dtype], err_msg=f"{backend} d{name}")


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("case", [c for c in CASES if c.op == "adaptive_max_pool"], ids=lambda c: c.id)
def test_adaptive_max_pool_indices_are_torchs(case: Case, backend: str) -> None:
    (x,) = [_materialize(v, "float64") for v in case.inputs]
    d = x.ndim - 2
    size = case.attrs["output_size"]
    fn = getattr(cnnkit.functional, f"adaptive_max_pool{d}d")
    native = getattr(F, f"adaptive_max_pool{d}d")
    out, idx = fn(x, size, return_indices=True, backend=backend)
    want, want_idx = native(torch.from_numpy(x), size, return_indices=True)
    be = cnnkit.get_backend(backend)
    np.testing.assert_array_equal(be.to_numpy(idx), want_idx.numpy())
    np.testing.assert_array_equal(be.to_numpy(out), want.numpy())


POOL_CASES = [c for c in CASES if c.op == "max_pool"]


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: c.id)
def test_max_pool_indices_are_torchs(case: Case, backend: str) -> None:
    """return_indices: PyTorch's per-plane flat indices, and max_unpool puts the maxima back."""
    (x,) = [_materialize(v, "float64") for v in case.inputs]
    canonical = _canonical(case, [x])
    d = x.ndim - 2
    k, s, p = canonical["kernel_size"], canonical["stride"], [lo for lo, _ in canonical["padding"]]
    dl, ceil = canonical["dilation"], canonical["ceil_mode"]
    want, want_idx = getattr(F, f"max_pool{d}d")(torch.from_numpy(x), k, s, p, dl, ceil, return_indices=True)
    out, idx = getattr(cnnkit.functional, f"max_pool{d}d")(x, k, s, p, dl, ceil, True, backend=backend)
    be = cnnkit.get_backend(backend)
    np.testing.assert_array_equal(be.to_numpy(idx), want_idx.numpy())
    size = x.shape[2:]
    back = getattr(cnnkit.functional, f"max_unpool{d}d")(out, idx, k, s, p, size, backend=backend)
    native = getattr(F, f"max_unpool{d}d")(want, want_idx, k, s, p, size)
    np.testing.assert_array_equal(be.to_numpy(back), native.numpy())


def test_new_layers_save_load_and_train_one_step(tmp_path):
    """The new layers in a model: saved and loaded by class name, and a backward step on both backends."""
    from cnnkit import io
    from cnnkit.layers import (
        AdaptiveAvgPool2d,
        Conv2d,
        ConvTranspose2d,
        Flatten,
        Linear,
        MaxPool2d,
        Sequential,
    )

    model = Sequential(
        Conv2d(1, 2, 3, padding=1, padding_mode="reflect", seed=0),
        MaxPool2d(2),
        ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, seed=1),
        AdaptiveAvgPool2d((2, 3)),
        Flatten(),
        Linear(18, 4, seed=2),
    )
    x = np.random.default_rng(0).uniform(-1, 1, size=(2, 1, 6, 6))
    y = model(x)
    path = io.save(model, tmp_path / "m.npz")
    again = io.load(path)
    np.testing.assert_allclose(again(x), y, rtol=1e-12)
    for backend in ("numpy", "torch"):
        m = io.load(path, backend=backend)
        out = m(x)
        dx = m.backward(np.ones(tuple(out.shape)))
        assert tuple(dx.shape) == x.shape
