"""The ``file`` destination: JSON Lines, JSON, CSV or Parquet at a templated path."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import logging
from collections.abc import Callable, Iterable
from typing import IO, Any, Literal

from pydantic import Field

from airflow_dataflow import storage
from airflow_dataflow.destinations.base import DeliveryResult, Destination, DestinationSettings
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.jsonable import dumps, json_default
from airflow_dataflow.templating import TemplateText, render_text

log = logging.getLogger(__name__)

Batches = Iterable[list[dict[str, Any]]]


class FileDestinationSettings(DestinationSettings):
    type: Literal["file"]  # type: ignore[assignment]
    path: TemplateText = Field(
        description="Path or URL; a Jinja template over route, destination, run_id, ds, params"
    )
    format: Literal["jsonl", "json", "csv", "parquet"] | None = Field(
        default=None, description="Default: from the path's extension, else jsonl"
    )
    compression: Literal["none", "gzip"] = "none"


class FileDestination(Destination):
    """Writes all of a run's records for this destination to one file, atomically.

    The file at the rendered path is replaced, so a retried delivery rewrites the same file
    instead of appending twice.
    """

    settings_model = FileDestinationSettings
    settings: FileDestinationSettings

    def target(self) -> str:
        """The rendered, absolute path or URL this delivery writes."""
        rendered = render_text(
            self.settings.path, self.context.template_vars(destination=self.name, batch=0)
        )
        return storage.absolute(rendered, self.context.base_dir)

    def deliver(self, batches: Batches) -> DeliveryResult:
        location = self.target()
        file_format = self.settings.format or _format_from_name(location)
        writer = _WRITERS[file_format]
        if file_format == "parquet":
            # The schema comes first, from every batch: nothing is opened if records clash.
            try:
                writer = functools.partial(_write_parquet, schema=_parquet_schema(batches))
            except _RecordsDoNotFit as exc:
                raise self._does_not_fit(exc) from exc
        counter = _Counter()

        def write(handle: IO[bytes]) -> None:
            if self.settings.compression == "gzip":
                with gzip.GzipFile(fileobj=handle, mode="wb") as compressed:
                    writer(compressed, batches, counter)
            else:
                writer(handle, batches, counter)

        try:
            path = storage.write_atomically(location, write)
        except _RecordsDoNotFit as exc:
            raise self._does_not_fit(exc) from exc
        except OSError as exc:
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r} cannot write "
                f"{location}: {exc}"
            ) from exc
        log.info("wrote %d records to %s", counter.count, path)
        return DeliveryResult(delivered=counter.count, locations=[str(path)])

    def _does_not_fit(self, exc: _RecordsDoNotFit) -> DestinationError:
        return DestinationError(
            f"route {self.context.route!r}: destination {self.name!r}: records do not fit "
            f"one Parquet schema: {exc}"
        )


class _Counter:
    def __init__(self) -> None:
        self.count = 0


def _format_from_name(location: str) -> str:
    lowered = location.lower().removesuffix(".gz")
    for extension, file_format in ((".csv", "csv"), (".parquet", "parquet"), (".jsonl", "jsonl")):
        if lowered.endswith(extension):
            return file_format
    if lowered.endswith(".json"):
        return "json"
    return "jsonl"


def _write_jsonl(handle: IO[bytes], batches: Batches, counter: _Counter) -> None:
    for batch in batches:
        handle.write("".join(dumps(record) + "\n" for record in batch).encode("utf-8"))
        counter.count += len(batch)


def _write_json(handle: IO[bytes], batches: Batches, counter: _Counter) -> None:
    handle.write(b"[")
    for batch in batches:
        for record in batch:
            handle.write(b",\n" if counter.count else b"\n")
            handle.write(dumps(record).encode("utf-8"))
            counter.count += 1
    handle.write(b"\n]\n" if counter.count else b"]\n")


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=json_default, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_csv(handle: IO[bytes], batches: Batches, counter: _Counter) -> None:
    """CSV with a header of every field seen, in first-seen order (two passes over staging)."""
    columns: dict[str, None] = {}
    for batch in batches:
        for record in batch:
            columns.update(dict.fromkeys(record))
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)
    writer = csv.writer(text)
    writer.writerow(columns)
    for batch in batches:
        for record in batch:
            writer.writerow([_csv_cell(record.get(column)) for column in columns])
        counter.count += len(batch)
    text.detach()


class _RecordsDoNotFit(Exception):
    """Records that cannot share one Parquet schema; ``deliver`` names the destination."""


def _parquet_schema(batches: Batches) -> Any:
    """One schema for every record of every batch (a first pass over staging).

    Each batch's columns are every key of any of its records, typed from all their values;
    the batches' schemas are unified permissively (null -> any type, int -> float, struct
    fields merged), so a field that first appears in a later batch or record is kept.
    """
    import pyarrow as pa

    fields: dict[str, Any] = {}
    for batch in batches:
        if not batch:
            continue
        columns: dict[str, None] = {}
        for record in batch:
            columns.update(dict.fromkeys(record))
        for column in columns:
            values = [record.get(column) for record in batch]
            try:
                found = pa.field(column, pa.array(values).type)
            except (pa.ArrowException, OverflowError) as exc:
                raise _RecordsDoNotFit(
                    f"field {column!r} has values that do not fit one Parquet type: {exc}"
                ) from exc
            known = fields.get(column)
            if known is None:
                fields[column] = found
                continue
            try:
                unified = pa.unify_schemas(
                    [pa.schema([known]), pa.schema([found])], promote_options="permissive"
                )
            except (pa.ArrowException, OverflowError) as exc:
                raise _RecordsDoNotFit(
                    f"field {column!r} is {known.type} in earlier records and {found.type} "
                    f"in later ones; Parquet needs one type per field"
                ) from exc
            fields[column] = unified.field(column)
    return pa.schema(list(fields.values()))


def _write_parquet(handle: IO[bytes], batches: Batches, counter: _Counter, schema: Any) -> None:
    """Every batch written with ``schema`` (from ``_parquet_schema``); missing keys are null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with pq.ParquetWriter(handle, schema) as parquet_writer:
        for batch in batches:
            if not batch:
                continue
            arrays = []
            for field in schema:
                values = [record.get(field.name) for record in batch]
                try:
                    arrays.append(pa.array(values, type=field.type))
                except (pa.ArrowException, OverflowError) as exc:
                    raise _RecordsDoNotFit(
                        f"field {field.name!r} has a value that does not fit its Parquet type "
                        f"{field.type}: {exc}"
                    ) from exc
            parquet_writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            counter.count += len(batch)


_WRITERS: dict[str, Callable[..., None]] = {
    "jsonl": _write_jsonl,
    "json": _write_json,
    "csv": _write_csv,
    "parquet": _write_parquet,
}
