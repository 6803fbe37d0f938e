"""The learning loop: mini-batch SGD with the layers' hand-derived ``backward``.

One step is the lecture's recipe: forward through the network, the loss, its
gradient ``δ = dE/dz``, ``backward`` through the layers in reverse (each
leaving ``dE/dW`` in its parameters), then ``w <- w - η dE/dw``.
Everything random (the initial weights, the order of the examples) comes from
seeds, so a run repeats exactly, and the same seed gives the same run on every
backend up to floating-point rounding.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np

from cnnkit.backend import Backend
from cnnkit.layers import Layer
from cnnkit.losses import CrossEntropyLoss
from cnnkit.optim import SGD, LRScheduler, make_scheduler
from cnnkit.registry import get_backend

__all__ = ["History", "evaluate", "fit", "predict"]


@dataclass
class History:
    """Per-epoch figures of a :func:`fit` run (lists, one entry per epoch)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list]:
        """The history as a JSON-ready dict."""
        return asdict(self)


def _model_backend(model: Layer) -> tuple[Backend, str]:
    params = model.parameters()
    if not params:
        be = get_backend()
        return be, be.default_dtype
    from cnnkit.layers import backend_of

    be = backend_of(params[0].data)
    return be, be.dtype_name(params[0].data)


class _Progress:
    """A one-line progress bar on a stream (stderr), redrawn in place."""

    def __init__(self, total: int, label: str, stream: TextIO | None, width: int = 24) -> None:
        self.total, self.label, self.stream, self.width = total, label, stream, width

    def update(self, done: int, loss: float) -> None:
        if self.stream is None:
            return
        filled = round(self.width * done / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{self.total} loss {loss:.4f}")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.write("\r" + " " * (len(self.label) + self.width + 40) + "\r")
            self.stream.flush()


def predict(model: Layer, X: Any, *, batch_size: int = 256, shifts: Sequence[int] = ()) -> np.ndarray:
    """The model's outputs (logits) for ``X``, as a NumPy array, computed in batches.

    Args:
        model: any layer (usually a :class:`cnnkit.layers.Sequential`).
        X: inputs ``(N, ...)``, a NumPy array or the backend's; the model runs in
            evaluation mode (:meth:`cnnkit.layer.Layer.eval`), then gets its mode back.
        batch_size: examples per forward pass.
        shifts: test-time augmentation: the mean of the logits of ``X`` rolled
            circularly by each of these shifts along its last axis (``(-1, 0, 1)``:
            three views of every signal); empty (the default): ``X`` as it is.

    Returns:
        ``(N, classes)`` NumPy array.

    Example:
        >>> from cnnkit.layers import Flatten, Linear, Sequential
        >>> m = Sequential(Flatten(), Linear(4, 2, seed=0))
        >>> X = np.ones((3, 1, 4), dtype=np.float32)
        >>> bool(np.allclose(predict(m, X, shifts=(-1, 0, 1)), predict(m, X)))  # a constant signal
        True
    """
    if len(shifts):
        Xn = np.asarray(X if isinstance(X, np.ndarray) else _model_backend(model)[0].to_numpy(X))
        views = [predict(model, np.roll(Xn, int(k), axis=-1), batch_size=batch_size) for k in shifts]
        return np.mean(views, axis=0)
    be, dtype = _model_backend(model)
    X = X if be.is_native(X) else np.asarray(X)
    outs = []
    was_training = model.training
    model.eval()  # dropout passes through, batch norm uses its running statistics
    try:
        for start in range(0, len(X), batch_size):
            # the model's backend and dtype (a float32 batch for a float64 model is cast, not refused)
            xb = be.asarray(X[start : start + batch_size], dtype=dtype)
            outs.append(np.asarray(be.to_numpy(model.infer(xb))))
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,))


