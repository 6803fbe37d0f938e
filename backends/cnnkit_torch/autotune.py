"""Which convolution backward route to take, chosen by measurement (as ``torch.backends.cudnn.benchmark``).

The convolution Function of :mod:`cnnkit_torch.ops` has several exact ways to compute each
gradient (``dx``: ``"rot180"``, a convolution of ``δ`` with ``rot180(W)`` /
``conv_transpose``, or ``"im2col"`` + scatter; ``dW``: ``"gemm"``, one GEMM per kernel
offset on the padded grid, ``"columns"``, channels-last im2col columns, ``"im2col"`` per
sample, or ``"swapped"``, a convolution with batch and channels swapped).
Which is fastest depends on the shape *and the CPU*: thresholds tuned on one
machine were 1.4x slower than native on another. So the first time a shape is
seen, every candidate is run on the real tensors and timed, the fastest is kept
for the rest of the process (and, with ``CNNKIT_AUTOTUNE_CACHE=path.json``, in a
small JSON file that later processes read), and later calls of that shape take
it without timing anything.

Every route computes the same sums (the tests hold each to native autograd), so
the choice changes results by float rounding only. The fixed rule
(:func:`fixed_dx_route`, :func:`fixed_dw_route`: the thresholds tuned before) is
used instead of timing when

- autotuning is off: ``CNNKIT_AUTOTUNE=0`` in the environment,
  :func:`set_enabled(False) <set_enabled>`, or ``TorchBackend(autotune=False)``;
- ``torch.use_deterministic_algorithms(True)``: the route then depends on the
  shape alone, so the same program gives the same bits run after run;
- the call is too small for the timing to pay off (:data:`MIN_FLOPS`), the
  tensors have no data (``meta``), or torch is compiling or tracing.

The record of what was timed and chosen, and what it cost, is :func:`decisions`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "MIN_FLOPS",
    "clear",
    "decisions",
    "enabled",
    "fixed_dw_route",
    "fixed_dx_route",
    "set_enabled",
]

#: Calls of fewer multiply-adds than this (per gradient) take the fixed rule: timing them costs
#: more than any route could save, and their times are mostly Python overhead.
MIN_FLOPS = 20_000_000
#: A candidate replaces the fixed rule's route only when faster by this factor (noise margin).
MARGIN = 0.97
#: The im2col route's columns are built whole (not in chunks): no candidate above this size.
IM2COL_MAX_BYTES = 64 * 2**20
#: Timed rounds (every candidate once per round), after one untimed warm-up run each; the
#: fastest run of each candidate counts.
REPEATS = 3

_lock = threading.Lock()
_enabled: bool | None = None  # None: read CNNKIT_AUTOTUNE
_cache: dict[str, str] = {}
_records: dict[str, dict[str, Any]] = {}
_file_loaded: str | None = None


# -- switches ------------------------------------------------------------------------------------


def set_enabled(flag: bool | None) -> None:
    """Turn autotuning on or off for this process (``None``: back to ``CNNKIT_AUTOTUNE``)."""
    global _enabled
    _enabled = None if flag is None else bool(flag)


def enabled() -> bool:
    """Whether routes are timed: :func:`set_enabled`, else ``CNNKIT_AUTOTUNE`` (default on)."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("CNNKIT_AUTOTUNE", "1").strip().lower() not in ("0", "false", "no", "off", "")


def clear() -> None:
    """Forget every choice made in this process (the cache file is left alone)."""
    global _file_loaded
    with _lock:
        _cache.clear()
        _records.clear()
        _file_loaded = None


def decisions() -> dict[str, dict[str, Any]]:
    """Every timed choice of this process: ``key -> {"route", "times_ms", "cost_ms", "fixed"}``."""
    with _lock:
        return {k: dict(v) for k, v in _records.items()}


# -- the fixed rule (the thresholds measured on one CPU before autotuning) -----------------------


def _im2col_shape(c: int, k: int, groups: int) -> bool:
    return groups == 1 and c <= 4 and k >= 16


def fixed_dx_route(c: int, k: int, groups: int) -> str:
    """``"im2col"`` for few input channels and many filters, else ``"rot180"``."""
    return "im2col" if _im2col_shape(c, k, groups) else "rot180"


def fixed_dw_route(c: int, k: int, stride: Sequence[int], groups: int) -> str:
    """``"im2col"`` (few channels, many filters), ``"gemm"`` (stride 1, C >= 8), ``"columns"``
    (strided, C >= 8), else ``"swapped"``."""
    if _im2col_shape(c, k, groups):
        return "im2col"
    if groups == 1 and c >= 8:
        return "gemm" if all(s == 1 for s in stride) else "columns"
    return "swapped"


# -- timing -------------------------------------------------------------------------------------


def _tunable(x: torch.Tensor, flops: int) -> bool:
    if not enabled() or flops < MIN_FLOPS or x.device.type == "meta":
        return False
    if torch.are_deterministic_algorithms_enabled():
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and (compiler.is_compiling() or getattr(compiler, "is_exporting", bool)()):
        return False
    return not torch.jit.is_tracing() and not torch.jit.is_scripting()


def _cache_path() -> str | None:
    return os.environ.get("CNNKIT_AUTOTUNE_CACHE") or None


def _load_file() -> None:
    """Read the cache file once per path (under the lock)."""
    global _file_loaded
    path = _cache_path()
    if path is None or _file_loaded == path:
        return
    _file_loaded = path
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return
    if isinstance(data, dict):
        _cache.update({k: v for k, v in data.get("routes", {}).items() if isinstance(v, str)})


