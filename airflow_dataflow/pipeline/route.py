"""Route: run staged records through the compiled rules into one partition per destination."""

from __future__ import annotations

import logging
from typing import Any

from airflow_dataflow import storage
from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.jsonable import dumps, dumps_line, loads_line
from airflow_dataflow.pipeline.kinds import DEAD_LETTER, make_destination
from airflow_dataflow.pipeline.partitions import partition_writer, records_in
from airflow_dataflow.routing import compile_router
from airflow_dataflow.routing.router import failure
from airflow_dataflow.staging import ChunkWriter, StagedBatches, StagingArea, read_lines

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
    """Route every extracted record; returns partitions, counts and where dead letters went.

    Streams: one staged line at a time is decoded, routed and written, so memory does not
    grow with the number of records. A record never stops the loop: a staged line that does
    not decode, a record that makes routing fail (nested too deeply, out of memory) and an
    output that cannot be serialised all become dead letters naming the chunk and line.
    """
    router = compile_route(route, context)
    writers = {
        name: partition_writer(staging, name, settings)
        for name, settings in route.config.destinations.items()
    }
    dead = staging.writer("dead-letters")
    status = {"matched": 0, "unmatched": 0, "dead": 0}
    rule_counts = {name: 0 for name in router.rule_names}
    letter = _letter_factory(route, context)
    try:
        for _, lines in read_lines(extracted["malformed"]):
            for _, raw in lines:
                dead.write_line(raw)
        route_one = router.route
        line_sinks = {
            name: writer.write_line
            for name, writer in writers.items()
            if isinstance(writer, ChunkWriter)
        }
        for uri, lines in read_lines(extracted["records"]):
            for line, raw in lines:
                try:
                    record = loads_line(raw)
                except ValueError as exc:
                    status["dead"] += 1
                    reason = f"staged line is not valid JSON: {exc}"
                    _write_letter(dead, letter(None, None, reason, f"{uri}:{line}", raw), raw)
                    continue
                routed = route_one(record, copies=False)
                outputs = []
                previous: Any = _NOTHING
                try:
                    for destination, output in routed.deliveries:
                        sink = line_sinks.get(destination)
                        if sink is None:  # a writer that takes records (not staged lines)
                            outputs.append((writers[destination].write, output))
                            continue
                        if output is not previous:  # one object to several destinations
                            previous = output
                            data = dumps_line(output)
                        outputs.append((sink, data))
                except Exception as exc:  # TypeError, RecursionError, MemoryError
                    status["dead"] += 1
                    reason = f"cannot serialise the output for {destination!r}: {failure(exc)}"
                    _write_letter(dead, letter(None, None, reason, f"{uri}:{line}", record), raw)
                    continue
                status[routed.status] += 1
                for name in routed.rules:
                    rule_counts[name] += 1
                for sink, data in outputs:
                    sink(data)
                for failed in routed.dead:
                    entry = letter(
                        failed.rule,
                        failed.step,
                        failed.error,
                        f"{uri}:{line}",
                        record,
                        failed.step_kind,
                    )
                    _write_letter(dead, entry, raw)
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
        "rules": rule_counts,
        "routed": {name: records_in(manifest) for name, manifest in partitions.items()},
    }
    location = store_dead_letters(route, context, staging, dead_manifest)
    log.info("routed %d records: %s", counts["read"], counts)
    return {"partitions": partitions, "counts": counts, "dead_letters": location}


_NOTHING = object()


def _letter_factory(route: LoadedRoute, context: RunContext) -> Any:
    route_id, run_id = route.route_id, context.run_id

    def letter(
        rule: str | None,
        step: int | None,
        error: str,
        position: str,
        record: Any,
        step_kind: str | None = None,
    ) -> dict[str, Any]:
        return {
            "route": route_id,
            "run_id": run_id,
            "rule": rule,
            "step": step,
            "step_kind": step_kind,
            "error": error,
            "position": position,
            "record": (
                record.decode("utf-8", "replace").rstrip("\r\n")
                if isinstance(record, bytes)
                else record
            ),
        }

    return letter


def _write_letter(dead: ChunkWriter, entry: dict[str, Any], raw: bytes) -> None:
    """Stage a dead letter; a record that cannot be serialised is kept as its staged line."""
    try:
        dead.write_line(dumps_line(entry))
    except Exception:  # TypeError, RecursionError, MemoryError
        entry["record"] = raw.decode("utf-8", "replace").rstrip("\n")
        dead.write_line(dumps_line(entry))


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
