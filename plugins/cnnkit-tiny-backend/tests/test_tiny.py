"""tiny's own unit tests: registered through its entry point, and equal to cnnkit's NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F


def test_registered_through_the_entry_point():
    reg = cnnkit.get_registry()
    assert reg.backend_plugin("tiny").dist == "cnnkit-tiny-backend"
    assert sorted(reg.kernels("tiny")) == ["flatten", "linear", "max_pool", "relu"]
    assert cnnkit.get_backend("tiny").devices() == ["cpu"]


@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"kernel_size": 2, "dilation": 2},
    ],
)
def test_max_pool_matches_the_reference(attrs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 7, 6))
    y_ref, pb_ref = cnnkit.vjp(F.max_pool2d, x, backend="numpy", **attrs)
    y, pb = cnnkit.vjp(F.max_pool2d, x, backend="tiny", **attrs)
    g = rng.normal(size=y.shape)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(pb(g)[0], pb_ref(g)[0])


def test_linear_and_flatten_match_the_reference():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(4, 2, 3)), rng.normal(size=(5, 6)), rng.normal(size=5)
    flat = F.flatten(x, backend="tiny")
    np.testing.assert_array_equal(flat, F.flatten(x, backend="numpy"))
    y, pb = cnnkit.vjp(F.linear, flat, w, b, backend="tiny")
    y_ref, pb_ref = cnnkit.vjp(F.linear, flat, w, b, backend="numpy")
    np.testing.assert_allclose(y, y_ref, atol=1e-12)
    g = rng.normal(size=y.shape)
    for got, want in zip(pb(g), pb_ref(g)):
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_unimplemented_ops_say_what_tiny_has():
    with pytest.raises(
        cnnkit.OpNotImplementedError, match=r"backend 'tiny' has no implementation of op 'conv'"
    ):
        F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), backend="tiny")
