"""Small data sets that ship with cnnkit or are generated: nothing is downloaded.

- :func:`load_digits`: the 1,797 8x8 handwritten digits of the UCI "Optical
  Recognition of Handwritten Digits" data set (Alpaydin & Kaynak, 1998;
  CC BY 4.0), the same images as scikit-learn's ``load_digits``. The file and
  its attribution live in ``cnnkit/data/``.
- :func:`make_timeseries`: a synthetic 1-D task for ``Conv1d``: a short
  waveform (sine, square, sawtooth or burst) placed at a random shift in a
  noisy series. The class does not depend on where the pattern sits, which a
  stride-1 convolution followed by global max pooling captures: convolution is
  translation-equivariant, the global maximum translation-invariant.
- :func:`load_mnist1d`: MNIST-1D (Greydanus, "Scaling down deep learning",
  2020; Apache-2.0), 4,000 training and 1,000 held-out signals of length 40,
  generated on the spot by the ``mnist1d`` package's own ``make_dataset``
  with its default arguments (``pip install 'cnnkit[data]'``); never its
  ``get_dataset``, which downloads and unpickles.
- :func:`train_test_split`: a seeded, stratified split (a quarter held out by default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DIGITS_PATH",
    "MNIST1D_INSTALL",
    "TASK_NAMES",
    "TIMESERIES_CLASSES",
    "MissingExtraError",
    "Split",
    "augment_signals",
    "digits_split",
    "load_digits",
    "load_mnist1d",
    "load_task",
    "make_timeseries",
    "mnist1d_split",
    "timeseries_split",
    "train_test_split",
]

#: The shipped digits file: ``images`` uint8 (1797, 8, 8) in 0..16, ``labels`` uint8 (1797,).
DIGITS_PATH = Path(__file__).parent / "data" / "digits.npz"
#: Class names of :func:`make_timeseries`, by label.
TIMESERIES_CLASSES = ("sine", "square", "sawtooth", "burst")


#: What to install for :func:`load_mnist1d`.
MNIST1D_INSTALL = "pip install 'cnnkit[data]'"


class MissingExtraError(ImportError):
    """An optional dependency is missing; the message is one line saying what to install."""


class Split(NamedTuple):
    """A train / held-out split: inputs ``(N, C, *spatial)`` float32 and labels ``(N,)`` int64."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def load_digits(*, scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits (1,797 images, 10 classes), offline.

    Args:
        scale: return float32 images divided by 16 (in ``[0, 1]``, shape
            ``(1797, 1, 8, 8)``, ready for ``Conv2d``); ``False`` gives the raw
            uint8 counts 0..16 with shape ``(1797, 8, 8)``.

    Returns:
        ``(images, labels)``, labels int64 in ``0..9``.

    Example:
        >>> X, y = load_digits()
        >>> X.shape, X.dtype.name, y[:5].tolist()
        ((1797, 1, 8, 8), 'float32', [0, 1, 2, 3, 4])
    """
    with np.load(DIGITS_PATH, allow_pickle=False) as f:
        images, labels = f["images"], f["labels"].astype(np.int64)
    if not scale:
        return images, labels
    return (images[:, None].astype(np.float32) / np.float32(16.0)), labels


def train_test_split(
    X: np.ndarray, y: np.ndarray, *, test_fraction: float = 0.25, seed: int = 0, stratify: bool = True
) -> Split:
    """Hold out ``test_fraction`` of the examples, seeded, per class when ``stratify``.

    Args:
        X: inputs, first axis the examples.
        y: integer labels ``(N,)``.
        test_fraction: the share held out, in ``(0, 1)``.
        seed: seeds the shuffle.
        stratify: hold out the same share of every class.

    Returns:
        A :class:`Split`; both halves are in shuffled order.

    Raises:
        ValueError: ``test_fraction`` outside ``(0, 1)`` or ``X`` and ``y`` of different lengths.

    Example:
        >>> X, y = load_digits()
        >>> s = train_test_split(X, y, seed=0)
        >>> len(s.X_train), len(s.X_test)
        (1347, 450)
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"train_test_split: test_fraction must be in (0, 1), got {test_fraction}")
    if len(X) != len(y):
        raise ValueError(f"train_test_split: X has {len(X)} examples but y has {len(y)}")
    rng = np.random.default_rng(seed)
    if stratify:
        test_idx = []
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            test_idx.append(idx[: round(test_fraction * len(idx))])
        test = np.concatenate(test_idx)
    else:
        test = rng.permutation(len(y))[: round(test_fraction * len(y))]
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    train_idx, test_idx_ = rng.permutation(np.flatnonzero(~mask)), rng.permutation(np.flatnonzero(mask))
    return Split(X[train_idx], y[train_idx], X[test_idx_], y[test_idx_])


