"""Commit: assemble the run summary, check that every record is accounted for."""

from __future__ import annotations

from typing import Any

from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.errors import DataflowError


class ConservationError(DataflowError):
    """Records went missing between phases: a bug, never a data problem."""


class DeadLettersPresentError(DataflowError):
    """``on_dead_letter: fail`` and the run produced dead letters."""


def summarize(
    route: LoadedRoute,
    run_id: str,
    routing: dict[str, Any],
    deliveries: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """The run summary: counts per rule and destination, dead letters and warnings.

    ``counts.routed`` is what the rules sent to each destination, ``counts.destinations``
    what was delivered (records, not messages), ``counts.held_back`` what ``min_records``
    kept from delivery; for each destination routed = delivered + held_back.
    """
    counts = routing["counts"]
    warnings: list[str] = list(routing.get("warnings") or [])  # the connector's, via routing
    delivered: dict[str, int] = {}
    held_back: dict[str, int] = {}
    rejected: dict[str, int] = {}
    for name in route.config.destinations:
        result = deliveries.get(name)
        delivered[name] = result["delivered"] if result else 0
        if result and result.get("rejected"):
            rejected[name] = result["rejected"]
            warnings.append(
                f"destination {name!r}: {result['rejected']} records refused, kept as dead "
                "letters (airflow-dataflow dead-letters list)"
            )
        routed = counts["routed"].get(name, 0)
        minimum = route.config.destinations[name].min_records
        if routed and not result and routed < minimum:
            held_back[name] = routed
            warnings.append(
                f"destination {name!r}: {routed} records held back (min_records is {minimum})"
            )
    return {
        "dag_id": route.route_id,
        "run_id": run_id,
        "counts": {
            "read": counts["read"],
            "matched": counts["matched"],
            "unmatched": counts["unmatched"],
            "dead_lettered": counts["dead_lettered"],
            "rules": counts["rules"],
            "destinations": delivered,
            "routed": dict(counts["routed"]),
            "held_back": held_back,
            "rejected": rejected,
        },
        "dead_letters": routing.get("dead_letters"),
        "warnings": warnings,
    }


def check_conservation(summary: dict[str, Any], route: LoadedRoute) -> None:
    """read = matched + unmatched + dead-lettered; each destination got what was routed to it."""
    counts = summary["counts"]
    accounted = counts["matched"] + counts["unmatched"] + counts["dead_lettered"]
    if accounted != counts["read"]:
        raise ConservationError(
            f"route {route.route_id!r}: read {counts['read']} records but accounted for {accounted} "
            f"(matched {counts['matched']}, unmatched {counts['unmatched']}, "
            f"dead-lettered {counts['dead_lettered']})"
        )
    for name, routed in counts["routed"].items():
        delivered = counts["destinations"].get(name, 0)
        held = counts["held_back"].get(name, 0)
        refused = counts.get("rejected", {}).get(name, 0)
        if delivered + held + refused != routed:
            raise ConservationError(
                f"route {route.route_id!r}: destination {name!r} was routed {routed} records "
                f"but delivered {delivered}"
            )


def check_dead_letters(summary: dict[str, Any], route: LoadedRoute) -> None:
    dead = summary["counts"]["dead_lettered"] + sum(summary["counts"].get("rejected", {}).values())
    if dead and route.config.on_dead_letter == "fail":
        raise DeadLettersPresentError(
            f"route {route.route_id!r}: {dead} records were dead-lettered ({summary['dead_letters']}) "
            "and on_dead_letter is 'fail'; every other record was delivered"
        )
