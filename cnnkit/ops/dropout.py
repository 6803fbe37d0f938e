"""The dropout record: ``dropout``, ``dropout1d/2d/3d`` (whole channels), their layers.

Dropout draws a random mask, so two backends never agree value by value in
training: the record's cases compare by value where the op is deterministic
(``p = 0``, ``training=False``) and its properties check what holds for every
mask on every backend: each entry of the mask is 0 or ``1/(1 - p)``, the
gradient uses the forward's mask, the expected value is preserved over many
draws, dropoutNd zeroes whole channels, a seed repeats the mask.

Randomness, per backend: the NumPy kernel draws from the ``generator`` passed
(a ``numpy.random.Generator`` or an int seed) or else from cnnkit's own
generator (:func:`manual_seed` seeds it); the torch kernel from the
``torch.Generator`` passed (or an int seed's) or else torch's default one
(``torch.manual_seed``). The NumPy kernel is ``cnnkit_numpy.ops.dropout_*``;
the torch kernel ``cnnkit_torch.ops.Dropout``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from cnnkit.conformance.cases import Case, Seeds, error_cases
from cnnkit.dispatch import call, vjp
from cnnkit.layer import Layer
from cnnkit.ops._shared import BackendArg
from cnnkit.spec import OpSpec, PropertySkip, as_bool, as_float

__all__ = [
    "FUNCTIONS",
    "LAYERS",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "DropoutSpec",
    "default_generator",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "manual_seed",
]

rand = Seeds(80000)

_GENERATOR = [np.random.default_rng()]


def manual_seed(seed: int) -> None:
    """Seed cnnkit's own generator, the one the NumPy backend's dropout draws from by default.

    The torch backend draws from torch's generator: seed it with ``torch.manual_seed``.

    Example:
        >>> import numpy as np
        >>> manual_seed(0); a = dropout(np.ones(8))
        >>> manual_seed(0); b = dropout(np.ones(8))
        >>> bool((a == b).all())
        True
    """
    _GENERATOR[0] = np.random.default_rng(seed)


def default_generator() -> np.random.Generator:
    """cnnkit's own generator (see :func:`manual_seed`)."""
    return _GENERATOR[0]


@functools.cache
def _cases() -> tuple[Case, ...]:
    return tuple(_case_list())


def _case_list() -> Iterator[Case]:
    for dims, shape in (
        (None, (3, 4)),
        (None, (2, 3, 4, 5)),
        (1, (2, 3, 6)),
        (2, (2, 3, 4, 4)),
        (3, (2, 2, 3, 2, 2)),
    ):
        op = "dropout" if dims is None else f"dropout{dims}d"
        sid = "x".join(map(str, shape))
        attrs: dict[str, Any] = {} if dims is None else {"dims": dims}
        yield Case(f"{op}-p0-{sid}", "dropout", (rand(*shape),), {**attrs, "p": 0.0}, tags=("dropout",))
        yield Case(
            f"{op}-eval-{sid}",
            "dropout",
            (rand(*shape),),
            {**attrs, "p": 0.4, "training": False},
            tags=("dropout",),
        )
    yield Case(
        "dropout2d-unbatched-eval",
        "dropout",
        (rand(3, 4, 4),),
        {"dims": 2, "training": False},
        tags=("dropout",),
    )
    x = rand(3, 4)
    yield from error_cases(
        [
            ("dropout-error-p-negative", "dropout", (x,), {"p": -0.1}, ValueError, "p must be in \\[0, 1\\)"),
            ("dropout-error-p-one", "dropout", (x,), {"p": 1.0}, ValueError, "p must be in \\[0, 1\\)"),
            ("dropout-error-p-string", "dropout", (x,), {"p": "0.5"}, TypeError, "p must be a number"),
            ("dropout-error-training", "dropout", (x,), {"training": "yes"}, TypeError, "training"),
            ("dropout-error-dims", "dropout", (x,), {"dims": 4}, ValueError, "dims"),
            (
                "dropout2d-error-ndim",
                "dropout",
                (x,),
                {"dims": 2},
                ValueError,
                "input must have 4 dimensions",
            ),
            ("dropout-error-generator", "dropout", (x,), {"generator": "seed"}, TypeError, "generator"),
        ]
    )


