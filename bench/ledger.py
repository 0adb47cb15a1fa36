"""Delivery-ledger benchmark: its overhead on loading records into PostgreSQL (issue 4).

Run ``.venv/bin/python bench/ledger.py`` (see ``--help``). In one process:

1. N order-like records (8 fields) are staged once as JSONL chunks (``ChunkWriter``) in a temp
   dir, and a tiny route is loaded from there: a file source and one ``database`` destination,
   ``mode: insert``, ``batch_size: 1000`` (``--batch-size``).
2. Every measurement loads the staged partition into ``<fresh schema>.orders`` on PostgreSQL
   (``--postgres-uri``, an Airflow connection URI); the table the destination would create is
   created first, untimed; the schema is dropped afterwards. Variants, alternated in rounds
   (the order rotates every round) so drift cancels; each reported time is the median:

   - baseline: the same batches through the same ``_TableBatchSender`` with its marker rows
     disabled, each batch in its own transaction; no batch keys, no ledger;
   - marker rows only: the same, with the marker row written in each batch's transaction
     (synthetic keys, no hashing, no ledger);
   - ``pipeline.deliver.deliver``: batch keys hashed from the staged lines, ledger ``begin``
     before and ``delivered`` after each batch, marker rows; once with the default SQLite state
     store (``$AIRFLOW_HOME`` in the temp dir) and once with a PostgreSQL state store (a
     fresh database on the same server, migrated with ``state.migrate.upgrade``).

   After each run the table must hold exactly N rows (and, for ``deliver``, one marker row and
   one delivered ledger entry per batch), else the benchmark fails. The run is then committed
   (``settle_run``), as the commit task would.
3. Where the time goes: timers around the sender's ``send``, the marker row, ``batch_key``, the
   ledger's calls and ``StateStore.open`` in every run; and the ledger's writes alone
   (``begin``/``delivered``/``flush`` for as many batches, nothing in between) on each store.

``--out bench/README.md`` rewrites the marked results section there. ``--profile VARIANT``
runs one variant under cProfile instead of measuring. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import functools
import gc
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS_START = "<!-- ledger-results:start -->"
RESULTS_END = "<!-- ledger-results:end -->"

ROUTE_ID = "ledger_bench"
DESTINATION = "out"
DEST_CONN = "bench_ledger_pg"
STATE_CONN = "bench_ledger_state"
TARGET = 0.05  # the target: under 5% overhead


VARIANTS = {
    "baseline": "baseline: `_TableBatchSender`, no marker rows, no keys, no ledger",
    "markers": "marker rows only (no keys, no ledger)",
    "sqlite": "`deliver`: keys + ledger + marker rows, SQLite state store",
    "postgres": "`deliver`: keys + ledger + marker rows, PostgreSQL state store",
}


PHASES = {  # (owner module, owner attribute path, method) -> phase; see Timers
    "send": ("airflow_dataflow.destinations.database", "_TableBatchSender", "send"),
    "marker": ("airflow_dataflow.destinations.database", "_Markers", "add"),
    "hash": ("airflow_dataflow.pipeline.deliver", None, "batch_key"),
    "begin": ("airflow_dataflow.state.ledger", "DeliveryLedger", "begin_many"),
    "ledger_open": ("airflow_dataflow.state.ledger", "DeliveryLedger", "__init__"),
    "flush": ("airflow_dataflow.state.ledger", "DeliveryLedger", "flush"),
    "store_open": ("airflow_dataflow.state.store", "StateStore", "open"),
}


class Timers:
    """Time spent in a few functions during a run (a perf_counter pair per call, ~1 µs)."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self._undo: list[tuple[Any, str, Any]] = []

    def install(self) -> None:
        import importlib

        for phase, (module, owner_name, attr) in PHASES.items():
            owner: Any = importlib.import_module(module)
            if owner_name:
                owner = getattr(owner, owner_name)
            raw = vars(owner)[attr]
            self._undo.append((owner, attr, raw))
            setattr(owner, attr, self._timed(raw, phase))

    def _timed(self, raw: Any, phase: str) -> Any:
        function = raw.__func__ if isinstance(raw, classmethod) else raw
        spent = self.spent
        perf_counter = time.perf_counter

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[phase] += perf_counter() - started

        return classmethod(timed) if isinstance(raw, classmethod) else timed

    def uninstall(self) -> None:
        for owner, attr, raw in reversed(self._undo):
            setattr(owner, attr, raw)
        self._undo.clear()

    def reset(self) -> None:
        for phase in self.spent:
            self.spent[phase] = 0.0


