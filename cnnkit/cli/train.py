"""``cnnkit train``: train a named CNN on the digits (or the synthetic time series) and save it.

Prints the figures of every epoch and the final held-out accuracy, and writes
to ``--out``: ``model.npz`` (:func:`cnnkit.io.save`), ``history.json`` and, when
matplotlib is installed (``pip install 'cnnkit[plot]'``), ``filters.png`` with
the first layer's filters and the feature maps they make of one test example.
With ``--nproc N`` (PyTorch backend) it trains data-parallel in N processes
(the backend's data-parallel runner, ``cnnkit_torch.distributed``); under
``torchrun`` it joins the process group the launcher set up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.optim import SCHEDULES

NAME = "train"
HELP = "train a CNN on the 8x8 digits (or a synthetic time series) and save it"

#: Per task: the architecture and the default epochs.
TASKS = {"digits": ("digits-cnn-wide", 20), "timeseries": ("timeseries-cnn1d", 20)}


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def configure(parser: argparse.ArgumentParser) -> None:
    count, rate = _positive(int), _positive(float)
    parser.add_argument(
        "--task", choices=sorted(TASKS), default="digits", help="what to learn (default digits)"
    )
    parser.add_argument("--arch", default=None, help="named architecture (default: the task's)")
    parser.add_argument("--backend", default=None, help="backend name (default: CNNKIT_BACKEND or numpy)")
    parser.add_argument("--device", default=None, help="backend option device (torch: cpu, cuda, ...)")
    parser.add_argument("--dtype", default=None, help="backend option dtype (default float32)")
    parser.add_argument("--epochs", type=count, default=None, help="passes over the data (default 20)")
    parser.add_argument("--batch-size", type=count, default=32, help="examples per SGD step (default 32)")
    parser.add_argument("--lr", type=rate, default=0.1, help="initial learning rate (default 0.1)")
    parser.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        default="cosine",
        help="per-epoch learning-rate schedule (default cosine: from --lr down to 0 over the run)",
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    parser.add_argument("--weight-decay", type=float, default=1e-3, help="L2 weight decay (default 1e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, split and shuffling (default 0)")
    parser.add_argument("--out", default="cnnkit-run", help="output folder (default ./cnnkit-run)")
    parser.add_argument(
        "--nproc", type=int, default=1, help="data-parallel processes (PyTorch backend; default 1)"
    )
    parser.add_argument("--no-plot", action="store_true", help="do not write filters.png")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (default: when it is a terminal)",
    )


def _backend_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in (("device", args.device), ("dtype", args.dtype)) if v is not None}


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
    """Print the final accuracy and write ``model.npz``, ``history.json`` and ``filters.png`` to ``--out``.

    Shared by the one-process run and rank 0 of a data-parallel run; ``record_extra``
    (``nproc``, ``device``, ...) goes into ``history.json``.
    """
    from cnnkit import io
    from cnnkit.models import ARCHITECTURES

    final = history.test_acc[-1]
    print(f"final test accuracy: {100 * final:.2f}% on {len(split.y_test)} held-out examples ({wall:.1f}s)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"arch": arch_name, "task": args.task, "input_shape": list(ARCHITECTURES[arch_name].input_shape)}
    io.save(model, out / "model.npz", metadata=meta)
    record = {
        "arch": arch_name,
        "task": args.task,
        "backend": be.name,
        "backend_options": {k: str(v) for k, v in be.options.items()},
        "epochs": epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "momentum": args.momentum,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "nproc": 1,
        **record_extra,
        "final_test_acc": final,
        "wall_seconds": wall,
        "history": history.as_dict(),
    }
    (out / "history.json").write_text(json.dumps(record, indent=2) + "\n")
    written = [str(out / "model.npz"), str(out / "history.json")]
    if not args.no_plot:
        note = plot_filters(model, split.X_test[0], out / "filters.png")
        if note:
            print(f"note: {note}")
        else:
            written.append(str(out / "filters.png"))
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
        raise ValueError(f"train: --nproc runs on the {runs_on} backend, got --backend {args.backend}")
    return infos[name].data_parallel(args)


def run(args: argparse.Namespace) -> int:
    if args.nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _data_parallel(args)
    from cnnkit.data import load_task
    from cnnkit.models import build_model
    from cnnkit.registry import get_backend
    from cnnkit.training import fit

    arch_name, default_epochs = TASKS[args.task]
    arch_name = args.arch or arch_name
    epochs = args.epochs or default_epochs
    be = get_backend(args.backend, **_backend_options(args))
    split = load_task(args.task, seed=args.seed)
    model = build_model(arch_name, seed=args.seed, backend=be)
    n_params = sum(p.size for p in model.parameters())
    print(
        f"cnnkit train: {arch_name} ({n_params} parameters) on {args.task} "
        f"({len(split.y_train)} train / {len(split.y_test)} held out), backend {be.name}"
        f"{' ' + str(be.options) if be.options else ''}, {epochs} epochs, seed {args.seed}",
        flush=True,
    )
    start = time.perf_counter()
    history = fit(
        model,
        *split,
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
        progress=args.progress,
        on_epoch=lambda e, h: print(epoch_line(e, epochs, h), flush=True),
    )
    finish(args, model, split, arch_name, be, epochs, history, time.perf_counter() - start)
    return 0
