"""The ``file`` connector: JSON Lines, JSON, CSV and Parquet from a path, glob or URL."""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import io
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

from pydantic import Field, field_validator

from airflow_dataflow import storage
from airflow_dataflow.connectors.base import BadRecord, Connector, ConnectorSettings
from airflow_dataflow.errors import SourceError
from airflow_dataflow.templating import TemplateText, render_text

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
    path: TemplateText = Field(
        description="Local path or glob (/data/*.jsonl; relative to the route file's folder) or object-storage URL (s3://...)"
    )
    format: FileFormat | None = Field(default=None, description="Default: from the file extension")
    encoding: str = Field(
        default="utf-8",
        description="Text encoding of jsonl, json and csv files (a Python codec name: utf-8, "
        "latin-1, cp1252, utf-16, ...); a UTF-8 byte-order mark is skipped",
    )

    @field_validator("encoding")
    @classmethod
    def _check_encoding(cls, value: str) -> str:
        try:
            info = codecs.lookup(value)
        except LookupError:
            raise ValueError(
                f"encoding {value!r} is not a known text encoding; use a Python codec name "
                "such as utf-8, latin-1, cp1252 or utf-16"
            ) from None
        if not getattr(info, "_is_text_encoding", True):
            raise ValueError(
                f"encoding {value!r} is not a text encoding; use a Python codec name such as "
                "utf-8, latin-1, cp1252 or utf-16"
            )
        return value


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
            source = _Reading(path, name, self.context.route, self.settings.encoding)
            yield from _READERS[file_format](source)

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


@dataclass(frozen=True, slots=True)
class _Reading:
    """One file being read: where it is and what to tell the user when it is unreadable."""

    path: Any
    name: str
    route: str
    encoding: str  # as the user wrote it, for messages

    @property
    def codec(self) -> str:
        """The codec to decode with: ``utf-8-sig`` for UTF-8, so a byte-order mark is dropped."""
        return "utf-8-sig" if codecs.lookup(self.encoding).name == "utf-8" else self.encoding

    @property
    def lines_are_bytes(self) -> bool:
        """Whether line breaks are the ASCII bytes, so the file can be split into lines undecoded."""
        if codecs.lookup(self.encoding).name in ("utf-8", "utf-8-sig"):
            return True
        return "\r\n".encode(self.encoding) == b"\r\n"

    @contextlib.contextmanager
    def open_binary(self) -> Iterator[IO[bytes]]:
        with contextlib.ExitStack() as stack:
            handle: IO[bytes] = stack.enter_context(self.path.open("rb"))
            if self.name.endswith(".gz"):
                handle = stack.enter_context(gzip.GzipFile(fileobj=handle, mode="rb"))
            yield handle

    @contextlib.contextmanager
    def open_text(self) -> Iterator[io.TextIOWrapper]:
        with self.open_binary() as raw:
            text = io.TextIOWrapper(raw, encoding=self.codec, newline="")
            try:
                yield text
            finally:
                text.detach()

    def not_decodable(self, exc: UnicodeDecodeError, *, after_line: int) -> SourceError:
        """The whole file is unreadable in the encoding (a format whose records can span lines)."""
        line = self._first_undecodable_line()
        where = f"line {line}" if line is not None else f"about line {after_line + 1}"
        return SourceError(
            f"route {self.route!r}: {self.name} is not valid {self.encoding} "
            f"({exc.reason}, byte {_bad_bytes(exc)}) at {where}; set source.encoding to the "
            "file's encoding (for example latin-1 or cp1252)"
        )

    def _first_undecodable_line(self) -> int | None:
        """The exact line of the first undecodable byte, by reading the file again line by line."""
        if not self.lines_are_bytes:
            return None
        codec = self.codec
        with self.open_binary() as handle:
            for line_number, line in enumerate(handle, start=1):
                try:
                    line.decode(codec)
                except UnicodeDecodeError:
                    return line_number
        return None


def _bad_bytes(exc: UnicodeDecodeError) -> str:
    return exc.object[exc.start : exc.end].hex(" ", 1) or "?"


def _not_valid(encoding: str, exc: UnicodeDecodeError, where: str) -> str:
    return (
        f"not valid {encoding}: {exc.reason}, byte {_bad_bytes(exc)} at offset {exc.start} "
        f"of the {where}"
    )


MAX_RECORD_CHARS = 64 * 1024 * 1024
"""A JSON Lines record longer than this (64 Mi characters) becomes a dead letter, kept whole."""

_TOO_DEEP = "record is nested deeper than the JSON decoder allows (about 1,000 levels)"


