"""``wait_for`` sensors in real DAG runs: the run waits, then reads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import CliResult, run_route
from tests.support.http_endpoint import Endpoint
from tests.support.routes import write_jsonl, write_route

pytestmark = [pytest.mark.e2e]


def test_an_http_wait_holds_the_run_until_the_endpoint_answers_2xx(
    dataflow: Callable[..., CliResult], tmp_path: Path
) -> None:
    endpoint = Endpoint(503, 503, 200)
    try:
        write_jsonl(tmp_path / "in.jsonl", [{"id": 1}, {"id": 2}])
        route = write_route(
            tmp_path,
            "waits_http",
            f"""
            wait_for:
              - {{type: http, url: "{endpoint.url}/ready/{{{{ ds }}}}", poke_interval: 1, timeout: 60}}
            source: {{type: file, path: in.jsonl}}
            rules:
              - {{name: all, to: [out]}}
            destinations:
              out: {{type: file, path: out/all.jsonl}}
            """,
        )
        summary = run_route(dataflow, route)
    finally:
        endpoint.close()
    assert summary["counts"]["read"] == 2
    assert len(endpoint.seen) == 3  # two "not yet" answers, then ready
    assert all(path.startswith("/ready/20") for _, path, _ in endpoint.seen)
