"""Route-file loading: good files, and every kind of bad file with its exact location."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_dataflow.config import load_route, load_route_text
from airflow_dataflow.errors import RouteConfigError

GOOD = """\
description: Big and EU orders
schedule: "@hourly"
start_date: 2024-01-01
tags: [sales]
params:
  min_amount: {type: number, default: 100}
  region: eu
retries: 2
retry_delay: 30s
source:
  type: file
  path: /data/orders/*.jsonl
  format: jsonl
rules:
  - name: big
    priority: 10
    when: {path: $.amount, gt: "{{ params.min_amount }}"}
    transform:
      - select: {id: $.id, amount: $.amount}
      - cast: {amount: float}
    to: [big_orders]
  - name: eu
    when:
      any:
        - {path: $.customer.country, in: [DE, FR, IT]}
        - not: {path: $.customer.eu, exists: false}
    to: [eu_orders]
mode: first
unmatched: [rest]
destinations:
  big_orders: {type: file, path: "/out/big/{{ ds }}.jsonl", format: jsonl}
  eu_orders: {type: database, connection: dwh, table: eu_orders, mode: upsert, key: [id]}
  rest: {type: file, path: /out/rest.csv, format: csv}
dead_letter: {type: file, path: "/out/dead/{{ run_id }}.jsonl"}
on_dead_letter: fail
"""


def load(text: str, file: str = "t.route.yaml") -> object:
    return load_route_text(textwrap.dedent(text), file)


def issues_of(text: str, file: str = "t.route.yaml") -> list[str]:
    with pytest.raises(RouteConfigError) as caught:
        load(text, file)
    return [str(issue) for issue in caught.value.issues]


def test_good_route_loads_with_every_key() -> None:
    route = load(GOOD, "dags/orders.route.yaml")
    config = route.config
    assert route.route_id == "orders"
    assert config.retry_delay == timedelta(seconds=30)
    assert config.params["min_amount"].default == 100
    assert config.params["region"] == "eu"
    assert [rule.name for rule in config.rules] == ["big", "eu"]
    assert config.destinations["eu_orders"].key == ["id"]
    assert config.mode == "first"
    assert config.on_dead_letter == "fail"


def test_route_key_overrides_file_name() -> None:
    assert load("route: custom_id\n" + GOOD).route_id == "custom_id"


BAD_CASES = [
    pytest.param(
        "source: {type: file, path: [unclosed\n", 2, "YAML syntax error", id="yaml-syntax"
    ),
    pytest.param(
        GOOD.replace("retries: 2", "retires: 2"),
        8,
        "unknown key 'retires' in (top level); did you mean 'retries'?",
        id="unknown-top-key",
    ),
    pytest.param(
        GOOD.replace("table: eu_orders, mode:", "table: eu_orders, mdoe:"),
        32,
        "did you mean 'mode'?",
        id="unknown-destination-key",
    ),
    pytest.param(
        GOOD.replace("to: [eu_orders]", "to: [eu_order]"),
        27,
        "rules[1].to[0]: unknown destination 'eu_order'; did you mean 'eu_orders'?",
        id="unknown-destination-in-to",
    ),
    pytest.param(
        GOOD.replace("unmatched: [rest]", "unmatched: [resst]"),
        29,
        "unmatched[0]: unknown destination 'resst'",
        id="unknown-destination-in-unmatched",
    ),
    pytest.param(
        GOOD.replace("name: eu", "name: big"), 22, "duplicate rule name 'big'", id="duplicate-rule"
    ),
    pytest.param(
        GOOD.replace("  rest: {type: file", "  big_orders: {type: file"),
        33,
        "duplicate key 'big_orders'",
        id="duplicate-destination",
    ),
    pytest.param(
        GOOD.replace("$.customer.country", "'$.customer[[country'"),
        25,
        "invalid JSONPath",
        id="bad-jsonpath",
    ),
    pytest.param(
        GOOD.replace('"@hourly"', '"61 * * * *"'), 2, "invalid cron expression", id="bad-cron"
    ),
    pytest.param(
        GOOD.replace('"@hourly"', '"@hourlyy"'), 2, "unknown schedule preset", id="bad-preset"
    ),
    pytest.param(
        GOOD.replace("retries: 2", "retries: many"),
        8,
        "retries: Input should be a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        GOOD.replace("retry_delay: 30s", "retry_delay: soon"),
        9,
        "invalid duration 'soon'",
        id="bad-duration",
    ),
    pytest.param(
        GOOD.replace("type: file\n  path: /data", "type: fiel\n  path: /data"),
        10,
        "unknown type 'fiel'; did you mean 'file'?",
        id="unknown-source-type",
    ),
    pytest.param(
        GOOD.replace("{type: database", "{type: datbase"),
        32,
        "unknown type 'datbase'; did you mean 'database'?",
        id="unknown-destination-type",
    ),
    pytest.param(
        GOOD.replace("  path: /data/orders/*.jsonl\n", ""),
        10,
        "source: required key 'path' is missing",
        id="missing-required",
    ),
    pytest.param(
        GOOD.replace('gt: "{{ params.min_amount }}"', "gt: 1, lt: 5"),
        17,
        "exactly one operator",
        id="two-operators",
    ),
    pytest.param(
        GOOD.replace("cast: {amount: float}", "cast: {amount: number}"),
        20,
        "rules[0].transform[1].cast.amount",
        id="bad-cast-type",
    ),
    pytest.param(
        GOOD.replace("- cast: {amount: float}", "- {cast: {amount: float}, drop: [x]}"),
        20,
        "exactly one of select, set, rename, drop, cast",
        id="two-step-kinds",
    ),
    pytest.param(
        GOOD.replace("mode: first", "mode: some"),
        28,
        "mode: Input should be 'all' or 'first'",
        id="bad-mode",
    ),
    pytest.param(
        GOOD.replace(
            "$.customer.country, in:",
            "$.customer.country, matches: '([a-'}\n        - {path: $.x, in:",
        ),
        25,
        "invalid regular expression",
        id="bad-regex",
    ),
    pytest.param("- just\n- a list\n", 1, "a route file must be a mapping", id="not-a-mapping"),
    pytest.param(
        GOOD.replace("/out/dead/{{ run_id }}.jsonl", "/out/dead.jsonl"),
        34,
        "dead_letter.path must name the run",
        id="fixed-dead-letter-path",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_CASES)
def test_bad_route_names_file_line_and_problem(text: str, line: int, message: str) -> None:
    issues = issues_of(text, "dags/bad.route.yaml")
    matching = [issue for issue in issues if message in issue]
    assert matching, f"no issue contains {message!r}: {issues}"
    assert matching[0].startswith(f"dags/bad.route.yaml:{line}:"), matching[0]


def test_every_error_is_reported_not_just_the_first() -> None:
    text = (
        GOOD.replace("retries: 2", "retries: x")
        .replace("mode: first", "mode: some")
        .replace("to: [eu_orders]", "to: [nowhere]")
    )
    issues = issues_of(text)
    assert len(issues) == 3, issues


def test_env_substitution_is_per_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDERS_DIR", "/mnt/orders: tricky # not yaml")
    route = load(GOOD.replace("path: /data/orders/*.jsonl", 'path: "${ORDERS_DIR}/*.jsonl"'))
    assert route.config.source.path == "/mnt/orders: tricky # not yaml/*.jsonl"


def test_env_default_and_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    route = load(GOOD.replace("/data/orders/*.jsonl", '"${NOT_SET_ANYWHERE:-/fallback}/*.jsonl"'))
    assert route.config.source.path == "/fallback/*.jsonl"
    issues = issues_of(GOOD.replace("/data/orders/*.jsonl", '"${NOT_SET_ANYWHERE}/x.jsonl"'))
    assert any(":12:" in issue and "NOT_SET_ANYWHERE is not set" in issue for issue in issues), (
        issues
    )


def test_defaults_layering_nearest_folder_wins(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text("retries: 5\ntags: [root]\nschedule: '@daily'\n")
    team = tmp_path / "team"
    team.mkdir()
    (team / "_defaults.yaml").write_text(
        "retries: 1\ndestinations:\n  rest: {type: file, path: /out/team.csv}\n"
    )
    route_file = team / "orders.route.yaml"
    route_file.write_text(GOOD.replace("retries: 2\n", "").replace("tags: [sales]\n", ""))
    route = load_route(route_file, root=tmp_path)
    assert route.config.retries == 1  # nearest defaults win
    assert route.config.tags == ["root"]  # inherited from the root defaults
    assert route.config.schedule == "@hourly"  # the route file wins over every default
    assert route.config.destinations["rest"].path == "/out/rest.csv"  # key by key: route wins
    assert set(route.config.destinations) == {"big_orders", "eu_orders", "rest"}


def test_error_in_defaults_names_the_defaults_file(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text("tags: [a]\nretries: lots\n")
    route_file = tmp_path / "orders.route.yaml"
    route_file.write_text(GOOD.replace("retries: 2\n", ""))
    with pytest.raises(RouteConfigError) as caught:
        load_route(route_file, root=tmp_path)
    assert str(caught.value.issues[0]).startswith(f"{tmp_path / '_defaults.yaml'}:2:1: retries")


def test_unreadable_file_is_a_located_issue(tmp_path: Path) -> None:
    with pytest.raises(RouteConfigError) as caught:
        load_route(tmp_path / "missing.route.yaml")
    assert "cannot read route file" in str(caught.value)


def test_route_id_from_an_unusable_file_name_is_an_error(tmp_path: Path) -> None:
    route_file = tmp_path / "big orders.route.yaml"
    route_file.write_text(GOOD)
    with pytest.raises(RouteConfigError) as caught:
        load_route(route_file)
    assert "route id 'big orders' (from the file name) is not a valid DAG id" in str(caught.value)
    route_file.write_text("route: big_orders\n" + GOOD)
    assert load_route(route_file).route_id == "big_orders"


def test_a_default_of_another_type_is_replaced_not_merged(tmp_path: Path) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "source: {type: sql, connection: dwh, query: SELECT 1}\n"
    )
    route_file = tmp_path / "orders.route.yaml"
    route_file.write_text(GOOD)  # source: {type: file, path: ..., format: jsonl}
    route = load_route(route_file, root=tmp_path)
    assert route.config.source.type == "file"
    assert route.config.source.path == "/data/orders/*.jsonl"