def evaluate(
    model: Layer, X: Any, y: Any, *, batch_size: int = 256, shifts: Sequence[int] = ()
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (0..1) of ``model`` on ``(X, y)``, in evaluation mode.

    ``shifts``: test-time augmentation, as :func:`predict` (the loss is that of the mean logits).

    Example:
        >>> from cnnkit.models import build_model
        >>> from cnnkit.data import digits_split
        >>> s = digits_split()
        >>> loss, acc = evaluate(build_model("digits-cnn", seed=0), s.X_test, s.y_test)
        >>> 0 <= acc <= 1
        True
    """
    logits = predict(model, X, batch_size=batch_size, shifts=shifts)
    y = np.asarray(y, dtype=np.int64)
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = float(-logp[np.arange(len(y)), y].mean())
    return loss, float((logits.argmax(axis=1) == y).mean())


def fit(
    model: Layer,
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    lr_schedule: str = "constant",
    seed: int = 0,
    optimizer: Any = None,
    scheduler: LRScheduler | None = None,
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    loss: CrossEntropyLoss | None = None,
    progress: bool | None = None,
    on_epoch: Callable[[int, History], None] | None = None,
) -> History:
    """Train ``model`` with mini-batch SGD on the backend its parameters live on.

    Each epoch visits the training examples in an order drawn from
    ``numpy.random.default_rng(seed)`` (the last batch may be smaller) in training
    mode (:meth:`cnnkit.layer.Layer.train`), then evaluates on the held-out set if
    one is given, in evaluation mode. The model is left in training mode.

    Args:
        model: the network (its ``forward``/``backward`` are used).
        X_train, y_train: training inputs ``(N, ...)`` and int labels ``(N,)`` (NumPy).
        X_test, y_test: held-out data, or ``None``.
        epochs: passes over the training data.
        batch_size: examples per SGD step.
        lr, momentum, weight_decay, nesterov: for the default :class:`cnnkit.optim.SGD`.
        lr_schedule: ``"constant"`` (default), ``"cosine"`` or ``"step"``: the
            per-epoch schedule :func:`cnnkit.optim.make_scheduler` builds for ``epochs``.
        seed: seeds the shuffling.
        optimizer: use this optimiser instead (:class:`cnnkit.optim.SGD`, :class:`~cnnkit.optim.Adam`,
            :class:`~cnnkit.optim.AdamW` or anything with ``lr``, ``zero_grad()`` and ``step()``).
        scheduler: use this schedule (built on ``optimizer``) instead of ``lr_schedule``;
            its ``step()`` is called after every epoch.
        augment: ``augment(xb, rng) -> xb``, applied to every training batch (a NumPy
            array) before it goes to the backend, with a generator seeded by ``seed``
            apart from the shuffling (so the order of the examples is the same with
            and without it); e.g. :func:`cnnkit.data.augment_signals`. Labels are kept.
        loss: use this loss instead of :class:`cnnkit.losses.CrossEntropyLoss`.
        progress: draw a progress bar on stderr (default: when stderr is a terminal).
        on_epoch: called as ``on_epoch(epoch, history)`` after each epoch.

    Returns:
        The :class:`History`: per-epoch train loss / accuracy (averaged over the
        epoch's batches, weighted by batch size), held-out loss / accuracy
        (``nan`` without held-out data), the epoch's learning rate and seconds.

    Raises:
        ValueError: ``epochs`` or ``batch_size`` < 1, inputs and labels of different lengths.

    Example:
        >>> from cnnkit.models import build_model
        >>> from cnnkit.data import digits_split
        >>> s = digits_split()
        >>> h = fit(build_model("digits-cnn"), s.X_train[:64], s.y_train[:64], epochs=1)
        >>> len(h.train_loss)
        1
    """
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit: epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if len(X_train) != len(y_train):
        raise ValueError(f"fit: X_train has {len(X_train)} examples but y_train has {len(y_train)}")
    be, dtype = _model_backend(model)
    optimizer = optimizer or SGD(
        model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
    )
    if scheduler is None:
        scheduler = make_scheduler(lr_schedule, optimizer, epochs)
    elif scheduler.optimizer is not optimizer:
        raise ValueError("fit: scheduler must be built on the optimizer that fit uses (pass both)")
    loss_fn = loss or CrossEntropyLoss()
    X_np = np.asarray(X_train)
    X = be.asarray(X_np, dtype=dtype)
    y_np = np.asarray(y_train, dtype=np.int64)
    y = be.asarray(y_np)
    n = len(y_np)
    rng = np.random.default_rng(seed)
    aug_rng = np.random.default_rng([seed, 1])
    stream = sys.stderr if (progress if progress is not None else sys.stderr.isatty()) else None
    history = History()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        epoch_lr = float(optimizer.lr)
        order = rng.permutation(n)
        model.train()  # dropout drops, batch norm normalises by the batch (evaluate switches back)
        bar = _Progress(n, f"epoch {epoch}/{epochs}", stream)
        total_loss, correct = 0.0, 0
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            bidx = be.asarray(idx)
            if augment is None:
                xb = X[bidx]
            else:
                xb = be.asarray(np.asarray(augment(X_np[idx], aug_rng)), dtype=dtype)
            yb = y[bidx]
            logits = model.forward(xb)
            batch_loss = float(be.to_numpy(loss_fn.forward(logits, yb)))
            optimizer.zero_grad()
            model.backward(loss_fn.backward())
            optimizer.step()
            total_loss += batch_loss * len(idx)
            correct += int((np.asarray(be.to_numpy(logits)).argmax(axis=1) == y_np[idx]).sum())
            bar.update(min(b + batch_size, n), total_loss / min(b + batch_size, n))
        bar.close()
        history.epoch.append(epoch)
        history.train_loss.append(total_loss / n)
        history.train_acc.append(correct / n)
        if X_test is not None and y_test is not None:
            test_loss, test_acc = evaluate(model, X_test, y_test)
        else:
            test_loss, test_acc = float("nan"), float("nan")
        history.test_loss.append(test_loss)
        history.test_acc.append(test_acc)
        history.lr.append(epoch_lr)
        scheduler.step()
        history.seconds.append(time.perf_counter() - start)
        if on_epoch is not None:
            on_epoch(epoch, history)
    return history
