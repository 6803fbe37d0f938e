"""Plugin templates: what ``cnnkit new-plugin NAME --kind KIND`` writes.

Each kind is a complete, working plugin distribution kept under
``templates/<kind>/`` as real files, written for one op (every file ends in
``-tpl`` so that no tool mistakes a template for part of cnnkit):

========== ================= ==========================================================
kind       template's op     what it shows
========== ================= ==========================================================
activation ``hardtanh``      an element-wise op with attributes (the input clipped to a range)
window     ``min_pool``      a window op in 1 to 3 spatial dimensions (min pooling), validated
                             by :func:`cnnkit.spec.check_window` as the core's pools are
layer      ``channel_scale`` an op with a learnable parameter (a per-channel scale) and its layer
========== ================= ==========================================================

Generating a plugin named ``NAME`` copies the kind's tree and renames the
template's op everywhere, in file names and contents: ``hardtanh`` becomes
``NAME``, ``Hardtanh`` its CamelCase, ``cnnkit-hardtanh`` the distribution
``cnnkit-NAME`` (underscores as hyphens). The formulas stay the template's:
the author starts from a package that passes its tests and edits it.

``cnnkit new-plugin hardtanh`` writes the templates unchanged; the README's
plugin example is that output.
"""

from __future__ import annotations

import ast
import builtins
import importlib.metadata as md
import importlib.util
import keyword
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "KINDS",
    "Names",
    "ScaffoldError",
    "Template",
    "check_free",
    "check_name",
    "generate",
    "renamer",
    "render",
    "target_dir",
]

#: The longest name accepted (it becomes a package, a distribution and class names).
MAX_NAME = 32
_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_SUFFIX = "-tpl"


class ScaffoldError(ValueError):
    """A user's mistake (a bad or taken name, an unknown kind, an existing directory): one line."""


@dataclass(frozen=True)
class Names:
    """The spellings of one plugin name.

    Example:
        >>> n = Names.of("my_pool")
        >>> n.op, n.camel, n.package, n.dist
        ('my_pool', 'MyPool', 'cnnkit_my_pool', 'cnnkit-my-pool')
    """

    op: str
    camel: str
    upper: str
    package: str
    dist: str

    @classmethod
    def of(cls, name: str) -> Names:
        return cls(
            op=name,
            camel="".join(part[:1].upper() + part[1:] for part in name.split("_")),
            upper=name.upper(),
            package=f"cnnkit_{name}",
            dist="cnnkit-" + name.replace("_", "-"),
        )


@dataclass(frozen=True)
class Template:
    """One kind of plugin: the op its files are written for and the layer class they register."""

    kind: str
    op: str
    layer: str
    what: str

    @property
    def names(self) -> Names:
        return Names.of(self.op)

    def files(self) -> Iterator[tuple[str, str]]:
        """``(relative path, text)`` of every template file, in sorted order, as stored."""
        root = resources.files(__name__).joinpath("templates", self.kind)

        def walk(node: Any, prefix: str) -> Iterator[tuple[str, str]]:
            for child in sorted(node.iterdir(), key=lambda c: c.name):
                if child.is_dir():
                    if child.name != "__pycache__":
                        yield from walk(child, f"{prefix}{child.name}/")
                elif child.name.endswith(_SUFFIX):
                    yield f"{prefix}{child.name[: -len(_SUFFIX)]}", child.read_text(encoding="utf-8")

        if not root.is_dir():  # a build that left the package data out
            raise ScaffoldError(f"the {self.kind!r} templates are missing from this installation ({root})")
        yield from walk(root, "")


KINDS: dict[str, Template] = {
    t.kind: t
    for t in (
        Template("activation", "hardtanh", "Hardtanh", "an element-wise activation (hardtanh)"),
        Template("window", "min_pool", "MinPool2d", "a window op (min pooling, 1 to 3 spatial dimensions)"),
        Template("layer", "channel_scale", "ChannelScale", "a layer with a parameter (a per-channel scale)"),
    )
}


def renamer(template: Template, names: Names) -> Callable[[str], str]:
    """The function that renames the template's op to ``names`` in a text (one pass, longest first).

    Example:
        >>> rename = renamer(KINDS["window"], Names.of("my_pool"))
        >>> rename("pip install cnnkit-min-pool; from cnnkit_min_pool import MinPool2d, min_pool2d")
        'pip install cnnkit-my-pool; from cnnkit_my_pool import MyPool2d, my_pool2d'
    """
    old = template.names
    table = {old.dist: names.dist, old.upper: names.upper, old.camel: names.camel, old.op: names.op}
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)))
    return lambda text: pattern.sub(lambda m: table[m.group()], text)


def render(kind: str, name: str) -> list[tuple[str, str]]:
    """The files of plugin ``name`` of ``kind``: ``(path relative to the distribution, text)``."""
    template = KINDS[kind]
    rename = renamer(template, Names.of(name))
    return [(rename(path), rename(text)) for path, text in template.files()]


