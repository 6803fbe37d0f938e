"""The plugin distributions under plugins/, seen from cnnkit.

- ``cnnkit-distance-pool`` and ``cnnkit-tiny-backend``: checked when installed
  (the README's test command installs them), skipped cleanly otherwise; and,
  in two slow tests, pip-installed from wheels of this tree into a fresh virtual
  environment, as a stranger would (``fresh_venv``).
- ``cnnkit-broken-plugin``: NEVER installed. Each test writes its
  ``*.dist-info`` (METADATA + entry_points.txt, read from its pyproject.toml)
  into a temporary directory and puts that and its ``src/`` on the path, for
  one in-process test or one subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit import cli
from cnnkit import registry as registry_mod
from cnnkit.errors import PluginError
from cnnkit.registry import Registry

PLUGINS = Path(__file__).resolve().parent.parent / "plugins"
BROKEN = PLUGINS / "cnnkit-broken-plugin"


def _entry_points(pyproject: Path) -> dict[str, str]:
    """The ``[project.entry-points.cnnkit]`` table of a pyproject.toml (no TOML parser needed)."""
    text = pyproject.read_text()
    table = text.split("[project.entry-points.cnnkit]", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(\w+)\s*=\s*"([\w.:]+)"', table, flags=re.M))


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """cnnkit-broken-plugin made visible to importlib.metadata without installing it."""
    cnnkit.get_registry().load()  # the process-wide registry is built before, and never sees it
    for var in ("CNNKIT_STRICT_PLUGINS", "CNNKIT_DISABLE_PLUGIN_AUTOLOAD", "CNNKIT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    info = tmp_path / "cnnkit_broken_plugin-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cnnkit-broken-plugin\nVersion: 0.0.1\n")
    eps = _entry_points(BROKEN / "pyproject.toml")
    assert set(eps) == {"broken_import", "broken_hook"}
    (info / "entry_points.txt").write_text("[cnnkit]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    paths = [str(tmp_path), str(BROKEN / "src")]
    for p in reversed(paths):
        monkeypatch.syspath_prepend(p)
    yield paths
    for name in [m for m in sys.modules if m.startswith("cnnkit_broken_plugin")]:
        del sys.modules[name]


# -- the broken plugin: reported by name, the rest keeps working -------------------------


def test_broken_plugin_is_recorded_with_its_error_and_the_rest_works(broken_site):
    reg = Registry()
    ops = reg.ops()
    assert {"conv", "relu"} <= set(ops)
    imp, hook = reg.records["broken_import"], reg.records["broken_hook"]
    assert (imp.dist, imp.version, imp.status) == ("cnnkit-broken-plugin", "0.0.1", "failed")
    assert imp.error == (
        "import failed: ModuleNotFoundError: No module named 'cnnkit_broken_plugin_missing_dependency'"
    )
    assert (hook.dist, hook.status) == ("cnnkit-broken-plugin", "failed")
    assert hook.error == (
        "cnnkit_register_ops failed: RuntimeError: "
        "cnnkit-broken-plugin fails in cnnkit_register_ops on purpose"
    )
    assert reg.backend("numpy").name == "numpy"
    assert reg.kernel("numpy", "relu")(np.array([[-1.0, 2.0]])).tolist() == [[0.0, 2.0]]


def test_broken_plugin_in_strict_mode_raises_naming_the_distribution(broken_site, monkeypatch):
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match=r"plugin 'broken_import' from distribution 'cnnkit-broken-plugin'"):
        Registry().load()  # at import
    monkeypatch.setenv("CNNKIT_PLUGINS", "broken_hook")
    reg = Registry()
    reg.load()  # imports fine
    with pytest.raises(PluginError, match=r"plugin 'broken_hook' from distribution 'cnnkit-broken-plugin'"):
        reg.ops()  # fails in its hook


def test_broken_plugin_can_be_left_out_with_cnnkit_plugins(broken_site, monkeypatch):
    monkeypatch.setenv("CNNKIT_PLUGINS", "cnnkit-distance-pool")
    reg = Registry()
    reg.ops()
    assert reg.records["broken_import"].status == "disabled"
    assert reg.records["broken_hook"].status == "disabled"


@pytest.fixture
def fresh_global_registry(monkeypatch):
    """A new process-wide registry for one test (the old one comes back afterwards)."""
    monkeypatch.setattr(registry_mod, "_REGISTRY", None)
    monkeypatch.setattr(registry_mod, "_GLOBAL_CHOICE", None)
    monkeypatch.delenv("CNNKIT_BACKEND", raising=False)


def test_cli_names_the_broken_plugin_and_other_commands_work(broken_site, fresh_global_registry, capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^broken_import\s+cnnkit-broken-plugin\s+0\.0\.1\s+failed", out, flags=re.M)
    assert re.search(r"^broken_hook\s+cnnkit-broken-plugin\s+0\.0\.1\s+failed", out, flags=re.M)
    assert "broken_import (cnnkit-broken-plugin) failed: import failed: ModuleNotFoundError" in out
    assert cli.main(["plugins", "--check"]) == 1
    capsys.readouterr()
    assert cli.main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["numpy"]["status"] == "available" and "conv" in rows["numpy"]["ops"]


def test_cli_fails_loudly_in_strict_mode(broken_site, fresh_global_registry, capsys, monkeypatch):
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    assert cli.main(["backends"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cnnkit: error: plugin 'broken_")
    assert "from distribution 'cnnkit-broken-plugin'" in err


def test_broken_plugin_in_a_subprocess(broken_site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*broken_site, os.environ.get("PYTHONPATH", "")])}
    env.pop("CNNKIT_STRICT_PLUGINS", None)
    cmd = [sys.executable, "-m", "cnnkit", "plugins", "--json"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert (
        rows["broken_import"]["status"] == "failed"
        and "ModuleNotFoundError" in rows["broken_import"]["error"]
    )
    assert rows["numpy"]["status"] == "loaded"
    strict = subprocess.run(
        [sys.executable, "-m", "cnnkit", "plugins"],
        env={**env, "CNNKIT_STRICT_PLUGINS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert strict.returncode == 1
    assert "cnnkit: error: plugin 'broken_" in strict.stderr
    assert "cnnkit-broken-plugin" in strict.stderr and "Traceback" not in strict.stderr


# -- cnnkit-distance-pool, when installed --------------------------------------------------


def test_distance_pool_plugin_is_listed_with_what_it_registered(capsys):
    pytest.importorskip("cnnkit_distance_pool", reason="plugins/cnnkit-distance-pool is not installed")
    assert cli.main(["plugins", "--json", "--no-builtin"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["distance_pool"]
    assert (row["dist"], row["version"], row["status"]) == ("cnnkit-distance-pool", "0.1.0", "loaded")
    assert {"op distance_pool", "kernel[numpy] distance_pool", "layer DistancePool2d"} <= set(
        row["registered"]
    )
    assert "case distance_pool2d-golden-ramp" in row["registered"]


def test_distance_pool_is_an_op_of_every_backend_it_serves(capsys):
    dp = pytest.importorskip("cnnkit_distance_pool", reason="plugins/cnnkit-distance-pool is not installed")
    reg = cnnkit.get_registry()
    assert "distance_pool" in reg.ops() and "distance_pool" in reg.kernels("numpy")
    assert reg.layers()["DistancePool2d"] is dp.DistancePool2d
    x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    assert dp.distance_pool2d(x, 3, backend="numpy").tolist() == [[[[pytest.approx(5.0)]]]]
    try:
        cnnkit.get_backend("torch")
    except (cnnkit.BackendNotFoundError, cnnkit.BackendUnavailableError):
        return
    assert "distance_pool" in reg.kernels("torch")
    torch = pytest.importorskip("torch")
    y = dp.distance_pool2d(torch.tensor(x), 3, backend="torch")
    assert float(y.reshape(-1)[0]) == pytest.approx(5.0)


# -- cnnkit-tiny-backend, when installed ---------------------------------------------------


def test_tiny_backend_is_listed_with_the_ops_it_covers(capsys):
    pytest.importorskip("cnnkit_tiny", reason="plugins/cnnkit-tiny-backend is not installed")
    assert cli.main(["backends", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    tiny = rows["tiny"]
    assert tiny["status"] == "available" and tiny["dist"] == "cnnkit-tiny-backend"
    assert tiny["ops"] == ["flatten", "linear", "max_pool", "relu"]
    assert "conv" in tiny["missing"]
    x = np.array([[-1.0, 3.0]])
    assert cnnkit.functional.relu(x, backend="tiny").tolist() == [[0.0, 3.0]]


# -- a stranger's install: a fresh virtual environment, pip, the plugins, the command -----------

ROOT = PLUGINS.parent
#: What the fresh environment may import from this one: third-party dependencies, never cnnkit.
SHARED_DEPS = ("numpy", "pluggy", "torch", "pytest")


def _requirements_closure(names: tuple[str, ...]) -> list:
    """The installed distributions ``names`` need (their ``Requires-Dist`` closure, extras left out)."""
    from importlib import metadata

    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen or key == "setuptools":
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        todo += [re.match(r"[\w.-]+", r)[0] for r in dist.requires or [] if "extra ==" not in r]
    return list(seen.values())


def _link_dependencies(deps: Path) -> None:
    """Symlink the shared dependencies' top-level packages and ``.dist-info`` folders into ``deps``."""
    deps.mkdir()
    for dist in _requirements_closure(SHARED_DEPS):
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source = Path(dist.locate_file(top))
            if top.endswith(".pth") or top == "__pycache__" or not source.exists():
                continue
            if not (deps / top).exists():
                (deps / top).symlink_to(source)


