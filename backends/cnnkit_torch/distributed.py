"""Data-parallel training: ``cnnkit train --nproc N`` with PyTorch's DistributedDataParallel.

The model is the named architecture of :mod:`cnnkit.models`, built from the
seed exactly as a one-process run builds it, then converted to
:mod:`cnnkit_torch.nn` modules (:func:`cnnkit_torch.nn.from_cnnkit`), so every
forward and backward is cnnkit's hand-derived one; ``DistributedDataParallel``
only averages the gradients across processes (gloo on the CPU, NCCL on CUDA).

One step, for a global batch ``B`` of indices (the same seeded shuffle as
:func:`cnnkit.training.fit`, drawn identically on every rank)::

    rank r takes its share B_r (np.array_split of B: batch_size // N each when it divides)
    E_r = (N / |B|) · Σ_{n ∈ B_r} CE(x_n, t_n)          (local loss, scaled)
    DDP: g = (1/N) Σ_r dE_r/dw = (1/|B|) Σ_{n ∈ B} dCE_n/dw   (the 1-process mean gradient)
    w <- SGD(w, g)                                        (torch.optim.SGD = cnnkit.optim.SGD)

with the learning rate following ``--lr-schedule`` epoch by epoch
(:func:`cnnkit.optim.make_scheduler`, as :func:`cnnkit.training.fit` does),
so N processes take the very steps one process takes, up to floating-point
rounding, whatever N and whether or not ``N`` divides the batch. Rank 0 prints
the same per-epoch lines as the one-process path, evaluates on the held-out
set and saves the model with :func:`cnnkit.io.save` (``model.npz``,
``history.json`` and ``filters.png`` in ``--out``).

Launching: :func:`run_cli` spawns ``--nproc`` processes on this machine
(``torch.multiprocessing.spawn``, a free TCP port on 127.0.0.1); under
``torchrun`` (``WORLD_SIZE`` set) each process joins the group the launcher
describes in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``. :func:`launch` runs any function that way.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np

__all__ = ["free_port", "launch", "run_cli", "shard", "train_step"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Rank ``rank``'s share of the global batch ``batch`` (contiguous, sizes differ by at most 1).

    Example:
        >>> shard(np.arange(5), 1, 2).tolist()
        [3, 4]
    """
    return np.array_split(batch, world_size)[rank]


def train_step(
    net: Any, optimizer: Any, X: Any, y: Any, batch: np.ndarray, rank: int, world_size: int
) -> tuple[float, int]:
    """One data-parallel SGD step on the global batch ``batch`` (indices into ``X``, ``y``).

    ``net`` is a ``DistributedDataParallel`` (or, with ``world_size == 1``, any
    module); ``X`` and ``y`` are tensors on its device. Every rank calls this
    with the same ``batch``.

    Returns:
        This rank's summed cross-entropy and number of correct predictions on its share.
    """
    import torch

    from cnnkit_torch.nn import CrossEntropyLoss

    local = shard(batch, rank, world_size)
    scale = world_size / len(batch)
    if len(local) == 0:  # a last batch smaller than the world: join the all-reduce with zero weight
        local, scale = batch[:1], 0.0
    idx = torch.from_numpy(local).to(X.device)
    xb, yb = X[idx], y[idx]
    optimizer.zero_grad()
    logits = net(xb)
    loss_sum = CrossEntropyLoss(reduction="sum")(logits, yb)
    (loss_sum * scale).backward()
    optimizer.step()
    if scale == 0.0:
        return 0.0, 0
    return float(loss_sum.detach()), int((logits.detach().argmax(1) == yb).sum())


# -- process group ------------------------------------------------------------------------------


def _device_for(device: str | None, local_rank: int) -> Any:
    import torch

    dev = torch.device(device or "cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _join(rank: int, world_size: int, device: Any, init_method: str) -> None:
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    else:  # share the cores: N processes of one thread each beat N processes fighting
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        init_method=init_method,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(minutes=5),
    )


def _spawned(
    rank: int, world_size: int, port: int, device: str | None, fn: Callable[..., Any], args: tuple
) -> None:
    import torch.distributed as dist

    dev = _device_for(device, rank)
    _join(rank, world_size, dev, f"tcp://127.0.0.1:{port}")
    try:
        fn(rank, world_size, dev, *args)
        # no rank tears its connections down while another still uses them: gloo aborts the
        # process ("terminate called without an active exception") when a peer vanishes early
        dist.barrier()
    finally:
        dist.destroy_process_group()


def launch(fn: Callable[..., Any], nproc: int, *args: Any, device: str | None = None) -> None:
    """Run ``fn(rank, world_size, device, *args)`` in ``nproc`` new processes joined in one group.

    ``fn`` must be importable by name (a module-level function) and ``args``
    picklable. ``device`` ``"cuda"`` gives rank ``r`` the GPU ``cuda:r`` and NCCL;
    otherwise every rank runs on the CPU over gloo.

    Raises:
        ValueError: ``nproc`` < 1, or more CUDA processes than GPUs.
        torch.multiprocessing.ProcessRaisedException: a process raised (its traceback included).
    """
    import torch
    import torch.multiprocessing as mp

    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"launch: nproc must be an int >= 1, got {nproc!r}")
    if device is not None and torch.device(device).type == "cuda":
        found = torch.cuda.device_count()
        if nproc > found:
            raise ValueError(f"launch: nproc={nproc} CUDA processes need {nproc} GPUs, found {found}")
    mp.spawn(_spawned, args=(nproc, free_port(), device, fn, args), nprocs=nproc, join=True)


# -- cnnkit train --nproc N -------------------------------------------------------------------------


