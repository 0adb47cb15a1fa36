"""The source cursor through the run phases (no Airflow): where extract starts, what commit saves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.config import LoadedRoute, load_route
from airflow_dataflow.connectors.base import CursorSpec
from airflow_dataflow.context import RunContext
from airflow_dataflow.pipeline.cursor import commit_cursor, since_value
from airflow_dataflow.pipeline.extract import extract
from airflow_dataflow.pipeline.route import route_records
from airflow_dataflow.pipeline.summary import summarize
from airflow_dataflow.staging import StagingArea, read_lines
from airflow_dataflow.state.cursors import CursorError, CursorStore
from tests.support.routes import write_route

ROUTE = """
    source:
      type: sql
      connection: {conn}
      query: SELECT id, note FROM events
      cursor: {{column: id, initial: {initial}}}
    rules:
      - {{name: all, to: [out]}}
    destinations:
      out: {{type: file, path: out/events.jsonl}}
"""


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CursorStore:
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW_CONN_DATAFLOW_STATE", raising=False)
    return CursorStore.open()


@pytest.fixture
def events(tmp_path: Path, define_conn: Callable[..., str]) -> Iterator[tuple[str, sa.Engine]]:
    path = tmp_path / "source.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE events (id INTEGER, note TEXT)"))
    yield define_conn(f"sqlite:///{path}", "src"), engine
    engine.dispose()


def _insert(engine: sa.Engine, *ids: int | None) -> None:
    with engine.begin() as conn:
        for id_ in ids:
            conn.execute(sa.text("INSERT INTO events VALUES (:id, 'n')"), {"id": id_})


def _route(tmp_path: Path, conn: str, initial: Any = 0) -> LoadedRoute:
    return load_route(
        write_route(tmp_path / "routes", "events", ROUTE.format(conn=conn, initial=initial))
    )


def _extract(
    route: LoadedRoute, tmp_path: Path, run_id: str, **params: Any
) -> tuple[dict[str, Any], list[int]]:
    context = RunContext(
        route=route.route_id,
        run_id=run_id,
        params={**route.config.param_defaults(), **params},
        route_file=route.file,
    )
    staging = StagingArea(f"file://{tmp_path / 'staging'}", route.route_id, run_id)
    manifest = extract(route, context, staging)
    ids = [
        record["id"] for _, lines in read_lines(manifest["records"]) for record in _decode(lines)
    ]
    return manifest, ids


def _decode(lines: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for _, raw in lines]


def test_each_run_reads_after_the_committed_cursor(
    tmp_path: Path, events: tuple[str, sa.Engine], store: CursorStore
) -> None:
    conn, engine = events
    route = _route(tmp_path, conn)
    _insert(engine, 3, 1, 2)

    manifest, ids = _extract(route, tmp_path, "run-1")
    assert ids == [1, 2, 3]
    assert manifest["cursor"] == {
        "stream": "source",
        "column": "id",
        "previous": None,
        "start": 0,
        "value": 3,
    }
    assert store.get("events") is None  # extract never commits
    assert commit_cursor("events", manifest, "run-1") is True
    committed = store.get("events", CursorSpec("id", 0))
    assert committed is not None and (committed.value, committed.run_id) == (3, "run-1")

    _insert(engine, 5, 4)
    manifest, ids = _extract(route, tmp_path, "run-2")
    assert ids == [4, 5]
    assert (manifest["cursor"]["previous"], manifest["cursor"]["start"]) == (3, 3)
    assert commit_cursor("events", manifest, "run-2") is True

    manifest, ids = _extract(route, tmp_path, "run-3")
    assert ids == [] and manifest["cursor"]["value"] is None
    assert commit_cursor("events", manifest, "run-3") is False  # nothing read: cursor stays
    committed = store.get("events")
    assert committed is not None and (committed.value, committed.run_id) == (5, "run-2")


def test_since_wins_then_reset_then_the_committed_cursor(
    tmp_path: Path, events: tuple[str, sa.Engine], store: CursorStore
) -> None:
    conn, engine = events
    route = _route(tmp_path, conn, initial=1)
    _insert(engine, 1, 2, 3, 4)
    store.save("events", "id", 3, run_id="before")

    assert _extract(route, tmp_path, "a")[1] == [4]
    assert _extract(route, tmp_path, "b", reset_cursor=True)[1] == [2, 3, 4]  # after initial
    assert _extract(route, tmp_path, "c", since=2)[1] == [3, 4]
    assert _extract(route, tmp_path, "d", since="1", reset_cursor=True)[1] == [2, 3, 4]
    manifest, _ = _extract(route, tmp_path, "e", since=0)
    assert manifest["cursor"] == {
        "stream": "source",
        "column": "id",
        "previous": 3,
        "start": 0,
        "value": 4,
    }
    assert commit_cursor("events", manifest, "e") is True  # a backfill commits what it read
    committed = store.get("events")
    assert committed is not None and committed.value == 4


def test_a_reset_run_replaces_a_corrupted_cursor(
    tmp_path: Path, events: tuple[str, sa.Engine], store: CursorStore
) -> None:
    conn, engine = events
    route = _route(tmp_path, conn)
    _insert(engine, 1, 2)
    store.save("events", "id", 1, run_id="before")
    with store.engine.begin() as connection:
        connection.execute(sa.text("UPDATE dataflow_sync_cursors SET cursor = 'oops'"))

    with pytest.raises(CursorError, match=r"route 'events': the committed cursor .* 'oops'"):
        _extract(route, tmp_path, "broken")

    manifest, ids = _extract(route, tmp_path, "reset", reset_cursor=True)
    assert ids == [1, 2] and manifest["cursor"]["previous"] is None
    assert commit_cursor("events", manifest, "reset") is True
    committed = store.get("events", CursorSpec("id", 0))
    assert committed is not None and committed.value == 2


def test_a_value_equal_to_the_committed_one_is_not_rewritten(store: CursorStore) -> None:
    store.save("events", "id", 4, run_id="first")
    manifest = {
        "cursor": {"stream": "source", "column": "id", "previous": 4, "start": 0, "value": 4}
    }
    assert commit_cursor("events", manifest, "again") is False
    assert commit_cursor("events", {"cursor": None}, "plain") is False
    assert commit_cursor("events", None, "no extract") is False
    committed = store.get("events")
    assert committed is not None and committed.run_id == "first"


@pytest.mark.parametrize(
    ("initial", "given", "expected"),
    [
        (0, 5, 5),
        (0, "5", 5),
        (0, "2.5", 2.5),
        (None, "5", "5"),
        ("2024-01-01", "2024-06-01", "2024-06-01"),
    ],
)
def test_since_values(initial: Any, given: Any, expected: Any) -> None:
    assert since_value("events", CursorSpec("c", initial), given) == expected


@pytest.mark.parametrize(
    ("initial", "given", "message"),
    [
        (0, "yesterday", "it must be a number like source.cursor.initial (0)"),
        ("2024-01-01", 5, "it must be a string like source.cursor.initial ('2024-01-01')"),
        (None, [1], "it must be a string or a number"),
        (None, {"a": 1}, "it must be a string or a number"),
    ],
)
def test_bad_since_values_name_the_route_and_param(initial: Any, given: Any, message: str) -> None:
    with pytest.raises(CursorError) as raised:
        since_value("events", CursorSpec("c", initial), given)
    assert str(raised.value).startswith("route 'events': the run's param since is ")
    assert message in str(raised.value)


def test_null_cursor_rows_become_a_run_summary_warning(
    tmp_path: Path, events: tuple[str, sa.Engine], store: CursorStore
) -> None:
    conn, engine = events
    route = load_route(
        write_route(
            tmp_path / "routes",
            "events",
            ROUTE.format(conn=conn, initial=0).replace(", initial: 0", ""),
        )
    )
    _insert(engine, 1, None, 2)
    context = RunContext(route="events", run_id="r", route_file=route.file)
    staging = StagingArea(f"file://{tmp_path / 'staging'}", "events", "r")
    manifest = extract(route, context, staging)
    assert manifest["read"] == 3 and manifest["cursor"]["value"] == 2
    [warning] = manifest["warnings"]
    assert "source.cursor.column 'id' was NULL in 1 rows" in warning
    routing = route_records(route, context, staging, manifest)
    summary = summarize(route, "r", routing, {"out": {"delivered": 3}})
    assert summary["warnings"] == [warning]


def test_a_source_without_a_cursor_has_none_in_its_manifest(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"a": 1}\n', encoding="utf-8")
    route = load_route(
        write_route(
            tmp_path,
            "plain",
            """
            source: {type: file, path: in.jsonl}
            destinations:
              out: {type: file, path: out.jsonl}
            """,
        )
    )
    context = RunContext(route="plain", run_id="r", route_file=route.file)
    manifest = extract(route, context, StagingArea(f"file://{tmp_path / 's'}", "plain", "r"))
    assert manifest["cursor"] is None and manifest["warnings"] == []
