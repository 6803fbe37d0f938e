"""``cnnkit conformance``: the op x backend matrix of the conformance suite, with the largest error seen.

It plans and runs items with :mod:`cnnkit.conformance.runner` (the same
items, checks and report as ``pytest --pyargs cnnkit.conformance``) and exits
with status 1 when any item fails or a known-failure entry is stale.

Examples::

    cnnkit conformance                                  # every backend, every case
    cnnkit conformance --backend tiny --xfail known_failures.txt
    cnnkit conformance --op relu --op max_pool --dtype float64 --json
    cnnkit conformance -j 2                             # two worker processes
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from cnnkit.conformance import runner
from cnnkit.errors import BackendUnavailableError
from cnnkit.registry import get_registry

NAME = "conformance"
HELP = "run the conformance suite: op x backend matrix with pass/fail counts and the largest error"

#: Items per task sent to a worker process.
CHUNK = 64
#: Thread-count variables of the OpenMP/BLAS pools that backends (torch, NumPy's BLAS) start.


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "Each matrix cell reads passed/failed/skipped/not-implemented, then 'xfN' for known\n"
        "failures and 'err E', the largest error seen relative to max(1, max|expected|).\n"
        "A backend that cannot load here (a dependency missing) is reported unavailable with\n"
        "what to install, and not checked.\n"
        "Exit status: 0 when nothing failed, 1 on a failure, a stale known-failure entry or a\n"
        "--backend that cannot load, 2 on a usage error. See cnnkit/conformance/README.md."
    )
    add = parser.add_argument
    add("--backend", action="append", default=[], metavar="NAME", help="backend to check (repeatable)")
    add("--op", action="append", default=[], metavar="OP", help="check only this op kind (repeatable)")
    add(
        "--include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only cases whose id matches this fnmatch pattern (repeatable)",
    )
    add(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip cases whose id matches this fnmatch pattern (repeatable)",
    )
    add(
        "--xfail",
        metavar="FILE",
        help="known failures, 'pattern  # reason' per line; an entry that passes now fails the run",
    )
    add(
        "--dtype",
        action="append",
        default=[],
        choices=sorted(runner.TOLERANCES),
        help="dtype to sweep (repeatable; default: float32 and float64)",
    )
    add(
        "--device",
        action="append",
        default=[],
        metavar="DEVICE",
        help="check only this device ('cpu', 'cuda:0', or 'cuda' for every GPU; repeatable; "
        "default: every device each backend reports)",
    )
    add("--json", action="store_true", help="print the report as JSON")
    add(
        "--self-check",
        action="store_true",
        help="measure the suite itself: run it on every mutant the backends offer (one planted bug "
        "each) and report which check caught it; exit 1 if one survives",
    )
    add(
        "-j",
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="worker processes (default 1; 0: one per CPU), one thread each unless OMP_NUM_THREADS "
        "is set. Workers load plugins from entry points",
    )
    add("--failures", type=int, default=5, metavar="N", help="failures shown in full (default 5)")


def _device_matches(device: str, wanted: Sequence[str]) -> bool:
    return any(device == w or device.split(":")[0] == w or fnmatch.fnmatchcase(device, w) for w in wanted)


def select(
    backends: Sequence[str] = (),
    ops: Sequence[str] = (),
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    dtypes: Sequence[str] = (),
    devices: Sequence[str] = (),
) -> list[runner.Item]:
    """The planned items (:func:`cnnkit.conformance.runner.plan`) filtered by op and device.

    Raises:
        ValueError: an unknown backend or op, or a device no selected backend
            reports (the message lists those that exist).
    """
    registry = get_registry()
    known_ops = registry.ops()
    unknown = [op for op in ops if op not in known_ops]
    if unknown:
        raise ValueError(f"--op: unknown op(s) {unknown}; registered ops: {', '.join(sorted(known_ops))}")
    try:
        items = runner.plan(backends or None, include, exclude, dtypes=dtypes or runner.DTYPES)
    except KeyError as exc:
        raise ValueError(f"--backend: {exc.args[0]}") from None
    if ops:
        items = [i for i in items if i.case.op in ops]
    if devices:
        seen = sorted({i.target.device for i in items})
        items = [i for i in items if _device_matches(i.target.device, devices)]
        if seen and not items:
            raise ValueError(f"--device: no selected backend reports {list(devices)}; they report {seen}")
    return items


def unavailable_backends(backends: Sequence[str] = ()) -> dict[str, str]:
    """``{name: reason}`` for the selected backends (default: every registered one) that cannot
    load here, the reason naming what to install. Unknown names are left to :func:`select`."""
    registry = get_registry()
    infos = registry.backend_infos()
    out = {}
    for name in backends or sorted(infos):
        if name not in infos:
            continue
        try:
            registry.backend(name)
        except (BackendUnavailableError, ImportError) as exc:
            out[name] = str(exc)
    return out


# -- worker processes ----------------------------------------------------------------------

_WORKER_ITEMS: list[runner.Item] = []


@contextlib.contextmanager
def one_thread_each() -> Iterator[None]:
    """Thread pools created inside start with one thread, unless the user set their size.

    The cases are small arrays: a pool of several threads only waits on its
    barriers, and on a loaded machine that made the torch backend several times
    slower. A pool that already exists (the backend imported before) keeps its
    size. The environment is restored on the way out.
    """
    saved = {k: os.environ.get(k) for k in runner.THREAD_VARIABLES}
    for k in runner.THREAD_VARIABLES:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _worker_init(plan_args: dict[str, Any]) -> None:
    _WORKER_ITEMS[:] = select(**plan_args)  # the thread variables came with the environment


def _worker_run(start: int, stop: int) -> list[tuple[str, runner.Outcome]]:
    return [(item.id, runner.run_item(item)) for item in _WORKER_ITEMS[start:stop]]


def _outcomes(items: list[runner.Item], plan_args: dict[str, Any], jobs: int) -> list[runner.Outcome]:
    """The outcome of each item, in order: here, or in ``jobs`` spawned workers that rebuild the plan."""
    if jobs <= 1 or len(items) <= CHUNK:
        return [runner.run_item(item) for item in items]
    ctx = multiprocessing.get_context("spawn")
    bounds = [(s, min(s + CHUNK, len(items))) for s in range(0, len(items), CHUNK)]
    outcomes: list[runner.Outcome] = []
    try:
        with ProcessPoolExecutor(
            min(jobs, len(bounds)), mp_context=ctx, initializer=_worker_init, initargs=(plan_args,)
        ) as pool:
            for (start, stop), chunk in zip(bounds, pool.map(_worker_run, *zip(*bounds))):
                if [i for i, _ in chunk] != [item.id for item in items[start:stop]]:
                    raise RuntimeError("a worker planned other items than this process")
                outcomes.extend(o for _, o in chunk)
    except Exception as exc:  # e.g. a backend registered in this process only, unknown to a fresh one
        print(
            f"cnnkit conformance: the worker processes cannot run this selection "
            f"({type(exc).__name__}: {exc}); running it in this process",
            file=sys.stderr,
        )
        return [runner.run_item(item) for item in items]
    return outcomes


def known_failures(
    items: Sequence[runner.Item], report: runner.Report, xfail: runner.XfailList
) -> list[dict[str, Any]]:
    """The known-failure entries that matched: ``{"entry", "xfailed", "xpassed"}`` (item counts)."""
    counts: dict[str, dict[str, Any]] = {}
    for item, result in zip(items, report.results):
        if result.status in ("xfailed", "xpassed"):
            entry = xfail.match(item) or ""
            row = counts.setdefault(entry, {"entry": entry, "xfailed": 0, "xpassed": 0})
            row[result.status] += 1
    return list(counts.values())


def run(args: argparse.Namespace) -> int:
    if args.self_check:
        from cnnkit.conformance.mutation import self_check

        with one_thread_each():
            report = self_check()
        if not report.caught:
            print(
                "cnnkit: error: no installed backend offers mutants (cnnkit_register_mutants)",
                file=sys.stderr,
            )
            return 2
        print(report.format())
        return 1 if report.survivors else 0
    plan_args = {
        "backends": args.backend,
        "ops": args.op,
        "include": args.include,
        "exclude": args.exclude,
        "dtypes": args.dtype,
        "devices": args.device,
    }
    try:
        xfail = runner.XfailList.load(args.xfail) if args.xfail else None
    except OSError as exc:
        print(f"cnnkit: error: --xfail: cannot read {args.xfail!r}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.jobs < 0:
        print(f"cnnkit: error: --jobs must be >= 0, got {args.jobs}", file=sys.stderr)
        return 2
    with one_thread_each():
        try:
            missing = unavailable_backends(args.backend)
            if missing:  # checked as unavailable, not as "not implemented" op by op
                wanted = args.backend or sorted(get_registry().backend_infos())
                plan_args["backends"] = [b for b in wanted if b not in missing]
            items = select(**plan_args) if plan_args["backends"] or not missing else []
        except ValueError as exc:
            print(f"cnnkit: error: {exc}", file=sys.stderr)
            return 2
        for name, reason in missing.items():
            print(f"cnnkit conformance: {name}: unavailable: {reason}", file=sys.stderr)
        if not items and missing:
            print("cnnkit: error: no selected backend can load here", file=sys.stderr)
            return 1
        if not items:
            print(
                "cnnkit: error: no conformance item matches the selection (an op a plugin adds has "
                "cases only if the plugin registers some with the cnnkit_conformance_cases hook)",
                file=sys.stderr,
            )
            return 1
        jobs = args.jobs or os.cpu_count() or 1
        t0 = time.perf_counter()
        outcomes = _outcomes(items, plan_args, jobs)
    report = runner.collect(items, outcomes, xfail)
    seconds = time.perf_counter() - t0
    known = known_failures(items, report, xfail) if xfail is not None else []
    if args.json:
        data = json.loads(report.to_json())
        extra = {
            "items": len(items),
            "seconds": round(seconds, 3),
            "known_failures": known,
            "unavailable": missing,
        }
        print(json.dumps({**extra, **data}, indent=2))
    else:
        print(report.format(failures=args.failures))
        for k in known:
            stale = f", {k['xpassed']} pass now (stale: delete the entry)" if k["xpassed"] else ""
            print(f"known failure: {k['xfailed']} item(s) xfailed{stale}: {k['entry']}")
        for name, reason in missing.items():
            print(f"{name}: unavailable, not checked: {reason}")
        print(f"\n{len(items)} items in {seconds:.1f} s ({min(jobs, len(items))} process(es))")
    # a backend asked for by name that cannot load is a failed check, not a pass
    asked_missing = [name for name in args.backend if name in missing]
    return 1 if report.failed or asked_missing else 0
