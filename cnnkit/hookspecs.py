"""The plugin contract: every way a package can extend cnnkit.

A plugin is any object (usually a module) with functions decorated by
:data:`hookimpl`, registered through an entry point in the ``cnnkit`` group::

    # pyproject.toml of your distribution
    [project.entry-points.cnnkit]
    my_layers = "my_layers.plugin"

Each hook receives a ``register`` callback and calls it once per thing it
adds. The built-in NumPy and PyTorch backends register through these very
hooks, from their own entry points, and the core's own ops and layers from
one built-in plugin module (:mod:`cnnkit.builtin`); nothing in the core names a
backend.

Hooks are called through pluggy, so an implementation may declare only the
arguments it uses (``def cnnkit_register_kernels(register)`` is fine). A
plugin that implements a hook not declared here (a misspelled name such as
``cnnkit_register_op``), or names a function after a hook without the
:data:`hookimpl` marker, is reported as failed, naming the hook, and raises
under ``CNNKIT_STRICT_PLUGINS=1``.

When hooks run: lazily, the first time the registry needs what a hook
registers (``cnnkit_register_ops`` at the first call of any op,
``cnnkit_register_kernels`` once per backend name at its first use,
``cnnkit_register_layers`` when a model is loaded or ``cnnkit plugins``
lists them, ``cnnkit_conformance_cases`` when the suite plans,
``cnnkit_register_commands`` when the ``cnnkit`` command builds its parser); and again,
all of them, after a plugin is registered or unregistered at run time
(:meth:`cnnkit.registry.Registry.register`). A plugin therefore imports heavy
dependencies (torch) inside a hook body, never at module import, and must
register the same things each time it is called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from cnnkit.backend import BackendInfo
    from cnnkit.conformance.cases import Case
    from cnnkit.conformance.mutation import Mutant
    from cnnkit.registry import Command, Kernel
    from cnnkit.spec import OpSpec

__all__ = ["hookimpl", "hookspec"]

PROJECT = "cnnkit"

hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorate your plugin's hook functions with this marker.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def cnnkit_register_ops(register: Callable[[OpSpec], None]) -> None:
    """Add op kinds: ``register(spec)`` once per :class:`cnnkit.spec.OpSpec`.

    A spec declares the op's inputs, attributes, validation and output shape.
    Its name must be new: registering a name another plugin already declared is
    a :class:`cnnkit.errors.PluginConflictError` naming both plugins.
    Called once, the first time the registry is asked about ops.
    """


@hookspec
def cnnkit_register_backends(register: Callable[[BackendInfo], None]) -> None:
    """Add whole backends: ``register(BackendInfo(name=..., factory=..., ...))``.

    ``factory(**options)`` builds the :class:`cnnkit.backend.Backend` object
    and may raise :class:`ImportError` when a dependency is missing; the
    registry turns that into an error naming ``BackendInfo.install_hint``.
    """


@hookspec
def cnnkit_register_kernels(backend: str, register: Callable[[str, Kernel], None]) -> None:
    """Add implementations of ops for ``backend``: ``register(op_name, kernel)``.

    Called once per backend name, the first time that backend is used; a
    plugin returns at once for backends it does not serve. A
    :class:`cnnkit.registry.Kernel` holds ``forward(*inputs, **attrs) ->
    (output, ctx)`` and ``backward(ctx, grad_output) -> grad_inputs`` (one
    entry per input, ``None`` where there is none), and optionally ``call``,
    the path :mod:`cnnkit.functional` takes outside :func:`cnnkit.vjp`
    (the PyTorch backend's ``Function.apply``).

    Inputs arrive as the backend's own arrays, already validated, with
    attributes in the canonical form the op's spec produced. Two plugins
    registering the same op for the same backend is a
    :class:`cnnkit.errors.PluginConflictError` naming both.
    """


@hookspec
def cnnkit_register_layers(register: Callable[[type], None]) -> None:
    """Add layer classes (subclasses of :class:`cnnkit.layers.Layer`).

    Registered layers are found by class name when a saved model is loaded,
    and listed by ``cnnkit plugins``.
    """


@hookspec
def cnnkit_conformance_cases(register: Callable[[Case], None]) -> None:
    """Add conformance cases (:class:`cnnkit.conformance.cases.Case`).

    The suite runs every case against every backend that implements its op,
    so cases a plugin adds for its own op are checked on every backend. An op
    record may instead bring its cases itself (:meth:`cnnkit.spec.OpSpec.cases`);
    this hook adds cases for ops declared elsewhere.
    """


@hookspec
def cnnkit_register_mutants(register: Callable[[Mutant], None]) -> None:
    """Offer mutants of a backend for the suite's self-check: ``register(Mutant(...))``.

    A :class:`cnnkit.conformance.mutation.Mutant` is one op's kernel with one
    planted, realistic bug (a wrapper around the real kernel, never a change to
    it). ``cnnkit conformance --self-check`` runs the suite on each and reports
    the check that caught it, or names it a survivor. Called when a self-check runs.
    """


@hookspec
def cnnkit_register_commands(register: Callable[[Command], None]) -> None:
    """Add subcommands to the ``cnnkit`` command: ``register(Command(name=..., run=..., ...))``.

    A :class:`cnnkit.registry.Command` holds ``name`` (``cnnkit NAME``: lower-case
    letters, digits and hyphens), ``run(args) -> int`` (the exit status),
    ``help`` (one line) and optionally ``configure(parser)``, which adds the
    command's arguments to its own :class:`argparse.ArgumentParser`: the shape of
    cnnkit's own subcommands (``cnnkit/cli/<command>.py``).

    Called once, when the ``cnnkit`` command builds its parser, so ``cnnkit
    --help`` lists the commands with the distribution that brings each. A
    plugin that registers a built-in command's name or one another plugin took,
    or whose hook raises, is reported failed by ``cnnkit plugins`` with the
    reason and its commands are left out; the other commands keep working. An
    exception escaping ``run`` ends the command with one line on stderr naming
    the plugin and exit status 1. Import heavy dependencies inside ``run``.
    """
