"""The ``airflow-dataflow`` command line: validate, schema, test-route (DESIGN.md contract)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import airflow.configuration  # noqa: F401 - unit-test mode logs one line on load: before capsys
import jsonschema
import pytest

from airflow_dataflow.cli import main
from tests.support.cli import run_cli
from tests.support.routes import write_jsonl, write_route

# Subprocesses run as users do: outside Airflow's unit-test mode (which logs to stdout).
USER_ENV = {"AIRFLOW__CORE__UNIT_TEST_MODE": "False"}
ISSUE_LINE = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")

GOOD = """
    description: Big orders to a file
    schedule: null
    params:
      min_amount: {type: number, default: 100}
      country: DE
    source: {type: file, path: data/orders.jsonl}
    rules:
      - name: big
        priority: 10
        when: {path: $.amount, gt: "{{ params.min_amount }}"}
        transform:
          - select: {id: $.id, amount: $.amount}
        to: [big_orders]
      - name: local
        when: {path: $.country, eq: "{{ params.country }}"}
        to: [local]
    unmatched: [rest]
    destinations:
      big_orders: {type: file, path: out/big.jsonl}
      local: {type: file, path: out/local.jsonl}
      rest: {type: file, path: out/rest.csv}
"""

# Each error is on a known line and column (see the assertions below).
BROKEN = """\
schedule: "61 * * * *"
source:
  type: file
  path: in.jsonl
rules:
  - name: big
    whn: {path: $.amount, gt: 10}
    to: [big_ordrs]
  - name: bad_path
    when: {path: "$.[", eq: 1}
    to: [big]
destinations:
  big: {type: file, path: out.jsonl}
  other: {type: fiel, path: out.jsonl}
"""

MISSPELT_TOP_LEVEL = """\
source: {type: file, path: in.jsonl}
rules:
  - name: all
    to: [out]
destinatons:
  out: {type: file, path: out.jsonl}
