"""The registry: plugins, failures, conflicts, environment switches and backend selection.

Plugin tests register throwaway plugin classes on a private
``Registry(entry_points=False)``; entry-point tests put a throwaway
``*.dist-info`` on ``sys.path``. Nothing here depends on what else is installed.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from cnnkit_numpy.backend import NumpyBackend

import cnnkit
from cnnkit import registry as registry_mod
from cnnkit.backend import BackendInfo
from cnnkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    PluginConflictError,
    PluginError,
)
from cnnkit.hookspecs import hookimpl
from cnnkit.ops import ActivationSpec
from cnnkit.registry import Kernel, Registry


class ListBackend(NumpyBackend):
    """A throwaway backend whose arrays are NumPy arrays."""


def _marker_kernel(value):
    """A relu 'kernel' that answers ``value`` everywhere, to see which backend ran."""
    return Kernel(forward=lambda x: (np.full_like(x, value), None), backward=lambda ctx, g: (g,))


class OpPlugin:
    """Adds the op ``twice`` and a backend ``fake`` implementing it and ``relu``."""

    @hookimpl
    def cnnkit_register_ops(self, register):
        register(ActivationSpec("twice"))

    @hookimpl
    def cnnkit_register_backends(self, register):
        register(
            BackendInfo(
                name="fake",
                factory=ListBackend,
                version="9.9",
                description="a test double",
                options=("dtype",),
            )
        )

    @hookimpl
    def cnnkit_register_kernels(self, backend, register):
        if backend == "fake":
            register("twice", Kernel(forward=lambda x: (2 * x, None), backward=lambda ctx, g: (2 * g,)))
            register("relu", _marker_kernel(42.0))


class FailingOpsPlugin:
    @hookimpl
    def cnnkit_register_ops(self, register):
        raise RuntimeError("boom in ops")


@pytest.fixture
def reg(monkeypatch):
    for var in (
        "CNNKIT_STRICT_PLUGINS",
        "CNNKIT_DISABLE_PLUGIN_AUTOLOAD",
        "CNNKIT_PLUGINS",
        "CNNKIT_BACKEND",
    ):
        monkeypatch.delenv(var, raising=False)
    return Registry(entry_points=False)


# -- registering through the hooks -----------------------------------------------------


def test_a_throwaway_plugin_adds_an_op_a_backend_and_kernels(reg):
    name = reg.register(OpPlugin(), name="ops-plugin", dist="test-dist", version="1.0")
    assert name == "ops-plugin"
    assert "twice" in reg.ops() and "conv" in reg.ops()  # the core's specs load too
    assert reg.backend_infos()["fake"].version == "9.9"
    be = reg.backend("fake")
    assert isinstance(be, ListBackend) and be.name == "fake"
    assert reg.backend("fake") is be  # cached per options
    assert reg.backend("fake", dtype="float64") is not be
    k = reg.kernel("fake", "twice")
    assert k(np.array([1.0, 2.0])).tolist() == [2.0, 4.0]
    assert reg.kernel_plugin("fake", "twice").dist == "test-dist"
    assert reg.backend_plugin("fake").name == "ops-plugin"
    record = reg.records["ops-plugin"]
    assert (record.dist, record.version, record.status, record.builtin) == (
        "test-dist",
        "1.0",
        "loaded",
        False,
    )
    assert {"op twice", "backend fake", "kernel[fake] twice", "kernel[fake] relu"} <= set(record.registered)


def test_registered_lists_do_not_grow_when_caches_are_rebuilt(reg):
    reg.register(OpPlugin(), name="ops-plugin")
    reg.ops()
    reg.kernels("fake")
    reg.register(FailingOpsPlugin(), name="other")  # clears the caches: every hook runs again
    reg.ops()
    reg.kernels("fake")
    registered = reg.records["ops-plugin"].registered
    assert registered.count("op twice") == 1 and registered.count("kernel[fake] twice") == 1


def test_unregister_forgets_what_a_plugin_added(reg):
    reg.register(OpPlugin(), name="ops-plugin")
    assert "twice" in reg.ops()
    reg.unregister("ops-plugin")
    assert "twice" not in reg.ops()
    assert "ops-plugin" not in reg.records
    with pytest.raises(BackendNotFoundError):
        reg.backend("fake")


def test_kernel_call_prefers_call_over_forward():
    k = Kernel(forward=lambda x: (x + 1, "ctx"), backward=lambda ctx, g: (g,), call=lambda x: x + 100)
    assert k(1) == 101
    assert Kernel(forward=lambda x: (x + 1, "ctx"), backward=lambda ctx, g: (g,))(1) == 2


def test_the_core_registers_through_the_same_hooks(reg):
    reg.load()
    for modname in registry_mod.CORE_PLUGINS:
        assert reg.records[modname].builtin and reg.records[modname].dist == "cnnkit"
    assert {"conv", "max_pool", "relu", "linear", "flatten"} <= set(reg.ops())


# -- lookups that fail say what exists --------------------------------------------------


def test_unknown_backend_lists_those_that_exist(reg):
    reg.register(OpPlugin())
    with pytest.raises(BackendNotFoundError, match=r"unknown backend 'nope'; installed backends: fake"):
        reg.backend("nope")


def test_unknown_op_lists_the_registered_ones(reg):
    with pytest.raises(KeyError, match=r"unknown op 'nope'; registered ops: .*conv"):
        reg.op("nope")


def test_missing_kernel_lists_what_the_backend_implements(reg):
    reg.register(OpPlugin())
    with pytest.raises(
        OpNotImplementedError, match=r"backend 'fake' has no implementation of op 'conv'.*relu, twice"
    ):
        reg.kernel("fake", "conv")


def test_unknown_backend_option_is_a_type_error(reg):
    reg.register(OpPlugin())
    with pytest.raises(TypeError, match=r"backend 'fake' takes options \['dtype'\], got \['device'\]"):
        reg.backend("fake", device="cuda")


def test_backend_with_a_missing_dependency_names_what_to_install(reg):
    def factory(**options):
        import cnnkit_no_such_dependency  # noqa: F401

    class Plugin:
        @hookimpl
        def cnnkit_register_backends(self, register):
            register(BackendInfo(name="needs-dep", factory=factory, install_hint="pip install needs-dep"))

    reg.register(Plugin())
    assert "needs-dep" in reg.backend_infos()  # registered even though it cannot load
    with pytest.raises(
        BackendUnavailableError, match=r"'needs-dep' is registered but cannot load.*pip install needs-dep"
    ):
        reg.backend("needs-dep")


# -- failures are isolated per plugin ---------------------------------------------------


def test_a_failing_hook_is_recorded_and_the_rest_keep_working(reg):
    reg.register(FailingOpsPlugin(), name="failing", dist="failing-dist", version="0.3")
    reg.register(OpPlugin(), name="good")
    ops = reg.ops()
    assert "twice" in ops and "conv" in ops
    record = reg.records["failing"]
    assert record.status == "failed"
    assert record.error == "cnnkit_register_ops failed: RuntimeError: boom in ops"
    assert reg.records["good"].status == "loaded"


def test_strict_mode_turns_a_failing_hook_into_an_error(reg, monkeypatch):
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    reg.register(FailingOpsPlugin(), name="failing", dist="failing-dist")
    with pytest.raises(PluginError, match=r"plugin 'failing' from distribution 'failing-dist'.*boom in ops"):
        reg.ops()


@pytest.mark.parametrize("value", ["0", "", "false", "no", "off"])
def test_strict_mode_falsy_values(reg, monkeypatch, value):
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", value)
    reg.register(FailingOpsPlugin(), name="failing")
    reg.ops()
    assert reg.records["failing"].status == "failed"


# -- the plugin contract, enforced by pluggy --------------------------------------------


def test_a_hook_taking_only_register_works(reg):
    class Plugin:
        @hookimpl
        def cnnkit_register_kernels(self, register):  # no ``backend``: pluggy passes what is declared
            register("relu", _marker_kernel(7.0))

    reg.register(Plugin(), name="subset")
    assert reg.records["subset"].status == "loaded"
    assert "relu" in reg.kernels("anything")


def test_a_misspelled_hook_fails_that_plugin_naming_the_hook(reg):
    class Typo:
        @hookimpl
        def cnnkit_register_op(self, register):  # the spec is cnnkit_register_ops
            register(ActivationSpec("never"))

    reg.register(Typo(), name="typo", dist="typo-dist")
    record = reg.records["typo"]
    assert record.status == "failed"
    assert "unknown hook(s) cnnkit_register_op" in record.error and "cnnkit_register_ops" in record.error
    assert "never" not in reg.ops()  # unregistered: nothing it declares is used
    assert reg.records["cnnkit.builtin"].status == "loaded"


def test_a_misspelled_hook_raises_in_strict_mode(reg, monkeypatch):
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")

    class Typo:
        @hookimpl
        def cnnkit_register_layer(self, register):
            pass

    with pytest.raises(PluginError, match=r"plugin 'typo'.*unknown hook\(s\) cnnkit_register_layer"):
        reg.register(Typo(), name="typo")


def test_a_hook_without_the_marker_is_reported(reg):
    class Unmarked:
        def cnnkit_register_ops(self, register):
            register(ActivationSpec("never"))

    reg.register(Unmarked(), name="unmarked")
    assert reg.records["unmarked"].status == "failed"
    assert "cnnkit_register_ops lack(s) the @cnnkit.hookimpl marker" in reg.records["unmarked"].error


def test_the_types_a_plugin_touches_come_from_one_place():
    import cnnkit
    from cnnkit.conformance.cases import Case
    from cnnkit.spec import OpSpec

    assert cnnkit.Case is Case and cnnkit.OpSpec is OpSpec and cnnkit.Kernel is Kernel
    assert cnnkit.BackendInfo is BackendInfo and cnnkit.hookimpl is hookimpl


def test_a_kernel_for_an_unknown_op_fails_that_plugin(reg):
    class Plugin:
        @hookimpl
        def cnnkit_register_kernels(self, backend, register):
            register("no_such_op", _marker_kernel(0.0))

    reg.register(OpPlugin(), name="good")
    reg.register(Plugin(), name="confused", dist="confused-dist")
    assert set(reg.kernels("fake")) == {"twice", "relu"}
    assert reg.records["confused"].status == "failed"
    assert "unknown op 'no_such_op'" in reg.records["confused"].error


# -- conflicts name both plugins and both distributions ---------------------------------


def _conflict_message(reg, first, second, lookup):
    reg.register(first, name="first", dist="first-dist")
    reg.register(second, name="second", dist="second-dist")
    with pytest.raises(PluginConflictError) as info:
        lookup()
    message = str(info.value)
    for part in ("'first'", "'first-dist'", "'second'", "'second-dist'"):
        assert part in message
    return message


def test_two_plugins_declaring_one_op_conflict(reg):
    class Again:
        @hookimpl
        def cnnkit_register_ops(self, register):
            register(ActivationSpec("twice"))

    message = _conflict_message(reg, OpPlugin(), Again(), reg.ops)
    assert "op 'twice' is registered twice" in message


def test_two_plugins_claiming_a_core_op_conflict(reg):
    class Shadow:
        @hookimpl
        def cnnkit_register_ops(self, register):
            register(ActivationSpec("relu"))

    reg.register(Shadow(), name="shadow", dist="shadow-dist")
    with pytest.raises(
        PluginConflictError, match=r"op 'relu'.*'cnnkit.builtin'.*'cnnkit'.*'shadow'.*'shadow-dist'"
    ):
        reg.ops()


def test_two_plugins_adding_one_backend_conflict(reg):
    class Again:
        @hookimpl
        def cnnkit_register_backends(self, register):
            register(BackendInfo(name="fake", factory=ListBackend))

    assert "backend 'fake' is registered twice" in _conflict_message(
        reg, OpPlugin(), Again(), reg.backend_infos
    )


def test_two_plugins_implementing_one_op_for_one_backend_conflict(reg):
    class Again:
        @hookimpl
        def cnnkit_register_kernels(self, backend, register):
            if backend == "fake":
                register("twice", _marker_kernel(0.0))

    message = _conflict_message(reg, OpPlugin(), Again(), lambda: reg.kernels("fake"))
    assert "op 'twice' for backend 'fake' is registered twice" in message


def test_two_layer_classes_with_one_name_conflict(reg):
    def make_layer():
        class Pool(cnnkit.layers.Layer):
            pass

        class Plugin:
            @hookimpl
            def cnnkit_register_layers(self, register):
                register(Pool)

        return Plugin()

    assert "layer 'Pool' is registered twice" in _conflict_message(
        reg, make_layer(), make_layer(), reg.layers
    )


def test_registering_one_layer_class_twice_is_not_a_conflict(reg):
    class Pool(cnnkit.layers.Layer):
        pass

    class Plugin:
        @hookimpl
        def cnnkit_register_layers(self, register):
            register(Pool)

    reg.register(Plugin(), name="a")
    reg.register(Plugin(), name="b")
    assert reg.layers()["Pool"] is Pool


def test_conformance_cases_come_from_every_plugin(reg):
    case = cnnkit.conformance.cases.Case("twice-1", "twice", ([1.0],), expected=[2.0])

    class Plugin:
        @hookimpl
        def cnnkit_conformance_cases(self, register):
            register(case)

    reg.register(Plugin(), name="cases")
    assert case in reg.conformance_cases()
    assert reg.records["cases"].registered == ["case twice-1"]


# -- entry points: a throwaway dist-info on sys.path ------------------------------------

GOOD_MODULE = """
from cnnkit import hookimpl
from cnnkit.ops import ActivationSpec

