"""Reproductions of published results: the MNIST-1D paper's table, row by row, on every backend.

Greydanus, "Scaling down deep learning" (2020), trains four models on
MNIST-1D and on its shuffled variant (the 40 positions permuted, one fixed
permutation for all signals). Its table separates the models by their spatial
prior: a dense layer sees a permutation of its inputs as just another
labelling of its weights, so logistic regression and the MLP do not care;
the CNN relies on neighbours being neighbours (sparse interactions, the
same filter at every position, outputs that move with the input) and loses
most of its lead when the order is gone. The gap between the CNN and the
shuffled CNN is the lecture's "sparse interactions, parameter sharing,
equivariance" as a number.

:func:`mnist1d_table` trains every row (with the recipe of
:data:`cnnkit.cli.train.RECIPES`: the paper's own training for its rows) on
each backend for several seeds and returns the accuracies beside the paper's;
:func:`table_markdown` formats them. ``cnnkit experiment mnist1d-table`` is
the command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["PAPER_ACCURACY", "ROWS", "Row", "mnist1d_table", "table_markdown", "train_row"]

#: The paper's held-out accuracy (%), by (architecture, shuffled); None where its table has none.
PAPER_ACCURACY: dict[tuple[str, bool], float | None] = {
    ("logistic", False): 32.0,
    ("paper-mlp", False): 68.0,
    ("paper-cnn", False): 94.0,
    ("mnist1d-cnn", False): None,
    ("logistic", True): None,
    ("paper-mlp", True): None,
    ("paper-cnn", True): 56.0,
    ("mnist1d-cnn", True): None,
}


@dataclass(frozen=True)
class Row:
    """One row of the table: an architecture, on the plain or the shuffled sequences."""

    arch: str
    shuffled: bool = False

    @property
    def label(self) -> str:
        return f"{self.arch}{' (shuffled)' if self.shuffled else ''}"


#: The table's rows, in order: the paper's models, cnnkit's, then the shuffled variants.
ROWS: tuple[Row, ...] = tuple(
    Row(a, s) for s in (False, True) for a in ("logistic", "paper-mlp", "paper-cnn", "mnist1d-cnn")
)


def train_row(
    row: Row,
    split: Any,
    *,
    seed: int,
    backend: str,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Train ``row.arch`` with its recipe on ``split`` and return its figures.

    Returns:
        ``{"acc": held-out accuracy (0..1, with the recipe's test-time shifts),
        "acc_plain": without them, "seconds": training time, "epochs": ...}``.
    """
    from cnnkit.cli.train import RECIPES, Recipe
    from cnnkit.data import augment_signals
    from cnnkit.models import build_model
    from cnnkit.optim import make_optimizer, make_scheduler
    from cnnkit.registry import get_backend
    from cnnkit.training import evaluate, fit

    r = RECIPES.get(row.arch, Recipe())
    n_epochs = epochs or r.epochs
    model = build_model(row.arch, seed=seed, backend=get_backend(backend))
    opt = make_optimizer(
        r.optimizer, model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay
    )
    start = time.perf_counter()
    history = fit(
        model,
        *split,
        epochs=n_epochs,
        batch_size=r.batch_size,
        optimizer=opt,
        scheduler=make_scheduler(r.lr_schedule, opt, n_epochs),
        augment=augment_signals(max_shift=r.augment) if r.augment else None,
        seed=seed,
        progress=False,
    )
    seconds = time.perf_counter() - start
    shifts = tuple(range(-r.tta, r.tta + 1)) if r.tta else ()
    acc = evaluate(model, split.X_test, split.y_test, shifts=shifts)[1] if shifts else history.test_acc[-1]
    return {"acc": acc, "acc_plain": history.test_acc[-1], "seconds": seconds, "epochs": n_epochs}


def mnist1d_table(
    *,
    rows: Sequence[Row] = ROWS,
    backends: Sequence[str] = ("numpy", "torch"),
    seeds: Sequence[int] = (0, 1, 2),
    num_samples: int = 5000,
    epochs: int | None = None,
    on_run: Callable[[Row, str, int, dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every row on every backend for every seed; one record per (row, backend).

    Args:
        rows: what to train (default :data:`ROWS`).
        backends: backend names.
        seeds: seeds of the initial weights and the shuffling (the data are the paper's, fixed).
        num_samples: MNIST-1D's size (default the paper's 5,000; fewer for a quick check).
        epochs: override every recipe's epochs (a quick check); ``None``: the recipes'.
        on_run: called after each run with ``(row, backend, seed, figures)``.

    Returns:
        Records ``{"model", "arch", "shuffled", "backend", "paper", "mean", "std", "min", "max",
        "accs", "seconds"}``, accuracies in %, ``std`` the population standard deviation over seeds.
    """
    from cnnkit.data import load_mnist1d

    splits = {s: load_mnist1d(shuffle_seq=s, num_samples=num_samples) for s in {r.shuffled for r in rows}}
    records = []
    for row in rows:
        for be in backends:
            runs = []
            for seed in seeds:
                fig = train_row(row, splits[row.shuffled], seed=seed, backend=be, epochs=epochs)
                runs.append(fig)
                if on_run is not None:
                    on_run(row, be, seed, fig)
            accs = np.array([100 * f["acc"] for f in runs])
            records.append(
                {
                    "model": row.label,
                    "arch": row.arch,
                    "shuffled": row.shuffled,
                    "backend": be,
                    "paper": PAPER_ACCURACY.get((row.arch, row.shuffled)),
                    "mean": float(accs.mean()),
                    "std": float(accs.std()),
                    "min": float(accs.min()),
                    "max": float(accs.max()),
                    "accs": [float(a) for a in accs],
                    "accs_plain": [100 * f["acc_plain"] for f in runs],
                    "seconds": [f["seconds"] for f in runs],
                    "seeds": list(seeds),
                    "epochs": runs[0]["epochs"],
                }
            )
    return records


def table_markdown(records: Sequence[dict[str, Any]]) -> str:
    """The records as a Markdown table: one line per row, a column pair per backend.

    Example:
        >>> rec = [{"model": "paper-cnn", "backend": "numpy", "paper": 94.0, "mean": 93.2, "std": 0.4,
        ...         "seconds": [12.0]}]
        >>> print(table_markdown(rec))
        | model | paper | numpy | s/run (numpy) |
        |---|---:|---:|---:|
        | paper-cnn | 94% | 93.2 ± 0.4% | 12.0 |
    """
    backends = list(dict.fromkeys(r["backend"] for r in records))
    models = list(dict.fromkeys(r["model"] for r in records))
    by = {(r["model"], r["backend"]): r for r in records}
    head = ["model", "paper", *backends, *(f"s/run ({b})" for b in backends)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in models:
        first = next(by[(m, b)] for b in backends if (m, b) in by)
        paper = "—" if first["paper"] is None else f"{first['paper']:g}%"
        accs, secs = [], []
        for b in backends:
            r = by.get((m, b))
            accs.append("" if r is None else f"{r['mean']:.1f} ± {r['std']:.1f}%")
            secs.append("" if r is None else f"{float(np.mean(r['seconds'])):.1f}")
        lines.append("| " + " | ".join([m, paper, *accs, *secs]) + " |")
    return "\n".join(lines)
