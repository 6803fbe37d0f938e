"""Nothing leaks: degenerate sizes, sizes that would allocate before being checked, hostile files,
unchecked pullbacks and inputs, the CLI's errors and pipes, backend options and plugins (issue 12)."""

from __future__ import annotations

import io as _io
import json
import os
import re
import subprocess
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import cnnkit
from cnnkit import BackendInfo, geometry, hookimpl
from cnnkit import functional as F
from cnnkit import io as cio
from cnnkit.registry import Registry

torch = pytest.importorskip("torch")

BACKENDS = ["numpy", "torch"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    yield


def host(x):
    return None if x is None else (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x))


def peak_bytes(fn, *args, **kwargs):
    """``(outcome, peak)``: what ``fn`` returned or raised, and the peak of Python/NumPy allocations."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        try:
            out = fn(*args, **kwargs)
        except Exception as exc:  # the caller asserts what it was
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- 1. empty and degenerate sizes on the torch backend ----------------------------------------

CONV_CASES = [
    # (input, weight, groups): N = 0, C = 0, and each of torch's weight-gradient routes
    ((0, 3, 5, 5), (4, 3, 3, 3), 1),
    ((0, 2, 5, 5), (16, 2, 3, 3), 1),  # im2col route (C <= 4, K >= 16)
    ((0, 8, 5, 5), (4, 8, 3, 3), 1),  # GEMM / columns routes (C >= 8)
    ((2, 0, 5, 5), (4, 0, 3, 3), 1),
    ((2, 0, 5, 5), (4, 0, 3, 3), 2),
    ((0, 4, 5, 5), (4, 2, 3, 3), 2),
    ((0, 2, 6), (3, 2, 2), 1),
    ((1, 0, 3, 3, 3), (2, 0, 2, 2, 2), 1),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "groups"), CONV_CASES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_conv_degenerate_sizes_match_numpy(x_shape, w_shape, groups, stride, padding):
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=x_shape), rng.normal(size=w_shape), rng.normal(size=w_shape[0])
    fn = (F.conv1d, F.conv2d, F.conv3d)[len(x_shape) - 3]
    results = {}
    for be in BACKENDS:
        y, pullback = cnnkit.vjp(fn, x, w, b, stride=stride, padding=padding, groups=groups, backend=be)
        results[be] = [host(y), *map(host, pullback(np.ones(tuple(y.shape))))]
    for ref, got in zip(results["numpy"], results["torch"]):
        assert ref.shape == got.shape
        np.testing.assert_allclose(got, ref, atol=1e-12)
    dx, dw, _db = results["numpy"][1:]
    assert dx.shape == x_shape and dw.shape == w_shape and not dw.any()  # Σ over nothing is 0
    if x_shape[1] == 0:  # no input channels: the output is the bias
        y = results["numpy"][0]
        np.testing.assert_allclose(y, np.broadcast_to(b.reshape(1, -1, *[1] * (y.ndim - 2)), y.shape))


def test_conv_empty_batch_under_torch_autograd():
    x = torch.zeros((0, 3, 5, 5), dtype=torch.float64, requires_grad=True)
    w = torch.ones((16, 3, 3, 3), dtype=torch.float64, requires_grad=True)
    b = torch.ones(16, dtype=torch.float64, requires_grad=True)
    y = F.conv2d(x, w, b, stride=2, backend="torch")
    y.sum().backward()
    assert tuple(y.shape) == (0, 16, 2, 2)
    assert tuple(w.grad.shape) == (16, 3, 3, 3) and not w.grad.any()
    assert tuple(x.grad.shape) == (0, 3, 5, 5) and not b.grad.any()


@pytest.mark.parametrize("shape", [(0, 3, 6, 6), (2, 0, 6, 6), (0, 0, 5)])
@pytest.mark.parametrize(
    ("fn", "kwargs"),
    [
        (F.max_pool2d, {"kernel_size": 2}),
        (F.avg_pool2d, {"kernel_size": 2, "padding": 1, "ceil_mode": True}),
        (F.lp_pool2d, {"norm_type": 3, "kernel_size": 3, "stride": 1}),
        (F.max_pool1d, {"kernel_size": 2}),
        (F.avg_pool1d, {"kernel_size": 3, "stride": 1, "dilation": 2}),
    ],
)
def test_pool_degenerate_sizes_match_numpy(shape, fn, kwargs):
    if (len(shape) == 3) != fn.__name__.endswith("1d"):
        pytest.skip("dimensions do not match the function")
    x = np.random.default_rng(1).normal(size=shape)
    results = {}
    for be in BACKENDS:
        y, pullback = cnnkit.vjp(fn, x, **kwargs, backend=be)
        (dx,) = pullback(np.ones(tuple(y.shape)))
        results[be] = (host(y), host(dx))
    for ref, got in zip(results["numpy"], results["torch"]):
        assert ref.shape == got.shape
    assert results["torch"][1].shape == shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_with_an_empty_side_has_empty_gradients(backend):
    x, w, b = np.zeros((2, 0)), np.zeros((3, 0)), np.ones(3)
    y, pullback = cnnkit.vjp(F.linear, x, w, b, backend=backend)
    dx, dw, db = map(host, pullback(np.ones((2, 3))))
    np.testing.assert_array_equal(host(y), np.ones((2, 3)))
    assert dx.shape == (2, 0) and dw.shape == (3, 0)
    np.testing.assert_array_equal(db, [2.0, 2.0, 2.0])


@pytest.mark.parametrize(
    "x, padding",
    [
        (np.full((1, 1, 2, 2), np.nan), 0),  # all NaN: the first wins
        (np.array([[[[1.0, np.nan], [np.nan, 5.0]]]]), 0),  # the first NaN, not the larger value
        (np.array([[[[np.nan, 2.0, np.nan], [4.0, np.nan, np.nan]]]]), 1),  # padded windows
    ],
)
def test_max_pool_nan_winner(x, padding):
    """A window with a NaN gives NaN, and its gradient goes to its first NaN, on every backend."""
    grads = []
    for be in BACKENDS:
        _y, pullback = cnnkit.vjp(F.max_pool2d, x, 2, 2, padding, backend=be)
        grads.append(host(pullback(np.ones(host(_y).shape))[0]))
    first = np.zeros_like(x)
    first.flat[np.flatnonzero(np.isnan(x))[0]] = 1.0
    if padding == 0 and x.size == 4:
        np.testing.assert_array_equal(grads[0], first)
    for g in grads[1:]:
        np.testing.assert_array_equal(g, grads[0])


# -- 2. sizes that would allocate before they are checked --------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", [10**5, 10**9, ((10**9, 0), (0, 0))])
def test_huge_padding_is_refused_before_allocating(backend, padding):
    x, w = np.ones((1, 1, 6, 6)), np.ones((1, 1, 3, 3))
    out, peak = peak_bytes(F.conv2d, x, w, padding=padding, backend=backend)
    assert isinstance(out, ValueError), out
    assert str(out).startswith("conv2d: ") and "padding" in str(out) and "MAX_ELEMENTS" in str(out)
    assert peak < 2**20  # the call would have needed hundreds of GiB


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_padding_with_one_output_is_refused_naming_padding(backend):
    with pytest.raises(ValueError, match=r"conv1d: padding \(\(1000000000000, 1000000000000\),\) makes"):
        F.conv1d(np.ones((1, 1, 6)), np.ones((1, 1, 3)), padding=10**12, stride=10**13, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stride", [2**40, 10**20, 10**30])
def test_huge_stride_computes_the_one_window(backend, stride):
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(2, 3, 6, 7)), rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    y, pullback = cnnkit.vjp(F.conv2d, x, w, b, stride=stride, backend=backend)
    ref, ref_pullback = cnnkit.vjp(F.conv2d, x, w, b, backend="numpy")
    np.testing.assert_allclose(host(y), ref[:, :, :1, :1], rtol=1e-12)
    g = np.zeros(ref.shape)
    g[:, :, 0, 0] = 1.0
    for got, want in zip(pullback(np.ones((2, 4, 1, 1))), ref_pullback(g)):
        np.testing.assert_allclose(host(got), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_dilation_of_a_one_tap_kernel(backend):
    x, w = np.arange(36.0).reshape(1, 1, 6, 6), np.full((1, 1, 1, 1), 2.0)
    y = F.conv2d(x, w, dilation=10**20, backend=backend)
    np.testing.assert_array_equal(host(y), 2 * x)
    z = F.avg_pool2d(x, 1, dilation=2**40, backend=backend)
    np.testing.assert_array_equal(host(z), x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_pool_stride_that_validation_survives(backend):
    # 2**40 still fits the spec's int64 table; the kernels bound it themselves
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    out = F.max_pool2d(x, 3, stride=2**40, backend=backend)
    np.testing.assert_array_equal(host(out), [[[[14.0]]]])


def test_pool_window_check_is_arithmetic():
    # a valid max_pool1d over 2**22 units with a 128-tap window: the check takes no (O, F) table
    out, peak = peak_bytes(geometry.empty_pool_window, 2**22, 128, 1)
    assert out is None and peak < 2**16
    out, peak = peak_bytes(geometry.empty_pool_window, 10**18, 10**9, 1, (0, 10**8), 1, True)
    assert out is None and peak < 2**16


def test_pending_pool_validation_memory():
    from cnnkit.ops import MaxPoolSpec, TensorInfo

    spec = MaxPoolSpec()
    info = TensorInfo((1, 1, 2**16), "float32")  # 2**16 units: the table would be 64 MiB
    out, peak = peak_bytes(spec.bind, "max_pool1d", [info], {"kernel_size": 128, "stride": 1})
    assert isinstance(out, dict), out
    assert peak < 8 * 2**20


# -- the geometry helpers the specs are to call ------------------------------------------------


def test_check_output_size_and_padded_size():
    geometry.check_output_size("f", (2, 3, 4))
    with pytest.raises(ValueError, match=r"f: the output would have shape \(0, 1, 4294967296\)"):
        geometry.check_output_size("f", (0, 1, 2**32))  # an empty batch hides no axis
    with pytest.raises(ValueError, match=r"more than cnnkit\.geometry\.MAX_ELEMENTS = 10"):
        geometry.check_output_size("f", (11,), limit=10)
    geometry.check_padded_size("f", (1, 1, 6), ((2, 2),))
    with pytest.raises(
        ValueError, match=r"f: padding \(\(5, 0\),\) makes the input \(1, 2, 6\) a padded input of"
    ):
        geometry.check_padded_size("f", (1, 2, 6), ((5, 0),), limit=20)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_bounded_window_keeps_the_output(ceil_mode):
    rng = np.random.default_rng(3)
    for _ in range(500):
        n, f, d = (int(v) for v in rng.integers(1, 9, 3))
        ext = d * (f - 1) + 1
        pad = (int(rng.integers(0, ext // 2 + 1)), int(rng.integers(0, ext // 2 + 1)))
        if n + sum(pad) < ext:
            continue
        s = int(rng.choice([1, 2, 5, 10**6, 10**20]))
        (s2,), (d2,) = geometry.bounded_window((n,), (f,), (s,), (pad,), (d,))
        assert s2 <= n + sum(pad) and d2 <= max(n + sum(pad), 1)
        assert geometry.pool_output_size(n, f, s, pad, d, ceil_mode) == geometry.pool_output_size(
            n, f, s2, pad, d2, ceil_mode
        )
        assert geometry.pool_padding(n, f, s, pad, d, ceil_mode) == geometry.pool_padding(
            n, f, s2, pad, d2, ceil_mode
        )
        assert geometry.conv_output_size(n, f, s, pad, d) == geometry.conv_output_size(n, f, s2, pad, d2)


def test_taps_inside_and_empty_window_match_the_tap_table():
    rng = np.random.default_rng(4)
    for _ in range(2000):
        n, f, s, d = (int(v) for v in rng.integers(1, 8, 4))
        ext = d * (f - 1) + 1
        lo, hi = (int(v) for v in rng.integers(0, ext + 1, 2))
        ceil = bool(rng.integers(0, 2))
        if n + lo + hi < ext:
            continue
        o = geometry.pool_output_size(n, f, s, (lo, hi), d, ceil)
        taps = s * np.arange(o)[:, None] + d * np.arange(f)[None, :]  # padded coordinates
        inside = (taps >= lo) & (taps < lo + n)
        np.testing.assert_array_equal(geometry.taps_inside(o, f, s, d, lo, lo + n), inside.sum(1))
        empty = ~inside.any(1)
        want = int(np.argmax(empty)) if empty.any() else None
        assert geometry.empty_pool_window(n, f, s, (lo, hi), d, ceil) == want


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: geometry.effective_kernel("3"), "kernel_size must be an int"),
        (lambda: geometry.effective_kernel(3, 0), "dilation must be >= 1"),
        (lambda: geometry.receptive_field([(3, 1, 0)]), r"receptive_field: layers\[0\] must be"),
        (lambda: geometry.receptive_field([(3, 1, -1, 1)]), "padding_before must be >= 0"),
        (lambda: geometry.pool_output_size(5, 2, 2, ceil_mode="no"), "ceil_mode must be True or False"),
        (lambda: geometry.conv_output_size(5, 2, strict=None), "strict must be True or False"),
    ],
)
def test_geometry_names_the_argument(call, match):
    with pytest.raises((TypeError, ValueError), match=match):
        call()


# -- 3. model files trusted too far ------------------------------------------------------------


def _npz(entries: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()


def _npy(a: np.ndarray, shape=None) -> bytes:
    buf = _io.BytesIO()
    header = np.lib.format.header_data_from_array_1_0(a)
    if shape is not None:
        header["shape"] = shape
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + a.tobytes()


def _arch(*layers) -> bytes:
    model = {"class": "Sequential", "config": {}, "layers": list(layers)}
    return _npy(np.array(json.dumps({"format": "cnnkit-model", "version": 1, "model": model})))


@pytest.fixture
def saved(tmp_path):
    model = cnnkit.layers.Sequential(cnnkit.layers.Conv2d(1, 2, 3, seed=0), cnnkit.layers.ReLU())
    return cio.save(model, tmp_path / "good.npz")


HOSTILE_FILES = {
    "huge-architecture": (
        lambda good: _npz(
            {
                "__architecture__.npy": _arch(
                    {
                        "class": "Conv2d",
                        "config": {"in_channels": 10**7, "out_channels": 10**7, "kernel_size": 3},
                    }
                )
            }
        ),
        r"missing weight\(s\) \['0\.weight', '0\.bias'\]",
    ),
    "huge-architecture-with-weights": (
        lambda good: _npz(
            {
                "__architecture__.npy": _arch(
                    {"class": "Linear", "config": {"in_features": 10**9, "out_features": 10**9}}
                ),
                "0.weight.npy": _npy(np.zeros((2, 2))),
                "0.bias.npy": _npy(np.zeros(2)),
            }
        ),
        r"weight '0\.weight' has shape \(2, 2\) but the architecture needs \(1000000000, 1000000000\)",
    ),
    "lying-header": (
        lambda good: _npz(
            {**_entries(good), "0.weight.npy": _npy(np.zeros((2, 1, 3, 3), np.float32), (10**12,))}
        ),
        r"entry .0\.weight. declares shape \(1000000000000,\) of float32 \(4000000000000 bytes\) but holds",
    ),
    "bomb": (
        lambda good: _npz({"__architecture__.npy": _npy(np.zeros(2**23))}, zipfile.ZIP_DEFLATED),
        r"the archive declares \d+ bytes of entries in a file of \d+ bytes",
    ),
    "json": (lambda good: b'{"format": "cnnkit-model"}', r"JSON text, not an \.npz archive"),
    "npy": (lambda good: _npy(np.ones(3)), r"a single \.npy array, not an \.npz archive"),
    "pickle": (lambda good: b"\x80\x04\x95" + bytes(30), "a Python pickle, not an .npz archive"),
    "foreign-zip": (
        lambda good: _npz({"word/doc.xml": b"<w/>"}),
        r"entry 'word/doc\.xml' is not a \.npy array",
    ),
    "deep-nesting": (
        lambda good: _npz({"__architecture__.npy": _npy(np.array(json.dumps(_nest(100))))}),
        "nests Sequential blocks deeper than 64",
    ),
    "bad-config": (
        lambda good: _npz(
            {"__architecture__.npy": _arch({"class": "Conv2d", "config": {"in_channels": "x"}})}
        ),
        r"cannot build Conv2d at layer 0 from \{'in_channels': 'x'\}: TypeError",
    ),
}


def _entries(good: bytes) -> dict[str, bytes]:
    z = zipfile.ZipFile(_io.BytesIO(good))
    return {i.filename: z.read(i) for i in z.infolist()}


def _nest(depth: int) -> dict:
    model: dict = {"class": "Sequential", "layers": []}
    for _ in range(depth):
        model = {"class": "Sequential", "layers": [model]}
    return {"format": "cnnkit-model", "version": 1, "model": model}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(HOSTILE_FILES))
def test_hostile_model_file_fails_fast_naming_file_and_entry(tmp_path, saved, kind, backend):
    make, match = HOSTILE_FILES[kind]
    path = tmp_path / f"{kind}.npz"
    data = make(saved.read_bytes())
    path.write_bytes(data)
    out, peak = peak_bytes(cio.load, path, backend=backend)
    assert isinstance(out, ValueError), out
    assert str(out).startswith(f"load {path}: "), out
    assert re.search(match, str(out)), str(out)
    assert peak < 4 * len(data) + 2**20  # what the file itself justifies, never what it declares


def test_a_good_file_still_loads_writable(saved):
    model = cio.load(saved)
    weight = model.parameters()[0].data
    assert weight.flags.writeable and weight.shape == (2, 1, 3, 3)
    weight[...] = 0  # training updates parameters in place


# -- 5. pullbacks and inputs -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_output_of_another_dtype_is_cast(backend):
    x = np.random.default_rng(5).normal(size=(1, 2, 5, 5))
    w = np.ones((3, 2, 3, 3))
    _y, pullback = cnnkit.vjp(F.conv2d, x, w, backend=backend)
    for g in (
        np.ones((1, 3, 3, 3), np.float32),
        np.ones((1, 3, 3, 3), np.int32),
        np.ones((1, 3, 3, 3)).tolist(),
    ):
        dx, dw, _ = pullback(g)
        assert cnnkit.get_backend(backend).dtype_name(dx) == "float64"
        np.testing.assert_allclose(host(dw), host(pullback(np.ones((1, 3, 3, 3)))[1]))
    if backend == "torch":  # a float32 tensor into a float64 torch op
        dx, _, _ = pullback(torch.ones((1, 3, 3, 3), dtype=torch.float32))
        assert dx.dtype == torch.float64


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("grad", "match"),
    [
        (None, "grad_output must be an array of the output's shape"),
        (np.ones((1, 1, 3), bool), "grad_output must hold real numbers, got dtype bool"),
        (np.ones((1, 1, 3), complex), "grad_output must hold real numbers, got dtype complex128"),
        (np.array([[[None, 1, 2]]], dtype=object), "grad_output must hold real numbers, got dtype object"),
        ([[[None, 1.0, 2.0]]], "grad_output must hold real numbers, got NoneType None"),
        ([[["1", "2", "3"]]], "grad_output must hold real numbers, got strings"),
        ("grad", "grad_output must hold real numbers, got strings"),
    ],
)
def test_grad_output_that_is_not_real_is_refused(backend, grad, match):
    _, pullback = cnnkit.vjp(F.relu, np.ones((1, 1, 3)), backend=backend)
    with pytest.raises(TypeError, match=f"relu pullback: {match}"):
        pullback(grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([[[1.0, None]]], r"relu: input must hold real numbers, got NoneType None"),
        ([[["1.5", "2"]]], "relu: input must hold real numbers, got strings"),
        ([[[True, False]]], "relu: input must hold real numbers, got booleans"),
        ([[[10**400]]], "relu: input holds a number too large for float64"),
        ([[[1.0], [1.0, 2.0]]], "relu: input cannot be read as an array"),
        (np.array([["a"]]), r"relu: input must be a floating array \(.*\), got dtype str32"),
        ("x", r"relu: input must be a floating array \(.*\), got dtype str32"),
    ],
)
def test_inputs_that_are_not_real_are_refused(backend, value, match):
    with pytest.raises(TypeError, match=match):
        F.relu(value, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lists_of_numbers_still_work(backend):
    y = F.relu([[[-1, 2]], [[3.5, -0.5]]], backend=backend)
    np.testing.assert_array_equal(host(y), [[[0, 2]], [[3.5, 0]]])
    assert host(F.relu([[[10**20]]], backend=backend)).item() == 1e20  # an int past int64, still a float
    loss = F.cross_entropy([[1.0, 2.0]], [1], backend=backend)
    assert float(host(loss)) == pytest.approx(np.log1p(np.exp(-1.0)))


def test_vjp_of_something_not_callable():
    with pytest.raises(TypeError, match=r"vjp: fn must be a cnnkit.functional function or an op name, got 3"):
        cnnkit.vjp(3, np.ones(3))


# -- 6. the CLI --------------------------------------------------------------------------------


def _raises(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (ValueError("bad\nvalue"), "cnnkit: error: bad value"),
        (TypeError("wrong type"), "cnnkit: error: wrong type"),
        (
            FileNotFoundError(2, "No such file or directory", "x.npz"),
            "cnnkit: error: No such file or directory: 'x.npz'",
        ),
        (cnnkit.errors.OpNotImplementedError("nope"), "cnnkit: error: nope"),
    ],
)
def test_main_turns_user_errors_into_one_line(monkeypatch, capsys, exc, line):
    from cnnkit import cli
    from cnnkit.cli import backends

    monkeypatch.delenv("CNNKIT_DEBUG", raising=False)
    monkeypatch.setattr(backends, "run", _raises(exc))
    assert cli.main(["backends"]) == 1
    out, err = capsys.readouterr()
    assert err == line + "\n" and out == ""


def test_main_debug_shows_the_traceback(monkeypatch):
    from cnnkit import cli
    from cnnkit.cli import backends

    monkeypatch.setenv("CNNKIT_DEBUG", "1")
    monkeypatch.setattr(backends, "run", _raises(ValueError("boom")))
    with pytest.raises(ValueError, match="boom"):
        cli.main(["backends"])


def test_json_into_a_closed_pipe_ends_quietly():
    # the reader is gone before the command writes (as `| head` is, once it has its lines)
    code = (
        "import sys, time; time.sleep(0.5); from cnnkit.cli import main; "
        "sys.exit(main(['plugins', '--json']))"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}
    ) as proc:
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == 1


# -- 7. backends and plugins -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "options", "error", "match"),
    [
        ("torch", {"device": "bogus"}, ValueError, "torch backend: device 'bogus' is not a device name"),
        ("torch", {"device": "cuda:7"}, ValueError, "torch backend: device 'cuda:7' is not available here"),
        ("torch", {"device": 3}, TypeError, "torch backend: device must be a name"),
        ("torch", {"dtype": "int64"}, TypeError, "torch backend: dtype must be a floating dtype"),
        (
            "numpy",
            {"dtype": "bogus"},
            TypeError,
            r"numpy backend: dtype must be a floating dtype .* got 'bogus'",
        ),
        ("numpy", {"dtype": "int32"}, TypeError, "numpy backend: dtype must be a floating dtype"),
    ],
)
def test_backend_options_are_checked_at_selection(backend, options, error, match):
    with pytest.raises(error, match=match):
        cnnkit.get_backend(backend, **options)


def test_backend_dtype_option_forms():
    assert cnnkit.get_backend("numpy", dtype=np.float32).default_dtype == "float32"
    assert cnnkit.get_backend("torch", dtype=torch.float64).default_dtype == "float64"
    assert cnnkit.get_backend("torch", device="cpu").device.type == "cpu"


class _Ghost:
    @hookimpl
    def cnnkit_register_backends(self, register):
        def factory(**options):
            raise ImportError("No module named 'ghostlib'")

        register(BackendInfo(name="ghost", factory=factory, install_hint="pip install ghostlib"))


@pytest.fixture
def ghost():
    registry = cnnkit.get_registry()
    name = registry.register(_Ghost(), name="hardening-ghost", dist="hardening-ghost")
    yield
    registry.unregister(name)


def test_conformance_reports_a_backend_that_cannot_load(ghost, capsys):
    from cnnkit.cli import main

    code = main(["conformance", "--backend", "ghost", "--op", "relu"])
    _, err = capsys.readouterr()
    assert code == 1
    assert "ghost: unavailable: backend 'ghost' is registered but cannot load" in err
    assert "install it with: pip install ghostlib" in err


def test_conformance_checks_the_others_and_fails_for_the_one_asked(ghost, capsys):
    from cnnkit.cli import main

    code = main(["conformance", "--backend", "ghost", "--backend", "numpy", "--op", "relu", "--json"])
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert code == 1 and "ghost" in data["unavailable"]
    assert data["summary"]["numpy"].get("failed", 0) == 0 and data["summary"]["numpy"]["passed"] > 0
    assert "ghost" not in data["summary"]


def test_cnnkit_plugins_naming_nothing_warns(monkeypatch):
    monkeypatch.setenv("CNNKIT_PLUGINS", "nosuch")
    with pytest.warns(UserWarning, match=r"CNNKIT_PLUGINS names \['nosuch'\], which match no installed"):
        Registry().ops()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cnnkit-backend", "nosuch"], "--cnnkit-backend: unknown backend(s) ['nosuch']"),
        (
            ["--cnnkit-backend", "numpy", "--cnnkit-xfail", "/nonexistent/known.txt"],
            "--cnnkit-xfail: cannot read",
        ),
        (["--cnnkit-dtype", "float8"], "--cnnkit-dtype: unknown dtype(s) ['float8']"),
    ],
)
def test_pytest_plugin_bad_options_are_one_line(args, message):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--pyargs",
            "cnnkit.conformance",
            "-p",
            "no:xdist",
            "-q",
            "-p",
            "no:cacheprovider",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert message in proc.stdout
    assert "Traceback" not in proc.stdout and "raise " not in proc.stdout, proc.stdout[-3000:]


def test_options_without_a_backend_name_apply_to_the_active_one():
    assert cnnkit.get_backend(None, dtype="float64").options == {"dtype": "float64"}
    with pytest.raises(TypeError, match="numpy backend: dtype must be a floating dtype"):
        cnnkit.get_backend(None, dtype="int8")  # `cnnkit train --dtype int8` trained in float32
    with cnnkit.use_backend("torch", dtype="float32"):
        be = cnnkit.get_backend(None, device="cpu")
        assert be.name == "torch" and be.options == {"device": "cpu", "dtype": "float32"}
