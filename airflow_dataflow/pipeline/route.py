"""Route: run staged records through the compiled rules into one partition per destination."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from airflow_dataflow import storage
from airflow_dataflow.config import LoadedRoute
from airflow_dataflow.context import RunContext
from airflow_dataflow.jsonable import (
    _FAST_OPTIONS,
    _SLOW_MARK,
    dumps,
    dumps_line,
    json_default,
    loads_line,
)
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
    buffers: dict[str, list[bytes]] = {}
    try:
        for _, lines in read_lines(extracted["malformed"]):
            for _, raw in lines:
                dead.write_line(raw)
        route_one = router.route
        match = router.raw_match
        # Lines per staged destination, written every _FLUSH_EVERY records in one call each
        # (ChunkWriter.write_lines keeps the chunks exactly as one write_line per record).
        buffers: dict[str, list[bytes]] = {
            name: [] for name, writer in writers.items() if isinstance(writer, ChunkWriter)
        }
        buffered = buffers.get
        encode, options, decode = orjson.dumps, _FAST_OPTIONS, orjson.loads
        pending = 0
        for uri, lines in read_lines(extracted["records"]):
            for line, raw in lines:
                try:  # `loads_line`, with its common case inlined
                    record = decode(raw) if raw[:1] != _SLOW_MARK else loads_line(raw)
                except ValueError:
                    try:
                        record = loads_line(raw)
                    except ValueError as exc:
                        status["dead"] += 1
                        reason = f"staged line is not valid JSON: {exc}"
                        _write_letter(dead, letter(None, None, reason, f"{uri}:{line}", raw), raw)
                        continue
                failed: Any = True
                if record.__class__ is dict:
                    try:
                        rules, deliveries, failed = match(record)
                    except Exception:  # a pathological record: `route` handles it
                        failed = True
                if failed:
                    routed = route_one(record, copies=False)
                    rules, deliveries, letters = routed.rules, routed.deliveries, routed.dead
                    state = routed.status
                else:
                    letters = None
                    state = "matched" if rules else "unmatched"
                others = None  # (write, output) for writers that take records
                previous: Any = _NOTHING
                whole: Any = None  # the record's own line, once it is needed
                done = 0
                try:
                    for destination, output in deliveries:
                        buffer = buffered(destination)
                        if buffer is None:
                            if others is None:
                                others = []
                            others.append((writers[destination].write, output))
                            continue
                        if output is record:  # serialised once, however many rules take it
                            if whole is None:
                                try:
                                    whole = encode(record, default=json_default, option=options)
                                except TypeError:
                                    whole = dumps_line(record)
                            buffer.append(whole)
                            done += 1
                            continue
                        if output is not previous:  # one output to several destinations
                            previous = output
                            try:
                                data = encode(output, default=json_default, option=options)
                            except TypeError:
                                data = dumps_line(output)
                        buffer.append(data)
                        done += 1
                except Exception as exc:  # TypeError, RecursionError, MemoryError
                    for appended, _ in deliveries:  # take back this record's lines
                        if done and (buffer := buffered(appended)) is not None:
                            buffer.pop()
                            done -= 1
                    status["dead"] += 1
                    reason = f"cannot serialise the output for {destination!r}: {failure(exc)}"
                    _write_letter(dead, letter(None, None, reason, f"{uri}:{line}", record), raw)
                    continue
                status[state] += 1
                count_rules(rule_counts, rules)
                if others is not None:
                    for write, output in others:
                        write(output)
                if letters:
                    for failed in letters:
                        entry = letter(
                            failed.rule,
                            failed.step,
                            failed.error,
                            f"{uri}:{line}",
                            record,
                            failed.step_kind,
                        )
                        _write_letter(dead, entry, raw)
                pending += 1
                if pending >= _FLUSH_EVERY:
                    pending = 0
                    _flush(writers, buffers)
        _flush(writers, buffers)
    finally:
        try:
            _flush(writers, buffers)
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
    return {
        "partitions": partitions,
        "counts": counts,
        "dead_letters": location,
        "warnings": list(extracted.get("warnings") or []),  # the connector's, for the summary
    }


_NOTHING = object()

try:  # `Counter.update`'s C helper: counts[name] += 1 for each name, in one call
    from collections import _count_elements as count_rules  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other interpreters

    def count_rules(counts: dict[str, int], names: list[str]) -> None:
        for name in names:
            counts[name] = counts.get(name, 0) + 1


_FLUSH_EVERY = 256


def _flush(writers: dict[str, Any], buffers: dict[str, list[bytes]]) -> None:
    for name, buffer in buffers.items():
        if buffer:
            writers[name].write_lines(buffer)
            buffer.clear()


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
    """Keep dead letters in the state store, and deliver them to the route's ``dead_letter``
    destination, else keep them in staging as a file."""
    if not manifest["count"]:
        return None
    batches = StagedBatches(manifest)
    from airflow_dataflow.state.store import StateStore

    StateStore.open().add_dead_letters(batches)  # where `dead-letters` commands find them
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
