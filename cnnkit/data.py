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
- :func:`train_test_split`: a seeded, stratified split (a quarter held out by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = [
    "DIGITS_PATH",
    "TIMESERIES_CLASSES",
    "Split",
    "digits_split",
    "load_digits",
    "load_task",
    "make_timeseries",
    "timeseries_split",
    "train_test_split",
]

#: The shipped digits file: ``images`` uint8 (1797, 8, 8) in 0..16, ``labels`` uint8 (1797,).
DIGITS_PATH = Path(__file__).parent / "data" / "digits.npz"
#: Class names of :func:`make_timeseries`, by label.
TIMESERIES_CLASSES = ("sine", "square", "sawtooth", "burst")


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


def load_task(task: str, seed: int = 0) -> Split:
    """The data of a named task: ``"digits"`` or ``"timeseries"``.

    Raises:
        ValueError: an unknown task, naming the known ones.
    """
    if task == "digits":
        return digits_split(seed)
    if task == "timeseries":
        return timeseries_split(seed)
    raise ValueError(f"unknown task {task!r}; known tasks: digits, timeseries")
