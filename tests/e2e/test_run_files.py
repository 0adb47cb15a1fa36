"""Real DAG runs through the ``run`` command: files and SQLite, content checked exactly."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.cli import CliResult, assert_conserved, run_route
from tests.support.routes import read_jsonl, write_route

ORDERS = [
    {"id": 1, "amount": 250, "customer": {"country": "DE", "name": "Anna"}},
    {"id": 2, "amount": 40, "customer": {"country": "US", "name": "Bob"}},
    {"id": 3, "amount": "120", "customer": {"country": "FR", "name": "Chloé"}},
    {"id": 4, "amount": 15, "customer": {"country": "CY", "eu": True, "name": "Dmitri"}},
    {"id": 5, "amount": 999, "customer": {"country": "US", "name": "Eve"}},
]

ROUTE = """
    params:
      min_amount: {{type: number, default: 100}}
    source: {{type: file, path: {source}}}
    rules:
      - name: big
        priority: 10
        when: {{path: $.amount, gt: "{{{{ params.min_amount }}}}"}}
        transform:
          - select: {{id: $.id, amount: $.amount}}
          - cast: {{amount: int}}
        to: [big]
      - name: eu
        when:
          any:
            - {{path: $.customer.country, in: [DE, FR, IT]}}
            - {{path: $.customer.eu, eq: true}}
        transform:
          - select: {{id: $.id, name: $.customer.name, country: $.customer.country}}
        to: [eu]
    unmatched: [rest]
    destinations:
      big: {{type: file, path: "out/big/{{{{ ds }}}}.jsonl"}}
      eu: {{type: database, connection: e2e_sqlite, table: eu_orders, mode: upsert, key: [id]}}
      rest: {{type: file, path: out/rest.csv}}
    dead_letter: {{type: file, path: "out/dead/{{{{ run_id }}}}.jsonl"}}
    {extra}
