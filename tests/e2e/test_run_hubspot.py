"""Real DAG runs of the hubspot docs example: fake HubSpot -> rules -> PostgreSQL (upsert).

The route is the example of docs/connectors/hubspot.md, its connections ``hubspot`` and
``warehouse`` pointed at the fake HubSpot and the test's PostgreSQL database, run through
``airflow-dataflow run`` in a subprocess. ``safety_lag`` is 0 here: a deal the test changes
after a run is modified after that run's window ended (the cursor), so the next run reads it
without waiting a minute. The page's other examples (the deletions fragment, the webhooks DAG)
are checked here too, without a DAG run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_dataflow.config import load_route_text
from airflow_dataflow.operators.hubspot_webhooks import HubSpotWebhookSubscriptionsOperator
from tests.connectors.hubspot_support import connection_json
from tests.fakes.hubspot import APP_ID, DEVELOPER_API_KEY, FakeHubSpot
from tests.support.cli import CliResult, run_route
from tests.support.databases import Database, unique
from tests.support.routes import DOCS, doc_route_example

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

DEALS = 300
PAGE = DOCS.parent / "connectors" / "hubspot.md"


@pytest.fixture
def hubspot(dataflow: Callable[..., CliResult]) -> Iterator[FakeHubSpot]:
    with FakeHubSpot(deals=DEALS) as fake:
        dataflow.connect("hubspot", connection_json(fake))  # type: ignore[attr-defined]
        yield fake


def _route(
    tmp_path: Path, db: Database, dataflow: Callable[..., CliResult]
) -> tuple[str, Path, str]:
    """The documented route, written for this test; its id, path and warehouse URI."""
    route = yaml.safe_load(doc_route_example("hubspot.md", folder="connectors"))
    route["retries"] = 0  # a failed delivery fails the run now, not after retry delays
    route["source"]["incremental"]["safety_lag"] = "0s"
    route["destinations"]["warehouse"]["table"] = db.table("deals")
    warehouse = os.environ[f"AIRFLOW_CONN_{db.conn_id.upper()}"]
    dataflow.connect("warehouse", warehouse)  # type: ignore[attr-defined]
    route_id = unique("hubspot_deals")
    path = tmp_path / f"{route_id}.route.yaml"
    path.write_text(yaml.safe_dump(route, sort_keys=False), encoding="utf-8")
    return route_id, path, warehouse


def _cursor(dataflow: Callable[..., CliResult], route_id: str) -> dict[str, Any]:
    shown = dataflow("cursor", "show", route_id, "--json")
    assert shown.returncode == 0, shown.output[-3000:]
    return dict(json.loads(shown.stdout.splitlines()[-1]))


def _warehouse(db: Database) -> dict[int, dict[str, Any]]:
    return {row["id"]: row for row in db.rows("deals")}


def _searches(fake: FakeHubSpot, since: int) -> int:
    """How many search requests the fake answered from request number ``since`` on."""
    return sum(1 for request in fake.requests[since:] if request.kind == "search")


def _examples(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_runs_read_only_deals_changed_since_the_last_run(
    db: Database, hubspot: FakeHubSpot, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route, _ = _route(tmp_path, db, dataflow)

    first = run_route(dataflow, route)
    assert first["counts"]["read"] == DEALS
    assert first["counts"]["destinations"] == {"warehouse": DEALS}
    assert _searches(hubspot, 0) == 2  # 200 + 100 deals: the first run reads everything
    rows = _warehouse(db)
    assert len(rows) == DEALS and rows[5]["name"] == "Deal 5" and rows[5]["archived"] is False
    assert rows[5]["amount"] == 500.0 and isinstance(rows[5]["amount"], float)
    first_cursor = _cursor(dataflow, route_id)["value"]

    # After the run: two deals change, one is created, one is deleted (archived).
    hubspot.touch("deals", 5, amount="12345")
    hubspot.touch("deals", 6, dealstage="closedwon")
    created = hubspot.add("deals", {"dealname": "Brand new", "amount": "10"})
    hubspot.archive("deals", 7)
    served = len(hubspot.requests)

    second = run_route(dataflow, route)
    assert second["counts"]["read"] == 4
    assert second["counts"]["destinations"] == {"warehouse": 4}
    assert _searches(hubspot, served) == 1  # one page of changes, not the whole object
    rows = _warehouse(db)
    assert len(rows) == DEALS + 1  # upserted: changed rows replaced, the new one added
    assert rows[5]["amount"] == 12345.0 and rows[6]["stage"] == "closedwon"
    assert rows[created]["name"] == "Brand new" and rows[created]["amount"] == 10.0
    assert rows[7]["archived"] is True and rows[7]["name"] == "Deal 7"
    assert rows[8]["archived"] is False and rows[8]["amount"] == 800.0
    assert _cursor(dataflow, route_id)["value"] > first_cursor  # ISO UTC strings sort by time


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_crash_after_extract_leaves_the_cursor_and_the_next_run_re_reads(
    db: Database, hubspot: FakeHubSpot, dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    route_id, route, warehouse = _route(tmp_path, db, dataflow)
    run_route(dataflow, route)
    committed = _cursor(dataflow, route_id)

    hubspot.touch("deals", 11, amount="777")
    hubspot.touch("deals", 12, amount="888")
    # The warehouse breaks: extract succeeds, delivery fails, the run fails.
    broken = json.dumps({"conn_type": "http", "host": "127.0.0.1"})
    dataflow.connect("warehouse", broken)  # type: ignore[attr-defined]
    failed = dataflow("run", str(route), "--json")
    assert failed.returncode == 1, failed.output[-3000:]
    assert failed.summary["state"] == "failed"
    assert failed.summary["counts"]["read"] == 2  # deals 11 and 12 were extracted
    assert "deliver_warehouse" in failed.summary["failed_tasks"]
    assert _cursor(dataflow, route_id) == committed  # the cursor did not move
    assert _warehouse(db)[11]["amount"] == 1100.0  # nothing delivered

    dataflow.connect("warehouse", warehouse)  # type: ignore[attr-defined]
    served = len(hubspot.requests)
    again = run_route(dataflow, route)
    assert again["counts"]["read"] == 2  # the same deals, read again
    assert again["counts"]["destinations"] == {"warehouse": 2}
    assert _searches(hubspot, served) == 1
    rows = _warehouse(db)
    assert rows[11]["amount"] == 777.0 and rows[12]["amount"] == 888.0
    assert len(rows) == DEALS
    assert _cursor(dataflow, route_id)["value"] > committed["value"]


def test_the_deletions_fragment_makes_a_valid_route_with_a_hubspot_source() -> None:
    [fragment] = [block for block in _examples("yaml") if "name: deleted" in block]
    route = {
        "source": {
            "type": "hubspot",
            "connection": "hubspot",
            "object": "contacts",
            "include_archived": True,
            "incremental": {"lookback": "5m"},
        },
        **yaml.safe_load(fragment),
    }
    loaded = load_route_text(yaml.safe_dump(route), "deleted_contacts.route.yaml")
    assert [rule.name for rule in loaded.config.rules] == ["deleted", "current"]


def test_the_webhooks_dag_example_subscribes_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [code] = [
        block for block in _examples("python") if "HubSpotWebhookSubscriptionsOperator(" in block
    ]
    namespace: dict[str, Any] = {}
    exec(compile(code, str(PAGE), "exec"), namespace)
    [dag] = [value for value in namespace.values() if type(value).__name__ == "DAG"]
    task = dag.get_task("subscribe")
    assert isinstance(task, HubSpotWebhookSubscriptionsOperator)
    with FakeHubSpot() as fake:
        extras = {"developer_api_key": DEVELOPER_API_KEY, "app_id": APP_ID}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{task.hubspot_conn_id.upper()}", connection_json(fake, **extras)
        )
        result = task.execute(context={})
        assert set(result["created"]) == {
            "deal.creation",
            "deal.propertyChange:amount",
            "contact.deletion",
        }
        assert fake.webhook_settings[APP_ID]["targetUrl"] == task.target_url
        assert len(fake.subscriptions[APP_ID]) == 3
