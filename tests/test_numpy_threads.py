"""The NumPy backend's slabs of samples (cnnkit_numpy.threads): the kernels split over threads
give the values of one thread, OpenBLAS is held at one thread meanwhile, and errors come back."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from cnnkit_numpy import ops, threads
from cnnkit_numpy.backend import NumpyBackend


@pytest.fixture
def split(monkeypatch):
    """Every kernel split, whatever the size (the tests' arrays are small)."""
    monkeypatch.setattr(threads, "SLAB_MIN_BYTES", 0)
    monkeypatch.setenv("CNNKIT_AUTOTUNE", "0")  # the fixed chunk size: one configuration per call
    return monkeypatch


@pytest.mark.parametrize("n", range(1, 8))
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_slabs_cover_the_range_in_order_none_empty(n, parts):
    bounds = threads.slabs(n, parts)
    assert len(bounds) == min(n, parts)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(lo < hi for lo, hi in bounds)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1


def test_run_slabs_runs_the_slabs_at_once_and_returns_them_in_order(split):
    split.setattr(threads, "THREADS", 3)
    together = threading.Barrier(3, timeout=30)  # passes only if the three slabs run at the same time
    where = {}

    def fn(lo, hi):
        assert threads.in_slab()
        together.wait()
        where[lo] = threading.get_ident()
        return (lo, hi)

    assert threads.run_slabs(fn, 7, 10**9) == [(0, 2), (2, 4), (4, 7)]
    assert len(set(where.values())) == 3
    assert where[0] == threading.get_ident()  # the caller takes the first slab
    assert not threads.in_slab()


@pytest.mark.parametrize(
    "case", ["one thread", "small", "nested", "one item"], ids=lambda c: c.replace(" ", "-")
)
def test_run_slabs_is_one_call_where_splitting_cannot_pay(monkeypatch, case):
    monkeypatch.setattr(threads, "THREADS", 1 if case == "one thread" else 2)
    monkeypatch.setattr(threads, "SLAB_MIN_BYTES", 100)
    nbytes = 10 if case == "small" else 1000
    n = 1 if case == "one item" else 6
    if case == "nested":
        out = threads.run_slabs(lambda lo, hi: threads.run_slabs(lambda a, b: (a, b), 4, nbytes), 2, nbytes)
        assert out == [[(0, 4)], [(0, 4)]]  # each slab's inner call ran whole, on its own thread
        return
    assert threads.run_slabs(lambda lo, hi: (lo, hi), n, nbytes) == [(0, n)]


def test_an_error_in_any_slab_is_raised_after_every_slab_has_ended(split):
    split.setattr(threads, "THREADS", 2)
    ended = []

    def fn(lo, hi):
        if lo > 0:
            raise ValueError(f"slab {lo}")
        ended.append(lo)
        return lo

    with pytest.raises(ValueError, match="slab 2"):
        threads.run_slabs(fn, 4, 10**9)
    assert ended == [0]
    assert threads.run_slabs(lambda lo, hi: lo, 4, 10**9) == [0, 2]  # the pool still works


@pytest.mark.skipif(not threads.blas_pinnable(), reason="NumPy's BLAS is not an OpenBLAS cnnkit can size")
def test_openblas_is_held_at_one_thread_inside_the_slabs_and_restored_after(split):
    be = NumpyBackend()
    be.set_threads(3)
    try:
        assert threads.THREADS == 3 and threads.blas_threads() == 3
        inside = threads.run_slabs(lambda lo, hi: threads.blas_threads(), 3, 10**9, blas=True)
        assert inside == [1, 1, 1]
        assert threads.blas_threads() == 3
        # a kernel that does not call BLAS leaves the pool alone
        assert threads.run_slabs(lambda lo, hi: threads.blas_threads(), 3, 10**9) == [3, 3, 3]
    finally:
        be.set_threads(2)
    assert threads.THREADS == 2 and threads.blas_threads() == 2


CONVS = [
    dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1),  # the flat grid
    dict(stride=(2, 1), padding=((0, 1), (2, 0)), dilation=(1, 1), groups=1),  # strided, asymmetric
    dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(2, 1), groups=2),  # groups, dilation
]


