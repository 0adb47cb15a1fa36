"""``airflow-dataflow cursor show|reset ROUTE``: a route's committed source cursor."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from airflow_dataflow.errors import DataflowError, RouteConfigError

if TYPE_CHECKING:
    from airflow_dataflow.connectors.base import CursorSpec
    from airflow_dataflow.state.cursors import CursorStore

ROUTE_HELP = "route id (under the dags folder) or route file"


def add_cursor_commands(commands: Any) -> None:
    """Add ``cursor show`` and ``cursor reset`` to the command parser's subcommands."""
    cursor = commands.add_parser(
        "cursor", help="a route's committed source cursor (incremental sources): show, reset"
    )
    actions = cursor.add_subparsers(dest="cursor_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the committed cursor, checked as a run would")
    show.add_argument("route", metavar="ROUTE", help=ROUTE_HELP)
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(handler=cmd_cursor_show)

    reset = actions.add_parser(
        "reset",
        help="forget the committed cursor (the next run starts at source.cursor.initial) "
        "or set it with --to",
    )
    reset.add_argument("route", metavar="ROUTE", help=ROUTE_HELP)
    reset.add_argument(
        "--to",
        metavar="VALUE",
        default=None,
        help='the new cursor: JSON when it parses as JSON (100, "100"), else the text as is',
    )
    reset.add_argument("--json", action="store_true", help="one JSON object")
    reset.set_defaults(handler=cmd_cursor_reset)


def cmd_cursor_show(args: argparse.Namespace) -> int:
    from airflow_dataflow.state.cursors import CursorError, parse_cursor

    route_id, spec = _route_and_spec(args.route, required=False)
    stored = _cursor_store().stored(route_id)
    report: dict[str, Any] = {
        "route": route_id,
        "stream": "source",
        "committed": stored is not None,
        "column": None,
        "value": None,
        "run_id": None,
        "updated_at": None,
        "initial": None if spec is None else spec.initial,
        "error": None,
    }
    if stored is not None:
        report.update(stored.to_dict())
        report["raw"] = report.pop("cursor")
        try:
            committed = parse_cursor(stored, spec)
        except CursorError as exc:
            report["error"] = str(exc)
        else:
            report.update(column=committed.column, value=committed.value)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        _print_show(report)
    return 1 if report["error"] else 0


def _print_show(report: dict[str, Any]) -> None:
    route = report["route"]
    if not report["committed"]:
        start = "every row" if report["initial"] is None else f"after {report['initial']!r}"
        print(f"route {route}: no committed cursor; the next run reads {start} (initial)")
    elif report["error"]:
        print(f"route {route}: the committed cursor is unusable", file=sys.stderr)
        print(f"error: {report['error']}", file=sys.stderr)
    else:
        by = f"run {report['run_id']}" if report["run_id"] else "a cursor reset"
        print(f"route {route}: {report['column']} > {json.dumps(report['value'])}")
        print(f"  committed by {by} at {report['updated_at']}")


def cmd_cursor_reset(args: argparse.Namespace) -> int:
    from airflow_dataflow.pipeline.cursor import since_value

    route_id, spec = _route_and_spec(args.route, required=args.to is not None)
    store = _cursor_store()
    before = store.stored(route_id)
    if args.to is None:
        store.delete(route_id)
        value = None
    else:
        assert spec is not None  # required above
        value = since_value(route_id, spec, _cursor_argument(args.to), given_as="--to")
        store.save(route_id, spec.field, value, run_id=None)
    report = {
        "route": route_id,
        "stream": "source",
        "previous": None if before is None else before.text,
        "column": None if spec is None else spec.field,
        "value": value,
        "action": "deleted" if args.to is None else "set",
    }
    if args.json:
        print(json.dumps(report, default=str))
    elif args.to is None:
        had = "was reset" if before is not None else "had no committed cursor"
        print(f"route {route_id}: the cursor {had}; the next run starts at source.cursor.initial")
    else:
        print(f"route {route_id}: the cursor is now {report['column']} > {json.dumps(value)}")
    return 0


def _cursor_argument(text: str) -> Any:
    """``--to``: JSON when it parses (``100`` a number, ``"100"`` a string), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _route_and_spec(route: str, *, required: bool) -> tuple[str, CursorSpec | None]:
    """The route id and its source's ``CursorSpec``.

    The spec checks the committed value (column, type of ``initial``) and gives ``--to`` its
    column, so it is ``required`` there; ``show`` and a plain ``reset`` work from the id alone
    when the route file cannot be found or loaded.
    """
    from airflow_dataflow.cli import load_route_ref, resolve_route_id

    try:
        loaded = load_route_ref(route)
    except (RouteConfigError, DataflowError):
        if required:
            raise
        return resolve_route_id(route), None
    spec = loaded.config.source.cursor_spec()
    if spec is None and required:
        raise DataflowError(
            f"route {loaded.route_id!r}: its source has no cursor (source.cursor), so there is "
            "no cursor to set"
        )
    return loaded.route_id, spec


def _cursor_store() -> CursorStore:
    from airflow_dataflow.state.cursors import CursorStore

    logging.getLogger("alembic").setLevel(logging.WARNING)
    return CursorStore.open()
