"""``cnnkit backends``: every registered backend, whether it loads here, and what it covers."""

from __future__ import annotations

import argparse
import json
from typing import Any

from cnnkit.registry import Registry, get_registry

NAME = "backends"
HELP = "list the registered backends: version, devices, ops covered, status"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--ops", action="store_true", help="also list each backend's ops and those it lacks")


def describe(registry: Registry | None = None) -> list[dict[str, Any]]:
    """One dict per backend: name, version, plugin, dist, status, reason, devices, ops, missing.

    ``status`` is ``available``, ``unavailable`` (a dependency is missing;
    ``reason`` says what to install) or ``error`` (the factory failed otherwise).
    A backend that cannot load is reported, never raised.
    """
    registry = registry or get_registry()
    all_ops = sorted(registry.ops())
    rows = []
    for name, info in sorted(registry.backend_infos().items()):
        plugin = registry.backend_plugin(name)
        row: dict[str, Any] = {
            "name": name,
            "version": info.version,
            "description": info.description,
            "plugin": plugin.name,
            "dist": plugin.dist,
            "status": "available",
            "reason": "",
            "devices": [],
            "ops": [],
            "missing": [],
        }
        try:
            backend = registry.backend(name)
            row["devices"] = list(backend.devices())
            row["ops"] = sorted(registry.kernels(name))
            row["missing"] = [op for op in all_ops if op not in row["ops"]]
        except ImportError as exc:  # BackendUnavailableError: the message names what to install
            row["status"], row["reason"] = "unavailable", str(exc)
        except Exception as exc:
            row["status"], row["reason"] = "error", f"{type(exc).__name__}: {exc}"
        rows.append(row)
    return rows


def run(args: argparse.Namespace) -> int:
    from cnnkit.cli import format_table

    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no backend is registered (is cnnkit installed with its entry points?)")
        return 0
    n_ops = len(get_registry().ops())
    table = [
        [
            r["name"],
            r["version"],
            r["status"],
            ",".join(r["devices"]) or "-",
            f"{len(r['ops'])}/{n_ops}" if r["status"] == "available" else "-",
            r["dist"],
        ]
        for r in rows
    ]
    print(format_table(["backend", "version", "status", "devices", "ops", "distribution"], table))
    for r in rows:
        if r["reason"]:
            print(f"\n{r['name']}: {r['reason']}")
        if args.ops and r["status"] == "available":
            print(f"\n{r['name']} implements: {', '.join(r['ops']) or 'nothing'}")
            if r["missing"]:
                print(f"{r['name']} lacks: {', '.join(r['missing'])}")
    return 0
