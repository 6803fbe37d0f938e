"""The timing side of the harness: one backend, alone in its own process.

``benchmarks.run`` starts one worker per backend (NumPy's BLAS threads and
torch's OpenMP threads would contend if they alternated in one process), with
the thread counts pinned through the environment before NumPy or torch load.
A worker builds every workload's inputs once (the same seeded values in every
worker), warms each call up, reports checksums of its outputs, then answers
one JSON command per line on stdin with one JSON line on stdout:

``{"cmd": "round"}``  time every (workload, pass) once; reply ``{"times": ...}`` in ms.
``{"cmd": "quit"}``   exit.

``--memory`` instead measures the NumPy backend's peak memory for W3's
forward+backward under :mod:`tracemalloc` and prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a file: make ``benchmarks`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.workloads import MEMORY_BATCHES, VGG_LAYERS, Workload, memory_workload, workloads

MODES = ("fwd", "fwdbwd")
SEED = 0


def _inputs(wl: Workload) -> dict[str, np.ndarray]:
    """The workload's float32 inputs and output gradient: the same values in every worker."""
    rng = np.random.default_rng(SEED)
    arrays = {"x": rng.standard_normal(wl.input_shape, dtype=np.float32)}
    if wl.has_weight:
        fan_in = wl.c * wl.f ** len(wl.spatial)
        arrays["w"] = rng.standard_normal(wl.weight_shape, dtype=np.float32) / np.float32(fan_in**0.5)
        arrays["b"] = rng.standard_normal((wl.k,), dtype=np.float32)
    if wl.is_norm:
        arrays["running_mean"] = np.zeros(wl.c, np.float32)
        arrays["running_var"] = np.ones(wl.c, np.float32)
        arrays["w"] = 1 + 0.1 * rng.standard_normal((wl.c,), dtype=np.float32)
        arrays["b"] = 0.1 * rng.standard_normal((wl.c,), dtype=np.float32)
    arrays["dy"] = rng.standard_normal(wl.output_shape, dtype=np.float32)
    return arrays


def _args(wl: Workload, a: dict[str, Any]) -> tuple[tuple, tuple[bool, ...]]:
    """The op's positional inputs, and which of them get a gradient (not the running statistics)."""
    if wl.has_weight:
        return (a["x"], a["w"], a["b"]), (True, True, True)
    if wl.is_norm:
        args = (a["x"], a["running_mean"], a["running_var"], a["w"], a["b"])
        return args, (True, False, False, True, True)
    return (a["x"],), (True,)


def _attrs(wl: Workload) -> dict[str, Any]:
    if wl.is_transpose:
        return {"stride": wl.stride, "padding": wl.padding, "output_padding": wl.output_padding}
    if wl.is_conv:
        return {"stride": wl.stride, "padding": wl.padding}
    if wl.is_norm:
        return {"training": True}
    return {"kernel_size": wl.f, "stride": wl.stride}


class Calls:
    """``fwd()`` and ``fwdbwd()`` for one workload on one backend; both return the outputs.

    ``fwdbwd`` returns ``(y, dx, dW, db)`` for conv and transposed conv, ``(y, dx, dγ, dβ)`` for
    batch norm and ``(y, dx)`` for pooling.
    Inputs are built once and reused by every sample.
    """

    sync: Callable[[], None] = staticmethod(lambda: None)

    def fwd(self) -> tuple:
        raise NotImplementedError

    def fwdbwd(self) -> tuple:
        raise NotImplementedError


class NumpyCalls(Calls):
    """cnnkit's NumPy backend: ``functional`` forward, :func:`cnnkit.vjp` forward+backward."""

    def __init__(self, wl: Workload, device: str) -> None:
        import cnnkit

        self.vjp = cnnkit.vjp
        self.fn = getattr(cnnkit.functional, wl.op)
        a = _inputs(wl)
        self.args, _ = _args(wl, a)
        self.dy = a["dy"]
        self.attrs = {**_attrs(wl), "backend": "numpy"}

    def fwd(self):
        return (self.fn(*self.args, **self.attrs),)

    def fwdbwd(self):
        y, pullback = self.vjp(self.fn, *self.args, **self.attrs)
        # one gradient per op input in the op's order (batch norm: input, weight, bias, then
        # None for the running statistics): those that exist, as torch's leaves give them
        return (y, *(g for g in pullback(self.dy) if g is not None))


