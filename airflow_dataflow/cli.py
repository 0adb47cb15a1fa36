"""The ``airflow-dataflow`` command: validate, schema, run, test-route."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_dataflow.cli_cursor import add_cursor_commands
from airflow_dataflow.cli_plugins import add_plugins_command
from airflow_dataflow.config import LoadedRoute, collect_paths, load_route
from airflow_dataflow.config.deep_check import check_rules
from airflow_dataflow.config.durations import parse_duration
from airflow_dataflow.errors import ConfigIssue, DataflowError, RouteConfigError
from airflow_dataflow.settings import configured_dags_folder

if TYPE_CHECKING:
    from airflow_dataflow.replay import ReplayReport
    from airflow_dataflow.state.store import StateStore


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run" and not args.verbose:
        # Task logs at warning level and above; the summary is printed at the end.
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
        warnings.simplefilter(
            "ignore", DeprecationWarning
        )  # other packages' notices, not the run's
    try:
        return int(args.handler(args))
    except RouteConfigError as exc:
        _print_issues(exc.issues, as_json=getattr(args, "json", False))
        return 1
    except DataflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-dataflow",
        description="Route files to Airflow DAGs: validate, inspect and run them.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check route files (every error as FILE:LINE:COL: message)"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="route files or folders")
    validate.add_argument("--json", action="store_true", help="one JSON object per error")
    validate.set_defaults(handler=cmd_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of a route file")
    schema.add_argument("--json", action="store_true", help="(the schema is JSON already)")
    schema.set_defaults(handler=cmd_schema)

    run = commands.add_parser("run", help="run a route once as a real Airflow DAG run")
    run.add_argument("path", metavar="PATH", help="route file")
    run.add_argument("--conf", default=None, help="JSON object of params for this run")
    run.add_argument(
        "--json", action="store_true", help="end with the run summary as one JSON line"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show every task log line")
    run.set_defaults(handler=cmd_run)

    test_route = commands.add_parser(
        "test-route", help="dry-run the rules over records, no delivery"
    )
    test_route.add_argument("path", metavar="PATH", help="route file")
    test_route.add_argument("--records", required=True, metavar="FILE.jsonl", help="input records")
    test_route.add_argument("--conf", default=None, help="JSON object of params")
    test_route.add_argument("--explain", action="store_true", help="show each rule's decision")
    test_route.add_argument("--json", action="store_true", help="(output is JSON lines already)")
    test_route.set_defaults(handler=cmd_test_route)
    runs = commands.add_parser("runs", help="a route's recent runs from the state store")
    runs.add_argument(
        "route", metavar="ROUTE", help="route id (under the dags folder) or route file"
    )
    runs.add_argument("--limit", type=int, default=20, help="how many runs (newest first)")
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.set_defaults(handler=cmd_runs)
    _add_dead_letters_commands(commands)
    add_cursor_commands(commands)
    add_plugins_command(commands)

    database = commands.add_parser("db", help="the state store: upgrade, status")
    database_commands = database.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    for action, help_text in (
        ("upgrade", "apply the state-store migrations (idempotent)"),
        ("status", "show the state store's revision"),
    ):
        sub = database_commands.add_parser(action, help=help_text)
        sub.add_argument("--json", action="store_true", help="one JSON object")
        sub.set_defaults(handler=cmd_db)
    return parser


def cmd_runs(args: argparse.Namespace) -> int:
    from airflow_dataflow.state.store import StateStore

    logging.getLogger("alembic").setLevel(logging.WARNING)
    route_id = resolve_route_id(args.route)
    runs = StateStore.open().recent_runs(route_id, limit=args.limit)
    for run in runs:
        if args.json:
            print(json.dumps(run))
            continue
        counts = run["counts"]
        duration = f"{run['duration_seconds']:.1f}s" if run["duration_seconds"] is not None else "?"
        print(f"{run['finished_at']}  {run['state']:<8} {duration:>8}  {run['run_id']}")
        print(
            f"    read {counts['read']}, matched {counts['matched']}, unmatched {counts['unmatched']}, "
            f"dead-lettered {counts['dead_lettered']}"
        )
        rules = ", ".join(f"{name} {count}" for name, count in counts["rules"].items())
        delivered = ", ".join(f"{name} {count}" for name, count in counts["destinations"].items())
        print(f"    rules: {rules or '-'}; delivered: {delivered or '-'}")
        if run.get("error"):
            print(f"    failed in {run['failed_task']}: {run['error']}")
    if not runs and not args.json:
        print(f"no recorded runs of route {route_id!r}", file=sys.stderr)
    return 0


def resolve_route_id(route: str) -> str:
    """A route id as given, or the id of the route file ``route`` names."""
    if route.endswith(".yaml") or os.path.sep in route:
        return load_route(route, root=_root_for(route)).route_id
    return route


def load_route_ref(route: str) -> LoadedRoute:
    """The route a ROUTE argument names: a route file, else a route id under the dags folder."""
    if route.endswith(".yaml") or os.path.sep in route:
        return load_route(route, root=_root_for(route))
    from airflow_dataflow.dag_factory import load_routes

    folder = configured_dags_folder()
    found = load_routes(folder, only_dag_id=route, build=False)
    if route in found.routes:
        return found.routes[route]
    if found.issues:
        raise RouteConfigError(found.issues)
    raise DataflowError(
        f"no route {route!r} under the dags folder {folder}: pass the route file's path instead"
    )


def _add_dead_letters_commands(commands: Any) -> None:
    dead_letters = commands.add_parser(
        "dead-letters", help="a route's dead letters: list, show, replay"
    )
    actions = dead_letters.add_subparsers(
        dest="dead_letters_command", required=True, metavar="ACTION"
    )
    route_help = "route id (under the dags folder) or route file"
    since_help = (
        "only those stored since WHEN: an ISO date or date-time (UTC unless it has an offset) "
        "or a duration ago (30m, 1h, 7d)"
    )
    listing = actions.add_parser("list", help="the route's pending dead letters, oldest first")
    listing.add_argument("route", metavar="ROUTE", help=route_help)
    listing.add_argument("--since", metavar="WHEN", type=parse_since, help=since_help)
    listing.add_argument("--all", action="store_true", help="replayed ones too")
    listing.add_argument("--json", action="store_true", help="one JSON object per dead letter")
    listing.set_defaults(handler=cmd_dead_letters_list)

    show = actions.add_parser("show", help="one dead letter in full, its record included")
    show.add_argument("route", metavar="ROUTE", help=route_help)
    show.add_argument("id", metavar="ID", type=int, help="the dead letter's id (from `list`)")
    show.add_argument("--json", action="store_true", help="one JSON object")
    show.set_defaults(handler=cmd_dead_letters_show)

    replay = actions.add_parser(
        "replay",
        help="re-apply the route's current rules to pending dead letters, deliver the results "
        "and mark them replayed",
    )
    replay.add_argument("route", metavar="ROUTE", help=route_help)
    replay.add_argument("--since", metavar="WHEN", type=parse_since, help=since_help)
    replay.add_argument(
        "--id", dest="ids", metavar="ID", type=int, action="append", help="only this one (repeat)"
    )
    replay.add_argument("--conf", default=None, help="JSON object of params (default: defaults)")
    replay.add_argument("--json", action="store_true", help="the outcome as one JSON object")
    replay.set_defaults(handler=cmd_dead_letters_replay)


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date or date-time (UTC unless it has an offset), or a duration ago."""
    try:
        return (now or datetime.now(timezone.utc)) - parse_duration(text)
    except ValueError:
        pass
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO date or date-time (2024-05-01, 2024-05-01T12:00) "
            "nor a duration (30m, 1h, 7d)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _state_store() -> StateStore:
    from airflow_dataflow.state.store import StateStore

    logging.getLogger("alembic").setLevel(logging.WARNING)
    return StateStore.open()


