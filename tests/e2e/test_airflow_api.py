"""The REST API commands of docs/api.md, run as written against a real ``airflow standalone``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_dataflow.webhooks.hubspot_signature import sign_v3
from tests.support.airflow_server import AirflowServer, start_airflow
from tests.support.routes import read_jsonl, write_jsonl, write_route

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_server]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api.md"
ROUTE_ID = "api_orders"
WEBHOOK_ROUTE = "hubspot_events"
HUBSPOT_SECRET = "e2e-hubspot-client-secret"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowServer]:
    base = tmp_path_factory.mktemp("airflow-api")
    dags = base / "dags"
    dags.mkdir()
    for loader in ("dataflow_routes.py", "dataflow_route_errors.py"):
        shutil.copy(REPO / "dags" / loader, dags / loader)
    write_jsonl(base / "in.jsonl", [{"id": 1, "amount": 50}, {"id": 2, "amount": 500}])
    write_route(
        dags,
        ROUTE_ID,
        f"""
        schedule: null
        params:
          min_amount: {{type: number, default: 100}}
        source: {{type: file, path: {base / "in.jsonl"}}}
        rules:
          - {{name: big, when: {{path: $.amount, gt: "{{{{ params.min_amount }}}}"}}, to: [big]}}
        unmatched: [rest]
        destinations:
          big: {{type: file, path: "{base}/out/big-{{{{ ds }}}}-{{{{ run_id }}}}.jsonl"}}
          rest: {{type: file, path: "{base}/out/rest-{{{{ ds }}}}-{{{{ run_id }}}}.jsonl"}}
        """,
    )
    write_route(
        dags,
        WEBHOOK_ROUTE,
        f"""
        schedule: {{webhook: deals}}
        source: {{type: webhook, name: deals}}
        rules:
          - {{name: all, to: [events]}}
        destinations:
          events: {{type: file, path: "{base}/out/webhook-{{{{ run_id }}}}.jsonl"}}
        """,
    )
    webhook = {"conn_type": "dataflow_webhook", "password": HUBSPOT_SECRET}
    webhook["extra"] = {"verify": "hubspot_v3"}
    server = start_airflow(base, dags, AIRFLOW_CONN_DATAFLOW_WEBHOOK_DEALS=json.dumps(webhook))
    try:
        server.wait_for_dag(ROUTE_ID)
        server.wait_for_dag(WEBHOOK_ROUTE)
        yield server
    finally:
        server.stop()


def doc_commands() -> list[str]:
    """The page's bash blocks, in order, without the first (it sets the variables)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.M | re.S)
    return blocks[1:]


