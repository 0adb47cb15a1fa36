"""The ``file`` connector: JSON Lines, JSON, CSV and Parquet from a path, glob or URL."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from airflow_dataflow import storage
from airflow_dataflow.connectors.base import BadRecord, Connector, ConnectorSettings
from airflow_dataflow.errors import SourceError
from airflow_dataflow.templating import render_text

log = logging.getLogger(__name__)

FileFormat = Literal["jsonl", "json", "csv", "parquet"]
_EXTENSIONS: dict[str, FileFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class FileSourceSettings(ConnectorSettings):
    type: Literal["file"]  # type: ignore[assignment]
    path: str = Field(
        description="Local path or glob (/data/*.jsonl; relative to the route file's folder) or object-storage URL (s3://...)"
    )
    format: FileFormat | None = Field(default=None, description="Default: from the file extension")


def format_of(name: str, explicit: FileFormat | None) -> FileFormat | None:
    """The format to read ``name`` as: explicit, else from its extension (``.gz`` ignored)."""
    if explicit:
        return explicit
    lowered = name.lower().removesuffix(".gz")
    for extension, found in _EXTENSIONS.items():
        if lowered.endswith(extension):
            return found
    return None


class FileConnector(Connector):
    """Streams records from every file a path or glob names, in name order."""

    settings_model = FileSourceSettings
    settings: FileSourceSettings

    def read(self) -> Iterator[Any | BadRecord]:
        files = self._files()
        for path in files:
            name = str(path)
            file_format = format_of(name, self.settings.format)
            if file_format is None:
                raise SourceError(
                    f"route {self.context.route!r}: cannot tell the format of {name} from its "
                    "extension; set source.format to jsonl, json, csv or parquet"
                )
            log.info("reading %s as %s", name, file_format)
            yield from _READERS[file_format](path, name)

    def _files(self) -> list[Any]:
        rendered = render_text(self.settings.path, self.context.template_vars())
        location = storage.absolute(rendered, self.context.base_dir)
        try:
            files = storage.expand(location)
        except Exception as exc:
            raise SourceError(
                f"route {self.context.route!r}: cannot list source.path {location!r}: {exc}"
            ) from exc
        if not files:
            raise SourceError(
                f"route {self.context.route!r}: source.path {location!r} matches no file; "
                "check the path, or add a wait_for sensor so the run waits for the file"
            )
        return files


def _open_text(path: Any, name: str) -> io.TextIOBase:
    raw = path.open("rb")
    if name.endswith(".gz"):
        raw = gzip.open(raw)  # noqa: SIM115 - closed through the wrapper returned
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _read_jsonl(path: Any, name: str) -> Iterator[Any | BadRecord]:
    with _open_text(path, name) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(
                    f"{name}:{line_number}", f"invalid JSON: {exc}", line.rstrip("\r\n")
                )


def _read_json(path: Any, name: str) -> Iterator[Any | BadRecord]:
    with _open_text(path, name) as handle:
        text = handle.read()
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        yield BadRecord(f"{name}:{exc.lineno}", f"invalid JSON: {exc}", text)
        return
    if isinstance(document, list):
        yield from document
    else:
        yield document


def _read_csv(path: Any, name: str) -> Iterator[Any | BadRecord]:
    with _open_text(path, name) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            return
        width = len(header)
        for row in reader:
            if not row:
                continue
            if len(row) != width:
                yield BadRecord(
                    f"{name}:{reader.line_num}",
                    f"CSV row has {len(row)} fields, the header has {width}",
                    row,
                )
                continue
            yield dict(zip(header, row, strict=True))


def _read_parquet(path: Any, name: str) -> Iterator[Any | BadRecord]:
    import pyarrow.parquet as pq

    with path.open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=10_000):
            yield from batch.to_pylist()


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
