"""``cnnkit conformance``: the matrix, its JSON, exit status, known failures, deliberately wrong backends.

The wrong backends are throwaway plugins registered on the process-wide
registry for one test (``Registry.register``); each implements ``relu`` only.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from cnnkit_numpy.backend import NumpyBackend

import cnnkit
from cnnkit import cli
from cnnkit.backend import BackendInfo
from cnnkit.cli import conformance as conformance_cmd
from cnnkit.conformance import runner
from cnnkit.hookspecs import hookimpl
from cnnkit.registry import Kernel


def n_items(op: str, dtypes: int = 2) -> int:
    """How many items one backend has for ``op``: its cases' checks, per dtype."""
    names = ("float64",) if dtypes == 1 else runner.DTYPES
    return sum(len(runner.checks_for(c, dtype=d)) for c in runner.all_cases() if c.op == op for d in names)


def run_cli(capsys, *argv):
    code = cli.main(["conformance", *argv])
    out, err = capsys.readouterr()
    return code, out, err


class HostBackend(NumpyBackend):
    """NumPy arrays under a throwaway backend name."""


def _relu_backward(mask, g):
    return (g * mask,)


#: relu forwards that are wrong in one way each.
WRONG_RELU = {
    "wrongvalues": lambda x: (1.5 * np.maximum(x, 0), x > 0),
    "wrongshape": lambda x: (np.maximum(x, 0).reshape(-1), x > 0),
    "wrongdtype": lambda x: (np.maximum(x, 0).astype(np.float64), x > 0),
}


class WrongBackends:
    @hookimpl
    def cnnkit_register_backends(self, register):
        for name in WRONG_RELU:
            register(BackendInfo(name=name, factory=HostBackend, version="0.0.1"))

    @hookimpl
    def cnnkit_register_kernels(self, backend, register):
        if backend in WRONG_RELU:
            register("relu", Kernel(forward=WRONG_RELU[backend], backward=_relu_backward))


@pytest.fixture
def wrong(monkeypatch):
    monkeypatch.delenv("CNNKIT_STRICT_PLUGINS", raising=False)
    registry = cnnkit.get_registry()
    name = registry.register(WrongBackends(), name="clitest-wrong", dist="clitest-wrong", version="0.0.1")
    yield
    registry.unregister(name)


def cell(out: str, op: str) -> list[str]:
    """The cells of ``op``'s row in the text matrix."""
    row = next(line for line in out.splitlines() if line.startswith(op + " "))
    return re.findall(r"\d+/\d+/\d+/\d+(?: xf\d+)?(?: err \S+)?", row)


# -- a correct selection ------------------------------------------------------------------


def test_table_counts_for_relu_on_numpy_and_torch(capsys):
    pytest.importorskip("torch")
    code, out, _ = run_cli(capsys, "--op", "relu", "--backend", "numpy", "--backend", "torch")
    n = n_items("relu")
    assert code == 0
    assert re.search(r"^op\s+numpy\s+torch\s*$", out, flags=re.M)
    numpy_cell, torch_cell = cell(out, "relu")
    assert numpy_cell.startswith(f"{n}/0/0/0 err ") and torch_cell.startswith(f"{n}/0/0/0 err ")
    assert float(torch_cell.split("err ")[1]) < 1e-4
    assert f"numpy: {n} passed, 0 failed, 0 skipped, 0 not implemented" in out
    assert f"{2 * n} items in " in out
    assert "failure(s)" not in out


