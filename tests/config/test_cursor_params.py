"""A source with a cursor gives its route the params reset_cursor and since."""

from __future__ import annotations

import pytest

from airflow_dataflow.config import load_route_text
from airflow_dataflow.errors import RouteConfigError

INCREMENTAL = """\
source:
  type: sql
  connection: dwh
  query: SELECT * FROM orders
  cursor: {column: updated_at, initial: "2024-01-01"}
destinations:
  out: {type: file, path: out.jsonl}
"""


def test_the_params_are_added_with_their_defaults() -> None:
    config = load_route_text(INCREMENTAL, "orders.route.yaml").config
    assert config.param_defaults() == {"reset_cursor": False, "since": None}
    assert config.param_defaults(with_value_only=True) == {"reset_cursor": False}


def test_a_source_without_a_cursor_gets_no_params() -> None:
    text = INCREMENTAL.replace('  cursor: {column: updated_at, initial: "2024-01-01"}\n', "")
    assert load_route_text(text, "orders.route.yaml").config.params == {}


@pytest.mark.parametrize("name", ["since", "reset_cursor"])
def test_a_route_defining_them_itself_is_refused_at_the_param(name: str) -> None:
    text = INCREMENTAL + f"params:\n  region: eu\n  {name}: {{type: string, default: x}}\n"
    with pytest.raises(RouteConfigError) as raised:
        load_route_text(text, "orders.route.yaml")
    [issue] = raised.value.issues
    assert (issue.line, issue.column) == (10, 3)
    assert issue.message.startswith(f"params.{name}: the param {name} is reserved")
    assert "rename this one" in issue.message


def test_the_dag_has_them_as_airflow_params() -> None:
    from airflow_dataflow.dag_factory import build_dag

    route = load_route_text(INCREMENTAL, "orders.route.yaml")
    dag = build_dag(route, register=False)
    assert dag.params["reset_cursor"] is False
    assert dag.params["since"] is None
    schema = dag.params.get_param("since").schema
    assert schema["type"] == ["null", "string", "number"]
    assert dag.params.get_param("reset_cursor").schema["type"] == "boolean"