"""


def _write_orders(folder: Path, lines: list[str]) -> None:
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "orders.jsonl").write_text(
        "".join(line + "\n" for line in lines), encoding="utf-8"
    )


def test_file_source_to_file_and_sqlite_destinations(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    database = tmp_path / "warehouse.db"
    dataflow.connect("e2e_sqlite", f"sqlite:///{database}")  # type: ignore[attr-defined]
    lines = [json.dumps(order) for order in ORDERS]
    lines.insert(2, '{"id": 99, "amount": ')  # invalid JSON
    lines.append("[1, 2]")  # valid JSON, not an object
    _write_orders(tmp_path, lines)
    route = write_route(tmp_path, "orders", ROUTE.format(source="data/orders.jsonl", extra=""))

    summary = run_route(dataflow, route)

    assert summary["dag_id"] == "orders"
    assert summary["counts"] == {
        "read": 7,
        "matched": 4,
        "unmatched": 1,
        "dead_lettered": 2,
        "rules": {"big": 3, "eu": 3},
        "destinations": {"big": 3, "eu": 3, "rest": 1},
        "routed": {"big": 3, "eu": 3, "rest": 1},
        "held_back": {},
        "rejected": {},
    }
    (big_file,) = (tmp_path / "out" / "big").iterdir()
    assert read_jsonl(big_file) == [
        {"id": 1, "amount": 250},
        {"id": 3, "amount": 120},
        {"id": 5, "amount": 999},
    ]
    with open(tmp_path / "out" / "rest.csv", newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [
            ["id", "amount", "customer"],
            ["2", "40", '{"country": "US", "name": "Bob"}'],
        ]
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT id, name, country FROM eu_orders ORDER BY id").fetchall()
    assert rows == [(1, "Anna", "DE"), (3, "Chloé", "FR"), (4, "Dmitri", "CY")]
    (dead_file,) = (tmp_path / "out" / "dead").iterdir()
    assert summary["run_id"] in dead_file.name
    dead = read_jsonl(dead_file)
    assert [(letter["position"].rsplit("/", 1)[-1], letter["record"]) for letter in dead] == [
        ("orders.jsonl:3", '{"id": 99, "amount": '),
        ("extract-00000.jsonl:6", [1, 2]),
    ]
    assert "invalid JSON" in dead[0]["error"] and "not a JSON object" in dead[1]["error"]

    # A second run is a new DAG run; upserts keep one row per key, files are rewritten.
    again = run_route(dataflow, route, "--conf", json.dumps({"min_amount": 500}))
    assert again["run_id"] != summary["run_id"]
    assert again["counts"]["rules"] == {"big": 1, "eu": 3}
    assert read_jsonl(big_file) == [{"id": 5, "amount": 999}]

    # Both runs are in the state store, newest first.
    runs = dataflow("runs", str(route), "--json")
    assert runs.returncode == 0, runs.output[-3000:]
    recorded = [json.loads(line) for line in runs.stdout.splitlines() if line.startswith("{")]
    ours = [run for run in recorded if run["run_id"] in {again["run_id"], summary["run_id"]}]
    assert [run["run_id"] for run in ours] == [
        again["run_id"],
        summary["run_id"],
    ]  # other tests share the id
    assert ours[0]["state"] == "success" and ours[0]["counts"] == again["counts"]
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM eu_orders").fetchone() == (3,)


def test_csv_and_parquet_sources_and_mode_first(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.csv").write_text(
        "id,amount,country\n1,10,DE\n2,200,US\n3,5\n4,300,FR\n", encoding="utf-8"
    )
    pq.write_table(
        pa.Table.from_pylist([{"id": 10, "amount": 700.5, "country": "IT"}]), data / "b.parquet"
    )
    route = write_route(
        tmp_path,
        "mixed",
        """
        source: {type: file, path: "data/*"}
        wait_for:
          - {type: file, path: "data/*.csv", timeout: 60, poke_interval: 1}
        mode: first
        rules:
          - name: big
            priority: 5
            when: {path: $.amount, gte: 200}
            to: [big]
          - name: europe
            when: {path: $.country, in: [DE, FR, IT]}
            transform:
              - rename: {country: market}
              - cast: {id: int}
            to: [europe]
        destinations:
          big: {type: file, path: out/big.json}
          europe: {type: file, path: out/europe.jsonl}
        """,
    )
    summary = run_route(dataflow, route)
    assert summary["counts"]["read"] == 5
    assert summary["counts"]["dead_lettered"] == 1  # the CSV row with 2 of 3 fields
    assert summary["counts"]["unmatched"] == 0
    assert json.loads((tmp_path / "out" / "big.json").read_text()) == [
        {"id": "2", "amount": "200", "country": "US"},
        {"id": "4", "amount": "300", "country": "FR"},
        {"id": 10, "amount": 700.5, "country": "IT"},
    ]
    assert read_jsonl(tmp_path / "out" / "europe.jsonl") == [
        {"id": 1, "amount": "10", "market": "DE"}
    ]
    assert summary["dead_letters"].startswith(
        "file://"
    )  # no dead_letter destination: kept in staging
    (letter,) = read_jsonl(Path(summary["dead_letters"].removeprefix("file://")))
    assert letter["position"].endswith("a.csv:4") and letter["record"] == ["3", "5"]


def test_on_dead_letter_fail_fails_the_run_after_delivering(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    _write_orders(tmp_path, ['{"id": 1, "amount": 5}', "not json"])
    route = write_route(
        tmp_path,
        "strict",
        """
        source: {type: file, path: data/orders.jsonl}
        on_dead_letter: fail
        rules:
          - {name: all, to: [out]}
        destinations:
          out: {type: file, path: out/all.jsonl}
        """,
    )
    result = dataflow("run", str(route), "--json")
    assert result.returncode == 1
    summary = result.summary
    assert summary["state"] == "failed"
    assert summary["failed_tasks"] == ["commit"]
    assert_conserved(summary)  # everything was routed and delivered before commit failed the run
    assert summary["counts"]["dead_lettered"] == 1
    assert read_jsonl(tmp_path / "out" / "all.jsonl") == [{"id": 1, "amount": 5}]


def test_missing_source_file_fails_naming_route_and_setting(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route = write_route(
        tmp_path,
        "nofile",
        """
        source: {type: file, path: data/missing.jsonl}
        rules: [{name: all, to: [out]}]
        destinations:
          out: {type: file, path: out/all.jsonl}
        """,
    )
    result = dataflow("run", str(route), "--json")
    assert result.returncode == 1
    summary = result.summary
    assert summary["failed_tasks"] == ["extract"]  # the others are upstream_failed, not failed
    assert_conserved(summary)
    assert summary["counts"]["read"] == 0 and summary["counts"]["destinations"] == {"out": 0}
    assert "route 'nofile': source.path" in summary["errors"]["extract"]
    assert "matches no file" in summary["errors"]["extract"]


def test_missing_connection_fails_with_the_remedy(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    _write_orders(tmp_path, ['{"id": 1}'])
    route = write_route(
        tmp_path,
        "noconn",
        """
        source: {type: file, path: data/orders.jsonl}
        rules: [{name: all, to: [db]}]
        destinations:
          db: {type: database, connection: nowhere_db, table: t}
        """,
    )
    result = dataflow("run", str(route), "--json")
    assert result.returncode == 1
    assert result.summary["failed_tasks"] == ["deliver_db"]
    assert "AIRFLOW_CONN_NOWHERE_DB" in result.summary["errors"]["deliver_db"]
    # The run still reports what was read and routed, and that nothing was delivered.
    assert result.summary["counts"]["read"] == 1
    assert result.summary["counts"]["destinations"] == {"db": 0}
    assert "nowhere_db" in result.output and "AIRFLOW_CONN_NOWHERE_DB" in result.output
