"""The core's error contract: every bad call ends in a clear error naming the argument.

These run before any kernel does, so they hold for every backend; the
conformance suite checks that each backend raises exactly these.
"""

import re

import numpy as np
import pytest

import cnnkit
from cnnkit import functional as F

x4 = np.zeros((2, 3, 8, 8))
w4 = np.zeros((16, 3, 3, 3))


def raises(error, message):
    return pytest.raises(error, match=re.escape(message))


def test_channel_mismatch_names_both_shapes():
    with raises(
        ValueError,
        "conv2d: weight has 4 input channels but input has 3 (input (2, 3, 8, 8), weight (16, 4, 3, 3))",
    ):
        F.conv2d(x4, np.zeros((16, 4, 3, 3)))


def test_channel_mismatch_with_groups():
    with raises(ValueError, "conv2d: weight has 2 input channels but input has 3 per group (6 in 2 groups)"):
        F.conv2d(np.zeros((1, 6, 5, 5)), np.zeros((4, 2, 3, 3)), groups=2)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: F.conv2d(np.zeros((3, 8, 8)), w4),
            ValueError,
            "conv2d: input must have 4 dimensions (N, C, H, W), got 3 (input (3, 8, 8))",
        ),
        (lambda: F.conv1d(x4, w4), ValueError, "conv1d: input must have 3 dimensions (N, C, W), got 4"),
        (lambda: F.conv2d(x4, np.zeros((16, 3, 3))), ValueError, "conv2d: weight must have 4 dimensions"),
        (
            lambda: F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((6, 2, 3, 3)), groups=3),
            ValueError,
            "conv2d: groups=3 does not divide the 4 input channels",
        ),
        (
            lambda: F.conv2d(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), groups=2),
            ValueError,
            "conv2d: groups=2 does not divide the 3 filters",
        ),
        (lambda: F.conv2d(x4, w4, groups=0), ValueError, "conv2d: groups must be >= 1, got 0"),
        (
            lambda: F.conv2d(x4, np.zeros((16, 3, 11, 11))),
            ValueError,
            "conv2d: weight's kernel (extent 11 with dilation 1) is larger than the padded input",
        ),
        (lambda: F.conv2d(x4, w4, dilation=5), ValueError, "(extent 11 with dilation 5)"),
        (lambda: F.conv2d(x4, w4, stride=0), ValueError, "conv2d: stride must be >= 1, got 0"),
        (lambda: F.conv2d(x4, w4, dilation=(1, 0)), ValueError, "conv2d: dilation must be >= 1, got (1, 0)"),
        (lambda: F.conv2d(x4, w4, padding=-1), ValueError, "conv2d: padding must be >= 0, got -1"),
        (
            lambda: F.conv2d(x4, w4, stride=1.5),
            TypeError,
            "conv2d: stride must be an int or a tuple of 2 ints, got 1.5 (float)",
        ),
        (
            lambda: F.conv2d(x4, w4, stride=(1, 2, 3)),
            ValueError,
            "conv2d: stride must be an int or 2 ints (one per spatial axis), got (1, 2, 3)",
        ),
        (
            lambda: F.conv2d(x4, w4, np.zeros(15)),
            ValueError,
            "conv2d: bias must have shape (16,), one per filter, got (15,)",
        ),
        (
            lambda: F.conv2d(x4, w4.astype(np.float32)),
            TypeError,
            "conv2d: weight has dtype float32 but input has dtype float64; cast them to one dtype",
        ),
        (
            lambda: F.conv2d(x4.astype(np.int64), w4),
            TypeError,
            "conv2d: input must be a floating array (float16, bfloat16, float32, float64), got dtype int64",
        ),
        (lambda: F.conv2d(x4, w4, flip=1), TypeError, "conv2d: flip must be True or False, got 1"),
        (lambda: F.max_pool2d(x4, 2.5), TypeError, "max_pool2d: kernel_size must be an int or a tuple"),
        (lambda: F.max_pool2d(x4, 0), ValueError, "max_pool2d: kernel_size must be >= 1, got 0"),
        (
            lambda: F.max_pool2d(x4, 2, padding=2),
            ValueError,
            "max_pool2d: padding must be at most the window's extent minus one "
            "(1 for kernel_size 2, dilation 1)",
        ),
        (
            lambda: F.max_pool2d(x4, 9),
            ValueError,
            "max_pool2d: kernel_size (extent 9) is larger than the padded input",
        ),
        (
            lambda: F.avg_pool2d(x4, 2, count_include_pad="yes"),
            TypeError,
            "avg_pool2d: count_include_pad must be True or False, got 'yes'",
        ),
        (
            lambda: F.lp_pool2d(x4, 0, 2),
            ValueError,
            "lp_pool2d: norm_type must be a finite number > 0, got 0.0",
        ),
        (lambda: F.lp_pool2d(x4, "2", 2), TypeError, "lp_pool2d: norm_type must be a number, got '2'"),
        (
            lambda: F.global_max_pool(np.zeros((2, 3))),
            ValueError,
            "global_max_pool: input must be (N, C, *spatial)",
        ),
        (
            lambda: F.linear(np.zeros((2, 5)), np.zeros((3, 4))),
            ValueError,
            "linear: weight has 4 input features but input has 5 (input (2, 5), weight (3, 4))",
        ),
        (
            lambda: F.linear(np.zeros((2, 4)), np.zeros((3, 4)), np.zeros(4)),
            ValueError,
            "linear: bias must have shape (3,), got (4,)",
        ),
        (
            lambda: F.flatten(x4, start_dim=4),
            ValueError,
            "flatten: start_dim=4 is out of range for an input with 4",
        ),
        (
            lambda: F.flatten(x4, start_dim=2, end_dim=1),
            ValueError,
            "flatten: start_dim (2) comes after end_dim (1)",
        ),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])),
            TypeError,
            "cross_entropy: target must hold integers (class indices), got dtype float64",
        ),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])),
            ValueError,
            "cross_entropy: target must have shape (2,), one class index per row of input, got (3,)",
        ),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 3])),
            ValueError,
            "cross_entropy: target holds class index 3, outside [0, 3) (input (2, 3))",
        ),
        (
            lambda: F.cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int)),
            ValueError,
            "cross_entropy: the mean over an empty batch is undefined",
        ),
        (
            lambda: F.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="avg"),
            ValueError,
            "cross_entropy: reduction must be 'mean', 'sum' or 'none', got 'avg'",
        ),
        (lambda: F.relu("abc"), TypeError, "relu: input must be a floating array"),
        (
            lambda: cnnkit.call("conv", x4, w4, None, strides=2),
            TypeError,
            "conv: unexpected attribute(s) ['strides']",
        ),
        (
            lambda: cnnkit.call("conv", x4, w4),
            TypeError,
            "conv: expected 3 inputs (input, weight, bias), got 2",
        ),
        (lambda: cnnkit.call("conv", x4, None, None), TypeError, "conv: weight is required, got None"),
        (
            lambda: cnnkit.call("max_pool", x4),
            TypeError,
            "max_pool: missing required attribute(s) ['kernel_size']",
        ),
        # found in review: each of these crashed inside NumPy or was silently accepted
        (
            lambda: F.conv2d(x4, np.zeros((0, 3, 3, 3))),
            ValueError,
            "conv2d: weight must have at least 1 filter, got weight (0, 3, 3, 3)",
        ),
        (
            lambda: F.conv2d(np.zeros((2, 3, 0, 8)), w4, padding=2),
            ValueError,
            "conv2d: input must have at least 1 unit along every spatial axis, got shape (2, 3, 0, 8)",
        ),
        (
            lambda: F.avg_pool1d(np.zeros((1, 1, 0)), 1, padding=0),
            ValueError,
            "avg_pool1d: input must have at least 1 unit along every spatial axis",
        ),
        (
            lambda: F.global_avg_pool(np.zeros((1, 1, 0))),
            ValueError,
            "global_avg_pool: input must have at least 1 unit along every spatial axis",
        ),
        (
            lambda: F.global_max_pool(np.zeros((1, 1, 2, 2, 2, 2))),
            ValueError,
            "global_max_pool: input must be batched (N, C, *spatial) with 1 to 3 spatial axes, "
            "got shape (1, 1, 2, 2, 2, 2)",
        ),
        (
            lambda: F.max_pool1d(np.zeros((1, 1, 2)), 2, 1, 2, 4),
            ValueError,
            "max_pool1d: window 0 along spatial axis 0 reads only padding (kernel_size 2, stride 1, "
            "padding (2, 2), dilation 4, input length 2)",
        ),
        (
            lambda: F.avg_pool1d(np.zeros((1, 1, 2)), 2, 1, 1, 3, count_include_pad=False),
            ValueError,
            "avg_pool1d: window 0 along spatial axis 0 reads only padding",
        ),
        (
            lambda: F.cross_entropy(np.zeros((3, 4)), [0, 1.5, 2]),
            TypeError,
            "cross_entropy: target must hold integers (class indices), got dtype float64",
        ),
        (
            lambda: F.conv2d(x4, w4, padding={1: 2, 3: 4}),
            TypeError,
            "conv2d: padding must be an int, a tuple, 'valid' or 'same', got dict",
        ),
        (
            lambda: F.relu(x4, backend=3),
            TypeError,
            "backend must be a backend name (str) or a cnnkit Backend, got 3 (int)",
        ),
    ],
)
def test_bad_calls_raise_clear_errors(call, error, message):
    with raises(error, message):
        call()


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(
        cnnkit.BackendNotFoundError, match=r"unknown backend 'jax'; installed backends: .*numpy"
    ):
        F.relu(np.zeros(3), backend="jax")