def _save_file() -> None:
    path = _cache_path()
    if path is None:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump({"schema": 1, "routes": dict(sorted(_cache.items()))}, f, indent=1)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def _time_all(candidates: dict[str, Callable[[], Any]], sync: Callable[[], None]) -> dict[str, float]:
    """Each candidate's fastest run in ms: one untimed warm-up each, then :data:`REPEATS` rounds
    that run every candidate once in turn, so a burst of load from elsewhere falls on all of
    them alike. A candidate that cannot run here (memory) is left out."""
    best: dict[str, float] = {}
    with torch.no_grad():
        for name, fn in candidates.items():
            try:
                fn()  # warm-up: allocations, oneDNN primitives, caches
            except (RuntimeError, MemoryError):
                continue
            best[name] = math.inf
        for _ in range(REPEATS):
            for name in best:
                sync()
                t0 = time.perf_counter()
                candidates[name]()
                sync()
                best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


def choose(key: str, candidates: dict[str, Callable[[], Any]], fixed: str, device: torch.device) -> str:
    """The route for ``key``: cached, else the fastest of ``candidates`` (``fixed`` unless another
    is faster by the :data:`MARGIN`), timed now. ``fixed`` must be among the candidates."""
    with _lock:
        _load_file()
        route = _cache.get(key)
    if route in candidates:
        return route
    if len(candidates) == 1:
        return fixed
    sync = _sync(device)
    t0 = time.perf_counter()
    times = _time_all(candidates, sync)
    cost = (time.perf_counter() - t0) * 1e3
    route = fixed
    if times:
        best = min(times, key=times.__getitem__)
        if fixed not in times or times[best] < MARGIN * times[fixed]:
            route = best
    with _lock:
        _cache[key] = route
        _records[key] = {
            "route": route,
            "fixed": fixed,
            "times_ms": {k: round(v, 3) for k, v in times.items()},
            "cost_ms": round(cost, 3),
        }
        _save_file()
    return route


def _key(kind: str, x: torch.Tensor, dy: torch.Tensor, kernel, stride, pads, dilation, groups) -> str:
    pads_ = ",".join(f"{lo}:{hi}" for lo, hi in pads)
    return (
        f"{kind}|{x.device.type}|{str(x.dtype).removeprefix('torch.')}|x{tuple(x.shape)}|dy{tuple(dy.shape)}"
        f"|f{tuple(kernel)}|s{tuple(stride)}|p{pads_}|d{tuple(dilation)}|g{groups}"
        f"|t{torch.get_num_threads() if x.device.type == 'cpu' else 0}"
    )


def _flops(x: torch.Tensor, dy: torch.Tensor, kernel: Sequence[int], groups: int) -> int:
    """Multiply-adds of one gradient: ``N·K·C/G·ΠF·ΠO``."""
    return (
        dy.shape[0]
        * dy.shape[1]
        * (x.shape[1] // max(groups, 1))
        * math.prod(kernel)
        * math.prod(dy.shape[2:])
    )


# -- the two questions the convolution backward asks ---------------------------------------------------------


def dx_route(x, w, dy, stride, pads, dilation, groups) -> str:
    """``"rot180"`` (:func:`~cnnkit_torch.ops._conv_input_grad`) or ``"im2col"``
    (:func:`~cnnkit_torch.ops._conv_grads_im2col`) for ``δ_prev``."""
    from cnnkit_torch import ops  # the module that asks; looked up now, so patched routes are timed

    c, k, kernel = x.shape[1], w.shape[0], w.shape[2:]
    fixed = fixed_dx_route(c, k, groups)
    if not _tunable(x, _flops(x, dy, kernel, groups)):
        return fixed
    cands: dict[str, Callable[[], Any]] = {
        "rot180": lambda: ops._conv_input_grad(dy, w, x.shape, stride, pads, dilation, groups)
    }
    if groups == 1:
        cands["im2col"] = lambda: ops._conv_grads_im2col(x, w, dy, stride, pads, dilation, True, False)
    return choose(_key("dx", x, dy, kernel, stride, pads, dilation, groups), cands, fixed, x.device)


def dw_route(x, dy, kernel, stride, pads, dilation, groups) -> str:
    """``"gemm"``, ``"columns"``, ``"swapped"`` or ``"im2col"`` for ``dE/dW``."""
    from cnnkit_torch import ops

    c, k = x.shape[1], dy.shape[1]
    fixed = fixed_dw_route(c, k, stride, groups)
    if not _tunable(x, _flops(x, dy, kernel, groups)):
        return fixed
    cands: dict[str, Callable[[], Any]] = {
        "swapped": lambda: ops._conv_weight_grad_conv(x, dy, kernel, stride, pads, dilation, groups)
    }
    if groups == 1:
        if all(s == 1 for s in stride):
            cands["gemm"] = lambda: ops._conv_weight_grad_gemm(x, dy, kernel, 1, pads, dilation)
        cands["columns"] = lambda: ops._conv_weight_grad_columns(x, dy, kernel, stride, pads, dilation)
        cols = x.shape[0] * c * math.prod(kernel) * math.prod(dy.shape[2:]) * x.element_size()
        if cols <= IM2COL_MAX_BYTES or fixed == "im2col":
            w_like = x.new_empty((k, c, *kernel))  # only its shape is read when dx is not asked
            cands["im2col"] = lambda: ops._conv_grads_im2col(
                x, w_like, dy, stride, pads, dilation, False, True
            )
    return choose(_key("dw", x, dy, kernel, stride, pads, dilation, groups), cands, fixed, x.device)
