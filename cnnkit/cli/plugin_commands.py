"""The subcommands plugins add to ``cnnkit`` (hook :func:`cnnkit.hookspecs.cnnkit_register_commands`).

:func:`add_plugin_commands` puts each one beside the built-in subcommands,
its ``--help`` line naming the distribution that brings it. Failures stay
with the plugin that caused them: a hook that raises or a name that is taken
fails that plugin (``cnnkit plugins`` says why) and the rest works; a
``configure`` that raises leaves a command that prints why when run; an
exception escaping ``run`` is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection
from typing import Any

from cnnkit.errors import PluginError
from cnnkit.registry import Command, PluginRecord, get_registry

__all__ = ["add_plugin_commands"]


def _raise(exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        raise exc

    return run


def _broken(name: str, record: PluginRecord, exc: BaseException) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(
            f"cnnkit: error: the {name!r} command of plugin {record.name!r} (distribution "
            f"{record.dist!r}) cannot set up its arguments: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 1

    return run


def _guarded(command: Command, record: PluginRecord) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(command.run(args) or 0)
        except Exception as exc:  # a plugin's bug is one line naming the plugin, not a traceback
            print(
                f"cnnkit: error: {command.name}: {type(exc).__name__}: {exc} (a command of plugin "
                f"{record.name!r}, distribution {record.dist!r})",
                file=sys.stderr,
            )
            return 1

    return run


def add_plugin_commands(sub: Any, builtin: Collection[str]) -> None:
    """Add every plugin command to ``sub`` (the parser's subparsers), none named as one of ``builtin``.

    Under ``CNNKIT_STRICT_PLUGINS=1`` a failing plugin is an error: then every
    command (``--help`` still works) ends with that error, as the command would
    have when it first asked the registry.
    """
    registry = get_registry()
    try:
        commands = registry.commands(reserved=builtin)
    except PluginError as exc:
        for parser in sub.choices.values():
            parser.set_defaults(_run=_raise(exc))
        return
    for name, command in sorted(commands.items()):
        record = registry.command_plugin(name)
        summary = f"{command.help} (plugin {record.dist})" if command.help else f"(plugin {record.dist})"
        parser = sub.add_parser(name, help=summary, description=command.help or None)
        try:
            if command.configure is not None:
                command.configure(parser)
        except Exception as exc:  # the other commands must keep working
            parser.set_defaults(_run=_broken(name, record, exc))
            continue
        parser.set_defaults(_run=_guarded(command, record))
