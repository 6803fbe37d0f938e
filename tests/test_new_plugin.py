"""``cnnkit new-plugin`` and the commands plugins add to ``cnnkit``.

- The generator: each kind is written as a complete distribution, with the
  template's op renamed everywhere; the generated code registers and passes
  the conformance suite in-process; ruff passes on it; bad input is one line
  on stderr, exit status 2, and nothing written.
- In one slow test, a stranger's workflow: a fresh virtual environment with
  cnnkit's wheel (the ``fresh_venv`` fixture of ``test_plugins.py``) generates
  one plugin of each kind with its own ``cnnkit new-plugin``, ``pip install -e``
  them offline, and runs their tests (conformance, two-epoch training on both
  backends, ``cnnkit.io``, ``from_cnnkit``), ``cnnkit plugins`` and
  ``cnnkit conformance --op NAME``.
- The ``cnnkit_register_commands`` hook: throwaway plugins add commands, and
  every way one can fail stays with that plugin.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_plugins import fresh_venv  # noqa: F401  (the fixture, shared with test_plugins.py)

import cnnkit
from cnnkit import cli
from cnnkit.conformance import plan, run_item
from cnnkit.hookspecs import hookimpl
from cnnkit.registry import Command, Registry
from cnnkit.scaffold import KINDS, Names, render

#: One plugin per kind, named unlike the template's op so that every renaming shows.
GENERATED = {"activation": "clip_act", "window": "soft_pool", "layer": "gain"}
HAS_TORCH = importlib.util.find_spec("torch") is not None


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- the generator ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_written_as_a_complete_distribution(kind, tmp_path, capsys):
    name = GENERATED[kind]
    n, old = Names.of(name), KINDS[kind].names
    code, out, err = run_cli(capsys, "new-plugin", name, "--kind", kind, "--dir", str(tmp_path))
    assert (code, err) == (0, "")
    root = tmp_path / n.dist
    assert listing(root) == sorted(
        [
            "README.md",
            "pyproject.toml",
            "src",
            f"src/{n.package}",
            f"src/{n.package}/__init__.py",
            f"src/{n.package}/numpy_kernel.py",
            f"src/{n.package}/op.py",
            f"src/{n.package}/plugin.py",
            f"src/{n.package}/torch_kernel.py",
            "tests",
            f"tests/test_{name}.py",
            f"tests/test_{name}_conformance.py",
        ]
    )
    assert out.splitlines()[0].startswith(f"wrote {root}{os.sep} ({kind}: ")
    assert f"  pip install -e {root}\n" in out and f"cnnkit conformance --op {name}" in out
    pyproject = (root / "pyproject.toml").read_text()
    assert f'name = "{n.dist}"' in pyproject and 'dependencies = ["cnnkit", "numpy>=1.24"]' in pyproject
    assert f'[project.entry-points.cnnkit]\n{name} = "{n.package}.plugin"' in pyproject
    for path in root.rglob("*.*"):
        text = path.read_text()
        for token in (old.op, old.camel, old.dist):  # the template's op is renamed everywhere
            assert token not in text, (path, token)
        if path.suffix == ".py":
            compile(text, str(path), "exec")
    plugin = (root / "src" / n.package / "plugin.py").read_text()
    assert not re.search(r"^(import|from) torch", plugin, flags=re.M)  # torch only inside the hook
    torch_kernel = (root / "src" / n.package / "torch_kernel.py").read_text()
    assert f"class {n.camel}Function(torch.autograd.Function):" in torch_kernel
    calls = [c.func for c in ast.walk(ast.parse(torch_kernel)) if isinstance(c, ast.Call)]
    assert not [f.attr for f in calls if isinstance(f, ast.Attribute) and f.attr in ("backward", "grad")]


def test_the_default_is_an_activation_in_the_current_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "new-plugin", "my_op")
    assert code == 0 and out.startswith(f"wrote cnnkit-my-op{os.sep} (activation: ")
    assert "class MyOpSpec(OpSpec):" in (tmp_path / "cnnkit-my-op/src/cnnkit_my_op/op.py").read_text()
    assert "  cd cnnkit-my-op && pytest" in out


def test_the_template_name_writes_the_templates_unchanged():
    for kind, template in KINDS.items():
        assert render(kind, template.op) == list(template.files())


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """Generate each kind into ``tmp_path`` and put their ``src/`` on the path; clean up afterwards."""
    for kind, name in GENERATED.items():
        assert cli.main(["new-plugin", name, "--kind", kind, "--dir", str(tmp_path)]) == 0
        monkeypatch.syspath_prepend(str(tmp_path / Names.of(name).dist / "src"))
    registry = cnnkit.get_registry()
    registered = []
    yield tmp_path, registry, registered
    for name in registered:
        registry.unregister(name)
    for mod in [
        m for m in sys.modules if m.startswith(tuple(Names.of(n).package for n in GENERATED.values()))
    ]:
        del sys.modules[mod]


def test_generated_plugins_pass_the_conformance_suite_in_process(generated, capsys):
    _, registry, registered = generated
    for name in GENERATED.values():
        registered.append(registry.register(importlib.import_module(f"cnnkit_{name}.plugin"), name=name))
    backends = ["numpy", "torch"] if HAS_TORCH else ["numpy"]
    items = [i for i in plan(backends=backends, dtypes=("float64",)) if i.case.op in GENERATED.values()]
    assert {(i.case.op, i.target.backend) for i in items} == {
        (op, b) for op in GENERATED.values() for b in backends
    }
    outcomes = {i.id: run_item(i) for i in items}
    assert {i: o.message for i, o in outcomes.items() if o.status != "passed"} == {}
    checks = {i.check for i in items}
    assert checks == {"forward", "backward", "properties", "memory", "layouts", "raises"}
    capsys.readouterr()
    code, out, _ = run_cli(capsys, "plugins", "--json", "--no-builtin")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and {"op gain", "kernel[numpy] gain", "layer Gain"} <= set(rows["gain"]["registered"])
    assert "layer SoftPool2d" in rows["soft_pool"]["registered"]


def _ruff() -> list[str] | None:
    exe = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [exe] if exe else None


def test_ruff_passes_on_the_generated_packages(tmp_path):
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    for kind, template in KINDS.items():
        for name, where in ((GENERATED[kind], "renamed"), (template.op, "templates")):
            assert cli.main(["new-plugin", name, "--kind", kind, "--dir", str(tmp_path / where)]) == 0
    checks = [  # ruff check on every name; the templates are formatted (other names may wrap lines)
        ([*ruff, "check", "--no-cache", "."], tmp_path),
        ([*ruff, "format", "--no-cache", "--check", "."], tmp_path / "templates"),
    ]
    for argv, cwd in checks:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr


# -- bad input: one line, exit status 2, nothing written -------------------------------------------


@pytest.fixture
def taken_names(tmp_path, monkeypatch):
    """A distribution ``cnnkit-taken-dist`` and a package ``cnnkit_taken_pkg``, on the path, not installed."""
    site = tmp_path / "site"
    info = site / "cnnkit_taken_dist-1.2.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnkit-taken-dist\nVersion: 1.2\n")
    (site / "cnnkit_taken_pkg").mkdir()
    (site / "cnnkit_taken_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()


BAD = [
    (["2fast"], "the name must be a lower-case Python identifier of at most 32 characters"),
    (["My_Op"], "got 'My_Op'"),
    (["my-op"], "got 'my-op'"),
    (["my__op"], "got 'my__op'"),
    (["my_op_"], "got 'my_op_'"),
    (["x" * 33], "at most 32 characters"),
    (["class"], "the name 'class' is a Python keyword"),
    (
        ["model"],
        "the name 'model' would make 'model' in tests/test_model.py clash with a name that code already uses",
    ),
    (["np", "--kind", "window"], "would make 'np' in "),
    (["my_op", "--kind", "conv"], "unknown kind 'conv'; the kinds are activation, window, layer"),
    (["relu"], "op 'relu' is already registered by plugin 'cnnkit.builtin' (distribution 'cnnkit')"),
    (
        ["max_pool2d"],
        "layer 'MaxPool2d' is already registered by plugin 'cnnkit.builtin' (distribution 'cnnkit')",
    ),
    (["numpy"], "plugin name 'numpy' is already taken by the 'cnnkit' entry point of distribution 'cnnkit'"),
    (["taken_dist"], "distribution 'cnnkit-taken-dist' is already installed (version 1.2)"),
    (["taken_pkg"], "package 'cnnkit_taken_pkg' is already importable"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a)[:20] for a, _ in BAD])
def test_bad_input_is_one_line_and_nothing_is_written(argv, message, tmp_path, taken_names, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "new-plugin", *argv, "--dir", str(out_dir))
    assert (code, out) == (2, "")
    assert err.startswith("cnnkit: error: new-plugin: ") and err.count("\n") == 1, err
    assert message in err and err.endswith(" (nothing was written)\n"), err
    assert not out_dir.exists()


def test_an_existing_directory_is_never_overwritten(tmp_path, capsys):
    target = tmp_path / "cnnkit-my-op"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, out, err = run_cli(capsys, "new-plugin", "my_op", "--dir", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == (
        f"cnnkit: error: new-plugin: {str(target)!r} already exists; it is never overwritten: "
        "choose another --dir (nothing was written)\n"
    )
    assert listing(tmp_path) == ["cnnkit-my-op", "cnnkit-my-op/notes.txt"]
    (tmp_path / "a-file").write_text("")
    code, _, err = run_cli(capsys, "new-plugin", "my_op", "--dir", str(tmp_path / "a-file"))
    assert code == 2 and "is not a directory" in err and err.count("\n") == 1


def test_bad_input_in_a_subprocess_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "cnnkit", "new-plugin", "2fast", "--dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == "" and "Traceback" not in proc.stderr
    assert (
        proc.stderr.startswith("cnnkit: error: new-plugin: the name must be") and proc.stderr.count("\n") == 1
    )
    assert listing(tmp_path) == []


# -- plugins add commands -------------------------------------------------------------------------


def _hello(args) -> int:
    print(f"hello {args.who}{'!' * args.loud}")
    return 3 if args.who == "three" else 0


def _configure_hello(parser) -> None:
    parser.add_argument("who")
    parser.add_argument("--loud", type=int, default=0)


class HelloPlugin:
    @hookimpl
    def cnnkit_register_commands(self, register):
        register(Command("hello", run=_hello, help="say hello", configure=_configure_hello))
        register(Command("boom", run=lambda args: 1 / 0, help="divides by zero"))
        register(Command("bad-args", run=_hello, configure=lambda parser: parser.add_argument(42)))


class Raising:
    @hookimpl
    def cnnkit_register_commands(self, register):
        raise RuntimeError("no commands today")


class Builtin:
    @hookimpl
    def cnnkit_register_commands(self, register):
        register(Command("plugins", run=_hello))


class Twice:
    @hookimpl
    def cnnkit_register_commands(self, register):
        register(Command("hello", run=_hello))


class NotACommand:
    @hookimpl
    def cnnkit_register_commands(self, register):
        register("hello-world")


class BadName:
    @hookimpl
    def cnnkit_register_commands(self, register):
        register(Command("Hello World", run=_hello))


@pytest.fixture
def plugin(monkeypatch):
    """Register throwaway plugins on the global registry for one test."""
    monkeypatch.delenv("CNNKIT_STRICT_PLUGINS", raising=False)
    registry = cnnkit.get_registry()
    names: list[str] = []

    def add(obj, name):
        names.append(registry.register(obj, name=name, dist=f"{name}-dist", version="0.3"))

    yield add
    for name in names:
        registry.unregister(name)


def test_a_plugin_command_is_listed_and_runs(plugin, capsys):
    plugin(HelloPlugin(), "hello")
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"^\s+hello\s+say hello \(plugin hello-dist\)$", out, flags=re.M), out
    assert run_cli(capsys, "hello", "world", "--loud", "2") == (0, "hello world!!\n", "")
    assert run_cli(capsys, "hello", "three")[0] == 3  # the exit status is the command's
    _, out, _ = run_cli(capsys, "plugins", "--json", "--no-builtin")
    row = {r["name"]: r for r in json.loads(out)}["hello"]
    assert row["status"] == "loaded" and {"command hello", "command boom"} <= set(row["registered"])


def test_a_failing_command_is_one_line_naming_its_plugin(plugin, capsys):
    plugin(HelloPlugin(), "hello")
    assert run_cli(capsys, "boom") == (
        1,
        "",
        "cnnkit: error: boom: ZeroDivisionError: division by zero "
        "(a command of plugin 'hello', distribution 'hello-dist')\n",
    )
    code, _, err = run_cli(capsys, "bad-args")
    assert code == 1 and err.startswith(
        "cnnkit: error: the 'bad-args' command of plugin 'hello' (distribution 'hello-dist') "
        "cannot set up its arguments: "
    )
    assert run_cli(capsys, "hello", "again")[:2] == (0, "hello again\n")  # the others keep working


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        (Raising(), "cnnkit_register_commands failed: RuntimeError: no commands today"),
        (Builtin(), "registered command 'plugins', the name of a built-in cnnkit command"),
        (
            Twice(),
            "registered command 'hello', which plugin 'hello' (distribution 'hello-dist') registered first",
        ),
        (NotACommand(), "registered 'hello-world' as a command; expected a cnnkit.registry.Command"),
        (BadName(), "registered a command named 'Hello World'; a command name is lower-case letters"),
    ],
    ids=["raises", "builtin-name", "taken", "not-a-command", "bad-name"],
)
def test_a_failing_command_plugin_is_isolated(obj, reason, plugin, capsys):
    plugin(HelloPlugin(), "hello")
    plugin(obj, "zz-bad")  # registered after hello
    code, out, _ = run_cli(capsys, "plugins", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["zz-bad"]["status"] == "failed"
    assert rows["zz-bad"]["error"].startswith(reason), rows["zz-bad"]["error"]
    assert rows["hello"]["status"] == "loaded" and rows["numpy"]["status"] == "loaded"
    assert run_cli(capsys, "hello", "there")[:2] == (0, "hello there\n")


def test_strict_mode_makes_a_failing_command_plugin_an_error(plugin, capsys, monkeypatch):
    plugin(Raising(), "raising")
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    code, out, err = run_cli(capsys, "backends")
    assert (code, out) == (1, "")
    assert err == (
        "cnnkit: error: plugin 'raising' from distribution 'raising-dist': "
        "cnnkit_register_commands failed: RuntimeError: no commands today\n"
    )


def test_commands_in_a_registry_of_its_own():
    reg = Registry(entry_points=False)
    reg.register(HelloPlugin(), name="hello", dist="hello-dist")
    assert sorted(reg.commands()) == ["bad-args", "boom", "hello"]
    assert reg.command_plugin("hello").dist == "hello-dist"
    assert reg.commands()["hello"].help == "say hello"


def test_the_distance_pool_plugin_adds_its_command(capsys):
    pytest.importorskip("cnnkit_distance_pool", reason="plugins/cnnkit-distance-pool is not installed")
    code, out, err = run_cli(capsys, "distance-weights", "3", "--json")
    assert (code, err) == (0, "")
    w = json.loads(out)
    assert len(w) == 3 and sum(map(sum, w)) == pytest.approx(1.0) and w[1][1] == pytest.approx(0.2041799555)
    assert cnnkit.get_registry().command_plugin("distance-weights").dist == "cnnkit-distance-pool"


# -- a stranger's workflow, in a fresh virtual environment ---------------------------------------


def _link_setuptools(deps: Path) -> None:
    """Let ``pip install -e`` build offline in the fresh environment: setuptools from this one."""
    from importlib import metadata

    dist = metadata.distribution("setuptools")
    for top in {Path(str(f)).parts[0] for f in dist.files or []}:
        source = Path(dist.locate_file(top))
        if source.exists() and not top.endswith(".pth") and not (deps / top).exists():
            (deps / top).symlink_to(source)


@pytest.mark.slow
def test_generated_plugins_install_into_a_fresh_venv_and_pass_their_tests(fresh_venv):  # noqa: F811
    v = fresh_venv
    gen = v.tmp / "generated"
    for kind, name in GENERATED.items():  # the venv's own cnnkit: the templates ship in the wheel
        v.run(v.cnnkit, "new-plugin", name, "--kind", kind, "--dir", str(gen))
    _link_setuptools(v.tmp / "deps")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "--python", str(v.python)]
    editable = [a for n in GENERATED.values() for a in ("-e", str(gen / Names.of(n).dist))]
    v.run(*pip, "install", "--no-index", "--no-deps", "--no-build-isolation", *editable)

    rows = {r["name"]: r for r in json.loads(v.run(v.cnnkit, "plugins", "--json").stdout)}
    backends = ["numpy", "torch"] if HAS_TORCH else ["numpy"]
    for name in GENERATED.values():
        n = Names.of(name)
        row = rows[name]
        assert (row["dist"], row["version"], row["status"]) == (n.dist, "0.1.0", "loaded")
        assert {f"op {name}", *(f"kernel[{b}] {name}" for b in backends)} <= set(row["registered"])

    ops = [a for n in GENERATED.values() for a in ("--op", n)]
    report = json.loads(v.run(v.cnnkit, "conformance", *ops, "--json").stdout)
    cells = {(c["op"], c["backend"]): c for c in report["matrix"]}
    for name in GENERATED.values():
        for b in backends:
            assert cells[(name, b)]["passed"] > 0 and cells[(name, b)]["failed"] == 0, cells[(name, b)]
    assert report["failures"] == []

    v.install("cnnkit-distance-pool")  # the example plugin's command, from its entry point
    out = v.run(v.cnnkit, "distance-weights", "3", "--sigma", "1").stdout.splitlines()
    assert out[2] == "0.1238  0.2042  0.1238"
    assert "distance-weights" in v.run(v.cnnkit, "--help").stdout

    if v.run(str(v.python), "-c", "import pytest", check=False).returncode:
        pytest.skip("pytest is not importable in the fresh environment")
    env = {k: x for k, x in os.environ.items() if not k.startswith(("CNNKIT_", "PYTHON", "VIRTUAL_ENV"))}

    def own_tests(name: str, *, torch: bool) -> tuple[set[str], set[str]]:
        """Run a package's tests from its directory (its own pytest config); torch hidden on request."""
        hide = "" if torch else "sys.modules['torch'] = None; "  # `import torch` raises ImportError
        code = (
            f"import sys; {hide}import pytest; sys.exit(pytest.main(['-q', '-rA', '-p', 'no:cacheprovider']))"
        )
        proc = subprocess.run(
            [str(v.python), "-c", code],
            cwd=gen / Names.of(name).dist,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
        return tuple(set(re.findall(rf"^{s} (\S+)", proc.stdout, flags=re.M)) for s in ("PASSED", "SKIPPED"))

    for name in GENERATED.values():
        passed, skipped = own_tests(name, torch=True)
        for b in backends:
            assert f"tests/test_{name}.py::test_trains_in_a_sequential_for_two_epochs[{b}]" in passed
        assert f"tests/test_{name}.py::test_saves_and_loads_with_cnnkit_io" in passed
        if HAS_TORCH:
            assert f"tests/test_{name}.py::test_converts_with_from_cnnkit" in passed
            assert skipped == set()
        prefix = f"tests/test_{name}_conformance.py::test_conformance["
        conformance = [p for p in passed if p.startswith(prefix)]
        assert {b for b in backends if any(f"[{b}-" in p for p in conformance)} == set(backends)

        # without torch the package still works: its numpy half passes, its torch half is skipped
        passed, _ = own_tests(name, torch=False)
        assert f"tests/test_{name}.py::test_trains_in_a_sequential_for_two_epochs[numpy]" in passed
        assert not any("[torch" in p or "from_cnnkit" in p for p in passed), passed
        assert any(p.startswith(f"{prefix}numpy-") for p in passed)