def test_json_counts_and_filters(capsys):
    code, out, _ = run_cli(
        capsys, "--op", "relu", "--op", "flatten", "--backend", "numpy", "--dtype", "float64", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert data["items"] == n_items("relu", 1) + n_items("flatten", 1)
    cells = {(c["op"], c["backend"]): c for c in data["matrix"]}
    assert set(cells) == {("relu", "numpy"), ("flatten", "numpy")}
    assert cells[("relu", "numpy")]["passed"] == n_items("relu", 1)
    assert cells[("relu", "numpy")]["failed"] == 0 and cells[("relu", "numpy")]["max_error"] < 1e-6
    assert data["summary"]["numpy"] == {"passed": data["items"]}
    assert data["failures"] == [] and "relu" in data["coverage"]["numpy"]


def test_include_and_exclude_patterns(capsys):
    code, out, _ = run_cli(
        capsys, "--backend", "numpy", "--include", "relu-*", "--exclude", "*golden*", "--dtype", "float64"
    )
    data_code, data_out, _ = run_cli(
        capsys,
        "--backend",
        "numpy",
        "--include",
        "relu-*",
        "--exclude",
        "*golden*",
        "--dtype",
        "float64",
        "--json",
    )
    assert code == data_code == 0
    ids = [c.id for c in runner.all_cases() if c.id.startswith("relu-") and "golden" not in c.id]
    want = sum(len(runner.checks_for(runner.get_case(i))) for i in ids)
    assert json.loads(data_out)["items"] == want > 0
    assert cell(out, "relu")[0].startswith(f"{want}/0/0/0")


def test_worker_processes_give_the_same_matrix(capsys):
    argv = ["--op", "relu", "--op", "flatten", "--backend", "numpy", "--json"]
    assert n_items("relu") + n_items("flatten") > conformance_cmd.CHUNK  # so that workers are used
    serial = json.loads(run_cli(capsys, *argv)[1])
    code, out, err = run_cli(capsys, *argv, "-j", "2")
    assert code == 0 and err == ""
    assert json.loads(out)["matrix"] == serial["matrix"]


# -- deliberately wrong backends ---------------------------------------------------------


def test_wrong_values_fail_with_the_largest_error(capsys, wrong):
    code, out, _ = run_cli(capsys, "--backend", "wrongvalues", "--op", "relu", "--op", "flatten")
    assert code == 1
    relu = cell(out, "relu")[0]
    passed, failed, skipped, missing = map(int, relu.split()[0].split("/"))
    assert failed > 0 and passed + failed + skipped + missing == n_items("relu")
    assert float(relu.split("err ")[1]) == pytest.approx(0.5, rel=1e-6)  # 1.5·relu(x) - relu(x), scale 1
    # not implemented is no failure: no items, and the coverage line names the op
    assert not any(line.startswith("flatten ") for line in out.splitlines())
    assert re.search(r"wrongvalues: .*; lacks .*\bflatten\b.* \(no items planned\)", out)
    assert "FAILED wrongvalues-float32-cpu-relu" in out
    assert re.search(r"forward vs (golden|oracle): \d+ of \d+ entries differ", out)
    assert "rerun:   from cnnkit.conformance import run_case" in out


def test_wrong_shape_is_reported_as_a_shape(capsys, wrong):
    code, out, _ = run_cli(capsys, "--backend", "wrongshape", "--op", "relu", "--json")
    assert code == 1
    forward = [f for f in json.loads(out)["failures"] if f["id"].endswith("::forward")]
    assert forward
    for f in forward:
        m = re.match(r"forward: output shape \((\d+),\), expected \(([\d, ]+)\)", f["message"])
        assert m, f["message"]
        assert int(m[1]) == np.prod([int(s) for s in m[2].split(",") if s.strip()])


def test_wrong_dtype_is_reported_as_a_dtype(capsys, wrong):
    code, out, _ = run_cli(capsys, "--backend", "wrongdtype", "--op", "relu", "--json")
    assert code == 1
    data = json.loads(out)
    failed_ids = {f["id"] for f in data["failures"]}
    forward32 = {i for i in failed_ids if i.startswith("wrongdtype-float32-") and i.endswith("::forward")}
    assert forward32 and not any(i.startswith("wrongdtype-float64-") for i in failed_ids)
    for f in data["failures"]:
        if f["id"] in forward32:
            assert f["message"].startswith("forward: output dtype float64, expected float32")


def test_workers_fall_back_for_a_backend_registered_in_this_process(capsys, wrong, monkeypatch):
    from cnnkit.cli import conformance as conformance_cmd

    monkeypatch.setattr(conformance_cmd, "CHUNK", 8)  # relu alone is a few chunks: workers are tried
    code, out, err = run_cli(
        capsys, "--backend", "wrongvalues", "--op", "relu", "--op", "flatten", "--json", "-j", "2"
    )
    assert code == 1 and "running it in this process" in err
    data = json.loads(out)
    assert "flatten" in data["lacks"]["wrongvalues"] and "flatten" not in data["coverage"]["wrongvalues"]
    assert not data["summary"]["wrongvalues"].get("not-implemented")


# -- known failures ----------------------------------------------------------------------


def test_xfail_file_with_reasons_turns_failures_into_known_ones(capsys, wrong, tmp_path):
    xfail = tmp_path / "known.txt"
    xfail.write_text("# known failures\nwrongdtype-float32-*-relu*::forward  # returns float64 always\n")
    argv = ["--backend", "wrongdtype", "--op", "relu", "--xfail", str(xfail)]
    n_forward = sum(1 for c in runner.all_cases() if c.op == "relu" and c.raises is None)
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0
    assert cell(out, "relu")[0].startswith(f"{n_items('relu') - n_forward}/0/0/0 xf{n_forward} ")
    assert (
        f"known failure: {n_forward} item(s) xfailed: returns float64 always "
        "[wrongdtype-float32-*-relu*::forward]" in out
    )
    code, out, _ = run_cli(capsys, *argv, "--json")
    assert code == 0
    assert json.loads(out)["known_failures"] == [
        {
            "entry": "returns float64 always [wrongdtype-float32-*-relu*::forward]",
            "xfailed": n_forward,
            "xpassed": 0,
        }
    ]


def test_xfail_entries_hide_only_what_they_match(capsys, wrong, tmp_path):
    xfail = tmp_path / "known.txt"
    xfail.write_text("wrongvalues-*-relu*::forward  # scaled by 1.5\n")
    code, out, _ = run_cli(
        capsys, "--backend", "wrongvalues", "--op", "relu", "--xfail", str(xfail), "--json"
    )
    data = json.loads(out)
    assert code == 1
    assert data["summary"]["wrongvalues"]["xfailed"] == 2 * sum(
        1 for c in runner.all_cases() if c.op == "relu" and c.raises is None
    )
    assert data["failures"] and all(not f["id"].endswith("::forward") for f in data["failures"])
    assert {f["status"] for f in data["failures"]} == {"failed"}


def test_stale_xfail_entries_fail_the_run(capsys, tmp_path):
    xfail = tmp_path / "known.txt"
    xfail.write_text("numpy-float64-cpu-relu*::forward  # said to be broken\nnosuch-backend-*  # a typo\n")
    argv = ["--backend", "numpy", "--op", "relu", "--xfail", str(xfail)]
    code, out, _ = run_cli(capsys, *argv)
    n_forward = sum(1 for c in runner.all_cases() if c.op == "relu" and c.raises is None)
    assert code == 1
    assert f"{n_forward} stale xfail" in out
    assert "stale known-failure entry, the item passes now: said to be broken" in out
    assert "known-failure patterns that matched nothing: nosuch-backend-*" in out
    data = json.loads(run_cli(capsys, *argv, "--json")[1])
    assert data["unused_xfail_patterns"] == ["nosuch-backend-*"]
    assert {f["status"] for f in data["failures"]} == {"xpassed"} and len(data["failures"]) == n_forward


# -- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--op", "relux"], 2, "cnnkit: error: --op: unknown op(s) ['relux']; registered ops: "),
        (["--backend", "nosuch"], 2, "cnnkit: error: --backend: unknown backend(s) ['nosuch']"),
        (["--include", "no-such-case*"], 1, "no conformance item matches the selection"),
        (["--device", "abacus"], 2, "cnnkit: error: --device: no selected backend reports ['abacus']; "),
        (["--xfail", "/no/such/file.txt"], 2, "cnnkit: error: --xfail: cannot read '/no/such/file.txt'"),
        (["--jobs", "-1"], 2, "cnnkit: error: --jobs must be >= 0, got -1"),
    ],
)
def test_usage_errors(capsys, argv, code, message):
    got, out, err = run_cli(capsys, *argv)
    assert got == code and out == ""
    assert message in err


def test_bad_dtype_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["conformance", "--dtype", "int8"])
    assert info.value.code == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_one_thread_each_restores_the_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    with conformance_cmd.one_thread_each():
        assert os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["MKL_NUM_THREADS"] == "3"  # the user's choice stands
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["MKL_NUM_THREADS"] == "3"
