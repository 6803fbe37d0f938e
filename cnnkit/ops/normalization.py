"""The normalisation record: ``batch_norm``, its function and :class:`BatchNorm1d`/``2d``/``3d``.

Batch norm has state: the running mean and variance, which training updates
and evaluation reads. They are op inputs marked as state
(:attr:`cnnkit.spec.OpSpec.state_inputs`): the kernels update them in place,
as torch does (no gradient flows to them), on every backend alike. The layers
keep them as buffers (:meth:`cnnkit.layer.Layer.buffer_specs`) under torch's
state-dict keys. The NumPy kernel is ``cnnkit_numpy.ops.batch_norm_*``; the
torch kernel ``cnnkit_torch.ops.BatchNorm``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Random, Seeds, error_cases
from cnnkit.dispatch import call
from cnnkit.layer import BufferSpec, Layer, ParamSpec
from cnnkit.ops._shared import BackendArg
from cnnkit.spec import FLOAT_DTYPES, OpSpec, PropertySkip, as_bool, as_float, as_int_tuple

__all__ = [
    "FUNCTIONS",
    "LAYERS",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "BatchNormSpec",
    "batch_norm",
]

rand = Seeds(70000)


def _positive(*shape: int) -> Random:
    """A variance-like input: uniform in [0.5, 2)."""
    r = rand(*shape)
    return Random(r.shape, seed=r.seed, low=0.5, high=2.0)


@functools.cache
def _cases() -> tuple[Case, ...]:
    return tuple(_case_list())


def _case_list() -> Iterator[Case]:
    shapes = {"2d": (4, 3), "1d": (3, 2, 5), "4d": (2, 3, 4, 3), "5d": (2, 2, 3, 2, 2)}
    for sid, shape in shapes.items():
        c = shape[1]
        for training in (True, False):
            mode = "train" if training else "eval"
            yield Case(
                f"batch_norm-{mode}-{sid}",
                "batch_norm",
                (rand(*shape, low=-2, high=3), rand(c), rand(c), rand(c), _positive(c)),
                {"training": training, "momentum": 0.1, "eps": 1e-5},
                tags=("normalization",),
            )
    x = rand(5, 4, 3, low=-1, high=2)
    yield Case(
        "batch_norm-train-no-affine-no-stats",
        "batch_norm",
        (x, None, None, None, None),
        {"training": True},
        tags=("normalization",),
    )
    yield Case(
        "batch_norm-train-weight-only-momentum0.5-eps0.1",
        "batch_norm",
        (rand(6, 2), rand(2), None, rand(2), _positive(2)),
        {"training": True, "momentum": 0.5, "eps": 0.1},
        tags=("normalization",),
    )
    yield Case(
        "batch_norm-eval-bias-only",
        "batch_norm",
        (rand(3, 2, 4), None, rand(2), rand(2), _positive(2)),
        {"training": False},
        tags=("normalization",),
    )
    # the lecture's numbers: a batch of two per channel normalises to -1, +1 (eps 0)
    yield Case(
        "batch_norm-golden-two-samples",
        "batch_norm",
        ([[1.0, 10.0], [3.0, 30.0]], None, None, [0.0, 0.0], [1.0, 1.0]),
        {"training": True, "eps": 0.0, "momentum": 1.0},
        expected=[[-1.0, -1.0], [1.0, 1.0]],
        tags=("golden", "normalization"),
    )
    yield Case(
        "batch_norm-golden-eval",
        "batch_norm",
        ([[1.0, 10.0]], [2.0, 1.0], [0.5, 0.0], [1.0, 6.0], [4.0, 16.0]),
        {"training": False, "eps": 0.0},
        expected=[[0.5, 1.0]],
        grad_output=[[1.0, 1.0]],
        expected_grads=([[1.0, 0.25]], [0.0, 1.0], [1.0, 1.0], None, None),
        tags=("golden", "normalization"),
    )
    x = rand(4, 3)
    ok = (rand(3), rand(3), rand(3), _positive(3))
    yield from error_cases(
        [
            (
                "batch_norm-error-running-mean-size",
                "batch_norm",
                (x, *ok[:2], rand(4), ok[3]),
                {},
                ValueError,
                "running_mean must have shape \\(3,\\)",
            ),
            (
                "batch_norm-error-running-var-size",
                "batch_norm",
                (x, *ok[:3], _positive(2)),
                {},
                ValueError,
                "running_var must have shape \\(3,\\)",
            ),
            (
                "batch_norm-error-weight-size",
                "batch_norm",
                (x, rand(2), *ok[1:]),
                {},
                ValueError,
                "weight must have shape \\(3,\\)",
            ),
            (
                "batch_norm-error-bias-size",
                "batch_norm",
                (x, ok[0], rand(5), *ok[2:]),
                {},
                ValueError,
                "bias must have shape \\(3,\\)",
            ),
            ("batch_norm-error-negative-eps", "batch_norm", (x, *ok), {"eps": -1e-5}, ValueError, "eps"),
            ("batch_norm-error-momentum", "batch_norm", (x, *ok), {"momentum": 1.5}, ValueError, "momentum"),
            (
                "batch_norm-error-momentum-none",
                "batch_norm",
                (x, *ok),
                {"momentum": None},
                TypeError,
                "momentum",
            ),
            ("batch_norm-error-training", "batch_norm", (x, *ok), {"training": 1}, TypeError, "training"),
            (
                "batch_norm-error-eval-without-stats",
                "batch_norm",
                (x, ok[0], ok[1], None, None),
                {"training": False},
                ValueError,
                "running_mean and running_var",
            ),
            (
                "batch_norm-error-one-value-per-channel",
                "batch_norm",
                (rand(1, 3), *ok),
                {"training": True},
                ValueError,
                "more than 1 value per channel",
            ),
            (
                "batch_norm-error-1d-input",
                "batch_norm",
                (rand(3), *ok),
                {},
                ValueError,
                "at least 2 dimensions",
            ),
        ]
    )


def running_statistics_update(run: Any) -> None:
    """Training moves the running statistics as torch does; evaluation leaves them alone."""
    x, _w, _b, rm, rv = run.inputs
    if rm is None:
        raise PropertySkip("no running statistics")
    _, attrs = run.canonical()
    be = run.backend
    rm_native, rv_native = be.asarray(np.array(rm)), be.asarray(np.array(rv))
    inputs = [be.asarray(np.array(a)) if a is not None else None for a in run.inputs[:3]]
    run.call([*inputs, rm_native, rv_native])
    want_mean, want_var = _updated(x.astype(np.float64), rm, rv, **attrs)
    run.compare("property: the running mean after one call", run.numpy(rm_native), want_mean)
    run.compare("property: the running variance after one call", run.numpy(rv_native), want_var)


def _updated(x, rm, rv, *, training, momentum, eps):
    """The running statistics after one call, from the definition (unbiased variance)."""
    if not training:
        return rm, rv
    c = x.shape[1]
    values = np.moveaxis(x, 1, 0).reshape(c, -1)  # (C, m)
    m = values.shape[1]
    mean = values.sum(axis=1) / m
    unbiased = ((values - mean[:, None]) ** 2).sum(axis=1) / (m - 1)
    return (1 - momentum) * rm + momentum * mean, (1 - momentum) * rv + momentum * unbiased


class BatchNormSpec(OpSpec):
    """Batch normalisation over the batch and spatial axes, per channel ``c`` of ``(N, C, *)``.

    Forward, with ``m = N·Π spatial`` values per channel:

    - training: ``μ_c = (1/m) Σ y``, ``σ²_c = (1/m) Σ (y - μ_c)²`` (biased), and the
      running statistics move in place, as torch's: ``r_μ ← (1 - M) r_μ + M μ``,
      ``r_σ² ← (1 - M) r_σ² + M σ² m/(m - 1)`` (the unbiased variance; ``M`` the momentum);
    - evaluation: ``μ = r_μ``, ``σ² = r_σ²`` (nothing moves);
    - ``ŷ = (y - μ) / √(σ² + ε)`` and ``a = γ ŷ + β`` (``γ`` weight, ``β`` bias, each optional).

    Backward, with ``g = δ γ``:

    - ``dE/dγ = Σ δ ŷ``, ``dE/dβ = Σ δ`` (sums over everything but the channel);
    - evaluation: ``δ_prev = g / √(σ² + ε)``;
    - training, through the mean and the variance:
      ``δ_prev = (g - mean(g) - ŷ · mean(g ŷ)) / √(σ² + ε)``.

    The running statistics are state (no gradient) and may have a wider floating dtype than
    the data (float32 beside float16, as torch allows). Inputs are taken in the order
    ``input, weight, bias, running_mean, running_var`` (the layer's parameters first).

    Canonical attributes: ``training`` (bool), ``momentum`` (float in ``[0, 1]``),
    ``eps`` (float ``>= 0``).
    """

    name = "batch_norm"
    inputs = ("input", "weight", "bias", "running_mean", "running_var")
    optional = frozenset({"weight", "bias", "running_mean", "running_var"})
    state_inputs = frozenset({"running_mean", "running_var"})
    defaults: Mapping[str, Any] = {"training": False, "momentum": 0.1, "eps": 1e-5}
    properties = (running_statistics_update,)

    def _check_dtypes(self, where, infos):
        # the running statistics may keep a wider dtype than the data (float32 beside float16, as torch)
        data = [None if n in self.state_inputs else info for n, info in zip(self.inputs, infos)]
        super()._check_dtypes(where, data)
        for name, info in zip(self.inputs, infos):
            if name in self.state_inputs and info is not None and info.dtype not in FLOAT_DTYPES:
                raise TypeError(
                    f"{where}: {name} must be a floating array ({', '.join(FLOAT_DTYPES)}), "
                    f"got dtype {info.dtype}"
                )

    def check(self, where, infos, attrs):
        x, weight, bias, running_mean, running_var = infos
        if x.ndim < 2:
            raise ValueError(f"{where}: input must have at least 2 dimensions (N, C, *), got shape {x.shape}")
        c = x.shape[1]
        for name, info in (
            ("weight", weight),
            ("bias", bias),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ):
            if info is not None and info.shape != (c,):
                raise ValueError(
                    f"{where}: {name} must have shape ({c},), one entry per channel of input "
                    f"{x.shape}, got {info.shape}"
                )
        training = as_bool(attrs["training"], "training", where)
        if attrs["momentum"] is None:
            raise TypeError(
                f"{where}: momentum must be a number in [0, 1], got None (the cumulative average of "
                f"momentum=None is the BatchNorm layers')"
            )
        momentum = as_float(attrs["momentum"], "momentum", where)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{where}: momentum must be in [0, 1], got {momentum}")
        eps = as_float(attrs["eps"], "eps", where)
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"{where}: eps must be a finite number >= 0, got {eps}")
        if (running_mean is None) != (running_var is None):
            raise ValueError(f"{where}: give both running_mean and running_var, or neither")
        if not training and running_mean is None:
            raise ValueError(
                f"{where}: evaluation (training=False) normalises with running_mean and running_var; "
                f"give them, or use training=True"
            )
        if training and math.prod(x.shape) // max(c, 1) <= 1 and c > 0:
            raise ValueError(
                f"{where}: expected more than 1 value per channel when training, got input {x.shape}"
            )
        return {"training": training, "momentum": momentum, "eps": eps}

    def output_shape(self, infos, attrs):
        return infos[0].shape

    def cases(self):
        return _cases()

    def oracle(self, x, weight, bias, running_mean, running_var, *, training, momentum, eps):
        c = x.shape[1]
        out = np.empty_like(x)
        for k in range(c):  # one channel at a time, as the definition reads
            values = x[:, k]
            if training:
                mu = values.mean()
                var = ((values - mu) ** 2).mean()
            else:
                mu, var = running_mean[k], running_var[k]
            y_hat = (values - mu) / np.sqrt(var + eps)
            gamma = 1.0 if weight is None else weight[k]
            beta = 0.0 if bias is None else bias[k]
            out[:, k] = gamma * y_hat + beta
        return out


# -- the function ----------------------------------------------------------------------------


def batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    backend: BackendArg = None,
) -> Any:
    """Batch normalisation: ``a = γ (y - μ) / √(σ² + ε) + β`` per channel.

    In training, ``μ`` and ``σ²`` are the batch's (biased variance) and the running
    statistics are updated in place, as torch's: ``r ← (1 - momentum) r + momentum · s``
    with the *unbiased* batch variance for ``r_σ²``. In evaluation the running
    statistics normalise and nothing changes. The backward through the mean and the
    variance is derived by hand (see :class:`BatchNormSpec`).

    Args:
        input: ``(N, C, *)``, with at least 2 dimensions.
        running_mean, running_var: ``(C,)`` arrays of the backend (updated in place when
            ``training``), or ``None`` (then ``training`` must be ``True``).
        weight, bias: ``γ`` and ``β``, ``(C,)`` each, or ``None``.
        training: use the batch's statistics and update the running ones (default ``False``).
        momentum: the running statistics' update factor, in ``[0, 1]`` (default 0.1).
        eps: added to the variance, ``>= 0`` (default 1e-5).
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The normalised input, in its dtype.

    Raises:
        ValueError: ``weight``, ``bias`` or a running statistic that is not ``(C,)``, a
            negative ``eps``, ``momentum`` outside ``[0, 1]``, evaluation without running
            statistics, a single value per channel in training.
        TypeError: a ``training`` that is not a bool, a non-numeric ``momentum`` or ``eps``.

    Example:
        >>> import numpy as np
        >>> rm, rv = np.zeros(1), np.ones(1)
        >>> batch_norm(np.array([[1.0], [3.0]]), rm, rv, training=True, eps=0.0).ravel().tolist()
        [-1.0, 1.0]
        >>> rm.tolist(), rv.round(6).tolist()
        ([0.2], [1.1])
    """
    return call(
        "batch_norm",
        input,
        weight,
        bias,
        running_mean,
        running_var,
        backend=backend,
        where="batch_norm",
        training=training,
        momentum=momentum,
        eps=eps,
    )


# -- the layers ------------------------------------------------------------------------------


class _BatchNorm(Layer):
    """Batch norm over ``(N, C, *)``; the ``d``-D layers fix how many dimensions ``*`` has."""

    param_names = ("weight", "bias")
    buffer_names = ("running_mean", "running_var", "num_batches_tracked")
    #: The input dimensions the layer accepts (torch's).
    ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        backend: BackendArg = None,
    ) -> None:
        super().__init__()
        where = type(self).__name__
        (self.num_features,) = as_int_tuple(num_features, 1, "num_features", where)
        self.eps = as_float(eps, "eps", where)
        if not (self.eps >= 0.0 and math.isfinite(self.eps)):
            raise ValueError(f"{where}: eps must be a finite number >= 0, got {self.eps}")
        if momentum is None:
            self.momentum = None
        else:
            self.momentum = as_float(momentum, "momentum", where)
            if not 0.0 <= self.momentum <= 1.0:
                raise ValueError(f"{where}: momentum must be in [0, 1] or None, got {self.momentum}")
        self.affine = as_bool(affine, "affine", where)
        self.track_running_stats = as_bool(track_running_stats, "track_running_stats", where)
        self.init_parameters(backend=backend)

    def param_specs(self):
        c = self.num_features
        if not self.affine:
            return {"weight": None, "bias": None}
        return {"weight": ParamSpec((c,), c, "ones"), "bias": ParamSpec((c,), c, "zeros")}

    def buffer_specs(self):
        c = self.num_features
        if not self.track_running_stats:
            return {"running_mean": None, "running_var": None, "num_batches_tracked": None}
        return {
            "running_mean": BufferSpec((c,), 0.0),
            "running_var": BufferSpec((c,), 1.0),
            "num_batches_tracked": BufferSpec((), 0, integer=True),
        }

    def function(self, x, weight, bias, running_mean, running_var, num_batches_tracked):
        where = type(self).__name__
        ndim = len(x.shape) if hasattr(x, "shape") else np.ndim(x)
        if ndim not in self.ndims:
            want = " or ".join(f"{n}D" for n in self.ndims)
            raise ValueError(f"{where}: expected {want} input, got {ndim}D input")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and num_batches_tracked is not None:
            num_batches_tracked += 1  # in place, as torch's buffer
            if self.momentum is None:  # the cumulative average
                factor = 1.0 / float(num_batches_tracked)
        use_batch = self.training or running_mean is None
        track = not self.training or self.track_running_stats
        return batch_norm(
            x,
            running_mean if track else None,
            running_var if track else None,
            weight,
            bias,
            use_batch,
            factor,
            self.eps,
        )

    def config(self):
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }

    def extra_repr(self):
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )


_LAYER_DOC = """Batch normalisation of ``{shape}`` per channel: ``a = γ (y - μ) / √(σ² + ε) + β``.

    In training mode (:meth:`~cnnkit.layer.Layer.train`) ``μ, σ²`` are the batch's and the
    running statistics move by ``momentum`` (``None``: their cumulative average over the
    ``num_batches_tracked`` batches); in evaluation mode (:meth:`~cnnkit.layer.Layer.eval`)
    the running statistics normalise. The formulas are :class:`BatchNormSpec`'s.

    Args:
        num_features: ``C``, the channels.
        eps: added to the variance (default 1e-5).
        momentum: the running statistics' update factor, or ``None`` (default 0.1).
        affine: learn ``γ`` (``weight``, starts at 1) and ``β`` (``bias``, starts at 0).
        track_running_stats: keep ``running_mean``, ``running_var`` and
            ``num_batches_tracked`` buffers (``False``: batch statistics in both modes).
        backend: the backend the parameters and buffers live on (default: the active one).

    Shape:
        input ``{shape}`` -> output of the same shape.

    Returns:
        ``forward(x)`` returns the normalised input; its state-dict keys are torch's
        (``weight, bias, running_mean, running_var, num_batches_tracked``).

    Raises:
        ValueError: an input of another number of dimensions, or what
            :func:`batch_norm` raises.

    Example:
        >>> import numpy as np
        >>> bn = {name}(2)
        >>> y = bn(np.arange({size}, dtype=np.float32).reshape({example}))
        >>> bn.running_mean.data.shape, int(bn.num_batches_tracked.data)
        ((2,), 1)
    """


class BatchNorm1d(_BatchNorm):
    __doc__ = _LAYER_DOC.format(name="BatchNorm1d", shape="(N, C) or (N, C, L)", size=8, example="2, 2, 2")
    ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    __doc__ = _LAYER_DOC.format(name="BatchNorm2d", shape="(N, C, H, W)", size=16, example="2, 2, 2, 2")
    ndims = (4,)


class BatchNorm3d(_BatchNorm):
    __doc__ = _LAYER_DOC.format(name="BatchNorm3d", shape="(N, C, D, H, W)", size=32, example="2, 2, 2, 2, 2")
    ndims = (5,)


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (batch_norm,)
LAYERS = (BatchNorm1d, BatchNorm2d, BatchNorm3d)
#: The family's op records.
SPECS = (BatchNormSpec(),)