@hookimpl
def cnnkit_register_ops(register):
    register(ActivationSpec("{op}"))
"""

BROKEN_MODULE = "import cnnkit_fake_missing_dependency  # an uninstalled dependency\n"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A directory on sys.path where tests install fake distributions; cleans sys.modules after."""
    for var in ("CNNKIT_STRICT_PLUGINS", "CNNKIT_DISABLE_PLUGIN_AUTOLOAD", "CNNKIT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [m for m in sys.modules if m.startswith("cnnkit_fake_")]:
        del sys.modules[name]


def install_fake(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]):
    """Write ``<dist>-<version>.dist-info`` (METADATA, entry_points.txt) and the modules into ``site``."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[cnnkit]\n{lines}")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def _fake_pair(site):
    install_fake(
        site, "cnnkit-fake-good", "1.2", {"fake_good": "cnnkit_fake_good"},
        {"cnnkit_fake_good": GOOD_MODULE.format(op="fake_op")},
    )  # fmt: skip
    install_fake(
        site, "cnnkit-fake-broken", "0.1", {"fake_broken": "cnnkit_fake_broken"},
        {"cnnkit_fake_broken": BROKEN_MODULE},
    )  # fmt: skip


def test_entry_points_load_and_a_broken_one_is_reported_by_name(site):
    _fake_pair(site)
    reg = Registry()
    assert "fake_op" in reg.ops() and "conv" in reg.ops()
    good, broken = reg.records["fake_good"], reg.records["fake_broken"]
    assert (good.dist, good.version, good.status) == ("cnnkit-fake-good", "1.2", "loaded")
    assert good.registered == ["op fake_op"]
    assert (broken.dist, broken.version, broken.status) == ("cnnkit-fake-broken", "0.1", "failed")
    assert broken.error == (
        "import failed: ModuleNotFoundError: No module named 'cnnkit_fake_missing_dependency'"
    )


def test_strict_mode_raises_naming_the_distribution(site, monkeypatch):
    _fake_pair(site)
    monkeypatch.setenv("CNNKIT_STRICT_PLUGINS", "1")
    with pytest.raises(
        PluginError, match=r"plugin 'fake_broken' from distribution 'cnnkit-fake-broken'"
    ) as info:
        Registry().load()
    assert isinstance(info.value.__cause__, ImportError)


def test_disable_autoload_keeps_only_the_core_distribution(site, monkeypatch):
    _fake_pair(site)
    monkeypatch.setenv("CNNKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    reg = Registry()
    assert "fake_op" not in reg.ops()
    for name in ("fake_good", "fake_broken"):
        assert reg.records[name].status == "disabled"
        assert reg.records[name].error == "CNNKIT_DISABLE_PLUGIN_AUTOLOAD is set"
    assert reg.records["numpy"].status == "loaded"  # the built-in backends are of dist cnnkit


@pytest.mark.parametrize("allow", ["fake_good", "cnnkit-fake-good", " fake_good , something_else "])
def test_cnnkit_plugins_selects_by_entry_point_or_distribution_name(site, monkeypatch, allow):
    _fake_pair(site)
    monkeypatch.setenv("CNNKIT_PLUGINS", allow)
    reg = Registry()
    if "something_else" in allow:  # a name that matches nothing is warned about
        with pytest.warns(UserWarning, match=r"CNNKIT_PLUGINS names \['something_else'\], which match no"):
            reg.ops()
    assert "fake_op" in reg.ops()
    assert reg.records["fake_good"].status == "loaded"
    assert reg.records["fake_broken"].status == "disabled"
    assert reg.records["fake_broken"].error == "not in CNNKIT_PLUGINS"
    assert reg.records["numpy"].status == "loaded"


def test_cnnkit_plugins_overrides_disable_autoload(site, monkeypatch):
    _fake_pair(site)
    monkeypatch.setenv("CNNKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("CNNKIT_PLUGINS", "fake_good")
    assert "fake_op" in Registry().ops()


def test_two_distributions_with_one_entry_point_name_conflict(site):
    install_fake(
        site,
        "cnnkit-fake-a",
        "1",
        {"fake_same": "cnnkit_fake_a"},
        {"cnnkit_fake_a": GOOD_MODULE.format(op="a_op")},
    )
    install_fake(
        site,
        "cnnkit-fake-b",
        "1",
        {"fake_same": "cnnkit_fake_b"},
        {"cnnkit_fake_b": GOOD_MODULE.format(op="b_op")},
    )
    with pytest.raises(PluginError, match=r"fake_same") as info:
        Registry().load()
    message = str(info.value)
    assert "cnnkit-fake-a" in message and "cnnkit-fake-b" in message


def test_two_distributions_declaring_one_op_conflict(site):
    install_fake(
        site,
        "cnnkit-fake-a",
        "1",
        {"fake_a": "cnnkit_fake_a"},
        {"cnnkit_fake_a": GOOD_MODULE.format(op="same")},
    )
    install_fake(
        site,
        "cnnkit-fake-b",
        "1",
        {"fake_b": "cnnkit_fake_b"},
        {"cnnkit_fake_b": GOOD_MODULE.format(op="same")},
    )
    with pytest.raises(
        PluginConflictError, match=r"op 'same'.*'fake_a'.*'cnnkit-fake-a'.*'fake_b'.*'cnnkit-fake-b'"
    ):
        Registry().ops()


# -- backend selection on the global registry --------------------------------------------


@pytest.fixture
def fake_global(monkeypatch):
    """The global registry with the ``fake`` backend added; selection state reset around the test."""
    monkeypatch.delenv("CNNKIT_BACKEND", raising=False)
    monkeypatch.setattr(registry_mod, "_GLOBAL_CHOICE", None)
    registry = cnnkit.get_registry()
    name = registry.register(OpPlugin(), name="test-registry-fake")
    yield registry
    registry.unregister(name)


def _relu_marker(**kw):
    return float(cnnkit.call("relu", np.array([-1.0, 1.0]), **kw)[0])


def test_default_backend_is_numpy(fake_global):
    assert cnnkit.get_backend().name == "numpy"
    assert _relu_marker() == 0.0  # numpy's relu, not the fake's 42


def test_environment_variable_beats_the_default(fake_global, monkeypatch):
    monkeypatch.setenv("CNNKIT_BACKEND", "fake")
    assert cnnkit.get_backend().name == "fake"
    assert _relu_marker() == 42.0


def test_set_backend_beats_the_environment(fake_global, monkeypatch):
    monkeypatch.setenv("CNNKIT_BACKEND", "fake")
    assert cnnkit.set_backend("numpy").name == "numpy"
    assert cnnkit.get_backend().name == "numpy"


def test_use_backend_beats_set_backend_and_restores_it(fake_global):
    cnnkit.set_backend("numpy")
    with cnnkit.use_backend("fake") as be:
        assert be.name == "fake" and cnnkit.get_backend() is be
        assert _relu_marker() == 42.0
        with cnnkit.use_backend("numpy"):
            assert cnnkit.get_backend().name == "numpy"
        assert cnnkit.get_backend().name == "fake"
    assert cnnkit.get_backend().name == "numpy"


def test_use_backend_restores_after_an_exception(fake_global):
    with pytest.raises(ZeroDivisionError), cnnkit.use_backend("fake"):
        1 / 0  # noqa: B018
    assert cnnkit.get_backend().name == "numpy"


def test_a_call_backend_beats_use_backend(fake_global):
    with cnnkit.use_backend("fake"):
        assert _relu_marker(backend="numpy") == 0.0
        assert cnnkit.get_backend("numpy").name == "numpy"
        assert _relu_marker() == 42.0


def test_a_backend_instance_is_used_as_given(fake_global):
    be = fake_global.backend("fake", dtype="float64")
    assert cnnkit.get_backend(be) is be
    assert be.options == {"dtype": "float64"}


def test_set_backend_to_an_unknown_name_raises_and_keeps_the_choice(fake_global):
    cnnkit.set_backend("fake")
    with pytest.raises(
        BackendNotFoundError, match=r"unknown backend 'nope'; installed backends: .*fake.*numpy"
    ):
        cnnkit.set_backend("nope")
    assert cnnkit.get_backend().name == "fake"
    with pytest.raises(BackendNotFoundError), cnnkit.use_backend("nope"):
        pass
    assert cnnkit.get_backend().name == "fake"


def test_unknown_backend_in_the_environment_names_it(fake_global, monkeypatch):
    monkeypatch.setenv("CNNKIT_BACKEND", "nope")
    with pytest.raises(BackendNotFoundError, match="'nope'"):
        cnnkit.get_backend()


def test_list_backends_is_sorted(fake_global):
    names = cnnkit.list_backends()
    assert names == sorted(names) and {"fake", "numpy"} <= set(names)


def test_use_backend_does_not_leak_into_other_threads(fake_global):
    seen: dict[str, str] = {}
    inside = threading.Event()
    release = threading.Event()

    def worker(label, choice):
        if choice is None:
            seen[label] = cnnkit.get_backend().name
            return
        with cnnkit.use_backend(choice):
            inside.set()
            release.wait(5)
            seen[label] = cnnkit.get_backend().name

    holder = threading.Thread(target=worker, args=("holder", "fake"))
    holder.start()
    assert inside.wait(5)
    bystander = threading.Thread(target=worker, args=("bystander", None))
    bystander.start()
    bystander.join(5)
    seen["main"] = cnnkit.get_backend().name
    release.set()
    holder.join(5)
    assert seen == {"holder": "fake", "bystander": "numpy", "main": "numpy"}


def test_a_thread_started_inside_use_backend_does_not_inherit_it(fake_global):
    seen = []
    with cnnkit.use_backend("fake"):
        t = threading.Thread(target=lambda: seen.append(cnnkit.get_backend().name))
        t.start()
        t.join(5)
    assert seen == ["numpy"]


def test_set_backend_is_process_wide(fake_global):
    cnnkit.set_backend("fake")
    seen = []
    t = threading.Thread(target=lambda: seen.append(cnnkit.get_backend().name))
    t.start()
    t.join(5)
    assert seen == ["fake"]


def test_use_backend_does_not_leak_between_asyncio_tasks(fake_global):
    async def chooser(name, ready, go):
        with cnnkit.use_backend(name):
            ready.set()
            await go.wait()
            return cnnkit.get_backend().name

    async def main():
        ready, go = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(chooser("fake", ready, go))
        await ready.wait()
        here = cnnkit.get_backend().name
        go.set()
        return here, await task

    assert asyncio.run(main()) == ("numpy", "fake")
