"""The suite measures its own strength: plant one realistic bug in a backend, see the suite catch it.

A :class:`Mutant` is a backend's kernel for one op with one planted bug (a wrapper
around the real kernel or a patched copy of its state; the real kernels are never
touched). :func:`self_check` registers every mutant as a backend of its own
(``mutant-<name>``, built by the base backend's factory, all other ops the base's),
runs the suite's cases of the mutant's op on it until a check fails, and reports
which check caught each mutant, or names the survivors.

Backends offer mutants of themselves through the ``cnnkit_register_mutants``
hook (the NumPy reference offers its set in ``cnnkit_numpy.mutants``);
``cnnkit conformance --self-check`` runs them all. No other conformance suite we
learn from (ONNX's backend tests, array-api-tests, PyTorch's OpInfo) measures its
own strength this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cnnkit.backend import BackendInfo
from cnnkit.conformance import runner
from cnnkit.hookspecs import hookimpl
from cnnkit.registry import Kernel, Registry

__all__ = ["Mutant", "MutationReport", "self_check"]


@dataclass(frozen=True)
class Mutant:
    """One realistic bug in one op of a base backend.

    Attributes:
        name: a short id, e.g. ``relu-nan-to-zero``.
        op: the op whose kernel carries the bug.
        bug: what the bug is, in a sentence.
        catches: the check expected to catch it (``forward``, ``backward``,
            ``properties``, ``memory``, ``layouts``): a report names the one that did.
        make: ``make(kernel) -> Kernel``: the mutated kernel from the base backend's real one.
        base: the backend the mutant is a copy of (default: the reference backend).
        kind: its class of bug (value, gradient, layout, dtype, aliasing, size, ...).
    """

    name: str
    op: str
    bug: str
    catches: str
    make: Callable[[Kernel], Kernel]
    base: str = runner.REFERENCE_BACKEND
    kind: str = "value"


@dataclass
class MutationReport:
    """Which check caught each mutant (``None``: it survived)."""

    caught: dict[str, str | None] = field(default_factory=dict)
    mutants: dict[str, Mutant] = field(default_factory=dict)
    #: The item that caught each mutant and the first line of its failure.
    evidence: dict[str, str] = field(default_factory=dict)
    items_run: int = 0

    @property
    def survivors(self) -> list[str]:
        return [name for name, by in self.caught.items() if by is None]

    @property
    def kill_rate(self) -> float:
        return (len(self.caught) - len(self.survivors)) / max(1, len(self.caught))

    def format(self) -> str:
        lines = [
            f"cnnkit conformance self-check: {len(self.caught) - len(self.survivors)} of {len(self.caught)} "
            f"mutants caught (kill rate {100 * self.kill_rate:.0f}%), {self.items_run} items run",
            f"{'mutant':34} {'op':14} {'kind':9} caught by",
        ]
        for name, by in self.caught.items():
            m = self.mutants[name]
            lines.append(
                f"{name:34} {m.op:14} {m.kind:9} {by or 'SURVIVED: ' + m.catches + ' should catch it'}"
            )
        for name in self.survivors:
            lines.append(f"survivor {name}: {self.mutants[name].bug} (expected {self.mutants[name].catches})")
        return "\n".join(lines)


class _MutantPlugin:
    """Registers each mutant as a backend ``mutant-<name>``: the base backend with one kernel replaced.

    The base backends' infos and kernels are read before it is registered (a hook that asked the
    registry while the registry collects that very hook would recurse).
    """

    def __init__(self, registry: Registry, mutants: Sequence[Mutant]) -> None:
        self.mutants = {f"mutant-{m.name}": m for m in mutants}
        infos = registry.backend_infos()
        bases = {m.base for m in mutants}
        self.infos = {name: infos[name] for name in bases}
        self.kernels = {name: registry.kernels(name) for name in bases}

    @hookimpl
    def cnnkit_register_backends(self, register: Callable[[BackendInfo], None]) -> None:
        for backend, m in self.mutants.items():
            base = self.infos[m.base]
            register(BackendInfo(name=backend, factory=base.factory, description=m.bug, options=base.options))

    @hookimpl
    def cnnkit_register_kernels(self, backend: str, register: Callable[[str, Kernel], None]) -> None:
        m = self.mutants.get(backend)
        if m is None:
            return
        for op, kernel in self.kernels[m.base].items():
            register(op, m.make(kernel) if op == m.op else kernel)


def collect_mutants(registry: Registry) -> list[Mutant]:
    """Every mutant the installed plugins offer (``cnnkit_register_mutants``)."""
    return [m for _, staged in registry._collect("cnnkit_register_mutants", "mutant") for (m,) in staged]


def self_check(
    mutants: Iterable[Mutant] | None = None,
    registry: Registry | None = None,
    checks: Sequence[str] = runner.CHECKS,
) -> MutationReport:
    """Run the suite on every mutant, each until one of its items fails; report who caught what.

    Args:
        mutants: the mutants (default: every one the installed plugins offer).
        registry: a registry to add the mutant backends to (default: a fresh one
            that loads the installed plugins; the process-wide registry is left alone).
        checks: the checks to run (default: all; fewer show what each check adds).
    """
    registry = registry or Registry()
    mutants = list(collect_mutants(registry) if mutants is None else mutants)
    plugin = _MutantPlugin(registry, mutants)
    registry.register(plugin, name="cnnkit-mutants", dist="cnnkit")
    report = MutationReport(mutants={m.name: m for m in mutants})
    cases = runner.all_cases(registry)
    for backend, m in plugin.mutants.items():
        ids = [c.id for c in cases if c.op == m.op]
        report.caught[m.name] = None
        for item in runner.plan([backend], include=ids, registry=registry):
            if item.check not in checks:
                continue
            report.items_run += 1
            outcome = runner.run_item(item, registry)
            if outcome.status == "failed":
                report.caught[m.name] = item.check
                report.evidence[m.name] = f"{item.case.id}::{item.check}: {outcome.message.splitlines()[0]}"
                break
    registry.unregister("cnnkit-mutants")
    return report
