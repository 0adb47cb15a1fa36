"""The REST API commands of docs/api.md, run as written against a real ``airflow standalone``."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.airflow_server import AirflowServer, start_airflow
from tests.support.routes import read_jsonl, write_jsonl, write_route

pytestmark = [pytest.mark.e2e, pytest.mark.airflow_server]

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "api.md"
ROUTE_ID = "api_orders"


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
    server = start_airflow(base, dags)
    try:
        server.wait_for_dag(ROUTE_ID)
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
    script = "set -eu\n" + "\n".join(doc_commands()) + '\necho "FINAL $RUN_ID $STATE"\n'
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
    final = done.stdout.strip().splitlines()[-1].split()
    assert final[0] == "FINAL" and final[2] == "success", done.stdout + airflow.tail()
    run_id = final[1]

    # min_amount 10 from conf: both orders are big (the default 100 would keep one).
    [big] = (airflow.home.parent / "out").glob(f"big-*-{run_id}.jsonl")
    assert [record["id"] for record in read_jsonl(big)] == [1, 2]
    assert re.match(r"big-\d{4}-\d{2}-\d{2}-", big.name)  # ds exists without a logical date
    runs = airflow.request("GET", f"/api/v2/dags/{ROUTE_ID}/dagRuns")["dag_runs"]
    assert [run["state"] for run in runs] == ["success"]  # the refused conf made no run