# -- properties: what holds for every mask ------------------------------------------------------


def _random_run(run: Any, p: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The case's input dropped in training with ``p`` and a seed: ``(x, a, δ, δ_prev)``."""
    attrs = {**run.case.attrs, "p": p, "training": True, "generator": seed}
    x = run.inputs[0]
    native = run.backend.asarray(x)
    out, pullback = vjp("dropout", native, backend=run.backend, **attrs)
    g = run.rng("dropout-grad").uniform(-1, 1, size=x.shape).astype(x.dtype)
    (dx,) = pullback(run.backend.asarray(g))
    return x.astype(np.float64), run.numpy(out), g.astype(np.float64), run.numpy(dx)


def mask_values(run: Any) -> None:
    """Every entry is dropped (0) or kept and scaled by ``1/(1 - p)``; the gradient uses the same mask."""
    p = 0.4
    x, a, g, dx = _random_run(run, p, seed=7)
    kept = a != 0
    _, attrs = run.canonical()
    units = int(np.prod(x.shape[: attrs["mask_dims"]]))  # independent draws
    if units >= 16 and (kept.all() or not kept.any()):  # 0.6**16: a broken mask, not bad luck
        raise run.fail("property: a mask with p = 0.4 kept all or nothing of the input")
    scale = 1.0 / (1.0 - p)
    run.compare("property: kept entries are y / (1 - p), dropped ones 0", a, np.where(kept, x * scale, 0.0))
    run.compare("property: the gradient is δ ⊙ the forward's mask", dx, np.where(kept, g * scale, 0.0))
    again = _random_run(run, p, seed=7)[1]
    run.compare("property: the same seed draws the same mask", again, a)


def whole_channels(run: Any) -> None:
    """dropout1d/2d/3d drop whole channels: each ``(n, c)`` slice is all kept or all zero."""
    _, attrs = run.canonical()
    k = attrs["mask_dims"]
    x = run.inputs[0]
    if k == x.ndim:
        raise PropertySkip("element-wise dropout")
    _, a, _, _ = _random_run(run, 0.5, seed=11)
    flat = (a != 0).reshape(*x.shape[:k], -1)
    mixed = flat.any(axis=-1) & ~flat.all(axis=-1)
    if mixed.any():
        raise run.fail(f"property: {int(mixed.sum())} channel(s) are partly dropped")
    run.compared += 1


def expectation(run: Any) -> None:
    """Over many draws the mean of ``dropout(y)`` is ``y``: ``E[mask] = 1``."""
    x = run.inputs[0]
    p, draws = 0.3, 4000
    ones = np.ones((draws, *x.shape[1:]), dtype=x.dtype)  # many samples: one mask each (or per channel)
    out = run.numpy(
        call(
            "dropout",
            run.backend.asarray(ones),
            backend=run.backend,
            **{**run.case.attrs, "p": p, "training": True, "generator": 5},
        )
    )
    mean = out.mean(axis=0)
    # each unit's mean over `draws` masks: std sqrt(p/(1-p)/draws) ≈ 0.01; allow 6 of them
    bound = 6 * np.sqrt(p / (1 - p) / draws)
    worst = float(np.abs(mean - 1.0).max())
    if worst > bound:
        raise run.fail(f"property: the mean over {draws} draws is off by {worst:.4g} > {bound:.4g}")
    run.compared += 1


class DropoutSpec(OpSpec):
    """Dropout: ``a = y ⊙ mask`` with ``mask = keep / (1 - p)``, ``keep ~ Bernoulli(1 - p)``.

    Element-wise (``dims=None``), or per channel (``dims`` 1, 2, 3: dropout1d/2d/3d, one
    draw per ``(n, c)`` that zeroes the whole channel). In evaluation
    (``training=False``) or for ``p = 0`` it is the identity. ``E[a] = y``.

    Backward: ``δ_prev = δ ⊙ mask``, the forward's very mask.

    Canonical attributes: ``p`` (float in ``[0, 1)``), ``training`` (bool),
    ``mask_dims`` (the leading axes the mask varies over: the input's ndim
    element-wise, 2 per channel, 1 per channel of an unbatched input) and
    ``generator`` (``None``, an int seed, or the backend's generator).
    """

    name = "dropout"
    defaults: Mapping[str, Any] = {"p": 0.5, "training": True, "dims": None, "generator": None}
    properties = (mask_values, whole_channels, expectation)

    def check(self, where, infos, attrs):
        (x,) = infos
        p = as_float(attrs["p"], "p", where)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"{where}: p must be in [0, 1), the probability of dropping a unit, got {p}")
        training = as_bool(attrs["training"], "training", where)
        dims = attrs["dims"]
        if dims is None:
            mask_dims = x.ndim
        else:
            if isinstance(dims, bool) or dims not in (1, 2, 3):
                raise ValueError(f"{where}: dims must be None, 1, 2 or 3, got {dims!r}")
            if x.ndim not in (dims + 1, dims + 2):
                raise ValueError(
                    f"{where}: input must have {dims + 2} dimensions (N, C, *spatial) or {dims + 1} "
                    f"(C, *spatial), got shape {x.shape}"
                )
            mask_dims = x.ndim - dims
        generator = attrs["generator"]
        if generator is not None:
            is_seed = isinstance(generator, numbers.Integral) and not isinstance(generator, bool)
            if is_seed and generator < 0:
                raise ValueError(f"{where}: generator seed must be >= 0, got {generator}")
            if not (is_seed or type(generator).__name__ == "Generator"):
                raise TypeError(
                    f"{where}: generator must be None, an int seed or the backend's generator "
                    f"(numpy.random.Generator, torch.Generator), got {type(generator).__name__}"
                )
        return {"p": p, "training": training, "mask_dims": mask_dims, "generator": generator}

    def output_shape(self, infos, attrs):
        return infos[0].shape

    def cases(self):
        return _cases()

    def oracle(self, x, *, p, training, mask_dims, generator):
        if training and p > 0:
            raise NotImplementedError("a random mask has no oracle")
        return x