class TorchCalls(Calls):
    """PyTorch, native (``torch.nn.functional`` under autograd) or cnnkit's ``torch`` backend.

    The forward pass runs under ``torch.no_grad()``; forward+backward runs on
    leaf tensors that require grad and calls ``y.backward(dy)``.
    """

    def __init__(self, wl: Workload, device: str, native: bool) -> None:
        import torch

        self.torch = torch
        if native:
            self.fn = getattr(torch.nn.functional, wl.op)
            self.attrs = _attrs(wl)
        else:
            import cnnkit

            self.fn = getattr(cnnkit.functional, wl.op)
            self.attrs = {**_attrs(wl), "backend": _torch_backend(device)}
        a = {k: torch.from_numpy(v).to(device) for k, v in _inputs(wl).items()}
        self.args, differentiable = _args(wl, a)
        self.inputs = tuple(t.detach().clone().requires_grad_(d) for t, d in zip(self.args, differentiable))
        self.leaves = tuple(t for t, d in zip(self.inputs, differentiable) if d)
        self.dy = a["dy"]
        if device.startswith("cuda"):
            self.sync = torch.cuda.synchronize

    def fwd(self):
        with self.torch.no_grad():
            return (self.fn(*self.args, **self.attrs),)

    def fwdbwd(self):
        for t in self.leaves:
            t.grad = None
        y = self.fn(*self.inputs, **self.attrs)
        y.backward(self.dy)
        return (y, *(t.grad for t in self.leaves))


def _torch_backend(device: str) -> Any:
    """cnnkit's torch backend bound to ``device`` (the bare name if it takes no options)."""
    import cnnkit

    try:
        return cnnkit.get_registry().backend("torch", device=device)
    except TypeError:
        return "torch"


class VggCalls(Calls):
    """A training step of the small VGG (:data:`~benchmarks.workloads.VGG_LAYERS`): ``fwd`` the
    loss under ``no_grad``, ``fwdbwd`` forward, backward and an SGD update of every parameter.
    PyTorch native or cnnkit's torch backend (the NumPy backend has no autograd to drive it)."""

    LR = 1e-3

    def __init__(self, wl: Workload, device: str, native: bool) -> None:
        import torch

        self.torch = torch
        if native:
            self.F = torch.nn.functional
            self.kw: dict[str, Any] = {}
        else:
            import cnnkit

            self.F = cnnkit.functional
            self.kw = {"backend": _torch_backend(device)}
        rng = np.random.default_rng(SEED)
        c, size, params = wl.c, list(wl.spatial), []
        for kind, arg in VGG_LAYERS:
            if kind == "conv":
                w = rng.standard_normal((arg, c, 3, 3), dtype=np.float32) * np.float32((2 / (9 * c)) ** 0.5)
                params += [w, np.zeros(arg, np.float32)]
                c = arg
            elif kind == "maxpool":
                size = [n // arg for n in size]
            else:  # the hook: a new layer kind needs its parameters here and a branch in _layer
                raise NotImplementedError(f"VGG layer {kind!r} is not wired into the benchmark yet")
        fan_in = c * int(np.prod(size))
        params += [rng.standard_normal((wl.k, fan_in), dtype=np.float32) / np.float32(fan_in**0.5)]
        params += [np.zeros(wl.k, np.float32)]
        self.params = [torch.from_numpy(p).to(device).requires_grad_() for p in params]
        self.x = torch.from_numpy(rng.standard_normal(wl.input_shape, dtype=np.float32)).to(device)
        self.t = torch.from_numpy(rng.integers(0, wl.k, wl.n)).to(device)
        if device.startswith("cuda"):
            self.sync = torch.cuda.synchronize

    def _layer(self, kind: str, arg: int, h: Any, params: list) -> Any:
        F, kw = self.F, self.kw
        if kind == "conv":
            w, b = params.pop(0), params.pop(0)
            return F.relu(F.conv2d(h, w, b, 1, 1, **kw), **kw)
        if kind == "maxpool":
            return F.max_pool2d(h, arg, **kw)
        raise NotImplementedError(kind)  # the hook (see VGG_LAYERS)

    def _loss(self) -> Any:
        params = list(self.params)
        h = self.x
        for kind, arg in VGG_LAYERS:
            h = self._layer(kind, arg, h, params)
        h = self.torch.flatten(h, 1) if not self.kw else self.F.flatten(h, 1, **self.kw)
        logits = self.F.linear(h, params[0], params[1], **self.kw)
        return self.F.cross_entropy(logits, self.t, **self.kw)

    def fwd(self):
        with self.torch.no_grad():
            return (self._loss(),)

    def fwdbwd(self):
        for p in self.params:
            p.grad = None
        loss = self._loss()
        loss.backward()
        with self.torch.no_grad():
            for p in self.params:
                p.sub_(p.grad, alpha=self.LR)
        return (loss, self.params[0].grad, self.params[-2].grad, self.params[-1].grad)


def make_calls(backend: str, wl: Workload, device: str) -> Calls:
    if wl.is_model:
        if backend == "numpy":
            raise NotImplementedError("the VGG step runs on the torch backend and native only")
        return VggCalls(wl, device, native=backend == "native")
    if backend == "numpy":
        return NumpyCalls(wl, device)
    return TorchCalls(wl, device, native=backend == "native")


def _norm(a: Any) -> float:
    if hasattr(a, "detach"):
        return float(a.detach().double().norm().cpu())
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64).ravel()))


