"""The JSON Schema from ``airflow-dataflow schema`` accepts every example route, rejects bad ones.

YAML note: PyYAML's ``safe_load`` turns an unquoted ``2024-01-01`` into a ``datetime.date``.
Editors validate the YAML as JSON data, where that scalar is the string ``"2024-01-01"`` (the
schema's ``format: date``), so dates are converted to ISO strings before validating.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from airflow_dataflow.config import load_route_text
from airflow_dataflow.errors import RouteConfigError
from tests.support.cli import run_cli

REPO = Path(__file__).resolve().parent.parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"
YAML_BLOCK = re.compile(r"^```ya?ml[^\n]*\n(?P<body>.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    """The schema exactly as the installed command prints it."""
    result = run_cli("schema", env={"AIRFLOW__CORE__UNIT_TEST_MODE": "False"}, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def as_json_data(value: Any) -> Any:
    """YAML values as an editor sees them in JSON: dates and datetimes as ISO strings."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): as_json_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_json_data(item) for item in value]
    return value


def errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in validator.iter_errors(as_json_data(document))
    ]


def example_routes() -> list[Any]:
    files = sorted((REPO / "dags").glob("*.route.yaml"))
    return [pytest.param(path, id=path.name) for path in files]


INVALID_MARK = re.compile(r"^\s*#\s*invalid:?\s*(?P<message>.*)$", re.IGNORECASE)


def doc_blocks() -> list[tuple[str, str, str | None]]:
    """Whole routes in docs/**/*.md YAML blocks: (id, text, message when marked ``# invalid:``).

    A whole route has top-level ``source`` and ``destinations``; fragments (a ``source:``
    snippet alone, a ``_defaults.yaml``) are not routes on their own. A block whose first line
    is ``# invalid: <message>`` shows an error on purpose.
    """
    found = []
    for path in sorted((REPO / "docs").glob("**/*.md")):
        text = path.read_text(encoding="utf-8")
        for match in YAML_BLOCK.finditer(text):
            body = match["body"]
            if "source:" not in body:
                continue
            where = f"{path.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}"
            try:
                document = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                raise AssertionError(f"{where}: YAML block does not parse: {exc}") from exc
            if not (isinstance(document, dict) and {"source", "destinations"} <= set(document)):
                continue
            first_line = body.strip().splitlines()[0]
            invalid = INVALID_MARK.match(first_line)
            found.append((where, body, invalid["message"].strip() if invalid else None))
    return found


def doc_routes(*, invalid: bool) -> list[Any]:
    found = [
        pytest.param(body, message, id=where)
        for where, body, message in doc_blocks()
        if (message is not None) == invalid
    ]
    if not found:
        kind = "invalid-on-purpose route" if invalid else "route"
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"no {kind} in docs"))]
    return found


def test_schema_is_draft_2020_12(schema: dict[str, Any]) -> None:
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)


def test_there_are_example_routes() -> None:
    assert example_routes(), "dags/*.route.yaml: no example route found"


@pytest.mark.parametrize("path", example_routes())
def test_example_route_validates(validator: jsonschema.Draft202012Validator, path: Path) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert errors(validator, document) == []


@pytest.mark.parametrize(("text", "message"), doc_routes(invalid=False))
def test_doc_route_validates(
    validator: jsonschema.Draft202012Validator, text: str, message: None
) -> None:
    assert errors(validator, yaml.safe_load(text)) == []


@pytest.mark.parametrize(("text", "message"), doc_routes(invalid=True))
def test_doc_invalid_route_is_rejected_as_documented(text: str, message: str) -> None:
    """Blocks marked ``# invalid: <message>`` really fail, with the message the docs show."""
    with pytest.raises(RouteConfigError) as caught:
        load_route_text(text, "docs.route.yaml")
    issues = [issue.message for issue in caught.value.issues]
    if message:
        assert any(message in issue for issue in issues), issues


def test_unconverted_yaml_date_is_why_dates_are_converted(
    validator: jsonschema.Draft202012Validator,
) -> None:
    """A ``date`` object is not JSON data: the schema (rightly) wants the ISO string."""
    route = yaml.safe_load(MINIMAL + "start_date: 2024-01-01\n")
    assert isinstance(route["start_date"], date)
    assert not validator.is_valid(route)
    assert validator.is_valid(as_json_data(route))


MINIMAL = """\
source: {type: file, path: in.jsonl}
rules:
  - name: all
    to: [out]
destinations:
  out: {type: file, path: out.jsonl}
"""

FULL = """\
route: orders
description: Big and EU orders to the warehouse
schedule: "@hourly"
start_date: 2024-01-01
catchup: false
tags: [sales]
params:
  min_amount: {type: number, default: 100}
  region: eu
retries: 2
retry_delay: 5m
source:
  type: file
  path: /data/orders/*.jsonl
  format: jsonl
rules:
  - name: big
    priority: 10
    when: {path: $.amount, gt: "{{ params.min_amount }}"}
    transform:
      - select: {id: $.id, amount: $.amount, country: $.customer.country}
      - set: {source: file}
      - rename: {amount: total}
      - drop: [country]
      - cast: {total: float}
    to: [big_orders]
  - name: eu
    when:
      any:
        - {path: $.customer.country, in: [DE, FR, IT]}
        - {path: $.customer.eu, eq: true}
        - not: {path: $.customer.name, matches: "^test"}
        - all:
            - {path: $.tags, contains: vip}
            - {path: $.flag, exists: false}
    to: [eu_orders]
mode: all
unmatched: [rest]
destinations:
  big_orders: {type: file, path: "/out/big/{{ ds }}.jsonl", format: jsonl, compression: gzip}
  eu_orders: {type: database, connection: dwh, table: eu_orders, mode: upsert, key: [id]}
  rest: {type: file, path: /out/rest.csv, format: csv}
dead_letter: {type: file, path: "/out/dead/{{ run_id }}.jsonl"}
on_dead_letter: continue
"""


@pytest.mark.parametrize("text", [MINIMAL, FULL], ids=["minimal", "full"])
def test_good_routes_validate(validator: jsonschema.Draft202012Validator, text: str) -> None:
    assert errors(validator, yaml.safe_load(text)) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r.update(destinatons=r.pop("destinations")), "(top)"),
        (lambda r: r.pop("source"), "(top)"),
        (lambda r: r["source"].update(type="nope"), "source"),
        (lambda r: r["source"].update(pth="x"), "source"),
        (lambda r: r["rules"][0].update(when={"path": "$.a", "equals": 1}), "rules/0/when"),
        (lambda r: r["rules"][0].update(priority="high"), "rules/0/priority"),
        (lambda r: r.update(mode="some"), "mode"),
        (lambda r: r["destinations"]["out"].update(format="xml"), "destinations/out"),
        (lambda r: r.update(retries=-1), "retries"),
        (lambda r: r.update(tags="sales"), "tags"),
    ],
    ids=[
        "misspelt-top-key",
        "missing-source",
        "unknown-source-type",
        "unknown-source-key",
        "unknown-op",
        "priority-not-int",
        "bad-mode",
        "bad-format",
        "negative-retries",
        "tags-not-list",
    ],
)
def test_bad_route_fails(
    validator: jsonschema.Draft202012Validator, change: Any, where: str
) -> None:
    route = yaml.safe_load(MINIMAL)
    change(route)
    found = errors(validator, route)
    assert found, f"schema accepted a bad route: {route}"
    assert any(error.startswith(where) for error in found), found