def _setuptools_at_least(major: int) -> bool:
    from importlib import metadata

    try:
        return int(metadata.version("setuptools").split(".")[0]) >= major
    except (metadata.PackageNotFoundError, ValueError):
        return False


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A new virtual environment holding nothing of cnnkit, with wheels of cnnkit and the plugins.

    ``python -m venv --without-pip`` (no system site-packages): cnnkit is installed into
    it with pip from a wheel built from this tree (offline where this environment has
    setuptools >= 68). Its third-party dependencies are never downloaded: numpy, pluggy,
    and torch and pytest where present, are this environment's own files,
    symlinked into one folder that a ``.pth`` file puts on its path; pip runs as
    ``pip --python VENV`` from this environment (``--no-index --no-deps``).
    """
    pytest.importorskip("pip", reason="pip is needed to install into the fresh environment")
    tmp = tmp_path_factory.mktemp("fresh")
    src, wheels, venv = tmp / "src", tmp / "wheels", tmp / "venv"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "tests", ".venv")

    def ignore(folder: str, names: list[str]) -> set[str]:  # new-plugin's templates keep their tests/
        return skip(folder, names) - ({"tests"} if "templates" in Path(folder).parts else set())

    shutil.copytree(ROOT / "cnnkit", src / "cnnkit" / "cnnkit", ignore=ignore)
    shutil.copytree(ROOT / "backends", src / "cnnkit" / "backends", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / "cnnkit" / name)
    plugins = ("cnnkit-distance-pool", "cnnkit-broken-plugin", "cnnkit-tiny-backend")
    for name in plugins:
        shutil.copytree(PLUGINS / name, src / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # Offline with this environment's setuptools when it is new enough (>= 68, as pyproject.toml
    # asks); otherwise pip's usual isolated build, as `pip install -e .` does, which needs the index.
    offline = ["--no-build-isolation", "--no-index"] if _setuptools_at_least(68) else []
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", *offline, "-w", str(wheels),
         str(src / "cnnkit"), *(str(src / n) for n in plugins)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if build.returncode and not offline:
        pytest.skip(f"cannot build the wheels (setuptools < 68 here, no index?): {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()
    )  # fmt: skip
    _link_dependencies(tmp / "deps")
    (site / "cnnkit-test-shared-deps.pth").write_text(str(tmp / "deps") + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CNNKIT_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    def wheel(dist: str) -> str:
        return str(next(wheels.glob(dist.replace("-", "_") + "-*.whl")))

    def run(*argv: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(argv), env={**env, **extra_env}, cwd=tmp, capture_output=True, text=True, timeout=300
        )
        if check:
            assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def pip_install(*dists: str) -> None:
        run(*pip, "--python", str(python), "install", "--no-index", "--no-deps", *map(wheel, dists))

    def pip_uninstall(*dists: str) -> None:
        run(*pip, "--python", str(python), "uninstall", "-y", *dists)

    pip_install("cnnkit")
    # nothing of this tree leaks in: cnnkit comes from the venv's site-packages
    where = run(str(python), "-c", "import cnnkit, cnnkit_numpy; print(cnnkit.__file__)").stdout
    assert where.startswith(str(site)), where
    return types.SimpleNamespace(
        python=python, cnnkit=str(venv / "bin" / "cnnkit"), tmp=tmp, run=run,
        install=pip_install, uninstall=pip_uninstall,
    )  # fmt: skip


def _torch_in(venv) -> bool:
    return venv.run(str(venv.python), "-c", "import torch", check=False).returncode == 0


@pytest.mark.slow
def test_a_stranger_pip_installs_the_plugin_into_a_fresh_venv(fresh_venv):
    v = fresh_venv
    names = {r["name"] for r in json.loads(v.run(v.cnnkit, "plugins", "--json").stdout)}
    assert "distance_pool" not in names and {"numpy", "torch"} <= names
    assert "unknown op(s) ['distance_pool']" in v.run(v.cnnkit, "conformance", "--op", "distance_pool",
                                                      check=False).stderr  # fmt: skip

    v.install("cnnkit-distance-pool")
    rows = {r["name"]: r for r in json.loads(v.run(v.cnnkit, "plugins", "--json").stdout)}
    dp = rows["distance_pool"]
    assert (dp["dist"], dp["version"], dp["status"]) == ("cnnkit-distance-pool", "0.1.0", "loaded")
    assert "op distance_pool" in dp["registered"] and "kernel[numpy] distance_pool" in dp["registered"]
    report = json.loads(v.run(v.cnnkit, "conformance", "--op", "distance_pool", "--json").stdout)
    torch_here = importlib.util.find_spec("torch") is not None
    assert _torch_in(v) == torch_here  # the shared torch works there when it works here
    backends = {"numpy", "torch"} if torch_here else {"numpy"}
    cells = {c["backend"]: c for c in report["matrix"] if c["op"] == "distance_pool"}
    assert backends <= set(cells)
    for name in backends:
        assert cells[name]["passed"] > 0 and cells[name]["failed"] == 0
    assert report["failures"] == []

    # the broken plugin installed beside it: named with its error, the rest keeps working
    v.install("cnnkit-broken-plugin")
    out = v.run(v.cnnkit, "plugins").stdout
    assert re.search(r"^broken_import\s+cnnkit-broken-plugin\s+0\.0\.1\s+failed", out, flags=re.M)
    assert "broken_import (cnnkit-broken-plugin) failed: import failed: ModuleNotFoundError" in out
    assert re.search(r"^distance_pool\s+cnnkit-distance-pool\s+0\.1\.0\s+loaded", out, flags=re.M)
    ok = v.run(v.cnnkit, "conformance", "--op", "distance_pool", "--backend", "numpy", "--dtype", "float64")
    assert "distance_pool" in ok.stdout and " 0 failed" in ok.stdout
    strict = v.run(v.cnnkit, "plugins", check=False, CNNKIT_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "Traceback" not in strict.stderr
    assert strict.stderr.startswith("cnnkit: error: plugin 'broken_")
    assert "from distribution 'cnnkit-broken-plugin'" in strict.stderr

    v.uninstall("cnnkit-distance-pool", "cnnkit-broken-plugin")
    names = {r["name"] for r in json.loads(v.run(v.cnnkit, "plugins", "--json").stdout)}
    assert not names & {"distance_pool", "broken_import", "broken_hook"}
    gone = v.run(v.cnnkit, "conformance", "--op", "distance_pool", check=False)
    assert gone.returncode == 2 and "unknown op(s) ['distance_pool']" in gone.stderr


@pytest.mark.slow
def test_a_strangers_backend_runs_the_shared_suite_with_one_pytest_line(fresh_venv):
    v = fresh_venv
    if v.run(str(v.python), "-c", "import pytest", check=False).returncode:
        pytest.skip("pytest is not importable in the fresh environment")
    v.install("cnnkit-tiny-backend")
    known = v.tmp / "known_failures.txt"
    shutil.copy(PLUGINS / "cnnkit-tiny-backend" / "known_failures.txt", known)
    line = [str(v.python), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rx",
            "--pyargs", "cnnkit.conformance", "--cnnkit-backend", "tiny", "--cnnkit-xfail", str(known),
            "--cnnkit-include", "relu*",
            "--cnnkit-include", "max_pool2d*", "--cnnkit-include", "conv2d-lecture*",
            "--cnnkit-exclude", "*ceil*"]  # fmt: skip
    proc = v.run(*line)
    out = proc.stdout
    assert "XFAIL" in out and "NaN: tiny's relu is np.where(x > 0, x, 0)" in out  # the reason, by -rx
    assert "cnnkit conformance" in out
    row = next(line for line in out.splitlines() if line.startswith("relu "))
    assert re.search(r"relu\s+\d+/0/0/0 xf\d+", row), row  # the NaN case, xfailed with its reason
    assert not re.search(r"^conv\s", out, flags=re.M)  # tiny has no conv: no items, named on its line
    assert re.search(r"^max_pool\s+\d+/0/0/0 err ", out, flags=re.M)
    assert "tiny: " in out and "implements 4 ops: flatten(end_dim, start_dim), linear(), max_pool(" in out
    assert re.search(r"; lacks .*\bconv\b.* \(no items planned\)", out)
    assert re.search(r"\d+ passed, \d+ xfailed", out)
    # the same in the command, and a stale entry fails both
    assert v.run(v.cnnkit, "conformance", "--backend", "tiny", "--op", "relu", "--xfail", str(known)).stdout
    known.write_text("tiny-*-relu-*::forward  # said to be broken, but passes\n")
    stale = v.run(*line, check=False)
    assert stale.returncode == 1 and "XPASS(strict)" in stale.stdout
