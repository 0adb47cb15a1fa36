"""Route: run staged records through the compiled rules into one partition per destination."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from airflow_dataflow import storage
from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.jsonable import dumps
from airflow_dataflow.pipeline.kinds import DEAD_LETTER, make_destination
from airflow_dataflow.routing import compile_router
from airflow_dataflow.staging import ChunkWriter, StagedBatches, StagingArea, read_chunks

log = logging.getLogger(__name__)


def rules_as_data(route: LoadedRoute) -> list[dict[str, Any]]:
    """The route's rules as plain data, the form the router compiles."""
    return [rule.model_dump(by_alias=True, exclude_unset=True) for rule in route.config.rules]


def compile_route(route: LoadedRoute, context: RunContext) -> Any:
    return compile_router(
        rules_as_data(route),
        mode=route.config.mode,
        unmatched=route.config.unmatched,
        variables=context.template_vars(),
    )


def route_records(
    route: LoadedRoute, context: RunContext, staging: StagingArea, extracted: dict[str, Any]
) -> dict[str, Any]:
    """Route every extracted record; returns partitions, counts and where dead letters went."""
    router = compile_route(route, context)
    writers = {name: staging.writer(f"to-{name}") for name in route.config.destinations}
    dead = staging.writer("dead-letters")
    status: Counter[str] = Counter()
    rule_counts: Counter[str] = Counter({name: 0 for name in router.rule_names})
    try:
        dead.write_many(_malformed(extracted))
        for uri, line, record in read_chunks(extracted["records"]):
            routed = router.route(record)
            status[routed.status] += 1
            rule_counts.update(routed.rules)
            for destination, output in routed.deliveries:
                writers[destination].write(output)
            for letter in routed.dead:
                dead.write(_dead_letter(route, context, letter, f"{uri}:{line}"))
    finally:
        partitions = {name: writer.close() for name, writer in writers.items()}
        dead_manifest = dead.close()
    malformed = extracted["malformed"]["count"]
    counts = {
        "read": extracted["read"],
        "matched": status["matched"],
        "unmatched": status["unmatched"],
        "dead_lettered": status["dead"] + malformed,
        "dead_letter_entries": dead_manifest["count"],
        "rules": dict(rule_counts),
        "routed": {name: manifest["count"] for name, manifest in partitions.items()},
    }
    location = store_dead_letters(route, context, staging, dead_manifest)
    log.info("routed %d records: %s", counts["read"], counts)
    return {"partitions": partitions, "counts": counts, "dead_letters": location}


def _malformed(extracted: dict[str, Any]) -> Any:
    for _, _, entry in read_chunks(extracted["malformed"]):
        yield entry


def _dead_letter(
    route: LoadedRoute, context: RunContext, letter: Any, position: str
) -> dict[str, Any]:
    return {
        "route": route.route_id,
        "run_id": context.run_id,
        "rule": letter.rule,
        "step": letter.step,
        "error": letter.error,
        "position": position,
        "record": letter.record,
    }


def store_dead_letters(
    route: LoadedRoute, context: RunContext, staging: StagingArea, manifest: dict[str, Any]
) -> str | None:
    """Deliver dead letters to the route's ``dead_letter`` destination, else keep them in staging."""
    if not manifest["count"]:
        return None
    batches = StagedBatches(manifest)
    if route.config.dead_letter is not None:
        result = make_destination(route, DEAD_LETTER, context).deliver(batches)
        return ", ".join(result.locations)
    url = staging.dead_letter_url()

    def write(handle: Any) -> None:
        for batch in batches:
            handle.write("".join(dumps(entry) + "\n" for entry in batch).encode("utf-8"))

    storage.write_atomically(url, write)
    return url


__all__ = ["ChunkWriter", "compile_route", "route_records", "rules_as_data", "store_dead_letters"]