def _conv(x, w, b, attrs, **extra):
    y, ctx = ops.conv_forward(x, w, b, flip=False, **attrs, **extra)
    return (y, *ops.conv_backward(ctx, np.cos(3 * y)))


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("attrs", CONVS, ids=["flat", "strided", "groups"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_split_by_samples_equals_one_thread(split, n, attrs, bias):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 4, 9, 8))
    w = rng.standard_normal((6, 4 // attrs["groups"], 3, 2))
    b = rng.standard_normal(6) if bias else None
    split.setattr(threads, "THREADS", 1)
    ref = _conv(x, w, b, attrs)
    for parts in (2, 3):
        split.setattr(threads, "THREADS", parts)
        for chunk in (1, 2**20):  # one sample per chunk, and every sample of a slab in one
            split.setattr(ops, "CHUNK_BYTES", chunk)
            got = _conv(x, w, b, attrs)
            assert len(got) == len(ref)
            for a, e in zip(got, ref):
                if e is None:
                    assert a is None
                    continue
                # dW and db are the slabs' partial sums added: equal up to the order of the sum
                np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def test_conv_with_a_padding_mode_split_by_samples_equals_one_thread(split):
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((4, 3, 7, 7)), rng.standard_normal((5, 3, 3, 3))
    attrs = CONVS[0]
    split.setattr(threads, "THREADS", 1)
    ref = _conv(x, w, None, attrs, padding_mode="reflect")
    split.setattr(threads, "THREADS", 2)
    for a, e in zip(_conv(x, w, None, attrs, padding_mode="reflect"), ref):
        if e is not None:
            np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)


def _window(kernel, stride, pad, dilation, ceil_mode, **extra):
    pads = tuple((p, p) for p in pad)
    window = dict(kernel_size=kernel, stride=stride, padding=pads, dilation=dilation)
    return dict(window, ceil_mode=ceil_mode, **extra)


POOLS = [
    ("max_pool", _window((2, 2), (2, 2), (0, 0), (1, 1), False)),
    ("max_pool", _window((3, 3), (2, 1), (1, 1), (1, 2), True)),  # overlapping, padded, ceil
    ("avg_pool", _window((2, 2), (2, 2), (0, 0), (1, 1), False, count_include_pad=True)),
    ("avg_pool", _window((3, 2), (2, 2), (1, 1), (1, 1), True, count_include_pad=False)),
    ("avg_pool", _window((2, 2), (1, 1), (1, 0), (1, 1), False, count_include_pad=True, divisor_override=3)),
    ("lp_pool", _window((2, 3), (1, 2), (0, 0), (1, 1), False, norm_type=3.0)),
]


def _pool(op, x, attrs):
    forward, backward = ops.KERNELS[op]
    y, ctx = forward(x, **attrs)
    return (y, *backward(ctx, np.sin(5 * y)))


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("op,attrs", POOLS, ids=lambda v: v if isinstance(v, str) else "")
def test_pools_split_by_samples_equal_one_thread_exactly(split, n, op, attrs):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 3, 7, 8))
    x[0, 1, 2, 3] = np.nan  # a NaN's window: its output NaN, its gradient to the first NaN
    x[-1, 0, :2, :2] = 1.5  # ties: the first maximum wins
    split.setattr(threads, "THREADS", 1)
    ref = _pool(op, x, attrs)
    for parts in (2, 3):
        split.setattr(threads, "THREADS", parts)
        got = _pool(op, x, attrs)
        for a, e in zip(got, ref):
            np.testing.assert_array_equal(a, e)  # every unit is computed by one slab alone


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_split_by_channels_equals_one_thread_exactly(split, training, affine):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 6, 3))
    w, b = (rng.standard_normal(5), rng.standard_normal(5)) if affine else (None, None)
    forward, backward = ops.KERNELS["batch_norm"]
    results = {}
    for parts in (1, 2, 3):
        split.setattr(threads, "THREADS", parts)
        r_mean, r_var = np.linspace(-1, 1, 5), np.linspace(0.5, 2, 5)
        y, ctx = forward(x, w, b, r_mean, r_var, training=training, momentum=0.1, eps=1e-5)
        grads = backward(ctx, np.cos(2 * y))
        results[parts] = (y, *[g for g in grads if g is not None], r_mean, r_var)
    for parts in (2, 3):
        assert len(results[parts]) == len(results[1])
        for a, e in zip(results[parts], results[1]):
            # a channel's sums are one slab's alone; NumPy's summation order follows the slab's shape
            np.testing.assert_allclose(a, e, rtol=1e-13, atol=1e-13)
    if training:
        assert not np.allclose(results[1][-2], np.linspace(-1, 1, 5))  # the running mean moved


def test_split_results_are_the_same_bits_run_after_run(split):
    # the slabs depend on the batch size and the thread count alone, and their sums are added in
    # slab order: no result depends on which thread finished first
    split.setattr(threads, "THREADS", 2)
    rng = np.random.default_rng(11)
    x, w, b = rng.standard_normal((6, 4, 9, 8)), rng.standard_normal((5, 4, 3, 3)), rng.standard_normal(5)
    first = _conv(x, w, b, CONVS[0])
    for _ in range(5):
        for a, e in zip(_conv(x, w, b, CONVS[0]), first):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("n", [1, 3, 5])
@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_split_by_samples_equals_one_thread(split, n, groups):
    rng = np.random.default_rng(n + 10 * groups)
    y = rng.standard_normal((n, 4, 5, 6))
    w = rng.standard_normal((4, 6 // groups, 3, 2))
    b = rng.standard_normal(6)
    forward, backward = ops.KERNELS["conv_transpose"]
    attrs = dict(
        stride=(2, 1), padding=((1, 1), (0, 1)), output_padding=(1, 0), dilation=(1, 2), groups=groups
    )
    results = {}
    for parts in (1, 2, 3):
        split.setattr(threads, "THREADS", parts)
        a, ctx = forward(y, w, b, **attrs)
        results[parts] = (a, *backward(ctx, np.cos(3 * a)))
    for parts in (2, 3):
        for got, ref in zip(results[parts], results[1]):
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.skipif(not threads.blas_pinnable(), reason="NumPy's BLAS is not an OpenBLAS cnnkit can size")
def test_a_thread_count_set_while_a_kernel_holds_openblas_is_the_one_restored(split):
    be = NumpyBackend()
    be.set_threads(2)
    try:

        def fn(lo, hi):
            if lo == 0:
                be.set_threads(3)  # from inside the slabs: OpenBLAS stays at one thread meanwhile
            return threads.blas_threads()

        assert threads.run_slabs(fn, 2, 10**9, parts=2, blas=True)[0] == 1
        assert threads.THREADS == 3 and threads.blas_threads() == 3
    finally:
        be.set_threads(2)
