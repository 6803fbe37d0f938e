"""The ``cnnkit`` command: run in-process through ``cnnkit.cli.main`` (and twice as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cnnkit_numpy.backend import NumpyBackend

import cnnkit
from cnnkit import cli
from cnnkit.backend import BackendInfo
from cnnkit.cli import plugins as plugins_cmd
from cnnkit.hookspecs import hookimpl
from cnnkit.registry import Kernel


class HostBackend(NumpyBackend):
    def devices(self):
        return ["cpu", "abacus:0"]


def _needs_missing_dependency(**options):
    import cnnkit_cli_test_missing_dependency  # noqa: F401


def _explodes(**options):
    raise RuntimeError("the factory exploded")


class BackendsPlugin:
    """Three throwaway backends: one that works, one missing a dependency, one whose factory fails."""

    @hookimpl
    def cnnkit_register_backends(self, register):
        register(BackendInfo(name="clitest-ok", factory=HostBackend, version="3.1"))
        register(
            BackendInfo(
                name="clitest-missing",
                factory=_needs_missing_dependency,
                version="2.0",
                install_hint="pip install clitest-missing",
            )
        )
        register(BackendInfo(name="clitest-error", factory=_explodes))

    @hookimpl
    def cnnkit_register_kernels(self, backend, register):
        if backend == "clitest-ok":
            register(
                "relu", Kernel(forward=lambda x: (np.maximum(x, 0), x > 0), backward=lambda c, g: (g * c,))
            )


class FailingPlugin:
    @hookimpl
    def cnnkit_register_layers(self, register):
        raise RuntimeError("no layers today")


@pytest.fixture
def plugin(monkeypatch):
    """Register throwaway plugins on the global registry for one test."""
    for var in ("CNNKIT_STRICT_PLUGINS", "CNNKIT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    registry = cnnkit.get_registry()
    names = []

    def add(obj, name, dist):
        names.append(registry.register(obj, name=name, dist=dist, version="0.0.7"))

    yield add
    for name in names:
        registry.unregister(name)


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- the parser -------------------------------------------------------------------------


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cnnkit")
    for name in ("backends", "plugins"):
        assert name in out


def test_no_command_prints_help_and_returns_2(capsys):
    code, out, _ = run_cli(capsys)
    assert code == 2 and "usage: cnnkit" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"cnnkit {cnnkit.__version__}"


@pytest.mark.parametrize("name", cli.SUBCOMMANDS)
def test_every_subcommand_has_help(capsys, name):
    name = name.replace("_", "-")  # module new_plugin is the command new-plugin
    with pytest.raises(SystemExit) as info:
        cli.main([name, "--help"])
    assert info.value.code == 0
    assert f"usage: cnnkit {name}" in capsys.readouterr().out


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_a_subcommand_that_cannot_import_does_not_take_the_others_down(capsys, monkeypatch):
    monkeypatch.setattr(cli, "SUBCOMMANDS", (*cli.SUBCOMMANDS, "no_such_command_module"))
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0 and "numpy" in out
    code, _, err = run_cli(capsys, "no_such_command_module")
    assert code == 1
    assert "the 'no_such_command_module' command cannot load: ModuleNotFoundError" in err


def test_format_table_aligns_columns():
    text = cli.format_table(["a", "longer"], [["wide cell", 1], ["x", None]])
    assert text.splitlines() == ["a          longer", "---------  ------", "wide cell  1", "x"]


# -- cnnkit backends --------------------------------------------------------------------


def test_backends_table_lists_numpy(capsys):
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0
    header, rule, *rows = out.splitlines()
    assert header.split() == ["backend", "version", "status", "devices", "ops", "distribution"]
    assert set(rule) <= {"-", " "}
    numpy_row = next(r for r in rows if r.startswith("numpy "))
    assert numpy_row.split()[2:4] == ["available", "cpu"]


def test_backends_json_and_a_missing_dependency(capsys, plugin):
    plugin(BackendsPlugin(), "clitest", "clitest-dist")
    code, out, _ = run_cli(capsys, "backends", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    ok, missing, error = rows["clitest-ok"], rows["clitest-missing"], rows["clitest-error"]
    assert ok["status"] == "available" and ok["devices"] == ["cpu", "abacus:0"] and ok["ops"] == ["relu"]
    assert "conv" in ok["missing"] and (ok["version"], ok["dist"]) == ("3.1", "clitest-dist")
    assert missing["status"] == "unavailable" and missing["ops"] == []
    assert "pip install clitest-missing" in missing["reason"]
    assert error["status"] == "error" and error["reason"] == "RuntimeError: the factory exploded"
    assert rows["numpy"]["status"] == "available" and "conv" in rows["numpy"]["ops"]


def test_backends_table_shows_unavailable_with_the_install_hint(capsys, plugin):
    plugin(BackendsPlugin(), "clitest", "clitest-dist")
    code, out, _ = run_cli(capsys, "backends", "--ops")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("clitest-missing "))
    assert row.split()[:5] == ["clitest-missing", "2.0", "unavailable", "-", "-"]
    assert "clitest-missing: backend 'clitest-missing' is registered but cannot load" in out
    assert "install it with: pip install clitest-missing" in out
    assert "clitest-ok implements: relu" in out


# -- cnnkit plugins ---------------------------------------------------------------------


def test_plugins_table_lists_the_core_and_a_failed_plugin_with_its_reason(capsys, plugin):
    plugin(BackendsPlugin(), "clitest", "clitest-dist")
    plugin(FailingPlugin(), "clitest-failing", "failing-dist")
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["plugin", "distribution", "version", "status", "registered"]
    ops_row = next(line for line in lines if line.startswith("cnnkit.builtin "))
    assert ops_row.split()[1:4] == ["cnnkit", cnnkit.__version__, "loaded"]
    failing_row = next(line for line in lines if line.startswith("clitest-failing "))
    assert failing_row.split()[1:4] == ["failing-dist", "0.0.7", "failed"]
    assert (
        "clitest-failing (failing-dist) failed: cnnkit_register_layers failed: RuntimeError: no layers today"
        in out
    )
    ok_row = next(line for line in lines if line.startswith("clitest "))
    assert (
        "backend clitest-ok, clitest-missing, clitest-error" in ok_row and "kernel[clitest-ok] relu" in ok_row
    )


def test_plugins_json_check_and_no_builtin(capsys, plugin):
    plugin(FailingPlugin(), "clitest-failing", "failing-dist")
    code, out, _ = run_cli(capsys, "plugins", "--json", "--check", "--no-builtin")
    assert code == 1  # --check: a plugin failed
    rows = {r["name"]: r for r in json.loads(out)}
    assert not any(r["builtin"] for r in rows.values())
    assert rows["clitest-failing"]["status"] == "failed"
    assert rows["clitest-failing"]["error"] == "cnnkit_register_layers failed: RuntimeError: no layers today"


def test_plugins_check_passes_when_nothing_failed(capsys):
    code, out, _ = run_cli(capsys, "plugins", "--json", "--check")
    assert code == 0, [r for r in json.loads(out) if r["status"] == "failed"]
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["cnnkit.builtin"]["builtin"] and "op conv" in rows["cnnkit.builtin"]["registered"]
    assert "backend numpy" in rows["numpy"]["registered"]


def test_strict_mode_makes_the_command_fail_loudly(capsys, plugin, monkeypatch):
    plugin(FailingPlugin(), "clitest-failing", "failing-dist")
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    code, out, err = run_cli(capsys, "plugins")
    assert code == 1 and out == ""
    assert err.startswith("cnnkit: error: plugin 'clitest-failing' from distribution 'failing-dist'")
    assert "RuntimeError: no layers today" in err


def test_summarize_groups_what_was_registered():
    items = ["op a", "kernel[numpy] a", "kernel[torch] a"] + [f"case c{i}" for i in range(5)]
    assert plugins_cmd.summarize(items) == "op a; kernel[numpy] a; kernel[torch] a; 5 cases"
    assert plugins_cmd.summarize([f"kernel[numpy] k{i}" for i in range(4)]) == "4 kernels[numpy]"
    assert plugins_cmd.summarize([]) == "-"


# -- as a program -----------------------------------------------------------------------


def test_python_dash_m_cnnkit_runs_backends_json():
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "backends", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "numpy" in {r["name"] for r in json.loads(proc.stdout)}