def cmd_dead_letters_list(args: argparse.Namespace) -> int:
    route_id = resolve_route_id(args.route)
    letters = _state_store().list_dead_letters(
        route_id, since=args.since, include_replayed=args.all
    )
    for letter in letters:
        print(json.dumps(letter, default=str) if args.json else _letter_line(letter))
    if not args.json:
        kind = "dead letter(s)" if args.all else "pending dead letter(s)"
        print(f"{len(letters)} {kind} of route {route_id!r}", file=sys.stderr)
    return 0


def _letter_line(letter: dict[str, Any]) -> str:
    """One line: id, when stored, run, rule, the latest reason (shortened)."""
    created = (letter["created_at"] or "")[:19].replace("T", " ")
    if letter["replayed_at"]:
        reason = f"replayed {letter['replayed_at'][:19].replace('T', ' ')}"
    elif letter["replay_error"]:
        reason = f"after replay: {letter['replay_error']}"
    else:
        reason = letter["reason"]
    reason = " ".join(reason.split())
    reason = reason if len(reason) <= 100 else reason[:99] + "…"
    return f"{letter['id']:>6}  {created}  {letter['run_id']}  {letter['rule'] or '-'}  {reason}"


def cmd_dead_letters_show(args: argparse.Namespace) -> int:
    route_id = resolve_route_id(args.route)
    letter = _state_store().dead_letter(route_id, args.id)
    if letter is None:
        raise DataflowError(f"route {route_id!r} has no dead letter with id {args.id}")
    if args.json:
        print(json.dumps(letter, default=str))
        return 0
    step = f" (transform step {letter['step']})" if letter["step"] is not None else ""
    if letter["replayed_at"]:
        state = f"replayed {letter['replayed_at']} by {letter['replay_run_id']}"
    else:
        state = "pending"
    print(f"dead letter {letter['id']} of route {route_id!r}: {state}")
    for label, value in (
        ("run", letter["run_id"]),
        ("stored", letter["created_at"]),
        ("rule", f"{letter['rule']}{step}" if letter["rule"] else None),
        ("destination", letter["destination"]),
        ("position", letter["position"]),
        ("reason", letter["reason"]),
        ("last replay", letter["replay_run_id"] if not letter["replayed_at"] else None),
        ("replay error", letter["replay_error"]),
        ("replayed to", ", ".join(letter["replayed_to"]) or None),
    ):
        if value is not None:
            print(f"  {label + ':':<13} {value}")
    print("  record:")
    record = json.dumps(letter["record"], indent=2, ensure_ascii=False, default=str)
    print("\n".join(f"    {line}" for line in record.splitlines()))
    return 0


