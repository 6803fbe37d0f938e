"""The registry: plugin discovery, op and backend lookup, backend selection.

Plugins are found through entry points in the ``cnnkit`` group (the built-in
NumPy and PyTorch backends among them) and loaded one by one: a plugin that
fails to import or to register is recorded with its distribution and the
reason, and the rest keep working. Environment variables:

``CNNKIT_BACKEND``
    the backend used when nothing else chooses one (default ``numpy``).
``CNNKIT_STRICT_PLUGINS=1``
    a failing plugin raises :class:`~cnnkit.errors.PluginError` instead.
``CNNKIT_DISABLE_PLUGIN_AUTOLOAD=1``
    load no third-party plugin (those of the ``cnnkit`` distribution still load).
``CNNKIT_PLUGINS=name,other``
    load only these third-party plugins (entry-point or distribution names).

Backend choice, strongest first: a call's ``backend=``, a
``with use_backend(...)`` block (held in a :class:`contextvars.ContextVar`,
so threads and tasks do not leak it), :func:`set_backend`, ``CNNKIT_BACKEND``,
then ``numpy``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata as md
import os
import re
import threading
import warnings
from collections.abc import Callable, Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import pluggy

from cnnkit import hookspecs
from cnnkit.backend import Backend, BackendInfo
from cnnkit.errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    OpNotImplementedError,
    PluginConflictError,
    PluginError,
)
from cnnkit.spec import OpSpec

__all__ = [
    "Command",
    "Kernel",
    "PluginRecord",
    "Registry",
    "get_backend",
    "get_registry",
    "list_backends",
    "set_backend",
    "use_backend",
]

DEFAULT_BACKEND = "numpy"
ENTRY_POINT_GROUP = "cnnkit"
#: The core's own hook implementations: one built-in plugin module, registered like any plugin.
CORE_PLUGINS = ("cnnkit.builtin",)
_CORE_DIST = "cnnkit"


@dataclass(frozen=True)
class Kernel:
    """One backend's implementation of one op.

    Attributes:
        forward: ``forward(*inputs, **attrs) -> (output, ctx)``.
        backward: ``backward(ctx, grad_output) -> tuple`` of one gradient per
            input (``None`` for an absent or integer input).
        call: what :mod:`cnnkit.functional` runs outside :func:`cnnkit.vjp`;
            defaults to ``forward(...)[0]``. The PyTorch backend passes its
            ``Function.apply`` so that autograd records cnnkit's gradients.
    """

    forward: Callable[..., tuple[Any, Any]]
    backward: Callable[..., tuple[Any, ...]]
    call: Callable[..., Any] | None = None

    def __call__(self, *inputs: Any, **attrs: Any) -> Any:
        if self.call is not None:
            return self.call(*inputs, **attrs)
        return self.forward(*inputs, **attrs)[0]


@dataclass(frozen=True)
class Command:
    """A subcommand a plugin adds to ``cnnkit`` (hook :func:`~cnnkit.hookspecs.cnnkit_register_commands`).

    Attributes:
        name: ``cnnkit NAME``; lower-case letters, digits and hyphens, starting with a letter.
        run: ``run(args) -> int``, given the parsed :class:`argparse.Namespace`; the
            exit status (``None`` counts as 0).
        help: one line, shown by ``cnnkit --help`` and the command's ``--help``.
        configure: ``configure(parser)`` adds the command's arguments to its
            :class:`argparse.ArgumentParser` (none by default).
    """

    name: str
    run: Callable[[Any], int | None]
    help: str = ""
    configure: Callable[[Any], None] | None = None


_COMMAND_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


@dataclass
class PluginRecord:
    """What ``cnnkit plugins`` shows for one plugin."""

    name: str
    dist: str
    version: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str = ""
    registered: list[str] = field(default_factory=list)

    @property
    def builtin(self) -> bool:
        return self.dist == _CORE_DIST


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class Registry:
    """A plugin manager plus the ops, backends, kernels and layers it found.

    Most code uses the process-wide :func:`get_registry`; tests build their
    own ``Registry(entry_points=False)`` and :meth:`register` throwaway
    plugin objects so they never depend on what happens to be installed.
    """

    def __init__(self, *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._want_entry_points = entry_points
        self._loaded = False
        self._lock = threading.RLock()
        self._clear_caches()

    # -- plugins -----------------------------------------------------------------

    def _clear_caches(self) -> None:
        self._ops: dict[str, tuple[OpSpec, str]] | None = None
        self._backends: dict[str, tuple[BackendInfo, str]] | None = None
        self._layers: dict[str, tuple[type, str]] | None = None
        self._cases: list[Any] | None = None
        self._commands: dict[str, tuple[Command, str]] | None = None
        self._kernels: dict[str, dict[str, tuple[Kernel, str]]] = {}
        self._instances: dict[tuple, Backend] = {}
        for record in self.records.values():  # every hook runs again: what each registered is rebuilt
            record.registered.clear()

    @property
    def strict(self) -> bool:
        return _truthy("CNNKIT_STRICT_PLUGINS")

    def register(
        self, plugin: Any, name: str | None = None, *, dist: str | None = None, version: str = ""
    ) -> str:
        """Register a plugin object (module or instance with ``@hookimpl`` functions).

        Returns the name it is registered under; :meth:`unregister` takes it.
        """
        self.load()
        with self._lock:
            name = self.pm.register(plugin, name=name)
            assert name is not None
            record = self.records[name] = PluginRecord(name=name, dist=dist or name, version=version)
            self._clear_caches()
            self._check_hooks(record, plugin)
            return name

    def unregister(self, name: str) -> None:
        """Remove a plugin registered under ``name`` and forget what it added."""
        with self._lock:
            self.pm.unregister(name=name)
            self.records.pop(name, None)
            self._clear_caches()

    def load(self) -> None:
        """Register the core's own modules and load entry points (once)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for modname in CORE_PLUGINS:
                self.pm.register(importlib.import_module(modname), name=modname)
                self.records[modname] = PluginRecord(modname, _CORE_DIST, _dist_version(_CORE_DIST))
            if self._want_entry_points:
                self._load_entry_points()

    def _load_entry_points(self) -> None:
        autoload = not _truthy("CNNKIT_DISABLE_PLUGIN_AUTOLOAD")
        allow = {s.strip() for s in os.environ.get("CNNKIT_PLUGINS", "").split(",") if s.strip()}
        seen = set()
        matched: set[str] = set()
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if (ep.name, ep.value) in seen:
                continue
            seen.add((ep.name, ep.value))
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            matched.update(allow & {ep.name, dist})
            version = ep.dist.version if ep.dist is not None else ""
            previous = self.records.get(ep.name)
            record = PluginRecord(name=ep.name, dist=dist, version=version)
            self.records[ep.name] = record
            if not record.builtin:
                if allow and ep.name not in allow and dist not in allow:
                    record.status, record.error = "disabled", "not in CNNKIT_PLUGINS"
                    continue
                if not autoload and not allow:
                    record.status, record.error = "disabled", "CNNKIT_DISABLE_PLUGIN_AUTOLOAD is set"
                    continue
            try:
                if self.pm.has_plugin(ep.name):
                    taken_by = f"distribution {previous.dist!r}" if previous else "another plugin"
                    raise PluginConflictError(
                        f"plugin name {ep.name!r} of distribution {dist!r} is already taken by {taken_by}"
                    )
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the registry down
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}", exc)
                continue
            self._check_hooks(record, plugin)
        if allow - matched:  # a typo would otherwise disable every plugin without a word
            warnings.warn(
                f"CNNKIT_PLUGINS names {sorted(allow - matched)}, which match no installed cnnkit "
                f"plugin (entry point or distribution name); installed: "
                f"{', '.join(sorted({name for name, _ in seen})) or 'none'}",
                UserWarning,
                stacklevel=2,
            )

    def _check_hooks(self, record: PluginRecord, plugin: Any) -> None:
        """Fail a plugin that implements a hook no specification declares (a misspelled name).

        pluggy accepts such implementations until ``check_pending``; here the plugin is
        unregistered and reported with the unknown name, and the others keep working.
        """
        specs = {name for name in dir(hookspecs) if name.startswith(f"{hookspecs.PROJECT}_")}
        unknown = sorted(
            name
            for name, caller in vars(self.pm.hook).items()
            if not name.startswith("_")
            and getattr(caller, "spec", None) is None
            and any(impl.plugin is plugin for impl in caller.get_hookimpls())
        )
        unmarked = sorted(
            name
            for name in dir(plugin)
            if name in specs
            and callable(getattr(plugin, name))
            and self.pm.parse_hookimpl_opts(plugin, name) is None
        )
        if not unknown and not unmarked:
            return
        self.pm.unregister(plugin)
        reasons = []
        if unknown:
            reasons.append(
                f"implements unknown hook(s) {', '.join(unknown)}; the hooks are {', '.join(sorted(specs))}"
            )
        if unmarked:
            reasons.append(f"{', '.join(unmarked)} lack(s) the @cnnkit.hookimpl marker")
        self._fail(record, "; ".join(reasons), PluginError("; ".join(reasons)))

    def _fail(self, record: PluginRecord, reason: str, exc: BaseException) -> None:
        record.status, record.error = "failed", reason
        if self.strict or isinstance(exc, PluginConflictError):
            raise PluginError(f"plugin {record.name!r} from distribution {record.dist!r}: {reason}") from exc

    def _record(self, plugin_name: str) -> PluginRecord:
        if plugin_name not in self.records:
            self.records[plugin_name] = PluginRecord(plugin_name, plugin_name, "")
        return self.records[plugin_name]

    def _collect(self, hook: str, what: str, **kwargs: Any) -> list[tuple[PluginRecord, list[tuple]]]:
        """Call ``hook`` plugin by plugin; return what each registered, failures isolated."""
        self.load()
        results = []
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        for impl in impls:
            record = self._record(impl.plugin_name)
            if record.status == "failed":
                continue
            staged: list[tuple] = []
            # pluggy calls the implementation, passing only the arguments it declares
            others = [other.plugin for other in impls if other.plugin is not impl.plugin]
            caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
            try:
                caller(register=lambda *args, _s=staged: _s.append(args), **kwargs)
            except Exception as exc:
                self._fail(record, f"{hook} failed: {type(exc).__name__}: {exc}", exc)
                continue
            record.registered.extend(f"{what} {_describe(args)}" for args in staged)
            results.append((record, staged))
        return results

    def _conflict(self, what: str, first: str, second: PluginRecord) -> PluginConflictError:
        a = self.records.get(first)
        return PluginConflictError(
            f"{what} is registered twice: by plugin {first!r} (distribution "
            f"{a.dist if a else '?'!r}) and by plugin {second.name!r} (distribution {second.dist!r})"
        )

    # -- ops, backends, kernels, layers, cases --------------------------------------

    def ops(self) -> dict[str, OpSpec]:
        """Every registered op kind, by name."""
        with self._lock:
            if self._ops is None:
                found: dict[str, tuple[OpSpec, str]] = {}
                for record, staged in self._collect("cnnkit_register_ops", "op"):
                    for (spec,) in staged:
                        if spec.name in found:
                            raise self._conflict(f"op {spec.name!r}", found[spec.name][1], record)
                        found[spec.name] = (spec, record.name)
                self._ops = found
            return {name: spec for name, (spec, _) in self._ops.items()}

    def op(self, name: str) -> OpSpec:
        """The spec of op ``name``; ``KeyError`` lists the known ones."""
        found = self._ops  # once collected: a plain dict read, no lock (traceable)
        if found is not None and name in found:
            return found[name][0]
        ops = self.ops()
        if name not in ops:
            raise KeyError(f"unknown op {name!r}; registered ops: {', '.join(sorted(ops))}")
        return ops[name]

    def backend_infos(self) -> dict[str, BackendInfo]:
        """Every registered backend, by name (whether or not its dependencies are installed)."""
        with self._lock:
            if self._backends is None:
                found: dict[str, tuple[BackendInfo, str]] = {}
                for record, staged in self._collect("cnnkit_register_backends", "backend"):
                    for (info,) in staged:
                        if info.name in found:
                            raise self._conflict(f"backend {info.name!r}", found[info.name][1], record)
                        found[info.name] = (info, record.name)
                self._backends = found
            return {name: info for name, (info, _) in self._backends.items()}

    def backend_plugin(self, name: str) -> PluginRecord:
        """The plugin that registered backend ``name``."""
        self.backend_infos()
        assert self._backends is not None
        return self.records[self._backends[name][1]]

    def backend(self, name: str, **options: Any) -> Backend:
        """A (cached) instance of backend ``name`` with ``options``.

        Raises:
            BackendNotFoundError: no such backend; the message lists those that exist.
            BackendUnavailableError: its dependencies are missing; the message says what to install.
            TypeError: ``name`` is not a str, or an option the backend does not take.
        """
        infos = self.backend_infos()
        if not isinstance(name, str):
            raise TypeError(
                f"backend must be a backend name (str) or a cnnkit Backend, got {name!r} "
                f"({type(name).__name__}); installed backends: {', '.join(sorted(infos)) or 'none'}"
            )
        if name not in infos:
            raise BackendNotFoundError(
                f"unknown backend {name!r}; installed backends: {', '.join(sorted(infos)) or 'none'}"
            )
        info = infos[name]
        unknown = set(options) - set(info.options)
        if unknown:
            raise TypeError(
                f"backend {name!r} takes options {sorted(info.options) or 'none'}, got {sorted(unknown)}"
            )
        key = (name, tuple(sorted((k, repr(v)) for k, v in options.items())))
        with self._lock:
            if key not in self._instances:
                try:
                    instance = info.factory(**options)
                except ImportError as exc:
                    hint = f"; install it with: {info.install_hint}" if info.install_hint else ""
                    raise BackendUnavailableError(
                        f"backend {name!r} is registered but cannot load ({exc}){hint}"
                    ) from exc
                instance.name = name
                instance.registry = self
                self._instances[key] = instance
            return self._instances[key]

    def kernels(self, backend: str) -> dict[str, Kernel]:
        """Every op implementation registered for ``backend``, by op name."""
        with self._lock:
            if backend not in self._kernels:
                found: dict[str, tuple[Kernel, str]] = {}
                ops = self.ops()
                for record, staged in self._collect(
                    "cnnkit_register_kernels", f"kernel[{backend}]", backend=backend
                ):
                    for op, kernel in staged:
                        if op not in ops:
                            self._fail(record, f"registered a kernel for unknown op {op!r}", KeyError(op))
                            continue
                        if op in found:
                            raise self._conflict(f"op {op!r} for backend {backend!r}", found[op][1], record)
                        found[op] = (kernel, record.name)
                self._kernels[backend] = found
            return {op: k for op, (k, _) in self._kernels[backend].items()}

    def kernel(self, backend: str, op: str) -> Kernel:
        """The implementation of ``op`` on ``backend``.

        Raises:
            OpNotImplementedError: the backend lacks it; the message lists what it has.
        """
        found = self._kernels.get(backend)  # once collected: a plain dict read, no lock (traceable)
        if found is not None and op in found:
            return found[op][0]
        kernels = self.kernels(backend)
        if op not in kernels:
            raise OpNotImplementedError(
                f"backend {backend!r} has no implementation of op {op!r}; it implements "
                f"{', '.join(sorted(kernels)) or 'nothing'}"
            )
        return kernels[op]

    def kernel_plugin(self, backend: str, op: str) -> PluginRecord:
        """The plugin that registered ``op`` for ``backend``."""
        self.kernel(backend, op)
        return self.records[self._kernels[backend][op][1]]

    def layers(self) -> dict[str, type]:
        """Every registered layer class, by class name."""
        with self._lock:
            if self._layers is None:
                found: dict[str, tuple[type, str]] = {}
                for record, staged in self._collect("cnnkit_register_layers", "layer"):
                    for (cls,) in staged:
                        if cls.__name__ in found and found[cls.__name__][0] is not cls:
                            raise self._conflict(f"layer {cls.__name__!r}", found[cls.__name__][1], record)
                        found[cls.__name__] = (cls, record.name)
                self._layers = found
            return {name: cls for name, (cls, _) in self._layers.items()}

    def commands(self, reserved: Collection[str] = ()) -> dict[str, Command]:
        """Every subcommand plugins registered, by name (:func:`~cnnkit.hookspecs.cnnkit_register_commands`).

        Args:
            reserved: names no plugin may take (the built-in commands); read on the first call.

        A plugin that registers something other than a :class:`Command`, an invalid
        name, a reserved name or one another plugin took is failed with the reason,
        and none of its commands is kept (under ``CNNKIT_STRICT_PLUGINS=1`` it raises).
        """
        with self._lock:
            if self._commands is None:
                found: dict[str, tuple[Command, str]] = {}
                for record, staged in self._collect("cnnkit_register_commands", "command"):
                    mine: dict[str, tuple[Command, str]] = {}
                    for (command,) in staged:
                        problem = self._command_problem(command, reserved, {**found, **mine})
                        if problem:
                            self._fail(record, problem, PluginError(problem))
                            break
                        mine[command.name] = (command, record.name)
                    else:
                        found.update(mine)
                self._commands = found
            return {name: command for name, (command, _) in self._commands.items()}

    def _command_problem(
        self, command: Any, reserved: Collection[str], taken: dict[str, tuple[Command, str]]
    ) -> str:
        if not isinstance(command, Command):
            return f"registered {command!r} as a command; expected a cnnkit.registry.Command"
        if not isinstance(command.name, str) or not _COMMAND_NAME.fullmatch(command.name):
            return (
                f"registered a command named {command.name!r}; a command name is lower-case letters, "
                "digits and hyphens, starting with a letter"
            )
        if not callable(command.run) or (command.configure is not None and not callable(command.configure)):
            return f"registered command {command.name!r} whose run or configure is not callable"
        if command.name in reserved:
            return f"registered command {command.name!r}, the name of a built-in cnnkit command"
        if command.name in taken:
            other = self.records.get(taken[command.name][1])
            by = f"plugin {other.name!r} (distribution {other.dist!r})" if other else "another plugin"
            return f"registered command {command.name!r}, which {by} registered first"
        return ""

    def command_plugin(self, name: str) -> PluginRecord:
        """The plugin that registered command ``name``."""
        self.commands()
        assert self._commands is not None
        return self.records[self._commands[name][1]]

    def conformance_cases(self) -> list[Any]:
        """Every conformance case: those of each op's record, then those registered through the hook."""
        with self._lock:
            if self._cases is None:
                self._cases = [case for spec in self.ops().values() for case in spec.cases()]
                self._cases += [
                    case
                    for _, staged in self._collect("cnnkit_conformance_cases", "case")
                    for (case,) in staged
                ]
            return list(self._cases)


