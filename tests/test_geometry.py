"""cnnkit.geometry: the lecture's output-size table, padding forms, receptive fields."""

import re

import numpy as np
import pytest

from cnnkit import geometry
from cnnkit.geometry import conv_output_size, pool_output_size, resolve_padding


@pytest.mark.parametrize(("stride", "expected"), [(1, 5), (2, 3)])
def test_lecture_output_size_table(stride, expected):
    # N = 7, F = 3: (N - F)/S + 1
    assert geometry.conv_output_size(7, 3, stride=stride, strict=True) == expected


def test_lecture_does_not_fit_raises_in_strict_mode():
    with pytest.raises(ValueError, match=r"does not fit.*\(7 - 3 \+ 0\)/3 \+ 1 = 2\.33333"):
        geometry.conv_output_size(7, 3, stride=3, strict=True)
    # frameworks drop the trailing row instead
    assert geometry.conv_output_size(7, 3, stride=3) == 2


@pytest.mark.parametrize(
    ("n", "f", "s", "p", "d", "expected"),
    [(32, 3, 1, 1, 1, 32), (32, 3, 2, 1, 1, 16), (28, 5, 1, 0, 1, 24), (10, 3, 1, (2, 0), 2, 8)],
)
def test_conv_output_size_formula(n, f, s, p, d, expected):
    assert geometry.conv_output_size(n, f, s, p, d) == expected


def test_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match="kernel_size: a kernel of extent 5"):
        geometry.conv_output_size(3, 3, dilation=2)


@pytest.mark.parametrize(
    ("n", "f", "s", "p", "ceil", "expected"),
    [
        (5, 2, 2, 0, False, 2),
        (5, 2, 2, 0, True, 3),
        (4, 2, 2, 0, True, 2),
        (5, 3, 2, 1, True, 3),
        (6, 3, 3, 1, True, 3),
    ],
)
def test_pool_output_size_ceil_mode(n, f, s, p, ceil, expected):
    assert geometry.pool_output_size(n, f, s, p, 1, ceil) == expected


def test_ceil_mode_window_may_not_start_in_right_padding():
    # N=5, F=2, S=2, P=1: ceil gives 4 windows, the last would start at 6 >= N + P_before = 6
    assert geometry.pool_output_size(5, 2, 2, 1, 1, ceil_mode=True) == 3
    assert geometry.pool_padding(5, 2, 2, 1, 1, ceil_mode=True) == (1, 1)


def test_pool_padding_adds_the_ceil_mode_overhang_after():
    assert geometry.pool_padding(5, 2, 2, 0, 1, ceil_mode=True) == (0, 1)
    assert geometry.pool_padding(5, 2, 2, 0, 1, ceil_mode=False) == (0, 0)


@pytest.mark.parametrize(
    ("padding", "expected"),
    [
        (1, ((1, 1), (1, 1))),
        ((1, 2), ((1, 1), (2, 2))),
        (((0, 1), (2, 3)), ((0, 1), (2, 3))),
        ("valid", ((0, 0), (0, 0))),
        ("VALID", ((0, 0), (0, 0))),
    ],
)
def test_resolve_padding_forms(padding, expected):
    assert geometry.resolve_padding(padding, (3, 3), (1, 1), (1, 1), (8, 8)) == expected