def cmd_dead_letters_replay(args: argparse.Namespace) -> int:
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the outcome says it all
    from airflow_dataflow.replay import replay

    store = _state_store()
    route = load_route_ref(args.route)
    letters = store.list_dead_letters(route.route_id, since=args.since, ids=args.ids)
    already = _already_replayed(store, route.route_id, args.ids, letters)
    report = replay(route, letters, store=store, conf=_conf(args.conf))
    if args.json:
        print(json.dumps({**report.to_dict(), "already_replayed": already}, default=str))
    else:
        _print_replay(report, already)
    return 1 if report.stayed else 0


def _already_replayed(
    store: StateStore, route_id: str, ids: list[int] | None, pending: list[dict[str, Any]]
) -> list[int]:
    """Of the ids asked for, those already replayed; an id the route does not have is an error."""
    found = {letter["id"] for letter in pending}
    already = []
    for letter_id in dict.fromkeys(ids or ()):
        if letter_id in found:
            continue
        letter = store.dead_letter(route_id, letter_id)
        if letter is None:
            raise DataflowError(f"route {route_id!r} has no dead letter with id {letter_id}")
        if letter["replayed_at"] is not None:
            already.append(letter_id)
    return already


def _print_replay(report: ReplayReport, already: list[int]) -> None:
    for letter_id in already:
        print(f"  {letter_id:>6}  already replayed")
    if not report.entries:
        print(f"no pending dead letters of route {report.route!r} to replay", file=sys.stderr)
        return
    print(
        f"route {report.route}: replay {report.run_id}: "
        f"{len(report.replayed)} replayed, {len(report.stayed)} stayed"
    )
    for entry in report.entries:
        rule = f" (rule {entry.rule})" if entry.rule else ""
        if entry.replayed:
            where = ", ".join(entry.destinations) or "nothing left to deliver"
            print(f"  {entry.id:>6}  replayed{rule} -> {where}")
        else:
            print(f"  {entry.id:>6}  stayed{rule}: {entry.reason}")
    for name, result in report.destinations.items():
        if result.error:
            print(f"  destination {name}: failed: {result.error}")
        else:
            locations = ", ".join(result.locations)
            print(
                f"  destination {name}: {result.delivered} delivered"
                + (f" -> {locations}" if locations else "")
            )


def cmd_db(args: argparse.Namespace) -> int:
    from airflow_dataflow.state.migrate import state_engine, status, upgrade

    logging.getLogger("alembic").setLevel(logging.WARNING)  # our own lines say what happened
    engine = state_engine()
    before = status(engine)
    after = upgrade(engine) if args.db_command == "upgrade" else before
    if args.json:
        print(json.dumps({**after.to_dict(), "previous": before.current}))
    else:
        print(f"state store {after.location}")
        if args.db_command == "upgrade" and before.current != after.current:
            print(f"  upgraded from {before.current or 'empty'} to {after.current}")
        print(f"  revision {after.current or 'none (empty)'}, head {after.head}: ", end="")
        print("up to date" if after.up_to_date else "run `airflow-dataflow db upgrade`")
    return 0 if args.db_command == "upgrade" or after.up_to_date else 1