# -- validation ------------------------------------------------------------------------------------


def _identifiers(tree: ast.AST) -> set[str]:
    """The names a module binds or reads (not attributes, not words in strings)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
        elif isinstance(node, ast.alias):
            out.add(node.asname or node.name.split(".")[0])
    return out


def _collisions(template: Template, names: Names) -> list[tuple[str, str]]:
    """``(identifier, file)`` where a renamed identifier would clash with another name of that module."""
    old = template.names
    tokens = (old.op, old.camel, old.upper)
    rename = renamer(template, names)
    found = []
    for path, text in template.files():
        if not path.endswith(".py"):
            continue
        ids = _identifiers(ast.parse(text))
        fixed = {i for i in ids if not any(t in i for t in tokens)}
        fixed |= set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)
        renamed = {rename(i) for i in ids if any(t in i for t in tokens)}
        found += [(i, rename(path)) for i in sorted(renamed & fixed)]
    return found


def check_name(name: str, kind: str) -> Names:
    """Check that ``name`` can name a plugin of ``kind`` (its spelling only; see :func:`check_free`).

    Raises:
        ScaffoldError: an unknown kind; a name that is not a lower-case identifier,
            is a keyword, is too long, or would clash with a name the generated code uses.
    """
    if kind not in KINDS:
        raise ScaffoldError(f"unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"the name must be a lower-case Python identifier of at most {MAX_NAME} characters "
            f"(letters, digits, single underscores; starting with a letter, e.g. my_pool), got {name!r}"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ScaffoldError(f"the name {name!r} is a Python keyword")
    names = Names.of(name)
    clashes = _collisions(KINDS[kind], names)
    if clashes:
        ident, path = clashes[0]
        raise ScaffoldError(
            f"the name {name!r} would make {ident!r} in {path} clash with a name that code "
            "already uses; choose another name"
        )
    return names


def _registered_by(registry: Any, item: str) -> str:
    for record in registry.records.values():
        if item in record.registered:
            return f" by plugin {record.name!r} (distribution {record.dist!r})"
    return ""


def check_free(names: Names, kind: str, registry: Any = None) -> None:
    """Check that no installed op, layer, entry point, distribution or package has the plugin's names.

    Raises:
        ScaffoldError: naming what is taken and by whom.
    """
    from cnnkit.registry import ENTRY_POINT_GROUP, get_registry

    registry = registry or get_registry()
    if names.op in registry.ops():
        raise ScaffoldError(
            f"op {names.op!r} is already registered{_registered_by(registry, f'op {names.op}')}; "
            "choose another name"
        )
    layer = renamer(KINDS[kind], names)(KINDS[kind].layer)
    if layer in registry.layers():
        raise ScaffoldError(
            f"layer {layer!r} is already registered{_registered_by(registry, f'layer {layer}')}; "
            "choose another name"
        )
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == names.op:
            dist = ep.dist.metadata["Name"] if ep.dist is not None else "?"
            raise ScaffoldError(
                f"plugin name {names.op!r} is already taken by the {ENTRY_POINT_GROUP!r} entry point of "
                f"distribution {dist!r}; choose another name"
            )
    try:
        dist = md.distribution(names.dist)
    except md.PackageNotFoundError:
        pass
    else:
        raise ScaffoldError(
            f"distribution {names.dist!r} is already installed (version {dist.version}); choose another name"
        )
    if importlib.util.find_spec(names.package) is not None:
        raise ScaffoldError(f"package {names.package!r} is already importable; choose another name")


def target_dir(names: Names, parent: str | Path | None) -> Path:
    """``parent/cnnkit-NAME``, which must not exist yet.

    Raises:
        ScaffoldError: it exists (it is never overwritten), or ``parent`` is not a directory.
    """
    parent = Path("." if parent is None else parent)
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"--dir {str(parent)!r} is not a directory")
    target = parent / names.dist
    if target.exists() or target.is_symlink():
        raise ScaffoldError(f"{str(target)!r} already exists; it is never overwritten: choose another --dir")
    return target


def generate(name: str, kind: str = "activation", parent: str | Path | None = None) -> Path:
    """Write plugin ``name`` of ``kind`` to ``parent/cnnkit-NAME`` (``parent`` defaults to ``.``).

    Everything is checked before anything is written.

    Returns:
        The distribution's directory.

    Raises:
        ScaffoldError: see :func:`check_name`, :func:`check_free`, :func:`target_dir`.
    """
    names = check_name(name, kind)
    target = target_dir(names, parent)
    check_free(names, kind)
    files = render(kind, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        target.mkdir()
    except FileExistsError:
        raise ScaffoldError(f"{str(target)!r} already exists; it is never overwritten") from None
    try:
        for path, text in files:
            out = target / path
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target