def _train(rank: int, world_size: int, device: Any, args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cnnkit.cli.train import TASKS, epoch_line, finish
    from cnnkit.data import load_task
    from cnnkit.models import build_model
    from cnnkit.optim import make_scheduler
    from cnnkit.registry import get_backend
    from cnnkit.training import History
    from cnnkit_torch.nn import copy_to_cnnkit, from_cnnkit

    lead = rank == 0
    arch_name, default_epochs = TASKS[args.task]
    arch_name = args.arch or arch_name
    epochs = args.epochs or default_epochs
    be = get_backend("torch", **({"dtype": args.dtype} if args.dtype else {}))
    split = load_task(args.task, seed=args.seed)
    model = build_model(arch_name, seed=args.seed, backend=be)  # the 1-process run's initial weights
    net = from_cnnkit(model, device=device)
    ddp = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(
        ddp.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
    )
    scheduler = make_scheduler(args.lr_schedule, _TorchLR(optimizer), epochs)  # fit's schedule, per epoch
    dtype = next(net.parameters()).dtype
    X = torch.from_numpy(np.asarray(split.X_train)).to(device=device, dtype=dtype)
    y = torch.from_numpy(np.asarray(split.y_train, dtype=np.int64)).to(device)
    X_test = torch.from_numpy(np.asarray(split.X_test)).to(device=device, dtype=dtype)
    y_test = np.asarray(split.y_test, dtype=np.int64)
    n, per_rank = len(split.y_train), args.batch_size // world_size
    if lead:
        n_params = sum(p.size for p in model.parameters())
        print(
            f"cnnkit train: {arch_name} ({n_params} parameters) on {args.task} "
            f"({n} train / {len(y_test)} held out), backend {be.name}"
            f"{' ' + str(be.options) if be.options else ''}, {epochs} epochs, seed {args.seed}, "
            f"{world_size} processes ({dist.get_backend()}, {per_rank or 1} examples per process "
            f"per step, device {device.type})",
            flush=True,
        )
    rng = np.random.default_rng(args.seed)  # the shuffle of cnnkit.training.fit, on every rank
    history = History()
    start_all = time.perf_counter()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        epoch_lr = float(scheduler.optimizer.lr)
        order = rng.permutation(n)
        net.train()
        totals = torch.zeros(2, dtype=torch.float64, device=device)  # Σ loss, Σ correct
        for b in range(0, n, args.batch_size):
            loss_sum, correct = train_step(
                ddp, optimizer, X, y, order[b : b + args.batch_size], rank, world_size
            )
            totals[0] += loss_sum
            totals[1] += correct
        dist.all_reduce(totals)
        history.epoch.append(epoch)
        history.train_loss.append(float(totals[0]) / n)
        history.train_acc.append(float(totals[1]) / n)
        history.lr.append(epoch_lr)
        scheduler.step()
        if lead:
            test_loss, test_acc = _evaluate(net, X_test, y_test)
            history.test_loss.append(test_loss)
            history.test_acc.append(test_acc)
            history.seconds.append(time.perf_counter() - start)
            print(epoch_line(epoch, epochs, history), flush=True)
    wall = time.perf_counter() - start_all
    if lead:
        copy_to_cnnkit(net, model)
        finish(
            args,
            model,
            split,
            arch_name,
            be,
            epochs,
            history,
            wall,
            device=str(device.type),
            nproc=world_size,
            dist_backend=dist.get_backend(),
        )
    dist.barrier()


class _TorchLR:
    """A torch optimiser seen through the ``lr`` attribute :mod:`cnnkit.optim`'s schedules drive."""

    def __init__(self, optimizer: Any) -> None:
        self._optimizer = optimizer

    @property
    def lr(self) -> float:
        return float(self._optimizer.param_groups[0]["lr"])

    @lr.setter
    def lr(self, value: float) -> None:
        for group in self._optimizer.param_groups:
            group["lr"] = value


def _evaluate(net: Any, X: Any, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and accuracy, as :func:`cnnkit.training.evaluate` computes them."""
    import torch

    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(X[i : i + batch_size]) for i in range(0, len(X), batch_size)])
    z = logits.cpu().numpy().astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean()), float((z.argmax(axis=1) == y).mean())


def run_cli(args: argparse.Namespace) -> int:
    """``cnnkit train`` with ``--nproc N`` > 1 or under ``torchrun``: train data-parallel.

    Args:
        args: the parsed ``cnnkit train`` arguments (see :mod:`cnnkit.cli.train`).

    Returns:
        0 when every process finished.

    Raises:
        ValueError: a backend other than torch, ``--nproc`` < 1, more CUDA
            processes than GPUs, a batch smaller than the number of processes.
    """
    if args.backend not in (None, "torch"):
        raise ValueError(f"train: --nproc runs on the torch backend, got --backend {args.backend}")
    env_world = os.environ.get("WORLD_SIZE")
    world = int(env_world) if env_world else args.nproc
    if world < 1:
        raise ValueError(f"train: --nproc must be >= 1, got {world}")
    if args.batch_size < world:
        raise ValueError(
            f"train: --batch-size {args.batch_size} gives no example to some of the {world} processes"
        )
    if env_world:  # under torchrun: the launcher started the processes and set the rendezvous
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        device = _device_for(args.device, local_rank)
        import torch.distributed as dist

        _join(rank, world, device, "env://")
        try:
            _train(rank, world, device, args)
        finally:
            dist.destroy_process_group()
        return 0
    import torch.multiprocessing as mp

    sys.stdout.flush()
    try:
        launch(_train, world, args, device=args.device)
    except mp.ProcessRaisedException as exc:
        print(f"cnnkit train: a process failed:\n{exc}", file=sys.stderr)
        return 1
    return 0
