"""The checks behind ``wait_for`` sensors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.config.waits import FileWait, HttpWait, SqlWait
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from airflow_dataflow.pipeline.waits import file_ready, http_ready, sql_ready
from tests.support.http_endpoint import Endpoint


def test_file_wait_renders_the_path_and_resolves_it_against_the_route(tmp_path: Path) -> None:
    context = RunContext(route="r", ds="2024-05-01", route_file=str(tmp_path / "r.route.yaml"))
    wait = FileWait(type="file", path="data/{{ ds }}/_SUCCESS")
    assert not file_ready(wait, context)
    (tmp_path / "data" / "2024-05-01").mkdir(parents=True)
    (tmp_path / "data" / "2024-05-01" / "_SUCCESS").touch()
    assert file_ready(wait, context)
    assert file_ready(FileWait(type="file", path="data/*/_SUCCESS"), context)


def test_sql_wait_is_true_when_the_first_cell_is_truthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "w.db"
    with sa.create_engine(f"sqlite:///{database}").begin() as conn:
        conn.execute(sa.text("CREATE TABLE loads (day TEXT, done INTEGER)"))
        conn.execute(sa.text("INSERT INTO loads VALUES ('2024-05-01', 1), ('2024-05-02', 0)"))
    monkeypatch.setenv("AIRFLOW_CONN_WAIT_DB", f"sqlite:///{database}")
    context = RunContext(route="r", ds="2024-05-01", params={"day": "2024-05-02"})

    def wait(day: str) -> SqlWait:
        return SqlWait(
            type="sql",
            connection="wait_db",
            query="SELECT done FROM loads WHERE day = :day",
            parameters={"day": day},
        )

    assert sql_ready(wait("{{ ds }}"), context, setting="wait_for[0].connection")
    assert not sql_ready(wait("{{ params.day }}"), context, setting="wait_for[0].connection")
    assert not sql_ready(wait("2030-01-01"), context, setting="wait_for[0].connection")  # no row


def test_sql_wait_with_a_missing_connection_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    wait = SqlWait(type="sql", connection="nowhere", query="SELECT 1")
    with pytest.raises(SourceError, match=r"wait_for\[2\]\.connection"):
        sql_ready(wait, RunContext(route="r"), setting="wait_for[2].connection")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint(503, 404, 200)
    yield server
    server.close()


def test_http_wait_is_ready_on_2xx_only(endpoint: Endpoint) -> None:
    context = RunContext(route="r", ds="2024-05-01")
    wait = HttpWait(type="http", url=endpoint.url + "/ready/{{ ds }}")
    assert [http_ready(wait, context, "wait_for[0]") for _ in range(3)] == [False, False, True]
    assert [path for _, path, _ in endpoint.seen] == ["/ready/2024-05-01"] * 3


def test_http_wait_through_a_connection_with_endpoint_headers_and_head(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = endpoint.url.removeprefix("http://").split(":")
    conn = {"conn_type": "http", "host": host, "port": int(port), "extra": {"X-Team": "data"}}
    monkeypatch.setenv("AIRFLOW_CONN_STATUS_API", json.dumps(conn))
    endpoint.statuses = [204]
    wait = HttpWait(
        type="http",
        connection="status_api",
        endpoint="/loads/{{ params.day }}",
        method="HEAD",
        headers={"Authorization": "Bearer {{ params.token }}"},
    )
    context = RunContext(route="r", params={"day": "2024-05-02", "token": "t0k"})
    assert http_ready(wait, context, "wait_for[0]")
    [(method, path, headers)] = endpoint.seen
    assert (method, path) == ("HEAD", "/loads/2024-05-02")
    assert headers["X-Team"] == "data" and headers["Authorization"] == "Bearer t0k"


def test_http_wait_on_a_closed_port_is_not_ready() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    wait = HttpWait(type="http", url=f"http://127.0.0.1:{port}/", timeout=5)
    assert not http_ready(wait, RunContext(route="r"), "wait_for[0]")


def test_http_wait_with_a_missing_connection_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    wait = HttpWait(type="http", connection="nowhere")
    with pytest.raises(SourceError, match=r"wait_for\[1\]: Airflow connection 'nowhere'"):
        http_ready(wait, RunContext(route="r"), "wait_for[1]")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "give either url or connection"),
        ({"url": "http://x/", "connection": "c"}, "give either url or connection"),
        ({"url": "http://x/", "endpoint": "/a"}, "endpoint goes with connection"),
        ({"url": "http://x/", "method": "POST"}, "'GET' or 'HEAD'"),
    ],
)
def test_http_wait_settings_that_cannot_work_are_refused(
    settings: dict[str, str], message: str
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        HttpWait(type="http", **settings)


def test_bigquery_table_wait_is_ready_once_the_table_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_dataflow.config.waits import BigQueryTableWait
    from airflow_dataflow.pipeline.waits import bigquery_table_ready
    from tests.fakes.bigquery import FakeBigQuery

    with FakeBigQuery() as bigquery:
        monkeypatch.setenv("AIRFLOW_CONN_BQ_WAIT", bigquery.connection())
        context = RunContext(route="r", ds="2024-05-01")
        wait = BigQueryTableWait(
            type="bigquery_table", connection="bq_wait", table="shop.orders_{{ ds_nodash }}"
        )
        assert not bigquery_table_ready(wait, context, "wait_for[0]")
        bigquery.create_table("shop.orders_20240501", {"id": "INT64"})
        assert bigquery_table_ready(wait, context, "wait_for[0]")
        gets = [r.path for r in bigquery.requests if r.method == "tables.get"]
        assert gets and all(path.endswith("/datasets/shop/tables/orders_20240501") for path in gets)


def test_bigquery_table_wait_with_a_missing_connection_names_the_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_dataflow.config.waits import BigQueryTableWait
    from airflow_dataflow.pipeline.waits import bigquery_table_ready

    monkeypatch.delenv("AIRFLOW_CONN_NOWHERE", raising=False)
    wait = BigQueryTableWait(type="bigquery_table", connection="nowhere", table="shop.orders")
    with pytest.raises(SourceError, match=r"wait_for\[3\]\.connection 'nowhere' is not a defined"):
        bigquery_table_ready(wait, RunContext(route="r"), "wait_for[3]")
