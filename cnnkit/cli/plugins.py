"""``cnnkit plugins``: every plugin, its distribution, what it registered, and why it failed."""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from cnnkit.registry import Registry, get_registry

NAME = "plugins"
HELP = "list the plugins: distribution, version, what each registered, status and reason"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a plugin failed")
    parser.add_argument(
        "--no-builtin", action="store_true", help="hide the core's own modules (distribution cnnkit)"
    )


def describe(registry: Registry | None = None) -> list[dict[str, Any]]:
    """One dict per plugin: name, dist, version, builtin, status, error, registered.

    Calls every hook first (ops, backends, kernels of each backend that loads,
    layers, conformance cases) so that ``registered`` is complete and a plugin
    failing in any hook shows as ``failed`` with its reason. Under
    ``CNNKIT_STRICT_PLUGINS=1`` that failure raises :class:`cnnkit.PluginError`.
    """
    registry = registry or get_registry()
    registry.ops()
    for name in registry.backend_infos():
        try:
            registry.backend(name)
        except Exception:  # it cannot load here, so its kernels cannot be listed (cnnkit backends says why)
            continue
        registry.kernels(name)
    registry.layers()
    registry.conformance_cases()
    records = sorted(registry.records.values(), key=lambda r: (not r.builtin, r.dist, r.name))
    return [
        {
            "name": r.name,
            "dist": r.dist,
            "version": r.version,
            "builtin": r.builtin,
            "status": r.status,
            "error": r.error,
            "registered": list(r.registered),
        }
        for r in records
    ]


def summarize(registered: list[str], limit: int = 3) -> str:
    """Group what a plugin registered by kind, counting long groups.

    Example:
        >>> summarize(["op a", "kernel[numpy] a"] + [f"case c{i}" for i in range(9)])
        'op a; kernel[numpy] a; 9 cases'
    """
    groups: dict[str, list[str]] = defaultdict(list)
    for item in registered:
        kind, _, what = item.partition(" ")
        groups[kind].append(what)
    parts = []
    for kind, items in groups.items():
        if len(items) > limit:
            noun, bracket, rest = kind.partition("[")
            parts.append(f"{len(items)} {noun}s{bracket}{rest}")
        else:
            parts.append(f"{kind} {', '.join(items)}")
    return "; ".join(parts) or "-"


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli import format_table

    rows = describe()
    if args.no_builtin:
        rows = [r for r in rows if not r["builtin"]]
    failed = [r for r in rows if r["status"] == "failed"]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = [
            [r["name"], r["dist"], r["version"] or "-", r["status"], summarize(r["registered"])] for r in rows
        ]
        print(format_table(["plugin", "distribution", "version", "status", "registered"], table))
        for r in rows:
            if r["error"]:
                print(f"\n{r['name']} ({r['dist']}) {r['status']}: {r['error']}")
    return 1 if (args.check and failed) else 0