def test_the_documented_curl_commands_trigger_a_run_with_conf_and_reject_bad_conf(
    airflow: AirflowServer,
) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the documented commands")
    # The last block prints JSON without a newline: the final line starts on its own.
    script = "set -eu\n" + "\n".join(doc_commands()) + '\necho\necho "FINAL $RUN_ID $STATE"\n'
    done = subprocess.run(
        ["bash", "-c", script],
        env={**airflow.env, "ROUTE": ROUTE_ID, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr + airflow.tail()
    assert "Invalid input for param min_amount" in done.stdout  # the refused conf
    assert '"routes":[{"id":"api_orders"' in done.stdout  # the Dataflow API's curl command
    final = done.stdout.strip().splitlines()[-1].split()
    assert final[0] == "FINAL" and final[2] == "success", done.stdout + airflow.tail()
    run_id = final[1]

    # min_amount 10 from conf: both orders are big (the default 100 would keep one).
    [big] = (airflow.home.parent / "out").glob(f"big-*-{run_id}.jsonl")
    assert [record["id"] for record in read_jsonl(big)] == [1, 2]
    assert re.match(r"big-\d{4}-\d{2}-\d{2}-", big.name)  # ds exists without a logical date
    runs = airflow.request("GET", f"/api/v2/dags/{ROUTE_ID}/dagRuns")["dag_runs"]
    assert [run["state"] for run in runs] == ["success"]  # the refused conf made no run


def test_a_signed_hubspot_webhook_runs_the_subscribed_route_once(airflow: AirflowServer) -> None:
    token = airflow.token()
    body = json.dumps({"is_paused": False}).encode()
    airflow.request("PATCH", f"/api/v2/dags/{WEBHOOK_ROUTE}", body, token=token)
    path = "/dataflow/webhooks/deals"
    payload = json.dumps([{"objectId": 7, "subscriptionType": "deal.creation"},
                          {"objectId": 8, "subscriptionType": "deal.propertyChange"}]).encode()  # fmt: skip
    stamp = int(time.time() * 1000)
    signed = {
        "Content-Type": "application/json",
        "X-HubSpot-Request-Timestamp": str(stamp),
        "X-HubSpot-Signature-v3": sign_v3(
            HUBSPOT_SECRET, "POST", airflow.url + path, payload, stamp
        ),
    }
    forged = {**signed, "X-HubSpot-Signature-v3": sign_v3("guess", "POST", path, payload, stamp)}

    assert airflow.post(path, payload, forged)[0] == 401
    status, text = airflow.post(path, payload, signed)
    assert status == 202, text + airflow.tail()
    assert json.loads(text)["triggered"] is True
    assert airflow.post(path, payload, signed)[0] == 409  # the same request again
    assert airflow.post("/dataflow/webhooks/nobody", payload, signed)[0] == 404

    deadline = time.monotonic() + 180
    runs: list = []
    while time.monotonic() < deadline:
        runs = airflow.request("GET", f"/api/v2/dags/{WEBHOOK_ROUTE}/dagRuns", token=token)[
            "dag_runs"
        ]
        if runs and all(run["state"] in ("success", "failed") for run in runs):
            break
        time.sleep(3)
    assert [run["state"] for run in runs] == ["success"], airflow.tail()  # exactly one run
    [written] = (airflow.home.parent / "out").glob("webhook-*.jsonl")
    assert [event["objectId"] for event in read_jsonl(written)] == [7, 8]


def test_the_dataflow_api_lists_routes_and_refuses_anonymous_requests(
    airflow: AirflowServer,
) -> None:
    status, _ = airflow.get_anonymous("/dataflow/api/routes")
    assert status == 401
    overview = airflow.request("GET", "/dataflow/api/routes")
    routes = {route["id"]: route for route in overview["routes"]}
    assert {ROUTE_ID, WEBHOOK_ROUTE} <= set(routes)
    assert routes[ROUTE_ID]["source"] == "file"
    assert routes[ROUTE_ID]["last_runs"][0]["state"] == "success"  # the run the API test made
    runs = airflow.request("GET", f"/dataflow/api/routes/{ROUTE_ID}/runs")
    assert runs[0]["counts"]["destinations"] == {"big": 2, "rest": 0}
    assert airflow.request("GET", "/dataflow/api/dead-letters") == []


def test_the_dataflow_page_shows_the_route_and_its_last_run(airflow: AirflowServer) -> None:
    import os

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        reason = "needs Debian's chromium and chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: required)")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(f"{airflow.url}/dataflow/ui")  # 401 without the session cookie
        browser.add_cookie({"name": "_token", "value": airflow.token(), "path": "/"})
        browser.get(f"{airflow.url}/dataflow/ui")
        WebDriverWait(browser, 30).until(
            lambda page: page.find_elements(By.CSS_SELECTOR, f'tr[data-route="{ROUTE_ID}"]')
        )
        row = browser.find_element(By.CSS_SELECTOR, f'tr[data-route="{ROUTE_ID}"]')
        assert ROUTE_ID in row.text and "file" in row.text
        assert row.find_elements(By.CSS_SELECTOR, "div.success")  # its last run, succeeded
    finally:
        browser.quit()