# ---------------------------------------------------------------------- data and route


def generate(count: int, seed: int = 4) -> Iterator[dict[str, Any]]:
    from orders import generate_orders  # bench/ is on sys.path when a bench script runs

    return generate_orders(count, seed)


ROUTE_YAML = f"""\
source: {{type: file, path: in.jsonl}}
rules: [{{name: all, to: [{DESTINATION}]}}]
destinations:
  {DESTINATION}:
    type: database
    connection: {DEST_CONN}
    table: public.orders   # each measurement points it at a fresh schema
    mode: insert
    batch_size: {{batch_size}}
"""


def with_table(route: Any, table: str) -> Any:
    """The loaded route with its destination writing to ``table`` (a fresh schema's)."""
    config = route.config
    settings = config.destinations[DESTINATION].model_copy(update={"table": table})
    destinations = {**config.destinations, DESTINATION: settings}
    return dataclasses.replace(
        route, config=config.model_copy(update={"destinations": destinations})
    )


# ---------------------------------------------------------------------- PostgreSQL helpers


def sqlalchemy_url(airflow_uri: str, database: str | None = None) -> Any:
    import sqlalchemy as sa

    url = sa.make_url(airflow_uri)
    url = url.set(drivername="postgresql+psycopg", query={})
    return url.set(database=database) if database else url


def with_database(airflow_uri: str, database: str) -> str:
    parts = urlsplit(airflow_uri)
    return urlunsplit(parts._replace(path=f"/{database}"))


