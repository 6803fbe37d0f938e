"""The NumPy conv's batch-chunk size and threads (slabs of samples, or of a copy's channels),
measured per shape (values only, no times)."""

from __future__ import annotations

import numpy as np
import pytest
from cnnkit_numpy import ops, threads

ATTRS = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1, flip=False)


def _run(x, w, b, attrs=ATTRS):
    y, ctx = ops.conv_forward(x, w, b, **attrs)
    return (y, *ops.conv_backward(ctx, np.cos(y)))


@pytest.fixture
def tuner(monkeypatch):
    monkeypatch.setattr(ops, "TUNE_MIN_FLOPS", 0)
    monkeypatch.setattr(ops, "_tuned", {})
    monkeypatch.setattr(ops, "TUNED", {})
    monkeypatch.setattr(ops, "CHUNK_CANDIDATES", (1, 2**12, 2**20))  # one sample per chunk, a few, all
    monkeypatch.setattr(threads, "SLAB_MIN_BYTES", 0)  # every batch and copy split across the threads
    monkeypatch.setattr(threads, "THREADS", 2)
    monkeypatch.delenv("CNNKIT_AUTOTUNE", raising=False)
    return ops


@pytest.mark.parametrize("stride", [1, 2])
def test_every_configuration_gives_the_same_values(tuner, monkeypatch, stride):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((5, 6, 9, 8))
    w = rng.standard_normal((4, 6, 3, 3))
    b = rng.standard_normal(4)
    attrs = {**ATTRS, "stride": (stride, stride)}
    monkeypatch.setenv("CNNKIT_AUTOTUNE", "0")
    monkeypatch.setattr(threads, "THREADS", 1)
    ref = _run(x, w, b, attrs)
    monkeypatch.setattr(threads, "THREADS", 2)
    for chunk in (1, 2**12, 2**20):
        for n_threads in (1, 2):
            monkeypatch.setattr(ops, "CHUNK_BYTES", chunk)
            monkeypatch.setattr(threads, "THREADS", n_threads)
            for a, e in zip(_run(x, w, b, attrs), ref):
                np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    monkeypatch.delenv("CNNKIT_AUTOTUNE")
    monkeypatch.setattr(threads, "THREADS", 2)
    for a, e in zip(_run(x, w, b, attrs), ref):  # tuned now
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12)
    (rec,) = tuner.TUNED.values()
    assert rec["chunk_bytes"] in tuner.CHUNK_CANDIDATES and rec["threads"] in (1, 2)
    assert len(rec["times_ms"]) == len(tuner.CHUNK_CANDIDATES) + 1


def test_tuned_once_per_shape_and_not_when_off(tuner, monkeypatch):
    x, w = np.ones((2, 3, 6, 6)), np.ones((2, 3, 3, 3))
    _run(x, w, None)
    _run(x, w, None)
    assert len(tuner.TUNED) == 1
    monkeypatch.setenv("CNNKIT_AUTOTUNE", "0")
    _run(np.ones((3, 3, 6, 6)), w, None)
    assert len(tuner.TUNED) == 1