# -- the functions ---------------------------------------------------------------------------

_FN_DOC = """{summary}

    In training each {unit} is zeroed with probability ``p`` and the rest are scaled by
    ``1/(1 - p)``, so ``E[output] = input``; in evaluation (``training=False``) it is the
    identity. The gradient is ``δ ⊙ mask``, the forward's mask.

    Args:
        input: {shape}.
        p: the probability of dropping, in ``[0, 1)`` (default 0.5).
        training: drop (default ``True``) or pass through.
        inplace: accepted for ``torch.nn.functional`` compatibility; the result is always a new array.
        generator: where the mask comes from: an int seed, the backend's generator
            (``numpy.random.Generator``, ``torch.Generator``), or ``None``: cnnkit's own
            generator on NumPy (:func:`manual_seed`), torch's default on torch.
        backend: the backend to run on (default: the active one).

    Shape:
        output: the input's shape.

    Returns:
        The dropped input, in its dtype.

    Raises:
        ValueError: ``p`` outside ``[0, 1)``{raises}.
        TypeError: a non-numeric ``p``, a ``training`` that is not a bool, a bad ``generator``.

    Example:
        >>> import numpy as np
        >>> y = {name}(np.ones({example}), 0.5, generator=0)
        >>> set(y.ravel().tolist()) <= {{0.0, 2.0}}
        True
"""


def _dropout(
    where: str,
    dims: int | None,
    input: Any,
    p: float,
    training: bool,
    inplace: bool,
    generator: Any,
    backend: BackendArg,
) -> Any:
    as_bool(inplace, "inplace", where)
    return call(
        "dropout", input, backend=backend, where=where, p=p, training=training, dims=dims, generator=generator
    )


def dropout(
    input: Any,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Any = None,
    backend: BackendArg = None,
) -> Any:
    return _dropout("dropout", None, input, p, training, inplace, generator, backend)


def dropout1d(
    input: Any,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Any = None,
    backend: BackendArg = None,
) -> Any:
    return _dropout("dropout1d", 1, input, p, training, inplace, generator, backend)


def dropout2d(
    input: Any,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Any = None,
    backend: BackendArg = None,
) -> Any:
    return _dropout("dropout2d", 2, input, p, training, inplace, generator, backend)


