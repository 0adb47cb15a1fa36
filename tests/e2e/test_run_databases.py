"""Real DAG runs with the ``sql`` source and ``database`` destination on SQLite, PostgreSQL, MariaDB."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult, assert_conserved
from tests.support.databases import Database
from tests.support.routes import read_jsonl, write_jsonl, write_route

ROUTE = """
    params:
      since_id: {{type: integer, default: 0}}
    wait_for:
      - {{type: sql, connection: {conn}, query: "SELECT COUNT(*) FROM {source}", timeout: 60, poke_interval: 1}}
    source:
      type: sql
      connection: {conn}
      query: SELECT id, customer, country, amount FROM {source} WHERE id > :since_id ORDER BY id
      parameters: {{since_id: "{{{{ params.since_id }}}}"}}
    rules:
      - name: eu
        when: {{path: $.country, in: [DE, FR]}}
        transform:
          - set: {{region: EU}}
        to: [warehouse]
      - name: large
        when: {{path: $.amount, gte: 100}}
        to: [large_file]
    unmatched: [other_file]
    destinations:
      warehouse: {{type: database, connection: {conn}, table: {target}, mode: upsert, key: [id]}}
      large_file: {{type: file, path: out/large.jsonl}}
      other_file: {{type: file, path: out/other.csv}}
"""


def test_sql_source_to_database_destination(
    db: Database, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    db.execute(
        "CREATE TABLE "
        + db.table("orders_src")
        + " (id INTEGER PRIMARY KEY, customer VARCHAR(50), country VARCHAR(2), amount NUMERIC(10, 2))"
    )
    for row in [
        (1, "Anna", "DE", "250.00"),
        (2, "Bob", "US", "40.50"),
        (3, "Chloé", "FR", "12.00"),
        (4, "Eve", "US", "999.99"),
    ]:
        db.execute(
            "INSERT INTO " + db.table("orders_src") + " VALUES (:id, :customer, :country, :amount)",
            id=row[0],
            customer=row[1],
            country=row[2],
            amount=row[3],
        )
    route = write_route(
        tmp_path,
        "warehouse",
        ROUTE.format(conn=db.conn_id, source=db.table("orders_src"), target=db.table("eu_orders")),
    )

    result = dataflow("run", str(route), "--json")
    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert_conserved(summary)
    assert summary["counts"]["rules"] == {"eu": 2, "large": 2}
    assert summary["counts"]["destinations"] == {"warehouse": 2, "large_file": 2, "other_file": 1}
    rows = [{key: value for key, value in row.items()} for row in db.rows("eu_orders")]
    assert rows == [
        {"id": 1, "customer": "Anna", "country": "DE", "amount": 250, "region": "EU"},
        {"id": 3, "customer": "Chloé", "country": "FR", "amount": 12, "region": "EU"},
    ]
    assert read_jsonl(tmp_path / "out" / "large.jsonl") == [
        {"id": 1, "customer": "Anna", "country": "DE", "amount": 250},
        {"id": 4, "customer": "Eve", "country": "US", "amount": 999.99},
    ]
    assert (tmp_path / "out" / "other.csv").read_text(encoding="utf-8").splitlines() == [
        "id,customer,country,amount",
        "2,Bob,US,40.5",
    ]

    # A param from --conf reaches the bound query parameter; upsert updates in place.
    db.execute("UPDATE " + db.table("orders_src") + " SET customer = 'Chloé B.' WHERE id = 3")
    again = dataflow("run", str(route), "--json", "--conf", json.dumps({"since_id": 2}))
    assert again.summary["state"] == "success", again.output[-5000:]
    assert again.summary["counts"]["read"] == 2
    assert_conserved(again.summary)
    assert [row["customer"] for row in db.rows("eu_orders")] == ["Anna", "Chloé B."]


DOCS_PAGE = Path(__file__).parents[2] / "docs" / "destinations" / "database.md"


def _docs_example() -> str:
    """The complete route example of docs/destinations/database.md."""
    text = DOCS_PAGE.read_text(encoding="utf-8")
    section = text.split("## Complete example", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_docs_example_mirrors_a_crm_export(
    db: Database, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    example = _docs_example()
    assert "connection: dwh" in example and "table: customers" in example
    route_text = example.replace("connection: dwh", f"connection: {db.conn_id}").replace(
        "table: customers", f"table: {db.table('customers')}"
    )
    route = write_route(tmp_path, "crm_customers", route_text)
    export = tmp_path / "exports" / "customers.jsonl"
    customer = {"name": "", "E-mail": "", "Signed up": "2024-01-05T10:00:00+01:00", "status": "ok"}
    write_jsonl(
        export,
        [
            {"id": 1, **customer, "name": "Ann", "E-mail": "ann@example.com"},
            {"id": 2, **customer, "name": "Bob", "E-mail": "bob@example.com"},
            {"id": 3, **customer, "name": "Cid", "status": "test"},
            {"id": 4, **customer, "name": "Dee", "E-mail": "dee@example.com"},
        ],
    )
    first = dataflow("run", str(route), "--json")
    assert first.summary["state"] == "success", first.output[-5000:]
    assert_conserved(first.summary)
    assert first.summary["counts"]["destinations"] == {"warehouse": 3}
    rows = db.rows("customers")
    assert [(row["id"], row["name"], row["email"]) for row in rows] == [
        (1, "Ann", "ann@example.com"),
        (2, "Bob", "bob@example.com"),
        (4, "Dee", "dee@example.com"),
    ]
    assert rows[0]["signed_up"].replace(tzinfo=None) == dt.datetime(2024, 1, 5, 9, 0)

    # Bob left the export, Ann changed and has a plan, Eve is new, Dee's date is broken
    write_jsonl(
        export,
        [
            {"id": 1, **customer, "name": "Ann B.", "E-mail": "ann@example.com", "plan": "pro"},
            {"id": 4, **customer, "name": "Dee", "Signed up": "last tuesday"},
            {"id": 5, **customer, "name": "Eve", "E-mail": "eve@example.com"},
        ],
    )
    second = dataflow("run", str(route), "--json")
    summary = second.summary
    assert summary["state"] == "success", second.output[-5000:]
    assert_conserved(summary)
    assert summary["counts"]["destinations"] == {"warehouse": 2}
    assert summary["counts"]["rejected"] == {"warehouse": 1}
    rows = db.rows("customers")
    assert [(row["id"], row["name"], row["email"], row["plan"]) for row in rows] == [
        (1, "Ann B.", "ann@example.com", "pro"),
        (4, "Dee", "dee@example.com", None),  # refused (dead letter): kept as it was
        (5, "Eve", "eve@example.com", None),
    ]
    letters = dataflow("dead-letters", "list", str(route), "--json")
    assert letters.returncode == 0, letters.output[-3000:]
    assert "'last tuesday' is not an ISO 8601 date and time" in letters.stdout