def _read_jsonl(source: _Reading) -> Iterator[Any | BadRecord]:
    if not source.lines_are_bytes:
        yield from _read_jsonl_text(source)
        return
    codec = source.codec
    with source.open_binary() as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode(codec)
            except UnicodeDecodeError as exc:
                yield BadRecord(
                    f"{source.name}:{line_number}",
                    _not_valid(source.encoding, exc, "line"),
                    raw.rstrip(b"\r\n").decode(codec, errors="backslashreplace"),
                )
                continue
            if line.strip():
                yield _json_line(source.name, line_number, line)


def _read_jsonl_text(source: _Reading) -> Iterator[Any | BadRecord]:
    """JSON Lines in an encoding whose line breaks are not single bytes (UTF-16, UTF-32)."""
    line_number = 0
    with source.open_text() as handle:
        try:
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    yield _json_line(source.name, line_number, line)
        except UnicodeDecodeError as exc:
            raise source.not_decodable(exc, after_line=line_number) from exc


def _json_line(name: str, line_number: int, line: str) -> Any:
    if len(line) > MAX_RECORD_CHARS:
        return BadRecord(
            f"{name}:{line_number}",
            f"record of {len(line):,} characters is over the limit of {MAX_RECORD_CHARS:,}",
            line.rstrip("\r\n"),
        )
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        return BadRecord(f"{name}:{line_number}", f"invalid JSON: {exc}", line.rstrip("\r\n"))
    except RecursionError:
        return BadRecord(f"{name}:{line_number}", _TOO_DEEP, line.rstrip("\r\n"))


def _read_json(source: _Reading) -> Iterator[Any | BadRecord]:
    with source.open_binary() as handle:
        data = handle.read()
    try:
        text = data.decode(source.codec)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].decode(source.codec, errors="replace").count("\n") + 1
        yield BadRecord(
            f"{source.name}:{line}",
            _not_valid(source.encoding, exc, "file"),
            data.decode(source.codec, errors="backslashreplace"),
        )
        return
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        yield BadRecord(f"{source.name}:{exc.lineno}", f"invalid JSON: {exc}", text)
        return
    except RecursionError:
        yield BadRecord(f"{source.name}:1", _TOO_DEEP, text)
        return
    if isinstance(document, list):
        yield from document
    else:
        yield document


class _LineCounter:
    """Feeds lines to ``csv.reader`` and keeps the text of the record being parsed."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = iter(lines)
        self.count = 0
        self.pending: list[str] = []

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        line = next(self._lines)
        self.count += 1
        self.pending.append(line)
        return line

    def take(self) -> str:
        text = "".join(self.pending)
        self.pending.clear()
        return text


def _read_csv(source: _Reading) -> Iterator[Any | BadRecord]:
    with source.open_text() as handle:
        lines = _LineCounter(handle)
        reader = csv.reader(lines)
        try:
            yield from _csv_records(source, reader, lines)
        except UnicodeDecodeError as exc:
            raise source.not_decodable(exc, after_line=lines.count) from exc


def _csv_records(
    source: _Reading, reader: Any, lines: _LineCounter
) -> Iterator[dict[str, str] | BadRecord]:
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise SourceError(
            f"route {source.route!r}: cannot read the CSV header of {source.name}: {exc}"
        ) from exc
    if header is None:
        return
    duplicates = sorted({column for column in header if header.count(column) > 1})
    if duplicates:
        raise SourceError(
            f"route {source.route!r}: the CSV header of {source.name} names "
            f"{', '.join(repr(column) for column in duplicates)} more than once; a record "
            "cannot hold two values under one name, so rename the columns"
        )
    width = len(header)
    while True:
        lines.take()
        first_line = lines.count + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raw = lines.take()
            if not raw:  # nothing consumed: the reader cannot go on
                raise SourceError(
                    f"route {source.route!r}: cannot read {source.name} after line "
                    f"{lines.count}: {exc}"
                ) from exc
            yield BadRecord(f"{source.name}:{first_line}", f"invalid CSV: {exc}", raw)
            continue
        if not row:
            continue
        if len(row) != width:
            yield BadRecord(
                f"{source.name}:{first_line}",
                f"CSV row has {len(row)} fields, the header has {width}",
                row,
            )
            continue
        yield dict(zip(header, row, strict=True))


def _read_parquet(source: _Reading) -> Iterator[Any | BadRecord]:
    import pyarrow.parquet as pq

    with source.path.open("rb") as handle:
        parquet = pq.ParquetFile(handle)
        for batch in parquet.iter_batches(batch_size=10_000):
            yield from batch.to_pylist()


_READERS = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "parquet": _read_parquet}