def test_unknown_op_lists_registered_ops():
    with pytest.raises(KeyError, match=r"unknown op 'conv4d'; registered ops: .*conv"):
        cnnkit.call("conv4d", x4)


def test_unknown_backend_option_names_accepted_ones():
    with pytest.raises(TypeError, match=r"backend 'numpy' takes options \['dtype'\], got \['device'\]"):
        cnnkit.get_backend("numpy", device="cuda")


def test_lists_are_read_as_float64_arrays():
    y = F.relu([[-1, 2]])
    assert isinstance(y, np.ndarray) and y.dtype == np.float64
    assert y.tolist() == [[0.0, 2.0]]


def test_vjp_needs_exactly_one_op():
    with pytest.raises(
        ValueError, match="vjp: <lambda> must dispatch exactly one cnnkit op, it dispatched 0"
    ):
        cnnkit.vjp(lambda x: x, np.zeros(2))
    with pytest.raises(ValueError, match="dispatched 2"):
        cnnkit.vjp(lambda x: F.relu(F.relu(x)), np.zeros(2))


def test_vjp_pullback_checks_the_gradient_shape():
    _, pullback = cnnkit.vjp(F.relu, np.zeros((2, 3)))
    with raises(ValueError, "relu pullback: grad_output must have the output's shape (2, 3), got (3, 2)"):
        pullback(np.zeros((3, 2)))


