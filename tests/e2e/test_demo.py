"""The bundled example routes (what `make demo` runs) work end to end."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult, assert_conserved
from tests.support.routes import read_jsonl

REPO_DAGS = Path(__file__).resolve().parents[2] / "dags"


def test_example_routes_run_in_order(dataflow: Callable[..., CliResult], tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    shutil.copytree(REPO_DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "out" / "demo"
    out.mkdir(parents=True)
    dataflow.connect("dataflow_demo", f"sqlite:///{out / 'warehouse.db'}")  # type: ignore[attr-defined]

    assert dataflow("validate", str(dags)).returncode == 0
    orders = dataflow("run", str(dags / "orders.route.yaml"), "--json")
    assert orders.summary["state"] == "success", orders.output[-5000:]
    assert_conserved(orders.summary)
    assert orders.summary["counts"]["dead_lettered"] == 2
    assert [record["id"] for record in read_jsonl(next((out / "big_orders").iterdir()))] == [
        1,
        3,
        5,
        7,
    ]
    (dead_file,) = (out / "dead_letters").iterdir()
    assert len(read_jsonl(dead_file)) == 2

    report = dataflow("run", str(dags / "eu_report.route.yaml"), "--json")
    assert report.summary["state"] == "success", report.output[-5000:]
    assert_conserved(report.summary)
    with open(out / "reports" / "germany.csv", newline="", encoding="utf-8") as handle:
        assert [row["customer"] for row in csv.DictReader(handle)] == ["Anna", "Fritz"]
