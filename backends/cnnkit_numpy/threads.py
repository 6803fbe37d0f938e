"""The NumPy backend's threads: OpenBLAS's pool, and slabs of a batch run side by side.

NumPy runs its copies, reductions and elementwise loops on the calling thread; only the
matmul (OpenBLAS) has a pool of threads. A convolution's im2col and scatter, and every pass of
a pooling op, therefore used one core of the machine while the other waited for the next
matmul. The kernels whose samples are independent (the convolutions, the pools) instead
split the batch into one *slab* per thread (:func:`run_slabs`): each slab does all of its own
work, copies and matmuls, and NumPy releases the GIL inside its loops, so the slabs run at
once. Meanwhile OpenBLAS is held at one thread, so that two slabs' matmuls do not share
the cores with OpenBLAS's own threads as well. (A kernel whose channels are independent, as
batch norm's are, splits its channels the same way.) OpenBLAS's thread count is one setting for
the whole process: a matmul another thread of the program runs while a kernel holds it also
runs on one thread.

The slabs are fixed by the batch size and the thread count, never by timing, so a result
does not depend on which thread finished first: the weight gradient is the sum of the
slabs' partial sums, added in slab order.

:data:`THREADS` is the thread count: ``OPENBLAS_NUM_THREADS`` (else ``OMP_NUM_THREADS``)
when set, else the usable cores (at most 4); :func:`set_threads` (what
:meth:`cnnkit_numpy.backend.NumpyBackend.set_threads` calls) sets both it and OpenBLAS's pool.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["SLAB_MIN_BYTES", "THREADS", "blas_pinnable", "in_slab", "run_slabs", "set_threads", "slabs"]


def _default_threads() -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            n = int(os.environ.get(var, "").strip())
        except ValueError:
            continue
        if n > 0:
            return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


#: Threads that share one kernel's batch (and OpenBLAS's pool size outside of the slabs).
THREADS = _default_threads()
#: Inputs smaller than this many bytes stay on one thread: a hand-off costs tens of µs.
SLAB_MIN_BYTES = 512 * 2**10

_local = threading.local()
_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own
_blas_fns: tuple[Any, Any] | None = None  # (set, get) of the OpenBLAS NumPy loaded, or (None, None)
_pin_lock = threading.Lock()
_pinned = 0  # callers inside run_slabs holding OpenBLAS at one thread
_pinned_from = 0  # its thread count before (or the one set meanwhile): restored when the last leaves


def _openblas() -> tuple[Any, Any]:
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS NumPy loaded, else ``(None, None)``."""
    global _blas_fns
    if _blas_fns is not None:
        return _blas_fns
    import numpy  # noqa: F401  (loads its BLAS, so /proc/self/maps lists it)

    found: tuple[Any, Any] = (None, None)
    try:
        with open("/proc/self/maps") as f:
            libs = sorted({ln.split()[-1] for ln in f if "openblas" in ln.lower() and ".so" in ln})
    except OSError:
        libs = []
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_openblas", "64_"), ("openblas", "64_"), ("openblas", "")):
            set_fn = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            get_fn = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if set_fn is not None and get_fn is not None:
                set_fn.argtypes, set_fn.restype = [ctypes.c_int], None
                get_fn.argtypes, get_fn.restype = [], ctypes.c_int
                found = (set_fn, get_fn)
                break
        if found[0] is not None:
            break
    _blas_fns = found
    return found


def blas_pinnable() -> bool:
    """Whether OpenBLAS's pool can be held at one thread (else slabs' matmuls would
    oversubscribe the cores, and a kernel that calls BLAS keeps one slab)."""
    return _openblas()[0] is not None


def blas_threads() -> int | None:
    """The thread count of NumPy's OpenBLAS now (``None``: no OpenBLAS found)."""
    get = _openblas()[1]
    return None if get is None else int(get())


def set_threads(n: int) -> bool:
    """:data:`THREADS` and OpenBLAS's pool := ``n`` (``False``: no OpenBLAS found to size)."""
    global THREADS, _pinned_from
    THREADS = max(1, int(n))
    set_fn = _openblas()[0]
    if set_fn is None:
        return False
    with _pin_lock:
        if _pinned == 0:
            set_fn(THREADS)
        else:  # a kernel holds OpenBLAS at one thread now: the last to leave sets the new size
            _pinned_from = THREADS
    return True


def in_slab() -> bool:
    """Whether this thread is running one slab of a kernel (nothing inside splits again)."""
    return getattr(_local, "slab", False)


def slabs(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` as ``parts`` contiguous ranges as equal as can be (none empty)."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def _run(fn: Callable[[int, int], Any], lo: int, hi: int) -> Any:
    _local.slab = True
    try:
        return fn(lo, hi)
    finally:
        _local.slab = False


def _pin() -> None:
    global _pinned, _pinned_from
    set_fn, get_fn = _openblas()
    if set_fn is None:
        return
    with _pin_lock:
        if _pinned == 0:
            _pinned_from = int(get_fn())
            if _pinned_from != 1:
                set_fn(1)
        _pinned += 1


def _unpin() -> None:
    global _pinned
    set_fn = _openblas()[0]
    if set_fn is None:
        return
    with _pin_lock:
        _pinned -= 1
        if _pinned == 0 and _pinned_from != 1:
            set_fn(_pinned_from)


def run_slabs(
    fn: Callable[[int, int], Any], n: int, nbytes: int, parts: int | None = None, blas: bool = False
) -> list[Any]:
    """``[fn(lo, hi) for each slab]`` of ``[0, n)``: one slab per thread (``parts``, default
    :data:`THREADS`), the calling thread taking the first, the results in slab order.

    One call ``fn(0, n)`` instead when there is one thread or one item, when the work is
    under :data:`SLAB_MIN_BYTES` of input, when already inside a slab, or, for a kernel that
    calls BLAS (``blas``), when OpenBLAS cannot be held at one thread meanwhile.
    """
    global _pool
    parts = min(THREADS if parts is None else parts, n)
    if parts <= 1 or nbytes < SLAB_MIN_BYTES or in_slab() or (blas and not blas_pinnable()):
        return [fn(0, n)]
    if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers < parts - 1:
        _pool = (os.getpid(), ThreadPoolExecutor(max(1, parts - 1), thread_name_prefix="cnnkit-slab"))
    bounds = slabs(n, parts)
    if blas:
        _pin()
    try:
        futures = [_pool[1].submit(_run, fn, lo, hi) for lo, hi in bounds[1:]]
        try:
            first = _run(fn, *bounds[0])
        finally:  # every slab has ended before this returns or raises
            done = [f.exception() is None for f in futures]
        if not all(done):
            futures[done.index(False)].result()  # raises the first slab's error
        return [first, *(f.result() for f in futures)]
    finally:
        if blas:
            _unpin()