def test_vjp_accepts_an_op_name():
    y, pullback = cnnkit.vjp("relu", np.array([-1.0, 2.0]))
    (dx,) = pullback(np.array([5.0, 7.0]))
    assert y.tolist() == [0.0, 2.0] and dx.tolist() == [0.0, 7.0]


def test_class_indices_from_a_list_are_read_as_int64():
    assert F.cross_entropy(np.zeros((3, 4)), [0, 1, 3]) == pytest.approx(np.log(4))
    assert F.cross_entropy(np.zeros((0, 4)), [], reduction="sum") == 0


def test_numpy_bools_are_accepted_as_flags():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    assert F.max_pool2d(x, 2, ceil_mode=np.True_).shape == (1, 1, 3, 3)
    w = np.zeros((1, 1, 3, 3))
    w[0, 0, 0, 0] = 1.0
    assert F.conv2d(x, w, flip=np.True_)[0, 0].tolist() == F.conv2d(x, w[..., ::-1, ::-1])[0, 0].tolist()


def test_a_bad_cnnkit_backend_variable_is_named(monkeypatch):
    monkeypatch.setenv("CNNKIT_BACKEND", "jax")
    with pytest.raises(cnnkit.BackendNotFoundError, match="from the CNNKIT_BACKEND environment variable"):
        F.relu(np.zeros(3))


