"""Destinations benchmark (issue 5): the real delivery path against the fastest direct write.

Run ``.venv/bin/python bench/destinations.py`` (see ``--help``). In one process, once each
(the machine is shared: no rounds), after a small untimed warm-up of every variant:

1. N order-like records (8 fields) are staged once as JSONL chunks (``ChunkWriter``) in a temp
   dir, as the route task stages them, and written once more as CSV (for ``psql``).
2. PostgreSQL (``--postgres-uri``, an Airflow connection URI): every variant writes into
   ``<fresh schema>.orders``, a table created first (untimed) exactly as the destination
   creates it (``build_table(infer_kinds(...))``; primary key ``id`` for upsert/mirror).

   - reference: ``psql -c "\\copy ... FROM 'orders.csv' WITH (FORMAT csv)"`` (the same rows),
     timed as a subprocess; when ``psql`` is not installed, psycopg's ``COPY FROM STDIN`` of the
     same CSV file from Python (and the table says so);
   - ``pipeline.deliver.deliver`` of the staged partition: batch keys, the delivery ledger
     (SQLite state store in the temp dir), marker rows (insert), one transaction per batch;
     ``mode: insert`` and ``mode: upsert`` (into the empty table, then again over the full
     table: every row an update), ``batch_size`` 1000 (the default) and 10,000; COPY
     (the default path) and INSERT statements (COPY switched off) for comparison; and
     ``mode: mirror`` (one transaction).

   After each run the table must hold exactly N rows, else the benchmark fails.
3. Files: ``pipeline.deliver.deliver`` to a ``file`` destination (``format: jsonl`` and
   ``format: parquet``; only its public route settings are used) against a direct write of the
   same staged records: reading the same chunks (orjson), then ``orjson.dumps`` per record
   (JSONL) or ``pyarrow.Table.from_pylist`` per 50,000 records into one ``ParquetWriter``
   (Parquet). Reading the chunks alone is timed too. Every output is read back and counted.

``--out bench/README.md`` rewrites the marked results section there.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS_START = "<!-- destinations-results:start -->"
RESULTS_END = "<!-- destinations-results:end -->"

ROUTE_ID = "destinations_bench"
DEST_CONN = "bench_destinations_pg"
COLUMNS = ["id", "customer_id", "status", "amount", "currency", "country", "created_at", "sku"]
DB_TARGET = 0.5  # at least 50% of COPY's rate
FILE_TARGET = 0.7  # at least 70% of writing directly
PARQUET_CHUNK = 50_000


@dataclasses.dataclass(frozen=True)
class DbVariant:
    name: str
    label: str
    mode: str
    batch_size: int = 1000
    copy: bool = True
    prefill: bool = False  # upsert over a table already holding every row


DB_VARIANTS = [
    DbVariant("insert", "`deliver`, insert, COPY", "insert"),
    DbVariant("insert_10k", "`deliver`, insert, COPY, `batch_size: 10000`", "insert", 10_000),
    DbVariant("insert_sql", "`deliver`, insert, INSERT statements", "insert", copy=False),
    DbVariant("upsert", "`deliver`, upsert (empty table), COPY + merge", "upsert"),
    DbVariant(
        "upsert_10k", "`deliver`, upsert (empty table), `batch_size: 10000`", "upsert", 10_000
    ),
    DbVariant(
        "upsert_update", "`deliver`, upsert (every row exists: updates)", "upsert", prefill=True
    ),
    DbVariant(
        "upsert_sql",
        "`deliver`, upsert (empty table), INSERT ... ON CONFLICT",
        "upsert",
        copy=False,
    ),
    DbVariant("mirror", "`deliver`, mirror (empty table; one transaction)", "mirror"),
]


# ---------------------------------------------------------------------- data


def generate(count: int, seed: int = 5) -> Iterator[dict[str, Any]]:
    from orders import generate_orders  # bench/ is on sys.path when a bench script runs

    return generate_orders(count, seed)


def staged_records(partition: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The staged records, read and decoded as a direct writer would (orjson, line by line)."""
    import orjson

    for chunk in partition["chunks"]:
        with open(chunk["uri"].removeprefix("file://"), "rb", buffering=1 << 20) as handle:
            for line in handle:
                yield orjson.loads(line)