def _print_issues(issues: Sequence[ConfigIssue], *, as_json: bool) -> None:
    for issue in issues:
        print(json.dumps(issue.to_dict()) if as_json else str(issue))


def cmd_validate(args: argparse.Namespace) -> int:
    files = [
        (file, path if os.path.isdir(path) else None)
        for path in args.paths
        for file in collect_paths([path])
    ]
    issues: list[ConfigIssue] = []
    route_files: dict[str, str] = {}
    for file, folder in files:
        try:
            route = load_route(file, root=_root_for(file, folder))
        except RouteConfigError as exc:
            issues.extend(exc.issues)
            continue
        issues.extend(check_rules(route))
        if route.route_id in route_files:
            issues.append(
                ConfigIssue(
                    file,
                    1,
                    1,
                    f"route id {route.route_id!r} is already defined by {route_files[route.route_id]}",
                )
            )
        route_files.setdefault(route.route_id, file)
    if not files:
        issues.append(ConfigIssue(" ".join(args.paths), 1, 1, "no *.route.yaml file found"))
    _print_issues(issues, as_json=args.json)
    broken = len({issue.file for issue in issues})
    print(f"{len(files)} route file(s) checked, {broken} invalid", file=sys.stderr)
    return 1 if issues else 0


def cmd_schema(args: argparse.Namespace) -> int:
    from airflow_dataflow.config.schema import route_schema

    print(json.dumps(route_schema(), indent=2))
    return 0


def cmd_test_route(args: argparse.Namespace) -> int:
    from airflow_dataflow.dry_run import dry_run

    route = load_route(args.path, root=_root_for(args.path))
    conf = _conf(args.conf)
    try:
        handle = open(args.records, encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise DataflowError(f"cannot read --records {args.records}: {exc.strerror}") from exc
    with handle:
        for line in dry_run(route, handle, conf=conf, explain=args.explain):
            print(json.dumps(line, ensure_ascii=False, default=str))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from airflow_dataflow.local_run import run_route

    route = load_route(args.path, root=_root_for(args.path))
    outcome = run_route(route, conf=_conf(args.conf), dags_root=_root_for(args.path))
    if args.json:
        print(json.dumps(outcome, default=str))
    else:
        _print_outcome(outcome)
    return 0 if outcome["state"] == "success" else 1


def _print_outcome(outcome: dict[str, Any]) -> None:
    counts = outcome.get("counts") or {}
    print(f"route {outcome['dag_id']}: run {outcome.get('run_id')} {outcome['state']}")
    if counts:
        print(
            f"  read {counts['read']}, unmatched {counts['unmatched']}, "
            f"dead-lettered {counts['dead_lettered']}"
        )
        for name, count in counts.get("rules", {}).items():
            print(f"  rule {name}: {count} matched")
        for name, count in counts.get("destinations", {}).items():
            locations = ", ".join(outcome.get("locations", {}).get(name, []))
            print(
                f"  destination {name}: {count} delivered"
                + (f" -> {locations}" if locations else "")
            )
    if outcome.get("dead_letters"):
        print(f"  dead letters: {outcome['dead_letters']}")
    for warning in outcome.get("warnings", []):
        print(f"  warning: {warning}")
    errors = outcome.get("errors", {})
    for failure in outcome.get("failed_tasks", []):
        print(f"  failed task {failure}: {errors.get(failure, 'see the task log above')}")


def _conf(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataflowError(f"--conf is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise DataflowError("--conf must be a JSON object, e.g. '{\"min_amount\": 50}'")
    return value


def _root_for(file: str, folder: str | None = None) -> str:
    """Where ``_defaults.yaml`` lookup stops, as the Airflow loader would see it.

    The dags folder when the file is inside it; else the folder named on the command line;
    else the file's own folder.
    """
    directory = os.path.dirname(os.path.abspath(file))
    dags_folder = configured_dags_folder()
    if directory == dags_folder or directory.startswith(dags_folder + os.sep):
        return dags_folder
    if folder is not None:
        return os.path.abspath(folder)
    return directory


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
