"""The conformance suite as a pytest plugin (auto-loaded through the ``pytest11`` entry point).

Run the suite against a backend with one line::

    pytest --pyargs cnnkit.conformance --cnnkit-backend mybackend -n 2

``--pyargs cnnkit.conformance`` collects :mod:`cnnkit.conformance.test_suite`,
whose single test takes the ``cnnkit_conformance_item`` argument; this plugin
parametrizes it with one item per backend x dtype x device x case x check
(ids like ``numpy-float64-cpu-conv2d-stride2-pad1::forward``). A project can
collect the same suite from its own tests with one line::

    from cnnkit.conformance.test_suite import test_conformance  # noqa: F401

and may set ``cnnkit_xfail = "path/to/known_failures.txt"`` in that module.

Options (all repeatable but ``--cnnkit-xfail``):

``--cnnkit-backend NAME``   the backends to check (default: every registered one)
``--cnnkit-include PAT``    run only cases whose id matches (fnmatch)
``--cnnkit-exclude PAT``    skip cases whose id matches
``--cnnkit-dtype DTYPE``    float32 and/or float64 (default: both)
``--cnnkit-xfail FILE``     known failures, ``pattern  # reason`` per line; an entry
                            whose item passes now fails the run as stale (strict xfail)

An unknown ``--cnnkit-backend`` or ``--cnnkit-dtype`` and a known-failures file
that cannot be read are collection errors of one line naming the option.

Without a test that asks for ``cnnkit_conformance_item`` the plugin does
nothing: it collects nothing and imports nothing beyond pytest.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

ARG = "cnnkit_conformance_item"
_KEY = "cnnkit_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cnnkit", "cnnkit conformance suite")
    group.addoption(
        "--cnnkit-backend",
        action="append",
        default=[],
        metavar="NAME",
        help="backend to check (repeatable; default: every registered backend)",
    )
    group.addoption(
        "--cnnkit-include",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run only conformance cases whose id matches this fnmatch pattern (repeatable)",
    )
    group.addoption(
        "--cnnkit-exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="skip conformance cases whose id matches this fnmatch pattern (repeatable)",
    )
    group.addoption(
        "--cnnkit-dtype",
        action="append",
        default=[],
        metavar="DTYPE",
        help="dtype to sweep: float32, float64 (repeatable; default: both)",
    )
    group.addoption(
        "--cnnkit-xfail",
        default=None,
        metavar="FILE",
        help="known-failure file: 'pattern  # reason' per line; stale entries fail (strict xfail)",
    )


def pytest_configure(config: pytest.Config) -> None:
    # The cases are small arrays: a pool of several threads per process only waits on its barriers,
    # and under load (pytest-xdist workers on every core) that made the suite 1.6-4x slower. As
    # `cnnkit conformance` does, pools made after this start with one thread unless the user sized them.
    from cnnkit.conformance.runner import THREAD_VARIABLES

    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    config.pluginmanager.register(_Summary(), "cnnkit-conformance-summary")


def _xfail_path(metafunc: pytest.Metafunc) -> Any:
    path = metafunc.config.getoption("--cnnkit-xfail")
    if path:
        return path
    return getattr(metafunc.module, "cnnkit_xfail", None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if ARG not in metafunc.fixturenames:
        return
    from cnnkit.conformance import runner

    opt = metafunc.config.getoption
    dtypes = opt("--cnnkit-dtype") or runner.DTYPES
    bad = [d for d in dtypes if d not in runner.TOLERANCES]
    if bad:
        raise pytest.Collector.CollectError(
            f"--cnnkit-dtype: unknown dtype(s) {bad}; choose from {', '.join(sorted(runner.TOLERANCES))}"
        )
    try:
        items = runner.plan(
            backends=opt("--cnnkit-backend") or None,
            include=opt("--cnnkit-include"),
            exclude=opt("--cnnkit-exclude"),
            dtypes=dtypes,
        )
    except KeyError as exc:  # an unknown backend: one line of collection error, not a traceback
        raise pytest.Collector.CollectError(f"--cnnkit-backend: {exc.args[0]}") from None
    path = _xfail_path(metafunc)
    try:
        xfail = runner.XfailList.load(path) if path else None
    except (OSError, UnicodeDecodeError) as exc:
        source = "--cnnkit-xfail" if opt("--cnnkit-xfail") else f"cnnkit_xfail of {metafunc.module.__name__}"
        raise pytest.Collector.CollectError(
            f"{source}: cannot read the known-failures file {str(path)!r}: {exc}"
        ) from None
    params = []
    for item in items:
        reason = xfail.match(item) if xfail else None
        marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
        params.append(pytest.param(item, id=item.id, marks=marks))
    metafunc.parametrize(ARG, params)


def check(item: Any, record_property: Any = None) -> None:
    """Run one conformance item under pytest: fail with the runner's message, skip what is skipped."""
    from cnnkit.conformance import runner

    outcome = runner.run_item(item)
    if record_property is not None:
        t = item.target
        record_property(
            _KEY,
            {
                "backend": t.backend,
                "dtype": t.dtype,
                "device": t.device,
                "op": item.case.op,
                "case": item.case.id,
                "check": item.check,
                "status": outcome.status,
                "max_error": outcome.max_error,
            },
        )
    if outcome.status == "not-implemented":
        pytest.skip(f"not implemented: {outcome.message}")
    if outcome.status == "skipped":
        pytest.skip(outcome.message)
    if outcome.status == "failed":
        pytest.fail(outcome.message, pytrace=False)


class _Summary:
    """Collects the conformance results (on the xdist controller too) and prints the matrix."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not (report.when == "setup" and report.skipped):
            return
        data = next((v for k, v in report.user_properties if k == _KEY), None)
        if data is None:
            return
        data = dict(data)
        if hasattr(report, "wasxfail"):
            data["status"] = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            stale = str(report.longrepr).startswith("[XPASS(strict)]")
            data["status"] = "xpassed" if stale else "failed"
        self.results.append(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        from cnnkit.conformance import runner

        fields = ("backend", "dtype", "device", "op", "case", "check", "status", "max_error")
        report = runner.Report([runner.Result(*(d.get(f) for f in fields)) for d in self.results])
        terminalreporter.write_sep("=", "cnnkit conformance")
        terminalreporter.write_line(report.format(failures=0))
