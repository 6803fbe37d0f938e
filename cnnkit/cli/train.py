"""``cnnkit train``: train a named network on the digits, MNIST-1D or a synthetic time series, and save it.

Prints the figures of every epoch and the final held-out accuracy, and writes
to ``--out``: ``model.npz`` (:func:`cnnkit.io.save`), ``history.json`` (the
settings, every epoch's figures, the held-out confusion matrix) and, when
matplotlib is installed (``pip install 'cnnkit[plot]'``), ``curves.png``
(loss and accuracy per epoch), ``confusion.png``, ``filters.png`` (the first
layer's filters and the feature maps they make of one test example) and, for
MNIST-1D, ``signals.png`` (example signals per class, the first layer's
filters and feature maps). Without matplotlib each picture is skipped with a
one-line note.

Every setting not given on the command line comes from the architecture's
recipe (:data:`RECIPES`): the paper's training for the MNIST-1D paper rows,
cnnkit's measured one for the defaults. A bad flag is one line
``cnnkit: error: ...`` and exit status 2, before any training.

With ``--nproc N`` (PyTorch backend) it trains data-parallel in N processes
(the backend's data-parallel runner, ``cnnkit_torch.distributed``: SGD without
augmentation); under ``torchrun`` it joins the process group the launcher set up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.cli.common import UsageError, writable_dir
from cnnkit.optim import OPTIMIZERS, SCHEDULES

NAME = "train"
HELP = "train a CNN on the 8x8 digits, MNIST-1D (or a synthetic time series) and save it"

#: Per task: the default architecture and its epochs (the recipe of :data:`RECIPES`).
TASKS = {
    "digits": ("digits-cnn-wide", 20),
    "mnist1d": ("mnist1d-cnn", 40),
    "timeseries": ("timeseries-cnn1d", 20),
}


@dataclass(frozen=True)
class Recipe:
    """How an architecture is trained when the command line does not say otherwise."""

    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 1e-3
    augment: int = 0  # the largest circular shift of the training signals (0: none)
    tta: int = 0  # test-time augmentation: mean logits over circular shifts -tta..tta


#: The MNIST-1D paper's training (its code's defaults): Adam, lr 1e-2, batches of 100,
#: 6,000 steps (150 epochs of 4,000), no schedule, no weight decay.
PAPER = Recipe(
    epochs=150, batch_size=100, optimizer="adam", lr=1e-2, lr_schedule="constant", weight_decay=0.0
)

#: Per architecture: its training recipe (an architecture not listed trains with :class:`Recipe`'s defaults).
RECIPES: dict[str, Recipe] = {
    "digits-cnn": Recipe(),
    "digits-cnn-wide": Recipe(),
    "timeseries-cnn1d": Recipe(),
    "logistic": PAPER,
    "paper-mlp": PAPER,
    "paper-cnn": PAPER,
    # measured (README, "MNIST-1D"): SGD + cosine beats Adam here; shifts of up to 3 samples
    # while training and the mean over shifts -1, 0, 1 when testing give the last half point
    "mnist1d-cnn": Recipe(epochs=40, lr=0.05, weight_decay=0.0, augment=3, tta=1),
}

#: The dtypes ``--dtype`` accepts.
DTYPES = ("float32", "float64")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or (kind is float and not math.isfinite(value)):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what} > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= 0 or (kind is float and not math.isfinite(value)):
            what = "an integer" if kind is int else "a finite number"
            raise argparse.ArgumentTypeError(f"expected {what} >= 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report a bad flag as one line ``cnnkit: error: ...`` (exit status 2), no usage dump."""

    def error(message: str) -> Any:
        print(f"cnnkit: error: {message} (see cnnkit {parser.prog.split()[-1]} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def recipes_text() -> str:
    """The recipes, one line per architecture (``cnnkit train --help``'s epilog)."""
    lines = ["recipes (what a flag left out defaults to, per --arch):"]
    for name, r in RECIPES.items():
        extra = (f", shifts up to {r.augment}" if r.augment else "") + (
            f", test shifts ±{r.tta}" if r.tta else ""
        )
        mom = f" momentum {r.momentum:g}" if r.optimizer == "sgd" else ""
        lines.append(
            f"  {name}: {r.epochs} epochs, batches of {r.batch_size}, {r.optimizer}{mom} lr {r.lr:g}, "
            f"{r.lr_schedule}, weight decay {r.weight_decay:g}{extra}"
        )
    return "\n".join(lines)


def configure(parser: argparse.ArgumentParser) -> None:
    one_line_errors(parser)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = recipes_text()
    count, rate, amount, shift = _positive(int), _positive(float), _non_negative(float), _non_negative(int)
    parser.add_argument(
        "--task", choices=sorted(TASKS), default="digits", help="what to learn (default digits)"
    )
    parser.add_argument(
        "--arch",
        default=None,
        help="named architecture (default: the task's; unknown names list the known ones)",
    )
    parser.add_argument(
        "--shuffle-inputs",
        action="store_true",
        help="mnist1d: train and test on the shuffled sequences (the paper's spatial-prior test)",
    )
    parser.add_argument("--backend", default=None, help="backend name (default: CNNKIT_BACKEND or numpy)")
    parser.add_argument(
        "--device", default=None, help="backend option device (torch: cpu, cuda, ...), for the chosen backend"
    )
    parser.add_argument("--dtype", default=None, help="backend option dtype: float32 (default) or float64")
    parser.add_argument("--epochs", type=count, default=None, help="passes over the data (default: recipe)")
    parser.add_argument("--batch-size", type=count, default=None, help="examples per step (default: recipe)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="default: the recipe's")
    parser.add_argument("--lr", type=rate, default=None, help="initial learning rate (default: the recipe's)")
    parser.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default=None,
        help="per-epoch learning-rate schedule (default: the recipe's; cosine: from --lr down to 0)",
    )
    parser.add_argument("--momentum", type=amount, default=None, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=amount, default=None, help="weight decay (default: recipe)")
    parser.add_argument(
        "--augment",
        type=shift,
        default=None,
        metavar="K",
        help="1-D tasks: shift each training signal circularly by up to K samples (0: off)",
    )
    parser.add_argument(
        "--tta",
        type=shift,
        default=None,
        metavar="K",
        help="1-D tasks: final accuracy from the mean logits over circular shifts -K..K (0: off)",
    )
    parser.add_argument(
        "--torch-threads",
        type=count,
        default=None,
        help="intra-op threads of the backend's pool (torch, NumPy's OpenBLAS; default: the cores the "
        "rest of the machine leaves idle, at least 1: a pool wider than that collapses on a busy machine)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, split and shuffling (default 0)")
    parser.add_argument("--out", default="cnnkit-run", help="output folder (default ./cnnkit-run)")
    parser.add_argument(
        "--nproc", type=count, default=1, help="data-parallel processes (PyTorch backend; default 1)"
    )
    parser.add_argument("--no-plot", action="store_true", help="write no pictures")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when it is a terminal)",
    )


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v is not None}


