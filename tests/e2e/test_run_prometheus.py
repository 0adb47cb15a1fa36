"""Real DAG runs of the docs' ``prometheus`` example against a real Pushgateway.

The route is the complete example of ``docs/destinations/prometheus.md``, run unchanged by
``airflow-dataflow run``; the Pushgateway must then hold exactly the series the page shows,
and, with ``AIRFLOW__DATAFLOW__METRICS_PUSHGATEWAY`` set, the route's operational metrics in
their own group. A later run that fails leaves both groups and adds the failure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.support.cli import CliResult, assert_conserved
from tests.support.pushgateway import Pushgateway, _free_port, pushgateway_fixture  # noqa: F401
from tests.support.routes import write_jsonl

DOC = Path(__file__).resolve().parents[2] / "docs" / "destinations" / "prometheus.md"
BLOCK = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)

ORDERS = [
    {"id": 1, "status": "paid", "amount": 40, "customer": {"country": "DE"}},
    {"id": 2, "status": "open", "amount": 999, "customer": {"country": "DE"}},
    {"id": 3, "status": "paid", "amount": "120", "customer": {"country": "DE"}},
    {"id": 4, "status": "paid", "amount": "n/a", "customer": {"country": "IT"}},
    {"id": 5, "status": "paid", "amount": 700, "customer": {"country": "FR"}},
]


def _doc_example() -> tuple[str, dict[str, float]]:
    """The page's complete route and the series it says the Pushgateway holds."""
    blocks = [(m["lang"], m["body"]) for m in BLOCK.finditer(DOC.read_text(encoding="utf-8"))]
    route = next(
        body for lang, body in blocks if lang == "yaml" and "connection: pushgateway" in body
    )
    exposition = next(body for lang, body in blocks if body.startswith("order_amount_last"))
    series = {}
    for line in exposition.splitlines():
        name, value = line.rsplit(" ", 1)
        series[name] = float(value)
    return route, series


def _run(dataflow: Callable[..., CliResult], route: Path, gateway: Pushgateway) -> CliResult:
    return dataflow("run", str(route), "--json", AIRFLOW__DATAFLOW__METRICS_PUSHGATEWAY=gateway.url)


def test_the_docs_example_pushes_both_groups(
    dataflow: Callable[..., CliResult], tmp_path: Path, pushgateway: Pushgateway
) -> None:
    text, expected = _doc_example()
    route = tmp_path / "order_metrics.route.yaml"
    route.write_text(text, encoding="utf-8")
    write_jsonl(tmp_path / "data" / "orders.jsonl", ORDERS)
    dataflow.connect("pushgateway", pushgateway.url)  # type: ignore[attr-defined]

    result = _run(dataflow, route, pushgateway)
    summary = result.summary
    assert summary["state"] == "success", result.output[-5000:]
    assert_conserved(summary)
    counts = summary["counts"]
    assert (counts["read"], counts["matched"], counts["unmatched"]) == (5, 4, 1)
    assert counts["destinations"] == {"order_metrics": 3}
    assert counts["rejected"] == {"order_metrics": 1}  # order 4: "n/a" is not a number

    assert pushgateway.groups() == {
        ("shop_orders", "order_metrics"),
        ("airflow_dataflow", "order_metrics"),
    }
    assert pushgateway.series("shop_orders", "order_metrics") == expected
    operational = pushgateway.series("airflow_dataflow", "order_metrics")
    assert operational["dataflow_run_duration_seconds"] > 0
    assert operational["dataflow_last_success_timestamp_seconds"] > 0
    assert {
        key: value
        for key, value in operational.items()
        if key.startswith(("dataflow_run_records", "dataflow_destination", "dataflow_run_failed"))
    } == {
        "dataflow_run_records_read": 5,
        "dataflow_run_records_matched": 4,
        "dataflow_run_records_unmatched": 1,
        "dataflow_run_records_dead_lettered": 0,
        'dataflow_destination_records_routed{destination="order_metrics"}': 4,
        'dataflow_destination_records_delivered{destination="order_metrics"}': 3,
        'dataflow_destination_records_dead_lettered{destination="order_metrics"}': 1,
        'dataflow_destination_records_held_back{destination="order_metrics"}': 0,
        "dataflow_run_failed": 0,
    }
    assert operational["dataflow_run_warnings"] == len(summary["warnings"])

    # the Pushgateway behind the connection goes away: the next run fails at delivery, and
    # the failed-run path adds the failure to the operational group; the rest stays
    dataflow.connect("pushgateway", f"http://127.0.0.1:{_free_port()}")  # type: ignore[attr-defined]
    failed = _run(dataflow, route, pushgateway)
    assert failed.returncode == 1
    assert failed.summary["state"] == "failed", failed.output[-5000:]
    assert "cannot reach the Pushgateway" in failed.output
    after = pushgateway.series("airflow_dataflow", "order_metrics")
    assert after["dataflow_run_failed"] == 1
    assert (
        after["dataflow_last_failure_timestamp_seconds"]
        >= (operational["dataflow_last_success_timestamp_seconds"])
    )
    assert (
        after["dataflow_last_success_timestamp_seconds"]
        == operational["dataflow_last_success_timestamp_seconds"]
    )
    assert after["dataflow_run_records_read"] == 5
    assert pushgateway.series("shop_orders", "order_metrics") == expected