class Bench:
    """Everything one benchmark run sets up: staging, route, engines, state stores."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import sqlalchemy as sa

        from airflow_dataflow.config import load_route
        from airflow_dataflow.hooks.sql import sql_engine
        from airflow_dataflow.staging import StagingArea
        from airflow_dataflow.state.migrate import StateStoreError, upgrade

        self.args = args
        self.tmp = tmp
        self.count = args.records
        self.batch_size = args.batch_size
        self.batches = -(-self.count // self.batch_size)
        self.schemas: list[str] = []
        self.state_db: str | None = None
        self.timers = Timers()
        self.admin = sa.create_engine(sqlalchemy_url(args.postgres_uri))
        with self.admin.connect() as conn:
            self.server = conn.execute(sa.text("SHOW server_version")).scalar()
        route_file = tmp / f"{ROUTE_ID}.route.yaml"
        route_file.write_text(ROUTE_YAML.replace("{batch_size}", str(self.batch_size)))
        self.route = load_route(route_file)
        staging = StagingArea(f"file://{tmp / 'staging'}", ROUTE_ID, "bench")
        print(f"staging {self.count:,} records ...", file=sys.stderr)
        with staging.writer(DESTINATION) as writer:
            writer.write_many(generate(self.count))
            self.partition = writer.close()
        with staging.writer("warmup") as writer:
            writer.write_many(generate(min(self.count, 2 * self.batch_size)))
            self.warmup = writer.close()
        self.line_bytes = sum(
            Path(chunk["uri"].removeprefix("file://")).stat().st_size
            for chunk in self.partition["chunks"]
        )
        # the PostgreSQL state store: a fresh database, migrated, reached like the package does
        name = f"bench_ledger_state_{uuid.uuid4().hex[:8]}"
        with self.admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        self.state_db = name
        os.environ[f"AIRFLOW_CONN_{STATE_CONN.upper()}"] = with_database(args.postgres_uri, name)
        try:
            self.pg_state = sql_engine(
                STATE_CONN, route="(state store)", setting="connection", error_class=StateStoreError
            )
            upgrade(self.pg_state)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ one measurement

    def fresh_target(self, partition: dict[str, Any]) -> tuple[Any, str]:
        """A fresh schema with the table the destination would create; the route writing there."""
        import sqlalchemy as sa

        from airflow_dataflow.destinations.database import build_table, infer_kinds
        from airflow_dataflow.staging import StagedBatches

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        self.schemas.append(schema)
        first = next(iter(StagedBatches(partition, batch_size=self.batch_size)))
        table = build_table(schema, "orders", infer_kinds(first, [], {}), [])
        table.metadata.create_all(self.admin)
        return with_table(self.route, f"{schema}.orders"), schema

    def drop(self, schema: str) -> None:
        import sqlalchemy as sa

        with self.admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        self.schemas.remove(schema)

    def run(
        self, variant: str, partition: dict[str, Any], run_id: str, profile: str | None = None
    ) -> dict[str, float]:
        """One timed load of ``partition`` into a fresh schema; checked, then dropped.

        Returns ``{"total": seconds, <phase>: seconds spent in it}`` (see ``PHASES``).
        """
        from airflow_dataflow.context import RunContext
        from airflow_dataflow.state.ledger import settle_run
        from airflow_dataflow.state.migrate import state_engine

        route, schema = self.fresh_target(partition)
        context = RunContext(route=ROUTE_ID, run_id=run_id, route_file=route.file)
        action = self._action(variant, route, context, partition)
        gc.collect()
        self.timers.reset()
        try:
            if profile:
                profiler = cProfile.Profile()
                started = time.perf_counter()
                outcome = profiler.runcall(action)
                seconds = time.perf_counter() - started
                profiler.dump_stats(profile)
            else:
                started = time.perf_counter()
                outcome = action()
                seconds = time.perf_counter() - started
            state = {"sqlite": state_engine, "postgres": lambda: self.pg_state}.get(variant)
            self.check(variant, schema, partition, run_id, outcome, state)
            if state is not None:
                settle_run(state(), ROUTE_ID, run_id)  # what the commit task does
        finally:
            self.drop(schema)
        return {"total": seconds, **self.timers.spent}

    def _action(
        self, variant: str, route: Any, context: Any, partition: dict[str, Any]
    ) -> Callable[[], Any]:
        from airflow_dataflow.destinations.database import _TableBatchSender
        from airflow_dataflow.pipeline.deliver import deliver
        from airflow_dataflow.pipeline.kinds import make_destination
        from airflow_dataflow.staging import StagedBatches

        if variant == "sqlite":
            return lambda: deliver(route, DESTINATION, context, partition)
        if variant == "postgres":
            return lambda: deliver(
                route, DESTINATION, context, partition, state_engine=self.pg_state
            )

        def load() -> dict[str, Any]:
            destination = make_destination(route, DESTINATION, context)
            batches = StagedBatches(partition, batch_size=self.batch_size)
            sender = destination.open_batches(batches)
            assert isinstance(sender, _TableBatchSender), sender
            if variant == "baseline":
                sender.markers = None
            token = f"{context.run_id}#1"
            sent = 0
            with sender:
                for index, batch in enumerate(batches):
                    sender.send(batch, f"bench-{context.run_id}-{index}", token, sent)
                    sent += len(batch)
            return {"delivered": sent}

        return load

    def check(
        self,
        variant: str,
        schema: str,
        partition: dict[str, Any],
        run_id: str,
        outcome: dict[str, Any],
        state: Callable[[], Any] | None,
    ) -> None:
        """Exactly N rows (and one marker row / delivered ledger entry per batch), or fail."""
        import sqlalchemy as sa

        from airflow_dataflow.state.schema import delivery_ledger

        count = partition["count"]
        batches = -(-count // self.batch_size)
        with self.admin.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT count(*) FROM {schema}.orders")).scalar()
            markers = conn.execute(sa.text(f"SELECT count(*) FROM {schema}._dataflow_batches"))
            marker_rows = markers.scalar()
        problems = []
        if rows != count:
            problems.append(f"{rows} rows in {schema}.orders, expected {count}")
        if outcome["delivered"] != count:
            problems.append(f"delivered {outcome['delivered']}, expected {count}")
        expected_markers = 0 if variant == "baseline" else batches
        if marker_rows != expected_markers:
            problems.append(f"{marker_rows} marker rows, expected {expected_markers}")
        if state is not None:
            if (outcome["batches"], outcome["skipped"]) != (batches, 0):
                problems.append(f"batches/skipped {outcome['batches']}/{outcome['skipped']}")
            query = sa.select(sa.func.count()).where(
                (delivery_ledger.c.route == ROUTE_ID)
                & (delivery_ledger.c.run_id == run_id)
                & (delivery_ledger.c.status == "delivered")
            )
            with state().connect() as conn:
                entries = conn.execute(query).scalar()
            if entries != batches:
                problems.append(f"{entries} delivered ledger entries, expected {batches}")
        if problems:
            raise SystemExit(f"{VARIANTS[variant]} ({run_id}): " + "; ".join(problems))

    # ------------------------------------------------------------------ components

    def time_ledger(self, engine: Any, tag: str) -> float:
        """The ledger's writes for as many batches as the load has, with no load in between."""
        from airflow_dataflow.destinations.database import _TableBatchSender
        from airflow_dataflow.state.ledger import DeliveryLedger, settle_run

        run_id = f"alone-{tag}"
        keys = [f"{uuid.uuid4().hex}{index:032x}" for index in range(self.batches)]
        gc.collect()
        started = time.perf_counter()
        ledger = DeliveryLedger(engine, ROUTE_ID, f"alone_{tag}", run_id)
        window = _TableBatchSender.window  # as deliver() does for the database destination
        for start in range(0, len(keys), window):
            batch_keys = keys[start : start + window]
            ledger.begin_many([(key, self.batch_size) for key in batch_keys])
            for key in batch_keys:
                ledger.delivered(key)
        ledger.flush()
        ledger.close()
        seconds = time.perf_counter() - started
        settle_run(engine, ROUTE_ID, run_id)
        return seconds

    # ------------------------------------------------------------------ clean-up

    def close(self) -> None:
        import sqlalchemy as sa

        from airflow_dataflow.hooks.sql import dispose_engines

        dispose_engines()
        for schema in list(self.schemas):
            self.drop(schema)
        if self.state_db is not None:
            with self.admin.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.state_db} WITH (FORCE)"))
            self.state_db = None
        self.admin.dispose()