"""


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, [line for line in captured.out.splitlines() if line.strip()], captured.err


def issues(lines: list[str]) -> list[tuple[str, int, int, str]]:
    parsed = []
    for line in lines:
        match = ISSUE_LINE.match(line)
        assert match, f"not FILE:LINE:COL: message: {line!r}"
        parsed.append((match["file"], int(match["line"]), int(match["col"]), match["message"]))
    return parsed


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    routes = tmp_path / "routes"
    write_route(routes, "good", GOOD)
    (routes / "broken.route.yaml").write_text(BROKEN, encoding="utf-8")
    (routes / "sub").mkdir()
    (routes / "sub" / "typo.route.yaml").write_text(MISSPELT_TOP_LEVEL, encoding="utf-8")
    (routes / "notes.yaml").write_text("not: [a route", encoding="utf-8")  # not *.route.yaml
    return routes


# --- validate ---------------------------------------------------------------------------------


def test_validate_reports_every_error_with_its_location(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = cli(capsys, "validate", str(folder))
    assert code == 1
    found = issues(lines)
    broken = str(folder / "broken.route.yaml")
    typo = str(folder / "sub" / "typo.route.yaml")
    assert {file for file, *_ in found} == {broken, typo}
    by_place = {(file, line, col): message for file, line, col, message in found}

    assert "invalid cron expression '61 * * * *'" in by_place[(broken, 1, 1)]
    assert by_place[(broken, 7, 5)] == "unknown key 'whn' in rules[0]; did you mean 'when'?"
    assert "unknown destination 'big_ordrs'" in by_place[(broken, 8, 10)]
    assert "invalid JSONPath '$.['" in by_place[(broken, 10, 12)]
    other = by_place[(broken, 14, 3)]
    assert "unknown type 'fiel'" in other and "did you mean 'file'?" in other
    assert "did you mean 'destinations'?" in by_place[(typo, 5, 1)]
    assert len([1 for file, *_ in found if file == broken]) == 5
    assert "3 route file(s) checked, 2 invalid" in err


def test_validate_json_gives_one_object_per_error(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text_lines, _ = cli(capsys, "validate", str(folder))
    json_code, json_lines, _ = cli(capsys, "validate", "--json", str(folder))
    assert code == json_code == 1
    objects = [json.loads(line) for line in json_lines]
    assert len(objects) == len(text_lines)
    for obj, text in zip(objects, text_lines, strict=True):
        assert set(obj) == {"file", "line", "column", "message"}
        assert isinstance(obj["line"], int) and isinstance(obj["column"], int)
        assert f"{obj['file']}:{obj['line']}:{obj['column']}: {obj['message']}" == text
    assert {
        "file": str(folder / "broken.route.yaml"),
        "line": 7,
        "column": 5,
        "message": "unknown key 'whn' in rules[0]; did you mean 'when'?",
    } in objects


def test_validate_only_good_files_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_route(tmp_path / "a", "one", GOOD)
    write_route(tmp_path / "a", "two", GOOD)
    code, lines, err = cli(capsys, "validate", str(tmp_path / "a"))
    assert (code, lines) == (0, [])
    assert "2 route file(s) checked, 0 invalid" in err
    assert cli(capsys, "validate", "--json", str(tmp_path / "a"))[:2] == (0, [])


def test_validate_files_and_folders_together(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_route(tmp_path / "other", "extra", GOOD)
    code, lines, _ = cli(capsys, "validate", str(good), str(folder / "sub"))
    assert code == 1
    assert {file for file, *_ in issues(lines)} == {str(folder / "sub" / "typo.route.yaml")}


def test_validate_duplicate_route_ids_across_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_route(tmp_path, "first", "route: shared\n" + GOOD.replace("\n    ", "\n"))
    second = write_route(tmp_path, "second", "route: shared\n" + GOOD.replace("\n    ", "\n"))
    code, lines, _ = cli(capsys, "validate", str(tmp_path))
    assert code == 1
    [(file, _, _, message)] = issues(lines)
    assert file == str(second)
    assert "'shared'" in message and str(first) in message


def test_validate_duplicate_id_from_file_name_and_route_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_route(tmp_path / "a", "orders", GOOD)
    write_route(tmp_path / "b", "renamed", "route: orders\n" + GOOD.replace("\n    ", "\n"))
    code, lines, _ = cli(capsys, "validate", str(tmp_path))
    assert code == 1
    assert "route id 'orders' is already defined" in issues(lines)[0][3]


def test_validate_yaml_syntax_error_is_located(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "syntax.route.yaml"
    path.write_text("source:\n  type: file\n  path: [unclosed\n", encoding="utf-8")
    code, lines, _ = cli(capsys, "validate", str(path))
    assert code == 1
    [(file, line, col, _)] = issues(lines)
    assert file == str(path) and line >= 3 and col >= 1


def test_validate_folder_without_routes_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = cli(capsys, "validate", str(tmp_path))
    assert code == 1
    assert "no *.route.yaml file found" in lines[0]


def test_validate_missing_file_is_an_error_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.route.yaml"
    code, lines, _ = cli(capsys, "validate", str(missing))
    assert code == 1
    assert issues(lines)[0][0] == str(missing)


# --- schema -----------------------------------------------------------------------------------


def test_schema_prints_a_draft_2020_12_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"source", "destinations"} <= set(schema["required"])


def test_installed_command_prints_the_schema() -> None:
    """The console script itself, as users run it."""
    result = run_cli("schema", env=USER_ENV, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_installed_command_validate_exit_codes(folder: Path) -> None:
    bad = run_cli("validate", str(folder), env=USER_ENV, timeout=120)
    assert bad.returncode == 1
    found = issues(bad.stdout.splitlines())
    assert (str(folder / "broken.route.yaml"), 7, 5) in {
        (f, line, col) for f, line, col, _ in found
    }
    as_json = run_cli("validate", "--json", str(folder), env=USER_ENV, timeout=120)
    assert as_json.returncode == 1
    assert [json.loads(line)["line"] for line in as_json.stdout.splitlines()] == [
        line for _, line, _, _ in found
    ]
    good = run_cli("validate", str(folder / "good.route.yaml"), env=USER_ENV, timeout=120)
    assert good.returncode == 0, good.output[-2000:]


# --- test-route -------------------------------------------------------------------------------


@pytest.fixture
def good_route(tmp_path: Path) -> Path:
    return write_route(tmp_path / "dags", "orders", GOOD)


def test_route(
    capsys: pytest.CaptureFixture[str], route: Path, records: Path, *extra: str
) -> list[dict]:
    code, lines, err = cli(capsys, "test-route", str(route), "--records", str(records), *extra)
    assert code == 0, err
    return [json.loads(line) for line in lines]


test_route.__test__ = False  # a helper, not a test


def test_test_route_one_line_per_record_in_order(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_jsonl(
        tmp_path / "records.jsonl",
        [
            {"id": 1, "amount": 500, "country": "FR"},
            {"id": 2, "amount": 5, "country": "DE"},
            {"id": 3, "amount": 500, "country": "DE"},
            {"id": 4, "amount": 5, "country": "US"},
        ],
    )
    results = test_route(capsys, good_route, records)
    assert [result["index"] for result in results] == [0, 1, 2, 3]
    assert [result["rules"] for result in results] == [["big"], ["local"], ["big", "local"], []]
    assert [result["destinations"] for result in results] == [
        ["big_orders"],
        ["local"],
        ["big_orders", "local"],
        ["rest"],
    ]
    assert results[0]["outputs"] == {"big_orders": [{"id": 1, "amount": 500}]}
    assert results[1]["outputs"] == {"local": [{"id": 2, "amount": 5, "country": "DE"}]}
    assert results[3]["outputs"] == {"rest": [{"id": 4, "amount": 5, "country": "US"}]}
    assert "explain" not in results[0]


def test_test_route_reports_an_invalid_json_line_and_goes_on(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(
        '{"id": 1, "amount": 500}\n\n{"id": 2, "amount": \n{"id": 3, "amount": 500}\n',
        encoding="utf-8",
    )
    results = test_route(capsys, good_route, records)
    assert [result["index"] for result in results] == [0, 1, 2]
    bad = results[1]
    assert bad["line"] == 3
    assert bad["rules"] == [] and bad["destinations"] == []
    assert "invalid JSON" in bad["error"]
    assert results[2]["rules"] == ["big"]


def test_test_route_explain_adds_each_rule_decision(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "amount": 500, "country": "US"}])
    [result] = test_route(capsys, good_route, records, "--explain")
    decisions = {item["rule"]: item["matched"] for item in result["explain"]}
    assert decisions == {"big": True, "local": False}
    assert result["rules"] == ["big"]


def test_test_route_conf_overrides_params(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "amount": 50, "country": "FR"}])
    [default] = test_route(capsys, good_route, records)
    assert default["rules"] == []
    [lowered] = test_route(capsys, good_route, records, "--conf", '{"min_amount": 10}')
    assert lowered["rules"] == ["big"]
    [country] = test_route(capsys, good_route, records, "--conf", '{"country": "FR"}')
    assert country["rules"] == ["local"]


def test_test_route_bad_conf_and_missing_records_are_errors(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_jsonl(tmp_path / "r.jsonl", [{"id": 1}])
    code, _, err = cli(
        capsys, "test-route", str(good_route), "--records", str(records), "--conf", "{"
    )
    assert code == 1 and "--conf" in err
    code, _, err = cli(
        capsys, "test-route", str(good_route), "--records", str(records), "--conf", "[1]"
    )
    assert code == 1 and "JSON object" in err
    code, _, err = cli(capsys, "test-route", str(good_route), "--records", str(tmp_path / "nope"))
    assert code == 1 and "--records" in err


def test_test_route_on_an_invalid_route_prints_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    route = tmp_path / "broken.route.yaml"
    route.write_text(BROKEN, encoding="utf-8")
    records = write_jsonl(tmp_path / "r.jsonl", [{"id": 1}])
    code, lines, _ = cli(capsys, "test-route", str(route), "--records", str(records))
    assert code == 1
    assert (str(route), 7, 5) in {(file, line, col) for file, line, col, _ in issues(lines)}


def test_installed_command_test_route(good_route: Path, tmp_path: Path) -> None:
    records = write_jsonl(tmp_path / "r.jsonl", [{"id": 1, "amount": 500}, {"id": 2}])
    result = run_cli(
        "test-route", str(good_route), "--records", str(records), env=USER_ENV, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [(line["index"], line["rules"], line["destinations"]) for line in lines] == [
        (0, ["big"], ["big_orders"]),
        (1, [], ["rest"]),
    ]


def test_validate_compiles_every_rule_like_a_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_route(
        tmp_path,
        "deep",
        """
        params:
          min: {type: number, default: 5}
          must: {type: string}
        source: {type: file, path: x.jsonl}
        rules:
          - {name: ok, when: {path: $.a, gt: "{{ params.min }}"}, to: [out]}
          - {name: needs_conf, when: {path: $.a, eq: "{{ params.must }}"}, to: [out]}
          - {name: bad_value, when: {path: $.a, gt: [1]}, to: [out]}
          - {name: record_template, transform: [{set: {x: "{{ record.a }}"}}], to: [out]}
          - {name: typo, when: {path: $.a, eq: "{{ params.mni }}"}, to: [out]}
        destinations:
          out: {type: file, path: out.jsonl}
        """,
    )
    assert main(["validate", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    file = tmp_path / "deep.route.yaml"
    assert len(lines) == 3, lines  # `needs_conf` is fine: its param comes from the trigger's conf
    assert (
        lines[0].startswith(f"{file}:8:5: rule 'bad_value'") and "'gt' needs a number" in lines[0]
    )
    assert lines[1].startswith(f"{file}:9:5:") and "'record' is undefined" in lines[1]
    assert lines[2].startswith(f"{file}:10:5:") and "did you mean 'min'?" in lines[2]


def test_validate_applies_defaults_above_a_route_in_a_given_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "_defaults.yaml").write_text(
        "destinations:\n  out: {type: file, path: out.jsonl}\n"
    )
    write_route(
        tmp_path / "team",
        "uses_defaults",
        "source: {type: file, path: x.jsonl}\nrules: [{name: all, to: [out]}]\n",
    )
    assert main(["validate", str(tmp_path)]) == 0, capsys.readouterr().out


def test_test_route_explain_shows_the_deciding_leaf_and_the_output(
    good_route: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": 1, "amount": "500", "country": "US"}, {"id": 2, "country": "DE"}],
    )
    plain = test_route(capsys, good_route, records)
    explained = test_route(capsys, good_route, records, "--explain")
    # --explain only adds a key: everything else is the plain output, unchanged
    assert [{k: v for k, v in line.items() if k != "explain"} for line in explained] == plain
    first, second = (line["explain"] for line in explained)
    assert [(e["rule"], e["priority"], e["matched"]) for e in first] == [
        ("big", 10, True),
        ("local", 0, False),
    ]
    big, local = first
    assert big["decided_by"] == {
        "where": "when",
        "path": "$.amount",
        "op": "gt",
        "value": 100,  # the rendered {{ params.min_amount }}
        "saw": ["500"],
        "result": True,
    }
    assert big["conditions"] == [big["decided_by"]]
    assert big["destinations"] == ["big_orders"]
    assert big["output"] == {"id": 1, "amount": "500"} == explained[0]["outputs"]["big_orders"][0]
    assert local["decided_by"]["saw"] == ["US"] and local["decided_by"]["value"] == "DE"
    assert local["destinations"] == [] and local["output"] is None
    # a missing path: nothing seen, so `gt` is false
    assert second[0]["decided_by"]["saw"] == [] and second[0]["matched"] is False
    assert second[1]["matched"] is True and second[1]["output"] == {"id": 2, "country": "DE"}


def test_validating_routes_of_every_built_in_connector_does_not_initialise_airflow(
    tmp_path: Path,
) -> None:
    """Validation stays fast and side-effect free: no connector module imports Airflow at load
    (``airflow-dataflow run`` points Airflow at its own dags folder after validating). Files
    are named: a folder is searched with Airflow's ``.airflowignore`` rules."""
    sources = {
        "files": "{type: file, path: in.jsonl}",
        "rows": "{type: sql, connection: dwh, query: SELECT 1 AS id}",
        "deals": "{type: hubspot, connection: hubspot, object: deals}",
        "kpis": "{type: ga4, connection: gcp, property_id: 1, dimensions: [date],"
        " metrics: [sessions], date_range: {start: 7daysAgo}}",
        "rows_bq": "{type: bigquery, connection: gcp, query: SELECT 1 AS id}",
    }
    files = []
    for name, source in sources.items():
        path = write_route(
            tmp_path,
            name,
            f"""
            source: {source}
            rules:
              - {{name: all, to: [out]}}
            destinations:
              out: {{type: file, path: out.jsonl}}
            """,
        )
        files.append(str(path))
    script = (
        "import sys\n"
        "from airflow_dataflow.cli import main\n"
        f"code = main(['validate', *{files!r}])\n"
        "loaded = sorted(m for m in ('airflow', 'airflow.settings', 'airflow.sdk') if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
        "sys.exit(code)\n"
    )
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LOADED []" in done.stdout, done.stdout