def test_a_window_that_reaches_the_input_through_dilation_is_accepted():
    # padding 1 before, taps at -1 and 2 (window 0) and at 0 and 3 (window 1): each holds one input unit
    y = F.max_pool1d(np.array([[[1.0, 5.0, 3.0]]]), 2, 1, 1, 3)
    assert y.tolist() == [[[3.0, 1.0]]]


# -- validation remembered for repeated calls (cnnkit.dispatch._validated) -----------------------


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_remembered_call_still_refuses_a_bad_variant_of_itself(backend):
    """Once ``padding=1`` validated, ``padding=True``, ``padding=1.0`` and ``stride=0`` on the same
    shapes are still refused: the remembered key tells types and values apart."""
    if backend == "torch":
        pytest.importorskip("torch")
    x, w = np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3))
    host = cnnkit.get_backend(backend).to_numpy
    first = host(F.conv2d(x, w, padding=1, backend=backend))
    again = host(F.conv2d(x, w, padding=1, backend=backend))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (1, 3, 5, 5)
    with raises(TypeError, "conv2d: padding"):
        F.conv2d(x, w, padding=True, backend=backend)
    with raises(TypeError, "conv2d: padding"):
        F.conv2d(x, w, padding=1.0, backend=backend)
    with raises(ValueError, "conv2d: stride"):
        F.conv2d(x, w, padding=1, stride=0, backend=backend)


def test_a_call_is_bound_once_and_each_call_gets_its_own_attributes(monkeypatch):
    from cnnkit import dispatch

    spec = cnnkit.get_registry().op("relu")
    calls = []
    original = type(spec).bind

    def counting(self, where, infos, attrs):
        calls.append(where)
        return original(self, where, infos, attrs)

    monkeypatch.setattr(type(spec), "bind", counting)
    monkeypatch.setattr(dispatch, "_BOUND", {})
    x = np.array([[-1.0, 2.0]])
    for _ in range(3):
        np.testing.assert_array_equal(F.relu(x, backend="numpy"), [[0.0, 2.0]])
    assert calls == ["relu"]  # bound once, remembered twice
    F.relu(np.zeros((3, 2)), backend="numpy")  # another shape: bound again
    assert calls == ["relu", "relu"]
    infos = [cnnkit.spec.TensorInfo((1, 2), "float64")]
    be = cnnkit.get_backend("numpy")
    a = dispatch._validated(be, [x], "relu", spec, infos, {})
    a["changed"] = True
    assert "changed" not in dispatch._validated(be, [x], "relu", spec, infos, {})


def test_a_smaller_size_limit_applies_to_a_call_validated_before(monkeypatch):
    from cnnkit import geometry

    x, w = np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3))
    F.conv2d(x, w, padding=1, backend="numpy")
    monkeypatch.setattr(geometry, "MAX_ELEMENTS", 10)
    with pytest.raises(ValueError, match="MAX_ELEMENTS"):
        F.conv2d(x, w, padding=1, backend="numpy")