def route_yaml(destination: str) -> str:
    return textwrap.dedent(
        f"""\
        source: {{type: file, path: in.jsonl}}
        rules: [{{name: all, to: [out]}}]
        destinations:
          out: {destination}
        """
    )


# ---------------------------------------------------------------------- the bench


class Bench:
    """Staging, route files and the PostgreSQL server of one benchmark run."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import sqlalchemy as sa

        from airflow_dataflow.staging import StagingArea

        self.args = args
        self.tmp = tmp
        self.count = args.records
        self.schemas: list[str] = []
        self.runs = 0
        self.admin = None
        if not args.skip_postgres:
            self.admin = sa.create_engine(sqlalchemy_url(args.postgres_uri))
            with self.admin.connect() as conn:
                self.server = conn.execute(sa.text("SHOW server_version")).scalar()
        staging = StagingArea(f"file://{tmp / 'staging'}", ROUTE_ID, "bench")
        print(f"staging {self.count:,} records ...", file=sys.stderr)
        with staging.writer("out") as writer:
            writer.write_many(generate(self.count))
            self.partition = writer.close()
        with staging.writer("warmup") as writer:
            writer.write_many(generate(min(self.count, 3000)))
            self.warmup = writer.close()
        self.csv = tmp / "orders.csv"
        with open(self.csv, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            for record in generate(self.count):
                out.writerow(record[column] for column in COLUMNS)
        self.psql = shutil.which("psql")

    # ------------------------------------------------------------------ PostgreSQL

    def fresh_table(self, key: list[str]) -> str:
        """A fresh schema with ``orders`` as the destination would create it."""
        import sqlalchemy as sa

        from airflow_dataflow.destinations.database import build_table, infer_kinds

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        self.schemas.append(schema)
        kinds = infer_kinds(generate(10), key, {})
        build_table(schema, "orders", kinds, key).metadata.create_all(self.admin)
        return f"{schema}.orders"

    def rows(self, table: str) -> int:
        import sqlalchemy as sa

        with self.admin.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()

    def drop_all(self) -> None:
        import sqlalchemy as sa

        for schema in list(self.schemas):
            with self.admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            self.schemas.remove(schema)

    def copy_reference(self, key: list[str]) -> float:
        """``psql \\copy`` (or psycopg COPY) of the CSV into a fresh table; seconds."""
        table = self.fresh_table(key)
        command = f"\\copy {table} ({', '.join(COLUMNS)}) FROM '{self.csv}' WITH (FORMAT csv)"
        gc.collect()
        if self.psql:
            url = sqlalchemy_url(self.args.postgres_uri)
            env = {**os.environ, "PGPASSWORD": url.password or ""}
            argv = [self.psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", command]
            argv += ["-h", url.host or "localhost", "-p", str(url.port or 5432)]
            argv += ["-U", url.username or "postgres", "-d", url.database or "postgres"]
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True)
            seconds = time.perf_counter() - started
        else:
            seconds = self._psycopg_copy(table)
        self.check(table)
        self.drop_all()
        return seconds

    def _psycopg_copy(self, table: str) -> float:
        raw = self.admin.raw_connection()
        try:
            started = time.perf_counter()
            with raw.driver_connection.cursor() as cursor, open(self.csv, "rb") as handle:
                columns = ", ".join(COLUMNS)
                with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                    while block := handle.read(1 << 20):
                        copy.write(block)
            raw.commit()
            return time.perf_counter() - started
        finally:
            raw.close()

    def deliver_db(self, variant: DbVariant, partition: dict[str, Any]) -> float:
        """``pipeline.deliver.deliver`` of ``partition`` into a fresh table; seconds."""
        from airflow_dataflow.destinations import database_sql

        key = [] if variant.mode == "insert" else ["id"]
        table = self.fresh_table(key)
        extra = "" if variant.mode == "insert" else ", key: [id]"
        destination = (
            f"{{type: database, connection: {DEST_CONN}, table: {table}, "
            f"mode: {variant.mode}, batch_size: {variant.batch_size}{extra}}}"
        )
        if variant.prefill:
            self._deliver(destination, partition)
        original = database_sql.COPY_MIN_ROWS
        database_sql.COPY_MIN_ROWS = original if variant.copy else 1 << 62
        try:
            seconds, outcome = self._deliver(destination, partition)
        finally:
            database_sql.COPY_MIN_ROWS = original
        if outcome["delivered"] != partition["count"]:
            raise SystemExit(f"{variant.name}: delivered {outcome['delivered']}")
        self.check(table, partition["count"])
        self.drop_all()
        return seconds

    def check(self, table: str, count: int | None = None) -> None:
        expected = self.count if count is None else count
        rows = self.rows(table)
        if rows != expected:
            raise SystemExit(f"{table}: {rows} rows, expected {expected}")

    # ------------------------------------------------------------------ files

    def deliver_file(self, file_format: str, partition: dict[str, Any]) -> tuple[float, Path]:
        out = self.tmp / "out" / f"{uuid.uuid4().hex[:8]}.{file_format}"
        destination = f"{{type: file, path: {out}, format: {file_format}}}"
        seconds, outcome = self._deliver(destination, partition)
        if outcome["delivered"] != partition["count"]:
            raise SystemExit(f"file {file_format}: delivered {outcome['delivered']}")
        return seconds, out

    def direct_jsonl(self, partition: dict[str, Any]) -> tuple[float, Path]:
        import orjson

        out = self.tmp / "out" / f"direct-{uuid.uuid4().hex[:8]}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        gc.collect()
        started = time.perf_counter()
        with open(out, "wb", buffering=1 << 20) as handle:
            for record in staged_records(partition):
                handle.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        return time.perf_counter() - started, out

    def direct_parquet(self, partition: dict[str, Any]) -> tuple[float, Path]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        out = self.tmp / "out" / f"direct-{uuid.uuid4().hex[:8]}.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        gc.collect()
        started = time.perf_counter()
        writer = None
        chunk: list[dict[str, Any]] = []
        for record in staged_records(partition):
            chunk.append(record)
            if len(chunk) >= PARQUET_CHUNK:
                writer = _write_parquet_chunk(writer, out, chunk, pa, pq)
                chunk = []
        if chunk:
            writer = _write_parquet_chunk(writer, out, chunk, pa, pq)
        if writer is not None:
            writer.close()
        return time.perf_counter() - started, out

    def read_only(self, partition: dict[str, Any]) -> float:
        gc.collect()
        started = time.perf_counter()
        for _ in staged_records(partition):
            pass
        return time.perf_counter() - started

    # ------------------------------------------------------------------ common

    def _deliver(self, destination: str, partition: dict[str, Any]) -> tuple[float, Any]:
        from airflow_dataflow.config import load_route
        from airflow_dataflow.context import RunContext
        from airflow_dataflow.pipeline.deliver import deliver
        from airflow_dataflow.state.ledger import settle_run
        from airflow_dataflow.state.migrate import state_engine

        self.runs += 1
        folder = self.tmp / f"route-{self.runs}"
        folder.mkdir()
        route_file = folder / f"{ROUTE_ID}.route.yaml"
        route_file.write_text(route_yaml(destination), encoding="utf-8")
        route = load_route(route_file)
        context = RunContext(route=ROUTE_ID, run_id=f"run-{self.runs}", route_file=route.file)
        gc.collect()
        started = time.perf_counter()
        outcome = deliver(route, "out", context, partition)
        seconds = time.perf_counter() - started
        settle_run(state_engine(), ROUTE_ID, context.run_id)  # what the commit task does
        return seconds, outcome

    def close(self) -> None:
        from airflow_dataflow.hooks.sql import dispose_engines

        dispose_engines()
        if self.admin is not None:
            self.drop_all()
            self.admin.dispose()


def _write_parquet_chunk(
    writer: Any, out: Path, chunk: list[dict[str, Any]], pa: Any, pq: Any
) -> Any:
    table = pa.Table.from_pylist(chunk, schema=None if writer is None else writer.schema)
    if writer is None:
        writer = pq.ParquetWriter(out, table.schema)
    writer.write_table(table)
    return writer


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def count_parquet(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def sqlalchemy_url(airflow_uri: str) -> Any:
    import sqlalchemy as sa

    url = sa.make_url(airflow_uri)
    return url.set(drivername="postgresql+psycopg", query={})


# ---------------------------------------------------------------------- measuring


Results = dict[str, float]


def measure(bench: Bench) -> tuple[Results, Results]:
    """Once each: PostgreSQL variants and references, then files. Returns (db, files)."""
    db: Results = {}
    files: Results = {}
    if bench.admin is not None:
        variants = [v for v in DB_VARIANTS if v.name in bench.args.variants]
        print("warm-up (untimed) ...", file=sys.stderr)
        for variant in variants:
            bench.deliver_db(variant, bench.warmup)
        db["copy_plain"] = _timed("reference: COPY, no key", bench.copy_reference, [])
        db["copy_key"] = _timed("reference: COPY, key id", bench.copy_reference, ["id"])
        for variant in variants:
            db[variant.name] = _timed(variant.label, bench.deliver_db, variant, bench.partition)
    if bench.args.skip_files:
        return db, files
    bench.deliver_file("jsonl", bench.warmup)
    bench.deliver_file("parquet", bench.warmup)
    files["read"] = _timed("reading the staged chunks", bench.read_only, bench.partition)
    for file_format, direct, count in (
        ("jsonl", bench.direct_jsonl, count_lines),
        ("parquet", bench.direct_parquet, count_parquet),
    ):
        seconds, path = direct(bench.partition)
        _report(f"direct {file_format}", seconds, bench.count)
        files[f"direct_{file_format}"] = seconds
        _check_file(path, count, bench.count)
        seconds, path = bench.deliver_file(file_format, bench.partition)
        _report(f"`deliver`, file {file_format}", seconds, bench.count)
        files[f"file_{file_format}"] = seconds
        _check_file(path, count, bench.count)
    return db, files


def _timed(label: str, action: Callable[..., float], *args: Any) -> float:
    seconds = action(*args)
    records = args[-1]["count"] if args and isinstance(args[-1], dict) else None
    _report(label, seconds, records)
    return seconds


def _report(label: str, seconds: float, records: int | None) -> None:
    rate = f" ({records / seconds:,.0f} records/s)" if records else ""
    print(f"{label}: {seconds:.2f} s{rate}", file=sys.stderr)


def _check_file(path: Path, count: Callable[[Path], int], expected: int) -> None:
    found = count(path)
    if found != expected:
        raise SystemExit(f"{path}: {found} records, expected {expected}")
    path.unlink()


def machine() -> str:
    from machine_info import describe  # bench/ is on sys.path when a bench script runs

    return describe("SQLAlchemy", "psycopg", "pyarrow", "orjson")


def render(bench: Bench, db: Results, files: Results) -> str:
    n = bench.count
    lines = [
        f"Machine: {machine()}" + (f", PostgreSQL {bench.server} (local server)" if db else "")
    ]
    lines.append(
        f"{n:,} records (8 fields), staged once as JSONL chunks; every variant run once (the "
        "machine is shared), after an untimed warm-up; every output checked (row or record "
        "count)."
    )
    if db:
        reference = "`psql \\copy`" if bench.psql else "psycopg `COPY FROM STDIN` (no psql)"
        lines += [
            "",
            f"PostgreSQL, against {reference} of the same rows (CSV) into the same table "
            f"(target: at least {DB_TARGET:.0%} of its rate):",
            "",
            "| variant | seconds | records/s | share of COPY's rate | target |",
            "|---|---:|---:|---:|---|",
        ]
        for key, label in (("copy_plain", "no key"), ("copy_key", "primary key `id`")):
            lines.append(
                f"| reference: {reference} ({label}) | {db[key]:.2f} | {n / db[key]:,.0f} | - | - |"
            )
        for variant in DB_VARIANTS:
            if variant.name not in db:
                continue
            seconds = db[variant.name]
            reference_seconds = db["copy_plain" if variant.mode == "insert" else "copy_key"]
            share = reference_seconds / seconds
            verdict = "**met**" if share >= DB_TARGET else "**missed**"
            if variant.prefill or variant.mode == "mirror" or not variant.copy:
                verdict = "(for comparison)"
            lines.append(
                f"| {variant.label} | {seconds:.2f} | {n / seconds:,.0f} | {share:.0%} "
                f"| {verdict} |"
            )
    if not files:
        return "\n".join(lines)
    lines += [
        "",
        "Files, against writing the same staged records directly (reading the chunks with "
        f"orjson included; target: at least {FILE_TARGET:.0%} of its rate):",
        "",
        "| variant | seconds | records/s | share of the direct rate | target |",
        "|---|---:|---:|---:|---|",
        f"| reading the staged chunks alone (orjson) | {files['read']:.2f} "
        f"| {n / files['read']:,.0f} | - | - |",
    ]
    for file_format, how in (
        ("jsonl", "`orjson.dumps` per record"),
        ("parquet", f"`pa.Table.from_pylist` per {PARQUET_CHUNK:,}, one `ParquetWriter`"),
    ):
        direct = files[f"direct_{file_format}"]
        ours = files[f"file_{file_format}"]
        share = direct / ours
        verdict = "**met**" if share >= FILE_TARGET else "**missed**"
        lines += [
            f"| direct {file_format}: {how} | {direct:.2f} | {n / direct:,.0f} | - | - |",
            f"| `deliver`, file destination, `format: {file_format}` | {ours:.2f} "
            f"| {n / ours:,.0f} | {share:.0%} | {verdict} |",
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
    parser.add_argument(
        "--postgres-uri",
        default="postgres://postgres@127.0.0.1:5432/test",
        help="Airflow connection URI of the PostgreSQL server",
    )
    parser.add_argument("--skip-postgres", action="store_true", help="files only")
    parser.add_argument("--skip-files", action="store_true", help="PostgreSQL only")
    parser.add_argument(
        "--variants",
        help="comma-separated PostgreSQL variants to run (default: all): "
        + ", ".join(variant.name for variant in DB_VARIANTS),
    )
    parser.add_argument("--out", type=Path, help="rewrite the marked results section of this file")
    args = parser.parse_args()
    if args.records < 1:
        parser.error("--records must be positive")
    known = {variant.name for variant in DB_VARIANTS}
    args.variants = args.variants.split(",") if args.variants else sorted(known)
    if set(args.variants) - known:
        parser.error(f"--variants: unknown {sorted(set(args.variants) - known)}")

    tmp = Path(tempfile.mkdtemp(prefix="bench-destinations-"))
    # before anything imports Airflow: a private home (the SQLite state store lives there),
    # our connection, quiet logging
    os.environ["AIRFLOW_HOME"] = str(tmp / "airflow")
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.pop("AIRFLOW_CONN_DATAFLOW_STATE", None)
    os.environ[f"AIRFLOW_CONN_{DEST_CONN.upper()}"] = args.postgres_uri
    bench = None
    try:
        bench = Bench(args, tmp)
        db, files = measure(bench)
        table = render(bench, db, files)
    finally:
        if bench is not None:
            bench.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(table)
    if args.out:
        rewrite(args.out, table)


if __name__ == "__main__":
    main()