# ---------------------------------------------------------------------- measuring


Run = dict[str, float]


def measure(bench: Bench, repeat: int) -> tuple[dict[str, list[Run]], dict[str, list[float]]]:
    from airflow_dataflow.state.migrate import state_engine

    names = list(VARIANTS)
    bench.timers.install()
    try:
        print("warm-up (2 batches per variant, untimed) ...", file=sys.stderr)
        for name in names:
            bench.run(name, bench.warmup, f"warmup-{name}")
        runs: dict[str, list[Run]] = {name: [] for name in names}
        alone: dict[str, list[float]] = {"sqlite": [], "postgres": []}
        for round_ in range(repeat):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                run = bench.run(name, bench.partition, f"r{round_}-{name}")
                runs[name].append(run)
                print(
                    f"round {round_ + 1}/{repeat}: {name:<9} {run['total']:7.2f} s "
                    f"({bench.count / run['total']:,.0f} records/s)",
                    file=sys.stderr,
                )
            alone["sqlite"].append(bench.time_ledger(state_engine(), f"s{round_}"))
            alone["postgres"].append(bench.time_ledger(bench.pg_state, f"p{round_}"))
    finally:
        bench.timers.uninstall()
    return runs, alone


def machine() -> str:
    from machine_info import describe  # bench/ is on sys.path when a bench script runs

    return describe("SQLAlchemy", "psycopg")