def dropout3d(
    input: Any,
    p: float = 0.5,
    training: bool = True,
    inplace: bool = False,
    *,
    generator: Any = None,
    backend: BackendArg = None,
) -> Any:
    return _dropout("dropout3d", 3, input, p, training, inplace, generator, backend)


for _fn, _d, _shape in (
    (dropout, None, (4,)),
    (dropout1d, 1, (1, 2, 2)),
    (dropout2d, 2, (1, 2, 1, 2)),
    (dropout3d, 3, (1, 2, 1, 1, 2)),
):
    _fn.__doc__ = _FN_DOC.format(
        summary=(
            "Dropout: zero each unit with probability ``p`` and scale the rest by ``1/(1 - p)``."
            if _d is None
            else f"Channel dropout ({_d}-D): zero whole channels with probability ``p``, scale the rest."
        ),
        unit="unit" if _d is None else f"channel (an ``(n, c)`` {_d}-D slice)",
        shape="any shape"
        if _d is None
        else f"``(N, C, {', '.join('DHW'[3 - _d :])})`` or unbatched ``(C, {', '.join('DHW'[3 - _d :])})``",
        raises="" if _d is None else f", an input with neither {_d + 2} nor {_d + 1} dimensions",
        name=_fn.__name__,
        example=_shape,
    )


# -- the layers ------------------------------------------------------------------------------


class _DropoutLayer(Layer):
    dims: int | None = None

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        where = type(self).__name__
        self.p = as_float(p, "p", where)
        if not 0.0 <= self.p < 1.0:
            raise ValueError(
                f"{where}: p must be in [0, 1), the probability of dropping a unit, got {self.p}"
            )
        self.inplace = as_bool(inplace, "inplace", where)

    def function(self, x):
        where = type(self).__name__.lower()
        return call("dropout", x, where=where, p=self.p, training=self.training, dims=self.dims)

    def config(self):
        return {"p": self.p, **({"inplace": True} if self.inplace else {})}

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"


_LAYER_DOC = """{summary}

    Training mode (:meth:`~cnnkit.layer.Layer.train`) drops with probability ``p`` and
    scales by ``1/(1 - p)``; evaluation mode (:meth:`~cnnkit.layer.Layer.eval`) is the
    identity. The backward multiplies by the forward's mask.

    Args:
        p: the probability of dropping, in ``[0, 1)`` (default 0.5).
        inplace: accepted for ``torch.nn`` compatibility; the result is always a new array.

    Shape:
        {shape}; the output has the input's.

    Returns:
        ``forward(x)`` returns the dropped input.

    Raises:
        ValueError: ``p`` outside ``[0, 1)``.

    Example:
        >>> import numpy as np
        >>> layer = {name}(0.5).eval()
        >>> layer(np.ones({example})).shape
        {example}
    """


class Dropout(_DropoutLayer):
    __doc__ = _LAYER_DOC.format(
        summary="Dropout of single units.", shape="any shape", name="Dropout", example=(2, 3)
    )


class Dropout1d(_DropoutLayer):
    __doc__ = _LAYER_DOC.format(
        summary="Dropout of whole channels of ``(N, C, L)``.",
        shape="``(N, C, L)`` or ``(C, L)``",
        name="Dropout1d",
        example=(2, 3, 4),
    )
    dims = 1


class Dropout2d(_DropoutLayer):
    __doc__ = _LAYER_DOC.format(
        summary="Dropout of whole channels of ``(N, C, H, W)``.",
        shape="``(N, C, H, W)`` or ``(C, H, W)``",
        name="Dropout2d",
        example=(2, 3, 4, 4),
    )
    dims = 2


class Dropout3d(_DropoutLayer):
    __doc__ = _LAYER_DOC.format(
        summary="Dropout of whole channels of ``(N, C, D, H, W)``.",
        shape="``(N, C, D, H, W)`` or ``(C, D, H, W)``",
        name="Dropout3d",
        example=(1, 2, 2, 2, 2),
    )
    dims = 3


#: What :mod:`cnnkit.functional` and :mod:`cnnkit.layers` show of this family.
FUNCTIONS = (dropout, dropout1d, dropout2d, dropout3d)
LAYERS = (Dropout, Dropout1d, Dropout2d, Dropout3d)
#: The family's op records.
SPECS = (DropoutSpec(),)