def _describe(args: tuple) -> str:
    first = args[0]
    name = getattr(first, "name", None) or getattr(first, "id", None) or getattr(first, "__name__", None)
    return str(name if isinstance(name, str) else first)


def _dist_version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return ""


_REGISTRY: Registry | None = None
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    global _REGISTRY
    if _REGISTRY is not None:  # built: no lock to take (and nothing a tracer cannot follow)
        return _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
        return _REGISTRY


# -- backend selection --------------------------------------------------------------

_Choice = tuple[str, dict[str, Any]]
_CONTEXT_CHOICE: ContextVar[_Choice | Backend | None] = ContextVar("cnnkit_backend", default=None)
_GLOBAL_CHOICE: _Choice | None = None


def set_backend(name: str, **options: Any) -> Backend:
    """Choose the backend for this process (weaker than ``use_backend`` and ``backend=``).

    Example:
        >>> import cnnkit
        >>> cnnkit.set_backend("numpy").name
        'numpy'
    """
    global _GLOBAL_CHOICE
    backend = get_registry().backend(name, **options)
    _GLOBAL_CHOICE = (name, dict(options))
    return backend


@contextlib.contextmanager
def use_backend(name: str | Backend, **options: Any) -> Iterator[Backend]:
    """Use backend ``name`` (or a :class:`Backend` instance) in a ``with`` block (this thread / task only).

    Example:
        >>> import cnnkit
        >>> with cnnkit.use_backend("numpy") as be:
        ...     be.name
        'numpy'
    """
    backend = name if isinstance(name, Backend) else get_registry().backend(name, **options)
    token = _CONTEXT_CHOICE.set(backend if isinstance(name, Backend) else (name, dict(options)))
    try:
        yield backend
    finally:
        _CONTEXT_CHOICE.reset(token)