@pytest.mark.parametrize(
    ("n", "f", "s", "d", "expected"),
    [
        (7, 3, 1, 1, (1, 1)),  # odd total: split evenly
        (8, 2, 1, 1, (0, 1)),  # SAME_UPPER: the odd unit goes after
        (7, 3, 2, 1, (1, 1)),  # ceil(7/2) = 4 outputs
        (8, 3, 2, 1, (0, 1)),  # ceil(8/2) = 4 outputs
        (7, 3, 3, 1, (1, 1)),
        (5, 3, 1, 2, (2, 2)),  # dilated extent 5
        (4, 1, 3, 1, (0, 0)),
    ],
)
def test_same_padding_gives_ceil_n_over_s(n, f, s, d, expected):
    ((pad,),) = (geometry.resolve_padding("same", (f,), (s,), (d,), (n,)),)
    assert pad == expected
    assert geometry.conv_output_size(n, f, s, pad, d) == -(-n // s)


@pytest.mark.parametrize(
    ("padding", "error", "message"),
    [
        (-1, ValueError, "padding must be >= 0, got -1"),
        ("full", ValueError, "padding must be an int, a tuple, 'valid' or 'same', got 'full'"),
        ((1, 2, 3), ValueError, "padding must have 2 entries"),
        ((1.5, 1), TypeError, "padding entries must be ints"),
        (1.5, TypeError, "padding must be an int, a tuple, 'valid' or 'same', got float"),
    ],
)
def test_resolve_padding_errors_name_the_argument(padding, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        geometry.resolve_padding(padding, (3, 3), (1, 1), (1, 1), (8, 8), where="conv2d")


def test_receptive_field_of_a_stack():
    # conv3 -> conv3 -> pool2/2 -> conv3: 3, 5, 6, 10 (the pool doubles the jump)
    rfs = geometry.receptive_field([(3, 1, 1, 1), (3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 1, 1)])
    assert [rf.size for rf in rfs] == [3, 5, 6, 10]
    assert [rf.jump for rf in rfs] == [1, 1, 2, 2]


def test_receptive_field_with_dilation():
    rfs = geometry.receptive_field([(3, 1, 0, 2), (3, 1, 0, 4)])
    assert [rf.size for rf in rfs] == [5, 13]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: conv_output_size(7, 3, stride=0), ValueError, "stride must be >= 1, got 0"),
        (lambda: pool_output_size(5, 2, 0), ValueError, "stride must be >= 1, got 0"),
        (lambda: conv_output_size(7, 0), ValueError, "kernel_size must be >= 1, got 0"),
        (lambda: conv_output_size(7, 3, dilation=0), ValueError, "dilation must be >= 1, got 0"),
        (lambda: conv_output_size(-1, 3), ValueError, "input_size must be >= 0, got -1"),
        (lambda: conv_output_size(7.5, 3), TypeError, "input_size must be an int, got 7.5 (float)"),
        (lambda: conv_output_size(7, 3, stride=True), TypeError, "stride must be an int, got True (bool)"),
        (lambda: conv_output_size(7, 3, padding=-1), ValueError, "padding must be >= 0, got -1"),
        (
            lambda: conv_output_size(7, 3, padding=(1, 2, 3)),
            TypeError,
            "padding must be an int or a (before, after) pair of ints, got (1, 2, 3)",
        ),
        (
            lambda: resolve_padding("same", (3,), (0,), (1,), (5,)),
            ValueError,
            "stride must be >= 1, got 0",
        ),
        (
            lambda: resolve_padding({1: 2}, (3,), (1,), (1,), (5,)),
            TypeError,
            "padding must be an int, a tuple, 'valid' or 'same', got dict",
        ),
    ],
)
def test_geometry_helpers_reject_bad_sizes_by_name(call, error, message):
    # public helpers: a clear error, never a ZeroDivisionError or a silently wrong size
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_geometry_helpers_take_numpy_ints():
    assert conv_output_size(np.int64(7), np.int32(3), np.int64(2), (np.int64(1), 1)) == 4


def test_docstring_examples_of_the_library_run():
    # pytest is not configured with --doctest-modules: this keeps every documented example true
    import doctest
    import importlib
    import pkgutil

    import cnnkit_numpy

    import cnnkit

    packages = [cnnkit, cnnkit_numpy]
    if importlib.util.find_spec("torch") is not None:
        import cnnkit_torch

        packages.append(cnnkit_torch)
    attempted = {}
    for package in packages:
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.name.endswith(("distributed", "pytest_plugin", "test_suite")):
                continue  # spawn processes / need a pytest session
            module = importlib.import_module(info.name)
            result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
            assert result.failed == 0, info.name
            attempted[info.name] = result.attempted
    for name in (
        "cnnkit.geometry",
        "cnnkit.ops.convolution",
        "cnnkit.ops.pooling",
        "cnnkit.ops.activation",
        "cnnkit.layers",
    ):
        assert attempted[name] > 0, name