def _error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:300]


def time_call(fn: Callable[[], Any], sync: Callable[[], None]) -> float:
    """One sample, in milliseconds; the outputs are dropped after the clock stops."""
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    t1 = time.perf_counter()
    del out
    return (t1 - t0) * 1e3


# -- the machine: thread counts and matmul peak ---------------------------------------------


def _openblas_threads() -> int | None:
    """The thread count of the OpenBLAS NumPy loaded, read from the library itself (best effort)."""
    from cnnkit_numpy import threads

    return threads.blas_threads()


def process_info(backend: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "pid": os.getpid(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
        "numpy": np.__version__,
        "openblas_threads": _openblas_threads(),
        "torch_loaded": "torch" in sys.modules,
    }
    if "torch" in sys.modules:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return info


def matmul_peak(backend: str, device: str, sizes: tuple[int, ...], repeat: int) -> dict[str, Any]:
    """GFLOP/s of float32 GEMMs (``2·n³`` FLOPs) per size; the peak is the best of all.

    With the threads the ops use (this worker's), after three warm-up calls, each size's fastest
    sample (and its median; on a shared machine the median is pulled down by others' load).
    NumPy: ``np.matmul`` (its BLAS). torch: ``torch.mm`` (MKL or OpenBLAS) *and* a 1x1
    convolution of the same GEMM (``C = K = n``, ``n`` pixels), which runs in oneDNN, as the
    convs do: on some CPUs oneDNN's GEMM is much faster than the BLAS's (MKL on AMD), and a
    peak from ``torch.mm`` alone was below what native convs reach.
    """
    rng = np.random.default_rng(SEED)
    result: dict[str, Any] = {"library": "numpy" if backend == "numpy" else "torch", "sizes": {}}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        sync = Calls.sync
        kernels: dict[str, Callable[[], Any]] = {}
        if backend == "numpy":
            out = np.empty((n, n), np.float32)
            kernels["matmul"] = lambda a=a, b=b, out=out: np.matmul(a, b, out=out)
        else:
            import torch

            ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
            tout = torch.empty((n, n), device=device)
            kernels["mm"] = lambda a=ta, b=tb, out=tout: torch.mm(a, b, out=out)
            side = int(n**0.5)
            if side * side == n or n % 32 == 0:
                shape = (1, n, side, n // side) if side * side == n else (1, n, 32, n // 32)
                cx = ta.reshape(shape)
                cw = tb.reshape(n, n, 1, 1)
                kernels["conv1x1"] = lambda x=cx, w=cw: torch.conv2d(x, w)
            if device.startswith("cuda"):
                sync = torch.cuda.synchronize
        for kind, mm in kernels.items():
            for _ in range(3):
                mm()
            ms = [time_call(mm, sync) for _ in range(repeat)]
            result["sizes"][f"{kind} {n}" if kind not in ("matmul", "mm") else str(n)] = {
                "samples_ms": ms,
                "median_gflops": 2 * n**3 / statistics.median(ms) / 1e6,
                "gflops": 2 * n**3 / min(ms) / 1e6,
            }
    result["gflops"] = max(s["gflops"] for s in result["sizes"].values())
    return result


# -- memory -----------------------------------------------------------------------------------


def measure_memory(profile: str) -> dict[str, Any]:
    """Peak traced memory of the NumPy backend's W3 forward+backward at two batch sizes.

    Inputs and the output gradient exist before tracing starts, so they are not
    counted. ``extra`` is the peak minus the results the call must return
    (``y, dx, dW, db``): the working memory the backend chose to use.
    """
    import cnnkit

    fn = cnnkit.functional.conv2d
    out: dict[str, Any] = {"workload": "W3", "batches": {}}
    for n in MEMORY_BATCHES[profile]:
        wl = memory_workload(profile, n)
        a = _inputs(wl)
        attrs = {**_attrs(wl), "backend": "numpy"}
        y, pullback = cnnkit.vjp(fn, a["x"][:1], a["w"], a["b"], **attrs)  # load kernels untraced
        pullback(a["dy"][:1])
        del y, pullback
        gc.collect()
        tracemalloc.start()
        try:
            y, pullback = cnnkit.vjp(fn, a["x"], a["w"], a["b"], **attrs)
            results = (y, *pullback(a["dy"]))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        result_bytes = sum(r.nbytes for r in results if r is not None)
        out["batches"][str(n)] = {
            "workload": wl.to_json(),
            "input_bytes": int(a["x"].nbytes),
            "peak_bytes": int(peak),
            "result_bytes": int(result_bytes),
            "extra_bytes": int(peak - result_bytes),
        }
        del y, pullback, results, a
        gc.collect()
    lo, hi = (out["batches"][str(n)]["extra_bytes"] for n in MEMORY_BATCHES[profile])
    out["ratio"] = hi / lo if lo > 0 else None
    return out


# -- the worker loop ----------------------------------------------------------------------------


def _send(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(args: argparse.Namespace) -> None:
    if args.backend != "numpy":
        import torch

        torch.set_num_threads(args.threads)
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            _send({"skipped": f"no CUDA device for --device {args.device}"})
            return
    hello: dict[str, Any] = {"process": None, "peak": None, "checks": {}, "errors": {}, "first_ms": {}}
    if args.peak:
        hello["peak"] = matmul_peak(args.backend, args.device, tuple(args.peak_sizes), repeat=7)
    gc.collect()
    calls: dict[str, Calls] = {}
    for wl in workloads(args.profile, args.workloads):
        try:
            calls[wl.name] = make_calls(args.backend, wl, args.device)
        except Exception as exc:
            hello["errors"][wl.name] = {m: _error(exc) for m in MODES}
            continue
        for mode in MODES:
            try:
                fn = getattr(calls[wl.name], mode)
                t0 = time.perf_counter()
                outs = fn()
                calls[wl.name].sync()
                hello["first_ms"].setdefault(wl.name, {})[mode] = (time.perf_counter() - t0) * 1e3
                norms = [None if o is None else _norm(o) for o in outs]
                hello["checks"].setdefault(wl.name, {})[mode] = norms
                del outs
                for _ in range(args.warmup - 1):
                    time_call(fn, calls[wl.name].sync)
            except Exception as exc:
                hello["errors"].setdefault(wl.name, {})[mode] = _error(exc)
    hello["process"] = process_info(args.backend)
    if args.backend == "numpy":
        from cnnkit_numpy import ops as np_ops

        hello["numpy_tuning"] = dict(np_ops.TUNED)
    if args.backend == "torch":
        from cnnkit_torch import autotune

        hello["autotune"] = {"enabled": autotune.enabled(), "decisions": autotune.decisions()}
    _send(hello)
    gc.disable()
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        times: dict[str, dict[str, float]] = {}
        for name, c in calls.items():
            for mode in MODES:
                if mode not in hello["errors"].get(name, {}):
                    times.setdefault(name, {})[mode] = time_call(getattr(c, mode), c.sync)
        gc.collect()
        _send({"times": times})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("numpy", "torch", "native"), default="numpy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", choices=("full", "tiny"), default="full")
    p.add_argument("--workloads", type=lambda s: [w for w in s.split(",") if w], default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--peak", action="store_true", help="measure the matmul peak first")
    p.add_argument("--peak-sizes", type=lambda s: [int(n) for n in s.split(",")], default=[512, 1024])
    p.add_argument("--memory", action="store_true", help="measure memory instead of time")
    args = p.parse_args(argv)
    if args.memory:
        try:
            _send(measure_memory(args.profile))
        except Exception as exc:
            _send({"error": _error(exc)})
        return
    serve(args)


if __name__ == "__main__":
    main()
