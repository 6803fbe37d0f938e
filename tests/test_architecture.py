"""The house as docs/architecture.md describes it: one record per op, the core names no backend, no cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

import cnnkit
from cnnkit.ops import BUILTIN_SPECS

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [ROOT / "cnnkit", ROOT / "backends"]


def _modules() -> dict[str, Path]:
    found = {}
    for base in LIBRARY:
        for path in base.rglob("*.py"):
            rel = path.relative_to(base if base.name == "backends" else ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _module_level_imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """What a module imports when it is imported (not inside functions, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in [node] if not isinstance(node, ast.If) else node.body:
            if isinstance(sub, ast.Import):
                out.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom):
                base = sub.module or ""
                if sub.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - sub.level + 1], base]).strip(".")
                for alias in sub.names:
                    out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in out if m in modules}


def test_no_module_of_the_core_imports_torch():
    for name, path in _modules().items():
        if name.split(".")[0] != "cnnkit":
            continue
        for line in path.read_text().splitlines():
            assert not re.match(r"\s*(import torch|from torch)", line), f"{name}: {line.strip()}"


def test_the_core_names_no_backend_module():
    for name, path in _modules().items():
        if name.split(".")[0] != "cnnkit":
            continue
        imports = {m for m in _module_level_imports(path, name, _modules())}
        assert not any(m.startswith(("cnnkit_numpy", "cnnkit_torch")) for m in imports), name


def test_no_import_cycle():
    modules = _modules()
    graph = {name: _module_level_imports(path, name, modules) for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


#: Modules that use ops as any user does (named architectures, the command's help, the lecture's
#: sums written out, the self-check's planted bugs, each naming the op it breaks), not define them.
USERS = ("cnnkit/models.py", "cnnkit/cli/", "cnnkit/explain.py", "backends/cnnkit_numpy/mutants.py")


@pytest.mark.parametrize("spec", BUILTIN_SPECS, ids=lambda s: s.name)
def test_every_op_is_named_in_at_most_four_library_files(spec):
    # its record, its NumPy kernel, its torch kernel (and the literal loops of a window op)
    word = re.compile(rf"\b{re.escape(spec.name)}\b", re.IGNORECASE)
    files = sorted(
        str(p.relative_to(ROOT))
        for base in LIBRARY
        for p in base.rglob("*")
        if p.is_file() and p.suffix == ".py" and word.search(p.read_text())
    )
    files = [f for f in files if not f.startswith(USERS)]
    if (ROOT / "cnnkit" / "ops" / f"{spec.name}.py").exists():  # a family named after its op:
        files.remove("cnnkit/ops/__init__.py")  # the family list names the module, not the op
    assert len(files) <= 4, files


@pytest.mark.parametrize("spec", BUILTIN_SPECS, ids=lambda s: s.name)
def test_every_record_documents_its_formulas_and_brings_cases(spec):
    doc = type(spec).__doc__ if spec.__doc__ is None else spec.__doc__
    assert doc and ("δ" in doc or "backward" in doc.lower()), spec.name
    cases = list(spec.cases())
    assert cases and all(c.op == spec.name for c in cases)
    # a record whose output is integer indices brings error contracts; its values are held elsewhere
    assert any(c.raises is None for c in cases) or getattr(spec, "index_output", False)


def test_the_distance_pool_layer_converts_and_trains_in_torch():
    torch = pytest.importorskip("torch")
    pytest.importorskip("cnnkit_distance_pool")
    from cnnkit_distance_pool import DistancePool2d
    from cnnkit_torch.nn import from_cnnkit

    from cnnkit.layers import Conv2d, Flatten, Linear, Sequential

    model = Sequential(Conv2d(1, 2, 3, padding=1, seed=0), DistancePool2d(2), Flatten(), Linear(8, 3, seed=1))
    net = from_cnnkit(model, dtype=torch.float64)
    assert type(net[1]).__name__ == "DistancePool2d" and "DistancePool" in type(net[1].layer).__name__
    x = np.random.default_rng(0).normal(size=(4, 1, 4, 4))
    np.testing.assert_allclose(
        net(torch.from_numpy(x)).detach().numpy(), model.infer(x.astype(np.float32)), rtol=1e-4, atol=1e-5
    )
    target = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(x)), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert type(net[1](torch.from_numpy(x[:, :1]).requires_grad_()).grad_fn).__name__.startswith(
        "DistancePool"
    )


def test_cnnkit_exports_what_a_plugin_needs():
    for name in (
        "hookimpl",
        "OpSpec",
        "TensorInfo",
        "Kernel",
        "Backend",
        "BackendInfo",
        "Case",
        "Random",
        "Layer",
    ):
        assert hasattr(cnnkit, name), name


def op_table() -> str:
    """The README's op table: every op with its record (the formulas' home) and its two kernels."""
    torch_ops = pytest.importorskip("cnnkit_torch.ops")
    from cnnkit_numpy import ops as numpy_ops

    from cnnkit.ops import FAMILIES

    rows = ["| op | record (formulas, cases) | NumPy kernel | torch Function |", "|---|---|---|---|"]
    for family in FAMILIES:
        for spec in family.SPECS:
            fn = getattr(torch_ops.KERNELS[spec.name].call, "function", None)
            rows.append(
                f"| `{spec.name}` | `cnnkit/ops/{family.__name__.rsplit('.', 1)[1]}.py` "
                f"`{type(spec).__name__}` | `{numpy_ops.KERNELS[spec.name][0].__name__}` | "
                + (f"`{fn.__name__}` |" if fn else "(integer output, no Function) |")
            )
    return "\n".join(rows)


def test_the_readme_lists_every_op_with_its_records_home():
    assert op_table() in (ROOT / "README.md").read_text()