def resolve(args: argparse.Namespace) -> str:
    """Check the flags and fill every setting left out from the recipe, in place; returns the architecture.

    Raises:
        UsageError: an unknown architecture, one for another task, a bad dtype,
            ``--shuffle-inputs`` off MNIST-1D, augmentation of images, an
            unwritable ``--out``.
    """
    from cnnkit.models import ARCHITECTURES

    arch_name = args.arch or TASKS[args.task][0]
    known = sorted(n for n, a in ARCHITECTURES.items() if a.task == args.task)
    if arch_name not in ARCHITECTURES:
        raise UsageError(f"unknown --arch {arch_name!r}; for --task {args.task}: {', '.join(known)}")
    if ARCHITECTURES[arch_name].task != args.task:
        raise UsageError(
            f"--arch {arch_name} is for --task {ARCHITECTURES[arch_name].task}, not {args.task}; "
            f"for {args.task}: {', '.join(known)}"
        )
    if args.dtype is not None and args.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, got {args.dtype!r}")
    if getattr(args, "shuffle_inputs", False) and args.task != "mnist1d":
        raise UsageError(f"--shuffle-inputs applies to --task mnist1d, not {args.task}")
    recipe = RECIPES.get(arch_name, Recipe())
    if args.momentum is not None and (args.optimizer or recipe.optimizer) != "sgd":
        raise UsageError(
            f"--momentum is for --optimizer sgd; {arch_name} trains with {args.optimizer or recipe.optimizer}"
        )
    if args.epochs is None and arch_name == TASKS[args.task][0]:
        args.epochs = TASKS[args.task][1]
    for key in ("epochs", "batch_size", "optimizer", "lr", "lr_schedule", "momentum", "weight_decay"):
        if getattr(args, key, None) is None:
            setattr(args, key, getattr(recipe, key))
    for key in ("augment", "tta"):
        if getattr(args, key, None) is None:
            setattr(args, key, getattr(recipe, key) if len(ARCHITECTURES[arch_name].input_shape) == 2 else 0)
        elif getattr(args, key) and len(ARCHITECTURES[arch_name].input_shape) != 2:
            raise UsageError(f"--{key} shifts 1-D signals; --task {args.task} has images")
    if args.nproc > 1 and args.shuffle_inputs:
        raise UsageError(
            f"--nproc {args.nproc} does not take --shuffle-inputs (data-parallel runs load the plain data)"
        )
    if args.nproc > 1 and (args.optimizer != "sgd" or args.augment):
        raise UsageError(
            f"--nproc {args.nproc} trains with SGD and no augmentation; add --optimizer sgd --augment 0"
        )
    writable_dir(args.out)
    return arch_name


