"""The ``file`` destination: JSON Lines, JSON, CSV or Parquet at a templated path."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterable
from typing import IO, Any, Literal

from pydantic import Field

from airflow_dataflow import storage
from airflow_dataflow.destinations.base import DeliveryResult, Destination, DestinationSettings
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.jsonable import dumps, json_default
from airflow_dataflow.templating import render_text

log = logging.getLogger(__name__)

Batches = Iterable[list[dict[str, Any]]]


class FileDestinationSettings(DestinationSettings):
    type: Literal["file"]  # type: ignore[assignment]
    path: str = Field(
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

    def deliver(self, batches: Batches) -> DeliveryResult:
        rendered = render_text(
            self.settings.path, self.context.template_vars(destination=self.name, batch=0)
        )
        location = storage.absolute(rendered, self.context.base_dir)
        file_format = self.settings.format or _format_from_name(location)
        writer = _WRITERS[file_format]
        counter = _Counter()

        def write(handle: IO[bytes]) -> None:
            if self.settings.compression == "gzip":
                with gzip.GzipFile(fileobj=handle, mode="wb") as compressed:
                    writer(compressed, batches, counter)
            else:
                writer(handle, batches, counter)

        try:
            path = storage.write_atomically(location, write)
        except OSError as exc:
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r} cannot write "
                f"{location}: {exc}"
            ) from exc
        log.info("wrote %d records to %s", counter.count, path)
        return DeliveryResult(delivered=counter.count, locations=[str(path)])


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


def _write_parquet(handle: IO[bytes], batches: Batches, counter: _Counter) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet_writer = None
    try:
        for batch in batches:
            if not batch:
                continue
            if parquet_writer is None:
                table = pa.Table.from_pylist(batch)
                parquet_writer = pq.ParquetWriter(handle, table.schema)
            else:
                table = pa.Table.from_pylist(batch, schema=parquet_writer.schema)
            parquet_writer.write_table(table)
            counter.count += len(batch)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise DestinationError(f"records do not fit one Parquet schema: {exc}") from exc
    finally:
        if parquet_writer is not None:
            parquet_writer.close()


_WRITERS = {
    "jsonl": _write_jsonl,
    "json": _write_json,
    "csv": _write_csv,
    "parquet": _write_parquet,
}