def digits_split(seed: int = 0, test_fraction: float = 0.25) -> Split:
    """The digits, split: 1,347 to train and 450 held out with the defaults."""
    X, y = load_digits()
    return train_test_split(X, y, test_fraction=test_fraction, seed=seed)


def make_timeseries(
    n: int = 800, length: int = 64, *, pattern: int = 24, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic 1-D classification task: which waveform hides in the noise, wherever it sits.

    Each series is Gaussian noise (std ``noise``) with one pattern of
    ``pattern`` samples added at a random shift: class 0 a sine, 1 a square
    wave, 2 a sawtooth (each with a random period of 6 to 10 samples, a random
    phase and amplitude 0.8 to 1.2), 3 a burst (a fast sine under a Gaussian
    envelope).

    Args:
        n: the number of series (classes balanced).
        length: samples per series.
        pattern: samples the waveform occupies, <= ``length``.
        noise: standard deviation of the background noise.
        seed: seeds everything.

    Returns:
        ``(X, y)``: ``X`` float32 ``(n, 1, length)``, ``y`` int64 ``(n,)`` in ``0..3``.

    Raises:
        ValueError: ``pattern`` longer than ``length`` or sizes < 1.

    Example:
        >>> X, y = make_timeseries(8, seed=0)
        >>> X.shape, sorted(set(y.tolist()))
        ((8, 1, 64), [0, 1, 2, 3])
    """
    if n < 1 or length < 1 or not 1 <= pattern <= length:
        raise ValueError(
            f"make_timeseries: need n >= 1 and 1 <= pattern <= length, got n={n}, "
            f"pattern={pattern}, length={length}"
        )
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(TIMESERIES_CLASSES)).astype(np.int64)
    t = np.arange(pattern)[None, :]  # (1, pattern)
    period = rng.uniform(6.0, 10.0, (n, 1))
    phase = rng.uniform(0.0, 1.0, (n, 1))
    amp = rng.uniform(0.8, 1.2, (n, 1))
    cycle = (t / period + phase) % 1.0  # position within the period, (n, pattern)
    waves = np.stack(
        [
            np.sin(2 * np.pi * cycle),
            np.where(cycle < 0.5, 1.0, -1.0),
            2.0 * cycle - 1.0,
            np.sin(2 * np.pi * (t / 3.0 + phase)) * np.exp(-0.5 * ((t - pattern / 2) / (pattern / 6)) ** 2),
        ]
    )  # (4, n, pattern)
    patterns = amp * waves[y, np.arange(n)]  # (n, pattern)
    shift = rng.integers(0, length - pattern + 1, n)
    X = rng.normal(0.0, noise, (n, length))
    rows = np.arange(n)[:, None]
    X[rows, shift[:, None] + t] += patterns
    return X[:, None].astype(np.float32), y


def timeseries_split(seed: int = 0, n: int = 800, test_fraction: float = 0.25) -> Split:
    """:func:`make_timeseries` with ``seed``, split with the same seed."""
    X, y = make_timeseries(n, seed=seed)
    return train_test_split(X, y, test_fraction=test_fraction, seed=seed)


def load_mnist1d(*, shuffle_seq: bool = False, num_samples: int = 5000, seed: int = 42) -> Split:
    """MNIST-1D, generated by the ``mnist1d`` package's ``make_dataset``: nothing is downloaded.

    The package's default arguments (``mnist1d.data.get_dataset_args()``):
    5,000 signals of length 40 (10 digit templates, padded, shifted by up to
    48 samples, scaled, sheared, with correlated and i.i.d. noise), seed 42,
    the first 80% to train and the last 20% held out: 4,000 and 1,000. The
    package seeds NumPy's global generator; its state is restored afterwards.

    Args:
        shuffle_seq: permute the 40 positions (one fixed permutation for every
            signal), the paper's "shuffled" variant that takes the spatial
            structure away: a CNN's prior no longer fits.
        num_samples: signals in all (default the paper's 5,000; fewer for quick tests).
        seed: the generator's seed (default the paper's 42).

    Returns:
        A :class:`Split` with inputs float32 ``(N, 1, 40)`` and labels int64 in ``0..9``.

    Raises:
        MissingExtraError: the ``mnist1d`` package is not installed (one line: what to install).
        ValueError: ``num_samples`` < 10.

    Example:
        >>> s = load_mnist1d(num_samples=500)  # doctest: +SKIP
        >>> s.X_train.shape, s.X_test.shape  # doctest: +SKIP
        ((400, 1, 40), (100, 1, 40))
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise MissingExtraError(
            f"MNIST-1D needs the mnist1d package: {MNIST1D_INSTALL} (or pip install mnist1d)"
        ) from exc
    if num_samples < 10:
        raise ValueError(f"load_mnist1d: num_samples must be >= 10, got {num_samples}")
    args = get_dataset_args()
    args.shuffle_seq, args.num_samples, args.seed = bool(shuffle_seq), int(num_samples), int(seed)
    state = np.random.get_state()  # noqa: NPY002 -- make_dataset seeds (and draws from) the global generator
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002

    def inputs(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a[:, None], dtype=np.float32)

    return Split(inputs(d["x"]), d["y"].astype(np.int64), inputs(d["x_test"]), d["y_test"].astype(np.int64))


def mnist1d_split(seed: int = 0, *, shuffle_seq: bool = False) -> Split:
    """The fixed MNIST-1D split (the paper's): ``seed`` is ignored, the data never change with it."""
    return load_mnist1d(shuffle_seq=shuffle_seq)


def augment_signals(
    *, max_shift: int = 4, circular: bool = True, scale: float = 0.0, noise: float = 0.0
) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """A label-preserving augmentation of 1-D signals ``(N, C, L)`` for :func:`cnnkit.training.fit`.

    Each example is shifted by a random whole number of samples in
    ``[-max_shift, max_shift]`` (circularly, as MNIST-1D itself translates its
    signals, or with zeros coming in), multiplied by ``1 + U(-scale, scale)``
    and given Gaussian noise of std ``noise``. Vectorised: one gather for
    the whole batch.

    Args:
        max_shift: the largest shift, >= 0.
        circular: wrap around (default) or fill with zeros.
        scale: relative amplitude jitter, >= 0.
        noise: std of the added noise, >= 0.

    Returns:
        ``augment(X, rng) -> X'``: a new array of the same shape and dtype.

    Raises:
        ValueError: a negative argument.

    Example:
        >>> aug = augment_signals(max_shift=1)
        >>> X = np.arange(8.0).reshape(2, 1, 4)
        >>> aug(X, np.random.default_rng(0)).tolist()
        [[[3.0, 0.0, 1.0, 2.0]], [[4.0, 5.0, 6.0, 7.0]]]
    """
    if max_shift < 0 or scale < 0 or noise < 0:
        raise ValueError(
            f"augment_signals: max_shift, scale and noise must be >= 0, got {max_shift}, {scale}, {noise}"
        )

    def augment(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n, length = X.shape[0], X.shape[-1]
        shift = rng.integers(-max_shift, max_shift + 1, n)
        src = np.arange(length)[None, :] - shift[:, None]  # (n, L): out[i] = X[i - shift]
        out = np.take_along_axis(X, (src % length)[:, None, :].repeat(X.shape[1], axis=1), axis=-1)
        if not circular:
            out = np.where(((src >= 0) & (src < length))[:, None, :], out, 0)
        if scale:
            out = out * (1 + rng.uniform(-scale, scale, (n, 1, 1)))
        if noise:
            out = out + rng.normal(0.0, noise, out.shape)
        return out.astype(X.dtype, copy=False)

    return augment


#: The tasks :func:`load_task` knows.
TASK_NAMES = ("digits", "mnist1d", "timeseries")


def load_task(task: str, seed: int = 0, *, shuffle_seq: bool = False) -> Split:
    """The data of a named task: ``"digits"``, ``"mnist1d"`` or ``"timeseries"``.

    Args:
        task: the name.
        seed: seeds the split of ``digits`` and the generation of ``timeseries``;
            MNIST-1D is the paper's fixed data set whatever the seed.
        shuffle_seq: MNIST-1D only: the shuffled-sequence variant.

    Raises:
        ValueError: an unknown task, naming the known ones, or ``shuffle_seq`` for another task.
        MissingExtraError: ``mnist1d`` without the ``mnist1d`` package.
    """
    if shuffle_seq and task != "mnist1d":
        raise ValueError(f"shuffle_seq applies to the mnist1d task only, not {task!r}")
    if task == "digits":
        return digits_split(seed)
    if task == "timeseries":
        return timeseries_split(seed)
    if task == "mnist1d":
        return mnist1d_split(seed, shuffle_seq=shuffle_seq)
    raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASK_NAMES)}")