def _backend(args: argparse.Namespace) -> Any:
    from cnnkit.registry import get_backend

    options = _backend_options(args)
    name = args.backend
    if name is None and options:
        name = get_backend().name  # --dtype / --device apply to the active backend, never silently dropped
    try:
        return get_backend(name, **options)
    except TypeError as exc:  # an option the backend does not take
        raise UsageError(f"{exc}{'' if args.backend else ' (choose one with --backend)'}") from None


def epoch_line(epoch: int, epochs: int, h: Any) -> str:
    """One line of figures for epoch ``epoch`` of a :class:`cnnkit.training.History`."""
    i = epoch - 1
    lr = f"  lr {h.lr[i]:.4g}" if len(getattr(h, "lr", ())) > i else ""
    return (
        f"epoch {epoch:>{len(str(epochs))}}/{epochs}  train loss {h.train_loss[i]:.4f} "
        f"acc {100 * h.train_acc[i]:6.2f}%  test loss {h.test_loss[i]:.4f} "
        f"acc {100 * h.test_acc[i]:6.2f}%{lr}  {h.seconds[i]:.2f}s"
    )


def plot_filters(model: Any, x: np.ndarray, path: Path) -> str | None:
    """Write the first layer's filters and their feature maps of ``x`` (one example) to ``path``.

    Returns:
        ``None`` when written, else the reason it was not (matplotlib missing).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'cnnkit[plot]'); skipped filters.png"
    from cnnkit.layers import backend_of

    first = model.layers[0]
    if getattr(first, "weight", None) is None:
        return f"the first layer ({type(first).__name__}) has no filters to draw; skipped {path.name}"
    w = backend_of(first.weight.data).to_numpy(first.weight.data)  # (K, C, *kernel)
    maps = model.layers[1].infer(first.infer(x[None]))  # after conv and its activation
    maps = np.asarray(backend_of(maps).to_numpy(maps))[0]  # (K, *spatial)
    k = w.shape[0]
    cols = min(k, 8)
    rows = -(-k // cols)
    fig, axes = plt.subplots(2 * rows + 1, cols, figsize=(1.6 * cols, 1.6 * (2 * rows + 1)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    image = x[0]
    axes[0, 0].set_title("input", fontsize=8)
    if image.ndim == 2:
        axes[0, 0].imshow(image, cmap="gray_r")
    else:
        axes[0, 0].plot(image, lw=0.8)
    for i in range(k):
        fa, ma = axes[1 + i // cols, i % cols], axes[1 + rows + i // cols, i % cols]
        if w.ndim == 4:
            fa.imshow(w[i, 0], cmap="bwr", vmin=-abs(w).max(), vmax=abs(w).max())
            ma.imshow(maps[i], cmap="viridis")
        else:
            fa.plot(w[i, 0], lw=0.8)
            ma.plot(maps[i], lw=0.8)
        fa.set_title(f"filter {i}", fontsize=7)
        ma.set_title(f"map {i}", fontsize=7)
    fig.suptitle("first layer: filters (middle) and feature maps after ReLU (bottom)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _shifts(k: int) -> tuple[int, ...]:
    return tuple(range(-k, k + 1)) if k else ()


def finish(
    args: argparse.Namespace,
    model: Any,
    split: Any,
    arch_name: str,
    be: Any,
    epochs: int,
    history: Any,
    wall: float,
    **record_extra: Any,
) -> None:
    """Print the final accuracy and write the model, ``history.json`` and the pictures to ``--out``.

    Shared by the one-process run and rank 0 of a data-parallel run; ``record_extra``
    (``nproc``, ``device``, ...) goes into ``history.json``.
    """
    from cnnkit import io, plots
    from cnnkit.models import ARCHITECTURES
    from cnnkit.training import predict

    shifts = _shifts(getattr(args, "tta", 0) or 0)
    logits = predict(model, split.X_test, shifts=shifts)
    y_pred = logits.argmax(axis=1)
    final = float((y_pred == split.y_test).mean())
    C = plots.confusion_matrix(split.y_test, y_pred, classes=int(logits.shape[1]))
    tta_note = ""
    if shifts:
        tta_note = (
            f", mean over circular shifts {shifts[0]}..{shifts[-1]}; "
            f"without: {100 * history.test_acc[-1]:.2f}%"
        )
    print(
        f"final test accuracy: {100 * final:.2f}% on {len(split.y_test)} held-out examples "
        f"({wall:.1f}s{tta_note})"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"arch": arch_name, "task": args.task, "input_shape": list(ARCHITECTURES[arch_name].input_shape)}
    io.save(model, out / "model.npz", metadata=meta)
    record = {
        "arch": arch_name,
        "task": args.task,
        "shuffle_inputs": bool(getattr(args, "shuffle_inputs", False)),
        "backend": be.name,
        "backend_options": {k: str(v) for k, v in be.options.items()},
        "epochs": epochs,
        "batch_size": args.batch_size,
        "optimizer": getattr(args, "optimizer", "sgd"),
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "augment": getattr(args, "augment", 0),
        "tta": getattr(args, "tta", 0),
        "seed": args.seed,
        "nproc": 1,
        **record_extra,
        "final_test_acc": final,
        "final_test_acc_plain": history.test_acc[-1],
        "wall_seconds": wall,
        "confusion": C.tolist(),
        "history": history.as_dict(),
    }
    (out / "history.json").write_text(json.dumps(record, indent=2) + "\n")
    written = [str(out / "model.npz"), str(out / "history.json")]
    if not args.no_plot:
        title = f"{arch_name} on {args.task}{' (shuffled)' if record['shuffle_inputs'] else ''}, {be.name}"
        pictures = [
            ("curves.png", lambda p: plots.plot_curves(history, p, title)),
            ("confusion.png", lambda p: plots.plot_confusion(C, p)),
            ("filters.png", lambda p: plot_filters(model, split.X_test[0], p)),
        ]
        if args.task == "mnist1d":
            X_test, y_test = split.X_test, split.y_test
            pictures.append(("signals.png", lambda p: plots.plot_signals(model, X_test, y_test, p)))
        notes = []
        for name, draw in pictures:
            note = draw(out / name)
            if note is None:
                written.append(str(out / name))
            else:
                notes.append(note)
        if notes and all(n.startswith("matplotlib is not installed") for n in notes):
            names = ", ".join(name for name, _ in pictures)
            notes = [f"matplotlib is not installed ({plots.PLOT_INSTALL}); skipped {names}"]
        for note in notes:
            print(f"note: {note}")
    print("wrote " + ", ".join(written))
    sys.stdout.flush()


def _data_parallel(args: argparse.Namespace) -> int:
    """Hand the run to the backend that trains data-parallel (its ``BackendInfo.data_parallel``)."""
    from cnnkit.registry import get_registry

    infos = get_registry().backend_infos()
    able = sorted(name for name, info in infos.items() if info.data_parallel is not None)
    name = args.backend or (able[0] if able else None)
    if name not in able:
        runs_on = " or ".join(able) or "no installed"
        raise UsageError(f"--nproc runs on the {runs_on} backend, got --backend {args.backend}")
    return infos[name].data_parallel(args)


def _fail(message: str) -> int:
    print(f"cnnkit: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from cnnkit.data import MissingExtraError, augment_signals, load_task

    try:
        arch_name = resolve(args)
        if args.nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return _data_parallel(args)
        be = _backend(args)
        split = load_task(args.task, seed=args.seed, shuffle_seq=args.shuffle_inputs)
    except (UsageError, MissingExtraError) as exc:
        return _fail(str(exc))
    from cnnkit.models import build_model
    from cnnkit.optim import make_optimizer, make_scheduler
    from cnnkit.training import fit

    be.set_threads(args.torch_threads)  # None: the idle cores (Backend.set_threads)
    epochs = args.epochs
    model = build_model(arch_name, seed=args.seed, backend=be)
    optimizer = make_optimizer(
        args.optimizer, model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    n_params = sum(p.size for p in model.parameters())
    extras = [f"{args.optimizer}"]
    if args.augment:
        extras.append(f"shifts up to {args.augment}")
    task = f"{args.task}{' (shuffled)' if args.shuffle_inputs else ''}"
    print(
        f"cnnkit train: {arch_name} ({n_params} parameters) on {task} "
        f"({len(split.y_train)} train / {len(split.y_test)} held out), backend {be.name}"
        f"{' ' + str(be.options) if be.options else ''}, {epochs} epochs, seed {args.seed}, "
        + ", ".join(extras),
        flush=True,
    )
    start = time.perf_counter()
    history = fit(
        model,
        *split,
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer=optimizer,
        scheduler=make_scheduler(args.lr_schedule, optimizer, epochs),
        augment=augment_signals(max_shift=args.augment) if args.augment else None,
        seed=args.seed,
        progress=args.progress,
        on_epoch=lambda e, h: print(epoch_line(e, epochs, h), flush=True),
    )
    finish(args, model, split, arch_name, be, epochs, history, time.perf_counter() - start)
    return 0
