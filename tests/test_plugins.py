"""The plugin distributions under plugins/, seen from cnnkit.

- ``cnnkit-distance-pool`` and ``cnnkit-tiny-backend``: checked when installed
  (the README's test command installs them), skipped cleanly otherwise.
- ``cnnkit-broken-plugin``: NEVER installed. Each test writes its
  ``*.dist-info`` (METADATA + entry_points.txt, read from its pyproject.toml)
  into a temporary directory and puts that and its ``src/`` on the path, for
  one in-process test or one subprocess.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
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
