"""``airflow-dataflow plugins``: every installed connector and destination kind, with versions.

Built-ins and third-party plugins are listed alike. The exit status is 0 when every kind
loads and 1 when any cannot be used (an import error, a class that is not a proper kind, a
name already taken), so the command doubles as a check of an installation; the broken ones
are listed with their error either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from airflow_dataflow.registry import Plugin, installed_plugins
from airflow_dataflow.registry import log as registry_log

_COLUMNS = ("KIND", "TYPE", "DISTRIBUTION", "VERSION", "STATUS", "ENTRY POINT")


def add_plugins_command(commands: Any) -> None:
    """Add ``plugins`` to the command parser's subcommands."""
    plugins = commands.add_parser(
        "plugins",
        help="list the installed connector and destination kinds (built-in and plugins) with "
        "their distribution, version and status; exit 1 when any fails to load",
    )
    plugins.add_argument("--json", action="store_true", help="one JSON object per kind")
    plugins.set_defaults(handler=cmd_plugins)


def cmd_plugins(args: argparse.Namespace) -> int:
    # The registry logs each broken kind; here they are in the listing already.
    logging.getLogger(registry_log.name).setLevel(logging.CRITICAL)
    plugins = installed_plugins()
    if args.json:
        for plugin in plugins:
            print(json.dumps(plugin.to_dict()))
    else:
        _print_table(plugins)
    broken = [plugin for plugin in plugins if not plugin.ok]
    connectors = sum(1 for plugin in plugins if plugin.ok and plugin.kind == "connector")
    destinations = sum(1 for plugin in plugins if plugin.ok and plugin.kind == "destination")
    print(
        f"{connectors} connector(s) and {destinations} destination(s) usable, {len(broken)} broken",
        file=sys.stderr,
    )
    return 1 if broken else 0


def _print_table(plugins: list[Plugin]) -> None:
    rows = [
        (
            plugin.kind,
            plugin.name,
            plugin.distribution or "?",
            plugin.version or "?",
            "ok" if plugin.ok else "BROKEN",
            plugin.entry_point,
        )
        for plugin in plugins
    ]
    widths = [max(len(row[index]) for row in [_COLUMNS, *rows]) for index in range(len(_COLUMNS))]
    print(_line(_COLUMNS, widths))
    for plugin, row in zip(plugins, rows, strict=True):
        print(_line(row, widths))
        if plugin.error:
            print(f"    error: {plugin.error}")


def _line(cells: tuple[str, ...], widths: list[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