#: The backend a graph tracer (torch.compile) pinned while it traces a call: a plain module
#: global, since tracers cannot follow ContextVars. Set only through :func:`traced_backend`.
_TRACED_CHOICE: Backend | None = None


def traced_backend(backend: Backend | None) -> Backend | None:
    """Pin ``backend`` as the active one for code being traced (returns the previous pin; pass
    it back to restore). Unlike :func:`use_backend` it reads and writes no ContextVar, so a
    tracer such as torch.compile follows it; it is process-wide, for the duration of a trace."""
    global _TRACED_CHOICE
    previous, _TRACED_CHOICE = _TRACED_CHOICE, backend
    return previous


def get_backend(backend: str | Backend | None = None, **options: Any) -> Backend:
    """The backend a call would use: ``backend`` if given, else the active choice.

    Args:
        backend: a name, a :class:`Backend` instance, or ``None`` for the active one.
        options: backend options (``device``, ``dtype``); with ``backend=None`` they apply
            to the active backend (and are checked by it).
    """
    if isinstance(backend, Backend):
        return backend
    if backend is not None:
        return get_registry().backend(backend, **options)
    if _TRACED_CHOICE is not None and not options:  # see traced_backend
        return _TRACED_CHOICE
    choice = _CONTEXT_CHOICE.get() or _GLOBAL_CHOICE
    if isinstance(choice, Backend):  # use_backend(instance)
        return choice if not options else get_registry().backend(choice.name, **{**choice.options, **options})
    if choice is not None:  # options given with no name apply to the active backend, never vanish
        return get_registry().backend(choice[0], **{**choice[1], **options})
    name = os.environ.get("CNNKIT_BACKEND") or DEFAULT_BACKEND
    try:
        return get_registry().backend(name, **options)
    except BackendNotFoundError as exc:
        if "CNNKIT_BACKEND" not in os.environ:
            raise
        raise BackendNotFoundError(
            f"{exc} (the name comes from the CNNKIT_BACKEND environment variable)"
        ) from exc


def list_backends() -> list[str]:
    """The names of every registered backend, sorted."""
    return sorted(get_registry().backend_infos())
