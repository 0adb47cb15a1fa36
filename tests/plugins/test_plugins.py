"""Third-party kinds: the example plugin packages are pip-installed and used through the CLI.

Each package in this folder is installed with ``pip install --target`` into a temporary folder
(no network, no build isolation) and reaches the command through ``PYTHONPATH``: entry points
are found from any ``*.dist-info`` on ``sys.path``, and the project's virtualenv stays clean.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.support.cli import CliResult, assert_conserved, run_cli
from tests.support.routes import read_jsonl, write_route

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

HERE = Path(__file__).resolve().parent
EXAMPLE = "dataflow-example-plugin"
BROKEN = "dataflow-broken-plugin"
NUMBERS_ROUTE = HERE / "example_plugin" / "routes" / "numbers.route.yaml"


def _install(package: str, work: Path) -> Path:
    """``pip install`` the package folder ``package`` into its own target folder."""
    source = work / "src" / package
    shutil.copytree(HERE / package, source)  # the build writes build/ and *.egg-info beside it
    target = work / "site" / package
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, (
        f"pip install {package} failed (setuptools>=70.1 is needed: pip install -e '.[dev]'):\n"
        f"{completed.stdout}\n{completed.stderr}"
    )
    return target


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("plugins")
    return {name: _install(name, work) for name in ("example_plugin", "broken_plugin")}


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow-home")


Dataflow = Callable[..., CliResult]


@pytest.fixture
def dataflow(airflow_home: Path, tmp_path: Path, sites: dict[str, Path]) -> Dataflow:
    """Runs ``airflow-dataflow``; ``plugins=`` names the installed packages it sees."""

    def run(*args: str, plugins: tuple[str, ...] = ("example_plugin",)) -> CliResult:
        paths = [str(sites[name]) for name in plugins]
        if os.environ.get("PYTHONPATH"):
            paths.append(os.environ["PYTHONPATH"])
        environment = {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "PYTHONPATH": os.pathsep.join(paths),
        }
        return run_cli(*args, env=environment)

    return run


def _listing(result: CliResult) -> dict[tuple[str, str, str], dict[str, Any]]:
    """``plugins --json`` by (kind, type, distribution)."""
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {(row["kind"], row["type"], row["distribution"]): row for row in rows}


def _issues(result: CliResult, route: Path) -> list[str]:
    """The ``FILE:LINE:COL: message`` lines ``validate`` printed for ``route``."""
    return [line for line in result.stdout.splitlines() if line.startswith(f"{route}:")]


def _numbers_route(folder: Path, name: str = "numbers") -> Path:
    """The example route (its cursor is kept per route id: ``name``)."""
    return write_route(folder, name, NUMBERS_ROUTE.read_text(encoding="utf-8"))


# --- plugins ----------------------------------------------------------------------------------


def test_plugins_lists_the_plugin_kinds_with_distribution_and_version(dataflow: Dataflow) -> None:
    result = dataflow("plugins", "--json")

    listing = _listing(result)
    assert listing["connector", "counter", EXAMPLE] == {
        "kind": "connector",
        "type": "counter",
        "distribution": EXAMPLE,
        "version": "0.3.1",
        "entry_point": "dataflow_example_plugin.counter:CounterConnector",
        "group": "airflow_dataflow.connectors",
        "status": "ok",
        "error": None,
        "description": "Generates numbered records; with ``incremental`` it continues after "
        "the last committed n.",
    }
    sink = listing["destination", "jsonl_batches", EXAMPLE]
    assert (sink["version"], sink["status"], sink["entry_point"]) == (
        "0.3.1",
        "ok",
        "dataflow_example_plugin.jsonl_batches:JsonlBatchesDestination",
    )
    # Built-ins are listed the same way, by the package that provides them.
    built_in = listing["connector", "file", "airflow-dataflow"]
    assert built_in["entry_point"] == "airflow_dataflow.connectors.file:FileConnector"
    assert ("destination", "database", "airflow-dataflow") in listing
    broken = [row for row in listing.values() if row["status"] != "ok"]
    assert broken == []
    assert result.returncode == 0, result.output


def test_plugins_table_shows_each_kind_on_a_line(dataflow: Dataflow) -> None:
    result = dataflow("plugins")

    assert result.returncode == 0, result.output
    lines = result.stdout.splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("KIND "))
    header, *rows = lines[start:]
    assert header.split() == ["KIND", "TYPE", "DISTRIBUTION", "VERSION", "STATUS", "ENTRY", "POINT"]
    assert [
        "connector",
        "counter",
        EXAMPLE,
        "0.3.1",
        "ok",
        "dataflow_example_plugin.counter:CounterConnector",
    ] in [row.split() for row in rows]
    assert "0 broken" in result.stderr


def test_broken_plugins_are_listed_by_name_with_their_error(dataflow: Dataflow) -> None:
    result = dataflow("plugins", "--json", plugins=("example_plugin", "broken_plugin"))

    assert result.returncode == 1, result.output
    listing = _listing(result)
    errors = {
        (kind, name): row["error"]
        for (kind, name, distribution), row in listing.items()
        if distribution == BROKEN
    }
    assert errors == {
        ("connector", "broken_source"): (
            "ModuleNotFoundError: No module named 'dataflow_missing_dependency'"
        ),
        ("connector", "not_a_kind"): (
            "dataflow_broken_plugin.not_a_kind.NotAKind is not a subclass of "
            "airflow_dataflow.connectors.base.Connector"
        ),
        ("destination", "broken_sink"): (
            "AttributeError: module 'dataflow_broken_plugin.no_such_class' has no attribute "
            "'BrokenSink'"
        ),
        ("destination", "file"): (
            "the type name 'file' is already provided by airflow-dataflow 0.1.0 "
            "(airflow_dataflow.destinations.file:FileDestination); this one is ignored"
        ),
    }
    assert all(listing[key]["version"] == "0.0.1" for key in listing if key[2] == BROKEN)
    # Everything else still loads, the built-in `file` destination included.
    ok = {key for key, row in listing.items() if row["status"] == "ok"}
    assert {
        ("connector", "counter", EXAMPLE),
        ("destination", "jsonl_batches", EXAMPLE),
        ("destination", "file", "airflow-dataflow"),
    } <= ok
    assert "4 broken" in result.stderr


def test_broken_plugin_shows_its_error_under_its_row(dataflow: Dataflow) -> None:
    result = dataflow("plugins", plugins=("broken_plugin",))

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    (row,) = [index for index, line in enumerate(lines) if " broken_source " in line]
    assert lines[row].split()[2:5] == [BROKEN, "0.0.1", "BROKEN"]
    assert lines[row + 1].strip() == (
        "error: ModuleNotFoundError: No module named 'dataflow_missing_dependency'"
    )


# --- validation and schema ---------------------------------------------------------------------


def test_validate_accepts_a_route_using_plugin_kinds(dataflow: Dataflow, tmp_path: Path) -> None:
    route = _numbers_route(tmp_path)

    result = dataflow("validate", str(route))

    assert result.returncode == 0, result.output


def test_without_the_plugin_its_types_are_unknown(dataflow: Dataflow, tmp_path: Path) -> None:
    route = _numbers_route(tmp_path)

    result = dataflow("validate", str(route), plugins=())

    assert result.returncode == 1
    assert f"{route}:3:1: source: unknown type 'counter' (known: " in result.stdout
    assert "destinations.evens: unknown type 'jsonl_batches'" in result.stdout


def test_plugin_settings_are_validated_like_built_ins(dataflow: Dataflow, tmp_path: Path) -> None:
    route = write_route(
        tmp_path,
        "bad_numbers",
        """
        source: {type: counter, count: -1, strat: 3}
        rules: [{name: all, to: [out]}]
        destinations:
          out: {type: jsonl_batches, batch_size: 0}
        """,
    )

    result = dataflow("validate", str(route))

    assert result.returncode == 1
    assert _issues(result, route) == [
        f"{route}:1:25: source.count: Input should be greater than or equal to 0",
        f"{route}:1:36: unknown key 'strat' in source; did you mean 'start'?",
        f"{route}:4:3: destinations.out: required key 'directory' is missing",
        f"{route}:4:30: destinations.out.batch_size: Input should be greater than or equal to 1",
    ]


def test_schema_includes_the_plugin_settings(dataflow: Dataflow) -> None:
    result = dataflow("schema")

    assert result.returncode == 0, result.output
    schema = json.loads(result.stdout)
    counter = schema["$defs"]["CounterSettings"]
    assert counter["properties"]["type"]["const"] == "counter"
    assert counter["required"] == ["type", "count"]
    assert "directory" in schema["$defs"]["JsonlBatchesSettings"]["properties"]
    route = {
        "source": {"type": "counter", "count": 3},
        "rules": [{"name": "all", "to": ["out"]}],
        "destinations": {"out": {"type": "jsonl_batches", "directory": "out"}},
    }
    jsonschema.Draft202012Validator(schema).validate(route)
    route["source"]["count"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(route)


def test_a_route_using_a_broken_plugin_fails_validation_naming_it(
    dataflow: Dataflow, tmp_path: Path
) -> None:
    route = write_route(
        tmp_path,
        "broken",
        """
        source: {type: broken_source}
        rules: [{name: all, to: [out]}]
        destinations:
          out: {type: broken_sink}
        """,
    )

    result = dataflow("validate", str(route), plugins=("example_plugin", "broken_plugin"))

    assert result.returncode == 1
    assert _issues(result, route) == [
        f"{route}:1:1: source: type 'broken_source' cannot be used: connector plugin "
        "'broken_source' from dataflow-broken-plugin 0.0.1 (entry point "
        "dataflow_broken_plugin.missing_dependency:BrokenSource) failed to load: "
        "ModuleNotFoundError: No module named 'dataflow_missing_dependency'; fix or reinstall "
        "that package (`airflow-dataflow plugins` lists every installed kind)",
        f"{route}:4:3: destinations.out: type 'broken_sink' cannot be used: destination plugin "
        "'broken_sink' from dataflow-broken-plugin 0.0.1 (entry point "
        "dataflow_broken_plugin.no_such_class:BrokenSink) failed to load: AttributeError: "
        "module 'dataflow_broken_plugin.no_such_class' has no attribute 'BrokenSink'; fix or "
        "reinstall that package (`airflow-dataflow plugins` lists every installed kind)",
    ]


# --- runs --------------------------------------------------------------------------------------


def test_a_route_runs_with_the_plugin_connector_and_destination(
    dataflow: Dataflow, tmp_path: Path
) -> None:
    route = _numbers_route(tmp_path)

    result = dataflow("run", str(route), "--json")

    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert_conserved(summary)
    counts = summary["counts"]
    assert (counts["read"], counts["matched"], counts["unmatched"], counts["dead_lettered"]) == (
        10,
        5,
        4,
        1,
    )
    assert counts["destinations"] == {"evens": 5, "odds": 4}
    batch_files = sorted((tmp_path / "out" / "evens").glob("*.jsonl"))
    assert len(batch_files) == 3  # batch_size 2
    evens = sorted(record["n"] for path in batch_files for record in read_jsonl(path))
    assert evens == [2, 4, 6, 8, 10]
    assert [record["n"] for record in read_jsonl(tmp_path / "out" / "odds.jsonl")] == [1, 3, 5, 9]
    (dead,) = (tmp_path / "out" / "dead").glob("*.jsonl")
    assert "counter:7" in dead.read_text(encoding="utf-8")

    # The plugin's cursor is kept in the state store like a built-in's: nothing new next time.
    again = dataflow("run", str(route), "--json").summary
    assert again["state"] == "success"
    assert again["counts"]["read"] == 0
    assert again["warnings"] == ["counter: nothing after n=10 (count ends at 10)"]


def test_good_routes_keep_running_with_a_broken_plugin_installed(
    dataflow: Dataflow, tmp_path: Path
) -> None:
    route = _numbers_route(tmp_path, "numbers_next_to_broken")

    result = dataflow("run", str(route), "--json", plugins=("example_plugin", "broken_plugin"))

    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert summary["counts"]["destinations"] == {"evens": 5, "odds": 4}
    # `file` is still the built-in destination, not the broken plugin's claim on the name.
    assert len(read_jsonl(tmp_path / "out" / "odds.jsonl")) == 4
