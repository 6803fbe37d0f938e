"""Pictures of a training run, written as PNG files with matplotlib (``pip install 'cnnkit[plot]'``).

Every function returns ``None`` when it wrote its file, else the one-line
reason it did not (matplotlib missing, nothing to draw), so that a command can
print a note and go on. The numbers behind each picture are computed by
functions that need no matplotlib (:func:`confusion_matrix`) and are tested
for their values.

- :func:`plot_curves`: train and held-out loss and accuracy per epoch (``curves.png``);
- :func:`plot_confusion`: the held-out confusion matrix (``confusion.png``);
- :func:`plot_signals`: for 1-D data, example signals per class beside the first
  layer's filters and the feature maps they make (``signals.png``);
- :func:`plot_images`: images side by side (the Sobel demo's ``sobel.png``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PLOT_INSTALL",
    "confusion_matrix",
    "plot_confusion",
    "plot_curves",
    "plot_images",
    "plot_signals",
    "pyplot",
]

#: What to install for the pictures.
PLOT_INSTALL = "pip install 'cnnkit[plot]'"


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _missing(path: Path) -> str:
    return f"matplotlib is not installed ({PLOT_INSTALL}); skipped {Path(path).name}"


def confusion_matrix(y_true: Any, y_pred: Any, classes: int | None = None) -> np.ndarray:
    """Counts ``C[t, p]`` of examples of class ``t`` predicted as ``p`` (rows: truth), int64.

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2]).tolist()
        [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    """
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: y_true has shape {t.shape} but y_pred has {p.shape}")
    k = int(classes if classes is not None else max(t.max(initial=-1), p.max(initial=-1)) + 1)
    C = np.zeros((k, k), dtype=np.int64)
    np.add.at(C, (t, p), 1)
    return C


def plot_curves(history: Any, path: Path, title: str = "") -> str | None:
    """Loss (left) and accuracy (right) per epoch, train and held out, to ``path``."""
    plt = pyplot()
    if plt is None:
        return _missing(path)
    h = history if isinstance(history, dict) else history.as_dict()
    epochs = h["epoch"]
    fig, (la, aa) = plt.subplots(1, 2, figsize=(9, 3.4))
    la.plot(epochs, h["train_loss"], label="train")
    la.plot(epochs, h["test_loss"], label="held out")
    la.set_xlabel("epoch")
    la.set_ylabel("cross-entropy")
    la.set_yscale("log")
    aa.plot(epochs, 100 * np.asarray(h["train_acc"]), label="train")
    aa.plot(epochs, 100 * np.asarray(h["test_acc"]), label="held out")
    aa.set_xlabel("epoch")
    aa.set_ylabel("accuracy (%)")
    for ax in (la, aa):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def plot_confusion(C: np.ndarray, path: Path, class_names: Sequence[str] | None = None) -> str | None:
    """The confusion matrix ``C`` (rows: truth, columns: prediction) with its counts, to ``path``."""
    plt = pyplot()
    if plt is None:
        return _missing(path)
    k = len(C)
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.45 * k, 0.8 + 0.45 * k))
    ax.imshow(C, cmap="Blues")
    for (i, j), c in np.ndenumerate(C):
        if c:
            color = "white" if c > C.max() / 2 else "k"
            ax.text(j, i, str(c), ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(k), names, fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(C) / max(C.sum(), 1)
    ax.set_title(f"held out: {100 * acc:.2f}% of {C.sum()}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def plot_signals(model: Any, X: np.ndarray, y: np.ndarray, path: Path, per_class: int = 3) -> str | None:
    """1-D data: ``per_class`` example signals per class (top), the first layer's filters and its maps.

    The bottom rows show each filter of the first convolution and the feature
    maps (after its activation) it makes of the first example of class 0:
    the 1-D counterpart of ``filters.png``.
    """
    plt = pyplot()
    if plt is None:
        return _missing(path)
    from cnnkit.layers import backend_of

    classes = np.unique(y)
    first = model.layers[0] if hasattr(model, "layers") else model
    w = getattr(getattr(first, "weight", None), "data", None)
    has_conv = w is not None and np.ndim(w) == 3
    k = min(w.shape[0], 16) if has_conv else 0
    cols = max(len(classes) // 2, 1) if len(classes) > 1 else 1
    sig_rows = -(-len(classes) // cols)
    f_cols = 8
    f_rows = -(-k // f_cols) if k else 0
    rows = sig_rows + 2 * f_rows
    fig, axes = plt.subplots(rows, max(cols, f_cols if k else 1), figsize=(12, 1.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, c in enumerate(classes):
        ax = axes[i // cols, i % cols]
        ax.axis("on")
        for x in X[y == c][:per_class]:
            ax.plot(x[0], lw=0.8)
        ax.set_title(f"class {c}", fontsize=8)
        ax.tick_params(labelsize=6)
    if k:
        wn = np.asarray(backend_of(w).to_numpy(w))
        x0 = X[y == classes[0]][:1]
        maps = model.layers[1].infer(first.infer(x0)) if len(model.layers) > 1 else first.infer(x0)
        maps = np.asarray(backend_of(maps).to_numpy(maps))[0]
        for i in range(k):
            fa = axes[sig_rows + i // f_cols, i % f_cols]
            ma = axes[sig_rows + f_rows + i // f_cols, i % f_cols]
            for ax in (fa, ma):
                ax.axis("on")
                ax.tick_params(labelsize=5)
            fa.plot(wn[i].T, lw=0.8)
            fa.set_title(f"filter {i}", fontsize=7)
            ma.plot(maps[i], lw=0.8)
            ma.set_title(f"map {i} (class {classes[0]})", fontsize=7)
    note = "; first layer: filters and feature maps after its activation" if k else "; no first-layer filters"
    fig.suptitle(f"example signals per class{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def plot_images(
    images: Sequence[np.ndarray], titles: Sequence[str], path: Path, title: str = ""
) -> str | None:
    """Gray-scale images side by side (each on its own colour scale) with their titles, to ``path``."""
    plt = pyplot()
    if plt is None:
        return _missing(path)
    fig, axes = plt.subplots(1, len(images), figsize=(4 * len(images), 4.3), squeeze=False)
    for ax, im, t in zip(axes[0], images, titles):
        ax.imshow(im, cmap="gray")
        ax.set_title(t, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