def median_run(runs: list[Run]) -> Run:
    """The run whose total is the median (its phases add up, unlike per-phase medians)."""
    ordered = sorted(runs, key=lambda run: run["total"])
    return ordered[(len(ordered) - 1) // 2]


def render(bench: Bench, runs: dict[str, list[Run]], alone: dict[str, list[float]]) -> str:
    repeat = len(runs["baseline"])
    median = {name: statistics.median(run["total"] for run in rs) for name, rs in runs.items()}
    base = median["baseline"]
    per_batch = 1000 / bench.batches  # seconds in total -> ms per batch
    lines = [
        f"Machine: {machine()}, PostgreSQL {bench.server} (local server)",
        f"{bench.count:,} records ({bench.line_bytes / bench.count:.0f} bytes per staged line, "
        f"8 fields) in {bench.batches:,} batches of {bench.batch_size:,}, `mode: insert`, into a "
        f"fresh schema per run; median of {repeat} round(s), variants alternated (order rotated "
        "every round); every run checked: exactly N rows, and one marker row and one delivered "
        "ledger entry per batch where they are written.",
        "",
        "| variant | seconds | records/s | overhead vs baseline | ms per batch over baseline "
        "| per round |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, label in VARIANTS.items():
        seconds = median[name]
        totals = [run["total"] for run in runs[name]]
        if name == "baseline":
            overhead = extra = "-"
            rounds = ", ".join(f"{total:.2f} s" for total in totals)
        else:
            overhead = f"{(seconds / base - 1) * 100:+.1f}%"
            extra = f"{(seconds - base) * per_batch:+.2f}"
            rounds = ", ".join(
                f"{(total / run['total'] - 1) * 100:+.1f}%"
                for total, run in zip(totals, runs["baseline"], strict=True)
            )
        lines.append(
            f"| {label} | {seconds:.2f} | {bench.count / seconds:,.0f} | {overhead} | {extra} "
            f"| {rounds} |"
        )
    lines += [
        "",
        "Where the time goes, ms per batch (the run with the median total of each variant; "
        "`begin` is `begin_many`, once per window of 10 batches, which also writes the previous "
        'window\'s "delivered" marks):',
        "",
        "| variant | total | rows: INSERTs + COMMIT | marker row | `batch_key` | ledger `begin` "
        "| ledger load + `flush` | `StateStore.open` | reading, decoding, rest |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in VARIANTS:
        run = median_run(runs[name])
        ledger = run["ledger_open"] + run["flush"]
        rest = run["total"] - run["send"] - run["hash"] - run["begin"] - ledger - run["store_open"]
        cells = [run["total"], run["send"] - run["marker"], run["marker"], run["hash"]]
        cells += [run["begin"], ledger, run["store_open"], rest]
        lines.append(f"| {name} | " + " | ".join(f"{c * per_batch:.2f}" for c in cells) + " |")
    lines += [
        "",
        f"The ledger's writes alone ({bench.batches:,} batches: `begin_many` per window of 10, "
        "`delivered` per batch, then `flush`; "
        "no load in between; median of the rounds):",
        "",
        "| state store | seconds | ms per batch | share of the baseline |",
        "|---|---:|---:|---:|",
    ]
    for name, store in (("sqlite", "SQLite (default file)"), ("postgres", "PostgreSQL")):
        seconds = statistics.median(alone[name])
        lines.append(
            f"| {store} | {seconds:.2f} | {seconds * per_batch:.2f} | {seconds / base:.1%} |"
        )
    verdicts = []
    for name, store in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
        overhead = median[name] / base - 1
        run = median_run(runs[name])
        parts = run["marker"] + run["hash"] + run["begin"] + run["ledger_open"] + run["flush"]
        measured = (parts + run["store_open"]) / base
        verdict = "met" if max(overhead, measured) < TARGET else "missed"
        verdicts.append(
            f"{store} state store: end-to-end median {overhead * 100:+.1f}%, its measured "
            f"parts (marker rows, keys, ledger writes) {measured * 100:+.1f}%: **{verdict}**"
        )
    lines += [
        "",
        f"Target (overhead under {TARGET:.0%}; the rounds of one variant differ by more than "
        "that on this shared machine, so the timed parts are shown too): "
        + "; ".join(verdicts)
        + ".",
    ]
    return "\n".join(lines)


def rewrite(out: Path, table: str) -> None:
    from machine_info import rewrite_results  # bench/ is on sys.path when a bench script runs

    rewrite_results(out, table, RESULTS_START, RESULTS_END)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="default 1,000,000")
    parser.add_argument("--batch-size", type=int, default=1000, help="default 1000")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default 3); median")
    parser.add_argument(
        "--postgres-uri",
        default="postgres://postgres@127.0.0.1:5432/test",
        help="Airflow connection URI of the PostgreSQL server (destination and state store)",
    )
    parser.add_argument("--out", type=Path, help="rewrite the marked results section of this file")
    parser.add_argument(
        "--profile",
        choices=list(VARIANTS),
        help="run this variant once under cProfile and print where the time goes (no table)",
    )
    parser.add_argument("--profile-out", type=Path, help="with --profile: keep the pstats file")
    args = parser.parse_args()
    if args.records < 1 or args.batch_size < 1 or args.repeat < 1:
        parser.error("--records, --batch-size and --repeat must be positive")

    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    # before anything imports Airflow: a private home (the default SQLite state store lives
    # there), our two connections, quiet logging
    os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.pop("AIRFLOW_CONN_DATAFLOW_STATE", None)
    os.environ[f"AIRFLOW_CONN_{DEST_CONN.upper()}"] = args.postgres_uri
    bench = None
    try:
        bench = Bench(args, tmp)
        if args.profile:
            path = str(args.profile_out or tmp / "profile.out")
            bench.run(args.profile, bench.warmup, "warmup")
            run = bench.run(args.profile, bench.partition, "profiled", profile=path)
            print(f"{VARIANTS[args.profile]}: {run['total']:.2f} s under cProfile")
            stats = pstats.Stats(path)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
            return
        runs, alone = measure(bench, args.repeat)
        table = render(bench, runs, alone)
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    if args.out:
        rewrite(args.out, table)


if __name__ == "__main__":
    main()
