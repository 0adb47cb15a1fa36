"""The route's operational metrics, pushed to a Pushgateway when one is configured.

``[dataflow] metrics_pushgateway`` (or ``AIRFLOW__DATAFLOW__METRICS_PUSHGATEWAY``) names the
Pushgateway; absent, nothing is pushed. The metrics go to the group
``{job: "airflow_dataflow", route: <route id>}``, apart from any ``prometheus`` destination's
group, so neither push erases the other. ``commit`` pushes the run's counts, duration and last
success; the failed-run path pushes the last failure. Both POST (a push replaces only the
metrics it names), so the last success and the last failure stay side by side. A failed push
logs a warning: it never fails the run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from airflow_dataflow.config import LoadedRoute

log = logging.getLogger(__name__)

CONFIG_SECTION, CONFIG_KEY = "dataflow", "metrics_pushgateway"
ENV_VAR = "AIRFLOW__DATAFLOW__METRICS_PUSHGATEWAY"
PUSH_TIMEOUT = 5.0
PUSH_ATTEMPTS = 2

ROUTE_COUNTS = {
    "read": "records read from the source in the last run",
    "matched": "records at least one rule matched in the last run",
    "unmatched": "records no rule matched in the last run",
    "dead_lettered": "records dead-lettered by routing (bad input, failed transforms) in the last run",
}
DESTINATION_COUNTS = {
    "routed": "records the rules sent to the destination in the last run",
    "delivered": "records delivered to the destination in the last run",
    "dead_lettered": "records the destination refused (kept as dead letters) in the last run",
    "held_back": "records min_records kept from the destination in the last run",
}


def metrics_pushgateway() -> str | None:
    """The configured Pushgateway URL, or ``None`` (Airflow config, then the environment)."""
    try:
        from airflow.configuration import conf

        value = conf.get(CONFIG_SECTION, CONFIG_KEY, fallback="")
    except ImportError:  # pragma: no cover - Airflow is a dependency
        value = os.environ.get(ENV_VAR, "")
    return (value or "").strip() or None


def push_run_metrics(route: LoadedRoute, context: Any, summary: dict[str, Any]) -> None:
    """After the summary is recorded: the run's counts, duration and outcome. Never raises."""
    _push(route.route_id, lambda: _run_families(route, context, summary))


def push_failed_run_metrics(route_id: str, context: Any) -> None:
    """On a failed run's last attempt: the last failure (the last success's metrics stay)."""
    _push(route_id, lambda: _outcome_families(failed=True))


def _run_families(route: LoadedRoute, context: Any, summary: dict[str, Any]) -> list[Metric]:
    counts = summary["counts"]
    refused = any(counts.get("rejected", {}).values())
    failed = bool(counts["dead_lettered"] or refused) and route.config.on_dead_letter == "fail"
    families = _count_families(counts, list(route.config.destinations))
    families.append(
        _gauge("dataflow_run_warnings", "warnings of the last run", len(summary["warnings"]))
    )
    duration = _duration(context)
    if duration is not None:
        families.append(
            _gauge("dataflow_run_duration_seconds", "duration of the last run", duration)
        )
    return families + _outcome_families(failed=failed)


def _count_families(counts: dict[str, Any], destinations: list[str]) -> list[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    families: list[Metric] = [
        _gauge(f"dataflow_run_records_{name}", help_text, counts.get(name, 0))
        for name, help_text in ROUTE_COUNTS.items()
    ]
    per_destination = {
        "routed": counts.get("routed", {}),
        "delivered": counts.get("destinations", {}),
        "dead_lettered": counts.get("rejected", {}),
        "held_back": counts.get("held_back", {}),
    }
    for name, help_text in DESTINATION_COUNTS.items():
        family = GaugeMetricFamily(
            f"dataflow_destination_records_{name}", help_text, labels=["destination"]
        )
        for destination in destinations:
            family.add_metric([destination], per_destination[name].get(destination, 0))
        families.append(family)
    return families


def _outcome_families(*, failed: bool) -> list[Metric]:
    stamp = "failure" if failed else "success"
    return [
        _gauge("dataflow_run_failed", "1 when the last finished run failed, else 0", int(failed)),
        _gauge(
            f"dataflow_last_{stamp}_timestamp_seconds",
            f"Unix time of the last {stamp} of the route",
            time.time(),
        ),
    ]


def _gauge(name: str, help_text: str, value: float) -> Metric:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, help_text, value=value)


def _duration(context: Any) -> float | None:
    started = getattr(context.get("dag_run"), "start_date", None)
    if not isinstance(started, datetime):
        return None
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    return max(0.0, (datetime.now(timezone.utc) - started).total_seconds())


def _push(route_id: str, build: Callable[[], list[Metric]]) -> None:
    """POST the metrics ``build`` gives to the route's operational group; never raises."""
    try:
        url = metrics_pushgateway()
        if url is not None:
            _post(url, route_id, build())
    except Exception as exc:  # metrics must never fail the run
        log.warning(
            "operational metrics of route %s were not pushed (%s: %s)",
            route_id,
            type(exc).__name__,
            exc,
        )


def _post(url: str, route_id: str, families: list[Metric]) -> None:
    from prometheus_client import CollectorRegistry

    from airflow_dataflow.destinations.policy import RetryPolicy
    from airflow_dataflow.destinations.prometheus import (
        OPERATIONAL_JOB,
        MetricsCollector,
        Pushgateway,
    )

    gateway = Pushgateway.from_url(url, timeout=PUSH_TIMEOUT)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MetricsCollector(families))
    RetryPolicy(max_attempts=PUSH_ATTEMPTS, base_delay=0.2).call(
        lambda: gateway.push(
            OPERATIONAL_JOB,
            {"route": route_id},
            registry,
            where=f"route {route_id!r}: operational metrics",
            replace=False,
        ),
        what="pushing the operational metrics",
    )
