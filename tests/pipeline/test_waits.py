"""The checks behind ``wait_for`` sensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_dataflow.config.waits import FileWait, SqlWait
from airflow_dataflow.context import RunContext
from airflow_dataflow.errors import SourceError
from airflow_dataflow.pipeline.waits import file_ready, sql_ready


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
