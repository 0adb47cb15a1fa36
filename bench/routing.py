"""Routing benchmark: synthetic HubSpot deals through 10 rules (issue 3).

Run ``.venv/bin/python bench/routing.py`` (see ``--help``). Measures, in one process:

(a) ``Router.route`` over pre-parsed dicts (and ``copies=False``, what the route phase uses);
(b) the full route phase, ``pipeline.route.route_records`` over staged JSONL chunks in a real
    ``StagingArea`` (read + decode + route + serialise + write one partition per destination);
(c) a naive baseline: ``json`` + jsonpath-ng, every path parsed once and ``find`` per record
    per rule, values compared the DESIGN way in plain Python.

``--memory`` runs (b) in a child process per size (1M and 5M records) and reports its peak RSS.
See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS_START = "<!-- routing-results:start -->"
RESULTS_END = "<!-- routing-results:end -->"

STAGES = ["appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin",
          "contractsent", "closedwon", "closedlost"]  # fmt: skip
COUNTRIES = ["DE", "FR", "IT", "ES", "NL", "US", "GB", "CA", "BR", "JP", "IN", "AU", "SE", "PL"]
PIPELINES = ["default", "enterprise", "partners"]
SOURCES = ["ORGANIC_SEARCH", "PAID_SEARCH", "EMAIL_MARKETING", "REFERRALS", "DIRECT_TRAFFIC"]

RULES: list[dict[str, Any]] = [
    {"name": "big_deals", "priority": 10,
     "when": {"path": "$.properties.amount", "gt": 5000},
     "transform": [{"select": {"id": "$.id", "name": "$.properties.dealname",
                               "amount": "$.properties.amount", "stage": "$.properties.dealstage",
                               "country": "$.properties.country"}},
                   {"cast": {"amount": "float"}}],
     "to": ["warehouse_big"]},
    {"name": "won", "when": {"path": "$.properties.dealstage", "eq": "closedwon"},
     "to": ["won_deals"]},
    {"name": "eu", "when": {"all": [
        {"path": "$.properties.country", "in": ["DE", "FR", "IT", "ES", "NL", "SE", "PL"]},
        {"path": "$.archived", "eq": False}]},
     "transform": [{"select": {"id": "$.id", "country": "$.properties.country",
                               "amount": "$.properties.amount",
                               "modified": "$.properties.hs_lastmodifieddate"}},
                   {"cast": {"amount": "float", "id": "int"}}],
     "to": ["eu_deals"]},
    {"name": "enterprise_pipeline", "when": {"all": [
        {"path": "$.properties.pipeline", "eq": "enterprise"},
        {"path": "$.properties.amount", "gte": 1000}]},
     "to": ["enterprise"]},
    {"name": "test_deals", "when": {"path": "$.properties.dealname", "matches": "(?i)^test[ -]"},
     "to": ["quarantine"]},
    {"name": "no_close_date", "when": {"not": {"path": "$.properties.closedate", "exists": True}},
     "to": ["data_quality"]},
    {"name": "hot", "when": {"any": [
        {"path": "$.properties.hs_priority", "eq": "high"},
        {"all": [{"path": "$.properties.amount", "gt": 9000},
                 {"path": "$.properties.dealstage", "in": ["contractsent", "decisionmakerboughtin"]}]}]},
     "to": ["sales_alerts"]},
    {"name": "small_lost", "when": {"all": [
        {"path": "$.properties.dealstage", "eq": "closedlost"},
        {"path": "$.properties.amount", "lt": 100}]},
     "to": ["churn"]},
    {"name": "paid_source", "when": {"path": "$.properties.hs_analytics_source", "eq": "PAID_SEARCH"},
     "transform": [{"select": {"id": "$.id", "source": "$.properties.hs_analytics_source",
                               "amount": "$.properties.amount", "created": "$.createdAt"}},
                   {"cast": {"amount": "float"}}],
     "to": ["marketing"]},
    {"name": "many_contacts", "when": {"path": "$.properties.num_associated_contacts", "gte": 8},
     "to": ["key_accounts"]},
]  # fmt: skip
DESTINATIONS = sorted({d for rule in RULES for d in rule["to"]} | {"rest"})


def make_record(n: int, rng: random.Random) -> dict[str, Any]:
    """One HubSpot-like deal (string numbers, as the HubSpot API returns them)."""
    created = 1_672_531_200 + rng.randrange(0, 60_000_000)
    modified = created + rng.randrange(0, 5_000_000)

    def iso(seconds: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))

    name_prefix = "Test - " if rng.random() < 0.02 else ""
    properties: dict[str, Any] = {
        "dealname": f"{name_prefix}Deal {n} for Company {rng.randrange(100_000)}",
        "amount": f"{rng.uniform(0, 10_000):.2f}",
        "dealstage": rng.choice(STAGES),
        "pipeline": rng.choice(PIPELINES),
        "hs_lastmodifieddate": iso(modified),
        "createdate": iso(created),
        "country": rng.choice(COUNTRIES),
        "hubspot_owner_id": str(rng.randrange(10_000, 99_999)),
        "deal_currency_code": rng.choice(["EUR", "USD", "GBP"]),
        "hs_priority": rng.choice(["low", "medium", "high", None]),
        "hs_analytics_source": rng.choice(SOURCES),
        "num_associated_contacts": str(rng.randrange(0, 10)),
        "hs_object_id": str(n),
    }
    if rng.random() < 0.85:
        properties["closedate"] = iso(created + rng.randrange(0, 10_000_000))
    return {
        "id": str(n),
        "properties": properties,
        "createdAt": iso(created),
        "updatedAt": iso(modified),
        "archived": rng.random() < 0.05,
        "associations": {
            "companies": [{"id": str(rng.randrange(10**6)), "type": "deal_to_company"}],
            "contacts": [
                {"id": str(rng.randrange(10**7)), "type": "deal_to_contact"}
                for _ in range(rng.randrange(0, 4))
            ],
        },
    }


def generate(count: int, seed: int = 3) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for n in range(count):
        yield make_record(n, rng)


# ---------------------------------------------------------------------- naive baseline


def _naive_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _naive_test(op: str, value: Any, expected: Any) -> bool:
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(value, str):
            value = _naive_number(value)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
    if op == "eq":
        return (type(value) is type(expected) and value == expected) or (
            isinstance(value, (int, float)) and value == expected
        )
    if op in ("gt", "gte", "lt", "lte"):
        if type(value) is not type(expected) and not isinstance(value, (int, float)):
            return False
        return {"gt": value > expected, "gte": value >= expected,
                "lt": value < expected, "lte": value <= expected}[op]  # fmt: skip
    if op == "in":
        return any(_naive_test("eq", value, member) for member in expected)
    if op == "matches":
        return isinstance(value, str) and re.search(expected, value) is not None
    raise ValueError(op)


def naive_router(rules: list[dict[str, Any]]) -> Any:
    """Parse every path once; per record: `find` per leaf, plain-Python tests and copies."""
    from jsonpath_ng.ext import parse

    def cond(node: dict[str, Any]) -> Any:
        if "all" in node:
            parts = [cond(item) for item in node["all"]]
            return lambda r: all(part(r) for part in parts)
        if "any" in node:
            parts = [cond(item) for item in node["any"]]
            return lambda r: any(part(r) for part in parts)
        if "not" in node:
            inner = cond(node["not"])
            return lambda r: not inner(r)
        expression = parse(node["path"])
        (op,) = [key for key in node if key != "path"]
        expected = node[op]
        if op == "exists":
            return lambda r: bool(expression.find(r)) == expected
        return lambda r: any(_naive_test(op, m.value, expected) for m in expression.find(r))

    compiled = []
    for rule in sorted(rules, key=lambda rule: -rule.get("priority", 0)):
        select = cast = None
        for step in rule.get("transform", []):
            if "select" in step:
                select = {name: parse(path) for name, path in step["select"].items()}
            if "cast" in step:
                cast = step["cast"]
        compiled.append((rule["name"], cond(rule["when"]), select, cast, rule["to"]))

    def route(record: dict[str, Any]) -> list[tuple[str, Any]]:
        deliveries = []
        for _, when, select, cast, to in compiled:
            if not when(record):
                continue
            if select is None:
                out = copy.deepcopy(record)
            else:
                out = {}
                for name, expression in select.items():
                    values = [m.value for m in expression.find(record)]
                    out[name] = None if not values else values[0] if len(values) == 1 else values
                for name, kind in (cast or {}).items():
                    out[name] = {"float": float, "int": int}[kind](out[name])
            deliveries.extend((destination, out) for destination in to)
        if not deliveries:
            deliveries.append(("rest", copy.deepcopy(record)))
        return deliveries

    return route


# ---------------------------------------------------------------------- route file for (b)


def route_yaml() -> str:
    import yaml

    document = {
        "source": {"type": "file", "path": "in.jsonl"},
        "rules": RULES,
        "mode": "all",
        "unmatched": ["rest"],
        "destinations": {
            name: {"type": "file", "path": f"out/{name}.jsonl"} for name in DESTINATIONS
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


def staged_phase(count: int, folder: Path) -> dict[str, Any]:
    """Stage `count` records (not timed), then time `route_records` over them."""
    from airflow_dataflow.config import load_route
    from airflow_dataflow.context import RunContext
    from airflow_dataflow.pipeline.route import route_records
    from airflow_dataflow.staging import StagingArea

    (folder / "deals.route.yaml").write_text(route_yaml(), encoding="utf-8")
    route = load_route(folder / "deals.route.yaml")
    context = RunContext(route="deals", run_id="bench", route_file=route.file)
    staging = StagingArea(f"file://{folder / 'staging'}", "deals", "bench")
    started = time.perf_counter()
    with staging.writer("extract") as records, staging.writer("malformed") as malformed:
        records.write_many(generate(count))
        extracted = {"records": records.close(), "malformed": malformed.close(), "read": count}
    staged_seconds = time.perf_counter() - started
    staged_bytes = sum(
        Path(chunk["uri"].removeprefix("file://")).stat().st_size
        for chunk in extracted["records"]["chunks"]
    )
    gc.collect()
    started = time.perf_counter()
    result = route_records(route, context, staging, extracted)
    seconds = time.perf_counter() - started
    written = sum(
        Path(chunk["uri"].removeprefix("file://")).stat().st_size
        for partition in result["partitions"].values()
        for chunk in partition["chunks"]
    )
    counts = result["counts"]
    assert counts["matched"] + counts["unmatched"] + counts["dead_lettered"] == count, counts
    staging.clean()
    return {
        "seconds": seconds,
        "counts": counts,
        "staged_bytes": staged_bytes,
        "written_bytes": written,
        "staged_seconds": staged_seconds,
    }


def child_main(count: int) -> None:
    """`--child N`: run (b) for N records and print a JSON line with the peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        result = staged_phase(count, Path(tmp))
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec), else ru_maxrss (may include the parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_run(count: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(count)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"},
    )
    if done.returncode != 0:
        raise SystemExit(f"child for {count} records failed:\n{done.stdout}\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- measurements


def timed(function: Any, records: list[dict[str, Any]]) -> float:
    gc.collect()
    started = time.perf_counter()
    for record in records:
        function(record)
    return time.perf_counter() - started


def machine() -> str:
    from machine_info import describe  # bench/ is on sys.path when a bench script runs

    return describe("orjson")


def run(args: argparse.Namespace) -> str:
    from airflow_dataflow.routing import compile_router

    count = args.records
    memory_rows = []
    for size in args.memory_sizes if args.memory else []:
        print(f"(b) memory: {size:,} records in a child ...", file=sys.stderr)
        child = memory_run(size)  # before this process grows: nothing inherited
        memory_rows.append(
            f"| {size:,} | {child['seconds']:.1f} | {size / child['seconds']:,.0f} "
            f"| {child['peak_rss_mb']:.0f} MB |"
        )
    print(f"generating {count:,} records ...", file=sys.stderr)
    records = list(generate(count))
    router = compile_router(RULES, mode="all", unmatched=["rest"])
    naive = naive_router(RULES)

    # sanity: the naive baseline routes (about) the same way as the router
    sample = records[:2000]
    same = sum(
        sorted(d for d, _ in naive(r)) == sorted(d for d, _ in router.route(r).deliveries)
        for r in sample
    )
    rows: list[tuple[str, int, float]] = []
    print("(a) Router.route ...", file=sys.stderr)
    rows.append(("(a) `Router.route` (independent copies)", count, timed(router.route, records)))

    def uncopied(record: dict[str, Any]) -> Any:
        return router.route(record, copies=False)

    rows.append(("(a') `Router.route(copies=False)`", count, timed(uncopied, records)))
    naive_count = min(count, args.naive_records)
    print(f"(c) naive baseline over {naive_count:,} records ...", file=sys.stderr)
    rows.append(("(c) naive: json + jsonpath-ng `find`", naive_count,
                 timed(naive, records[:naive_count])))  # fmt: skip
    deliveries = sum(len(router.route(r, copies=False).deliveries) for r in records[:100_000])
    del records
    gc.collect()
    print("(b) route_records over staged chunks ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        staged = staged_phase(count, Path(tmp))
    rows.insert(2, ("(b) `route_records`: staged JSONL -> partitions", count, staged["seconds"]))

    rate = {label: n / seconds for label, n, seconds in rows}
    a, a2, b, c = (row[0] for row in rows)
    lines = [
        f"Machine: {machine()}",
        f"{count:,} records, 10 rules, mode all; {deliveries / min(count, 100_000):.2f} "
        f"deliveries per record on average; staged input {staged['staged_bytes'] / count:.0f} "
        f"bytes per record; naive baseline agrees with the router on {same}/{len(sample)} "
        "sample records.",
        "",
        "| measurement | records | seconds | records/s | µs/record |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, n, seconds in rows:
        lines.append(
            f"| {label} | {n:,} | {seconds:.2f} | {n / seconds:,.0f} | {seconds / n * 1e6:.2f} |"
        )
    lines += [
        "",
        "| target | measured | verdict |",
        "|---|---:|---|",
        f"| (a) >= 300,000 records/s | {rate[a]:,.0f} | {'met' if rate[a] >= 300_000 else 'missed'} |",
        f"| (a') >= 300,000 records/s | {rate[a2]:,.0f} | {'met' if rate[a2] >= 300_000 else 'missed'} |",
        f"| (b) >= 150,000 records/s | {rate[b]:,.0f} | {'met' if rate[b] >= 150_000 else 'missed'} |",
        f"| (a) >= 20x naive | {rate[a] / rate[c]:.1f}x | {'met' if rate[a] >= 20 * rate[c] else 'missed'} |",
        f"| (a') >= 20x naive | {rate[a2] / rate[c]:.1f}x | {'met' if rate[a2] >= 20 * rate[c] else 'missed'} |",
    ]  # fmt: skip
    if args.memory:
        lines += ["", "Peak RSS (VmHWM) of a child process staging then routing N records:", "",
                  "| records | route_records seconds | records/s | peak RSS |",
                  "|---:|---:|---:|---:|"]  # fmt: skip
        lines += memory_rows
    return "\n".join(lines)


def rewrite(out: Path, table: str) -> None:
    from machine_info import rewrite_results  # bench/ is on sys.path when a bench script runs

    rewrite_results(out, table, RESULTS_START, RESULTS_END)


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--naive-records", type=int, default=100_000,
                        help="records for the (slow) naive baseline (default 100,000)")  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="peak RSS of (b) per size")
    parser.add_argument("--memory-sizes", default="1000000,5000000")
    parser.add_argument("--out", type=Path, help="rewrite the marked results section of this file")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child_main(args.child)
        return
    args.memory_sizes = [int(size) for size in args.memory_sizes.split(",")]
    table = run(args)
    print(table)
    if args.out:
        rewrite(args.out, table)


if __name__ == "__main__":
    main()
