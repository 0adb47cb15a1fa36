"""HubSpot extraction benchmark (issue 6): how close to the rate limit, and how many 429s.

Run ``.venv/bin/python bench/hubspot.py`` (see ``--help``). The fake HubSpot of the tests
(``tests/fakes/hubspot.py``) serves N deals (60% of them, at most 12,000, share one
modification time) and enforces HubSpot's limits as HubSpot does: ``--max-requests`` per rolling
``--interval`` seconds for every request (default 100 per 10 s, a private app's limit) and
``--search-per-second`` for the search API (default 5, which also count in the window),
answering 429 beyond them. The ``hubspot`` connector reads the deals through its public
interface (``HubSpotConnector(...).read()``) with the connection's defaults (no rate
override), in two modes:

- ``full``: no ``incremental``: the list API, 100 deals per request;
- ``incremental``: a first incremental run (no cursor): the search API, 200 deals per
  request, keyset-paged by ``hs_object_id``.

For each: requests sent, wall seconds, the achieved request rate (``requests - 1`` over the
time from the first request to the last, as the fake stamped them), the **sustained** rate the
fake allows for the endpoints used (list: ``max_requests / interval``; search: the lower of
that and ``search_per_second``), the achieved rate as a fraction of it (target >= 90%), the
429 answers received (target 0) and records per second. Every deal must be read exactly
once, else the benchmark fails.

``--out bench/README.md`` rewrites the marked results section there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
# This file is named like the client library: ``import hubspot`` must not find it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO))
RESULTS_START = "<!-- hubspot-results:start -->"
RESULTS_END = "<!-- hubspot-results:end -->"
PROPERTIES = ["dealname", "amount", "dealstage", "closedate", "pipeline"]
RATE_TARGET = 0.9


@dataclass(frozen=True)
class Limits:
    max_requests: int
    interval: float
    search_per_second: int

    def allowed(self, search: bool) -> float:
        """Requests per second the fake sustains for the endpoints of a mode."""
        window = self.max_requests / self.interval
        return min(window, float(self.search_per_second)) if search else window


@dataclass(frozen=True)
class Result:
    mode: str
    records: int
    requests: int
    span: float  # seconds from the first request to the last, as the fake saw them
    seconds: float  # wall time of the whole read
    allowed: float
    rate_limited: int
    waited: float

    @property
    def rate(self) -> float:
        """Requests per second between the first and the last request (the first is free)."""
        return (self.requests - 1) / self.span if self.span > 0 else float("inf")

    @property
    def fraction(self) -> float:
        return self.rate / self.allowed

    @property
    def met(self) -> bool:
        return self.fraction >= RATE_TARGET and self.rate_limited == 0


def measure(mode: str, deals: int, limits: Limits) -> Result:
    """Read every deal once in ``mode`` from a fresh fake with ``limits``."""
    from airflow_dataflow.connectors.base import Cursor, SourceWarning
    from airflow_dataflow.connectors.hubspot import HubSpotConnector, HubSpotSettings
    from airflow_dataflow.context import RunContext
    from tests.fakes.hubspot import PRIVATE_TOKEN, FakeHubSpot

    search = mode == "incremental"
    with FakeHubSpot(
        deals=(deals, min(12_000, deals * 3 // 5)),
        max_requests=limits.max_requests,
        interval=limits.interval,
        search_per_second=limits.search_per_second,
    ) as fake:
        conn_id = f"bench_hubspot_{uuid.uuid4().hex[:8]}"
        connection = {"conn_type": "hubspot", "host": fake.url, "password": PRIVATE_TOKEN}
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)
        settings = HubSpotSettings(
            type="hubspot",
            connection=conn_id,
            object="deals",
            properties=PROPERTIES,
            incremental={} if search else None,
        )
        cursor = Cursor("hs_lastmodifieddate") if search else None
        connector = HubSpotConnector(settings, RunContext(route="hubspot_bench"), cursor)
        seen: set[str] = set()
        started = time.perf_counter()
        for item in connector.read():
            if isinstance(item, SourceWarning):
                continue
            if item["id"] in seen:
                raise SystemExit(f"{mode}: deal {item['id']} read twice")
            seen.add(item["id"])
        seconds = time.perf_counter() - started
        if len(seen) != deals:
            raise SystemExit(f"{mode}: read {len(seen)} deals, expected {deals}")
        answered = [r for r in fake.requests if r.kind in ("list", "search")]
        return Result(
            mode=mode,
            records=len(seen),
            requests=len(answered),
            span=answered[-1].at - answered[0].at,
            seconds=seconds,
            allowed=limits.allowed(search),
            rate_limited=sum(1 for r in answered if r.status == 429),
            waited=connector.hook.pacer.waited,
        )


def machine() -> str:
    from bench.machine_info import describe

    return describe("hubspot-api-client", "urllib3")


def render(results: list[Result], limits: Limits) -> str:
    lines = [
        f"Fake HubSpot limits: {limits.max_requests} requests / {limits.interval:g} s "
        f"(rolling), search {limits.search_per_second} requests/s. Machine: {machine()}.",
        "",
        "| mode | API | records | requests | seconds | achieved req/s | allowed req/s "
        "| fraction | 429s | records/s | paced (s waited) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        api = "search, 200/page" if r.mode == "incremental" else "list, 100/page"
        lines.append(
            f"| {r.mode} | {api} | {r.records:,} | {r.requests} | {r.seconds:.1f} "
            f"| {r.rate:.2f} | {r.allowed:.2f} | {r.fraction:.1%} | {r.rate_limited} "
            f"| {r.records / r.seconds:,.0f} | {r.waited:.1f} |"
        )
    verdict = "met" if all(r.met for r in results) else "NOT met"
    lines += [
        "",
        f"Targets: fraction >= {RATE_TARGET:.0%} of the sustained limit and 0 429s: {verdict}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__ or ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--deals", type=int, default=20_000, help="default 20,000")
    parser.add_argument(
        "--mode", choices=["full", "incremental", "both"], default="both", help="default both"
    )
    parser.add_argument("--max-requests", type=int, default=100, help="per interval; 100")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds; default 10")
    parser.add_argument("--search-per-second", type=int, default=5, help="default 5")
    parser.add_argument("--out", type=Path, help="rewrite the marked results section of this file")
    args = parser.parse_args()
    if args.deals < 1:
        parser.error("--deals must be at least 1")
    os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    limits = Limits(args.max_requests, args.interval, args.search_per_second)
    modes = ["full", "incremental"] if args.mode == "both" else [args.mode]
    results = []
    for mode in modes:
        result = measure(mode, args.deals, limits)
        print(
            f"{mode}: {result.records:,} deals, {result.requests} requests in "
            f"{result.seconds:.1f}s, {result.rate_limited} x 429",
            file=sys.stderr,
        )
        results.append(result)
    table = render(results, limits)
    print(table)
    if args.out:
        from bench.machine_info import rewrite_results

        rewrite_results(args.out, table, RESULTS_START, RESULTS_END)


if __name__ == "__main__":
    main()
