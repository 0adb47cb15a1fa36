"""Record file formats shared by the ``file`` and ``s3`` destinations.

JSON Lines and JSON through orjson, CSV through the standard library, Parquet through pyarrow
(one Arrow record batch per delivery batch, row groups of up to ``ROW_GROUP_ROWS`` rows).
Text formats are compressed as a whole (gzip or zstd); Parquet compresses inside the file
(snappy by default), so every Parquet reader can open it.

Parquet typing (the first pass over the records, spilled to an Arrow IPC file, so memory stays
bounded by one batch):

- every key of any record is a column, typed from all its values; types are unified across
  batches (null -> any type, int -> float, struct fields merged); a field of clashing types
  is an error naming it;
- ``datetime`` values and top-level string fields whose every value is an ISO 8601 date-time
  (``2024-01-02T03:04:05``, optional fraction of up to 6 digits, optional ``Z``/``+02:00``)
  are ``timestamp[us]``: with a zone in every value, converted to UTC
  (``timestamp[us, tz=UTC]``); without a zone in any, naive. A field mixing both, or with one
  other string, stays a string. Dates alone (``2024-01-02``) stay strings;
- a field that is null in every record is a string column (Spark and Athena cannot read
  Parquet's null type).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Literal

import orjson

from airflow_dataflow.jsonable import dumps, json_default
from airflow_dataflow.staging import StagedBatches, decode_line, read_lines

FileFormat = Literal["jsonl", "json", "csv", "parquet"]
Compression = Literal["none", "gzip", "zstd"]
Batches = Iterable[list[dict[str, Any]]]

ROW_GROUP_ROWS = 128 * 1024
ARROW_BATCH_ROWS = 16 * 1024  # records converted to Arrow at once (fewer, larger calls)
GZIP_LEVEL = 6
ZSTD_LEVEL = 3
_ISO_DATETIME = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"
_ZONED = _ISO_DATETIME + r"(?:Z|[+-]\d{2}:?\d{2})$"
_NAIVE = _ISO_DATETIME + "$"
_LOOKS_LIKE_DATETIME = re.compile(_ISO_DATETIME)
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_ORJSON_LINE = _ORJSON | orjson.OPT_APPEND_NEWLINE
_COMPRESSION_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}


class RecordsDoNotFit(Exception):
    """Records that cannot share one Parquet schema; the destination names itself."""


class Counter:
    """Records written so far (a writer that fails midway has counted what it wrote)."""

    def __init__(self) -> None:
        self.count = 0


def _strip_compression(name: str) -> str:
    lowered = name.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lowered.endswith(suffix):
            return lowered.removesuffix(suffix)
    return lowered


def format_from_name(name: str) -> FileFormat:
    """The format a file or key name implies: its extension (after any .gz/.zst), else jsonl."""
    lowered = _strip_compression(name)
    for extension, file_format in (
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "json"),
    ):
        if lowered.endswith(extension):
            return file_format  # type: ignore[return-value]
    return "jsonl"


def compression_from_name(name: str) -> Compression:
    """``gzip`` for ``.gz``, ``zstd`` for ``.zst``, else ``none``."""
    lowered = name.lower()
    for suffix, compression in _COMPRESSION_SUFFIXES.items():
        if lowered.endswith(suffix):
            return compression  # type: ignore[return-value]
    return "none"


def write_records(
    handle: IO[bytes],
    batches: Batches,
    file_format: FileFormat,
    compression: Compression | None,
    counter: Counter,
) -> None:
    """Write every record of ``batches`` to ``handle`` in ``file_format``.

    ``compression`` None means the default: none for text formats, snappy inside Parquet.
    CSV and Parquet iterate ``batches`` twice (header / schema first): it must be re-iterable.
    """
    if file_format == "parquet":
        _write_parquet(handle, batches, counter, codec=compression or "snappy")
        return
    with _compressed(handle, compression or "none") as out:
        _TEXT_WRITERS[file_format](out, batches, counter)


@contextmanager
def _compressed(handle: IO[bytes], compression: Compression) -> Iterator[IO[bytes]]:
    """``handle`` wrapped in a compressor; the compressed stream is finished on exit.

    gzip without a timestamp in its header: the same records give the same bytes (an object
    rewritten on retry keeps its ETag).
    """
    if compression == "gzip":
        with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as out:
            yield out  # type: ignore[misc]
    elif compression == "zstd":
        import zstandard

        compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        with compressor.stream_writer(handle, closefd=False) as out:
            yield out  # type: ignore[misc]
    else:
        yield handle


# --- JSON Lines and JSON ------------------------------------------------------------------------


def _json(record: Any, option: int) -> bytes:
    """One record as JSON (orjson; the standard library for what orjson refuses: big integers,
    keys that are not strings). NaN and infinities become null either way."""
    try:
        return orjson.dumps(record, default=json_default, option=option)
    except TypeError:
        text = dumps(record).encode("utf-8")
        return text + b"\n" if option & orjson.OPT_APPEND_NEWLINE else text


def _write_jsonl(handle: IO[bytes], batches: Batches, counter: Counter) -> None:
    if isinstance(batches, StagedBatches):
        _copy_staged_lines(handle, batches, counter)
        return
    for batch in batches:
        handle.write(b"".join([_json(record, _ORJSON_LINE) for record in batch]))
        counter.count += len(batch)


def _copy_staged_lines(handle: IO[bytes], batches: StagedBatches, counter: Counter) -> None:
    """The staged lines as they are: staging writes the same compact orjson lines.

    Records are not decoded and encoded again (the JSON Lines fast path). The rare line
    staging wrote with the standard library (marked by a leading space: integers beyond 64
    bits, very deep nesting) is re-encoded like any record, so the bytes are those of the
    record-by-record writer.
    """
    pending: list[bytes] = []
    for uri, numbered in read_lines(batches.manifest):
        for line_number, raw in numbered:
            if raw.startswith(b" "):
                raw = _json(decode_line(uri, line_number, raw), _ORJSON_LINE)
            pending.append(raw)
            if len(pending) >= _COPY_LINES:
                handle.write(b"".join(pending))
                counter.count += len(pending)
                pending = []
    handle.write(b"".join(pending))
    counter.count += len(pending)


_COPY_LINES = 10_000


def _write_json(handle: IO[bytes], batches: Batches, counter: Counter) -> None:
    """One JSON array, a record per line (streamed: never the whole array in memory)."""
    handle.write(b"[")
    for batch in batches:
        if not batch:
            continue
        separator = b",\n" if counter.count else b"\n"
        handle.write(separator + b",\n".join([_json(record, _ORJSON) for record in batch]))
        counter.count += len(batch)
    handle.write(b"\n]\n" if counter.count else b"]\n")


def _add_columns(columns: dict[str, None], batch: list[dict[str, Any]]) -> None:
    """Add every key of ``batch``'s records to ``columns``, in first-seen order."""
    known = columns.keys()
    for record in batch:
        if not known >= record.keys():  # cheap when records share their keys
            columns.update(dict.fromkeys(record))


# --- CSV ----------------------------------------------------------------------------------------


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, default=json_default, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_csv(handle: IO[bytes], batches: Batches, counter: Counter) -> None:
    """CSV with a header of every field seen, in first-seen order (two passes over the batches).

    Nested values are JSON in their cell, null is an empty cell, booleans ``true``/``false``.
    """
    columns: dict[str, None] = {}
    for batch in batches:
        _add_columns(columns, batch)
    text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)  # type: ignore[type-var]
    writer = csv.writer(text)
    writer.writerow(columns)
    for batch in batches:
        writer.writerows(
            [[_csv_cell(record.get(column)) for column in columns] for record in batch]
        )
        counter.count += len(batch)
    text.detach()


_TEXT_WRITERS: dict[str, Callable[[IO[bytes], Batches, Counter], None]] = {
    "jsonl": _write_jsonl,
    "json": _write_json,
    "csv": _write_csv,
}


# --- Parquet ------------------------------------------------------------------------------------


class _BatchColumns:
    """One batch as Arrow arrays (types inferred), with what its string columns look like."""

    def __init__(self, batch: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        columns: dict[str, None] = {}
        _add_columns(columns, batch)
        arrays = []
        self.timestamp_kinds: dict[str, str] = {}
        for column in columns:
            values = [record.get(column) for record in batch]
            try:
                array = _utc(pa.array(values))
            except (pa.ArrowException, OverflowError) as exc:
                raise RecordsDoNotFit(_clash(column, values, exc)) from exc
            if pa.types.is_string(array.type):
                self.timestamp_kinds[column] = _timestamp_kind(array)
            arrays.append(array)
        self.batch = pa.RecordBatch.from_arrays(arrays, names=list(columns))


def _clash(column: str, values: list[Any], exc: Exception) -> str:
    """Why ``values`` make no Arrow array: the types they mix, else Arrow's own words."""
    import pyarrow as pa

    types: dict[type, str] = {}
    for value in values:
        if value is not None and type(value) not in types:
            try:
                types[type(value)] = str(pa.array([value]).type)
            except (pa.ArrowException, OverflowError):
                types[type(value)] = type(value).__name__
    names = sorted(set(types.values()))
    if len(names) > 1:
        return (
            f"field {column!r} has values of types {' and '.join(names)}; Parquet needs one "
            f"type per field"
        )
    return f"field {column!r} has values that do not fit one Parquet type: {exc}"


def _utc(array: Any) -> Any:
    """Zoned timestamps (from ``datetime`` values) in UTC, so batches share one type."""
    import pyarrow as pa

    if pa.types.is_timestamp(array.type) and array.type.tz is not None:
        return array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    return array


def _timestamp_kind(array: Any) -> str:
    """``zoned``/``naive`` when every non-null value is an ISO date-time that Arrow parses,
    ``empty`` when there is none, else ``string``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = len(array) - array.null_count
    if not present:
        return "empty"
    first = array[0] if not array.null_count else pc.drop_null(array)[0]
    if not _LOOKS_LIKE_DATETIME.match(first.as_py()):  # most string fields: no vector work
        return "string"
    for kind, pattern, target in (
        ("zoned", _ZONED, pa.timestamp("us", tz="UTC")),
        ("naive", _NAIVE, pa.timestamp("us")),
    ):
        if pc.sum(pc.match_substring_regex(array, pattern)).as_py() == present:
            try:
                pc.cast(array, target)
            except pa.ArrowException:  # looks like one, is not (month 13, hour 25)
                return "string"
            return kind
    return "string"


class _Spill:
    """Arrow record batches in a temporary IPC file: written once, read back in order."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="dataflow-parquet-")  # noqa: SIM115
        self.extents: list[tuple[int, int]] = []

    def add(self, batch: Any) -> None:
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        data = sink.getvalue()
        self.extents.append((self.file.tell(), data.size))
        self.file.write(data)

    def __iter__(self) -> Iterator[Any]:
        import pyarrow as pa

        for offset, size in self.extents:
            self.file.seek(offset)
            data = self.file.read(size)
            yield pa.ipc.open_stream(pa.py_buffer(data)).read_next_batch()

    def close(self) -> None:
        self.file.close()


class _SchemaBuilder:
    """One schema for every batch: unified types, ISO date-time strings as timestamps."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.kinds: dict[str, set[str]] = {}

    def add(self, columns: _BatchColumns) -> None:
        import pyarrow as pa

        for field in columns.batch.schema:
            kind = columns.timestamp_kinds.get(field.name)
            if kind:
                self.kinds.setdefault(field.name, set()).add(kind)
            known = self.fields.get(field.name)
            if known is None:
                self.fields[field.name] = field
                continue
            try:
                unified = pa.unify_schemas(
                    [pa.schema([known]), pa.schema([field])], promote_options="permissive"
                )
            except (pa.ArrowException, OverflowError) as exc:
                raise RecordsDoNotFit(
                    f"field {field.name!r} is {known.type} in earlier records and {field.type} "
                    f"in later ones; Parquet needs one type per field"
                ) from exc
            self.fields[field.name] = unified.field(field.name)

    def schema(self) -> Any:
        import pyarrow as pa

        fields = []
        for name, field in self.fields.items():
            kinds = self.kinds.get(name, set()) - {"empty"}
            if pa.types.is_string(field.type) and kinds == {"zoned"}:
                field = field.with_type(pa.timestamp("us", tz="UTC"))
            elif pa.types.is_string(field.type) and kinds == {"naive"}:
                field = field.with_type(pa.timestamp("us"))
            fields.append(field.with_type(_without_null(field.type)))
        return pa.schema(fields)


def _without_null(data_type: Any) -> Any:
    """``data_type`` with Arrow's null type (no value ever seen) replaced by string."""
    import pyarrow as pa

    if pa.types.is_null(data_type):
        return pa.string()
    if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
        item = _without_null(data_type.value_type)
        return pa.list_(item) if pa.types.is_list(data_type) else pa.large_list(item)
    if pa.types.is_struct(data_type):
        return pa.struct(
            [
                data_type.field(i).with_type(_without_null(data_type.field(i).type))
                for i in range(data_type.num_fields)
            ]
        )
    return data_type


def _conform(batch: Any, schema: Any) -> Any:
    """``batch`` with ``schema``'s columns, in its order, cast to its types (missing: null)."""
    import pyarrow as pa

    arrays = []
    for field in schema:
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        array = batch.column(index)
        if array.type != field.type:
            try:
                array = array.cast(field.type)
            except (pa.ArrowException, OverflowError) as exc:
                raise RecordsDoNotFit(
                    f"field {field.name!r} has a value that does not fit its Parquet type "
                    f"{field.type}: {exc}"
                ) from exc
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _rebatched(batches: Batches, rows: int) -> Iterator[list[dict[str, Any]]]:
    """The records of ``batches`` in lists of about ``rows`` (whole batches joined)."""
    pending: list[dict[str, Any]] = []
    for batch in batches:
        pending.extend(batch)
        if len(pending) >= rows:
            yield pending
            pending = []
    if pending:
        yield pending


def _write_parquet(handle: IO[bytes], batches: Batches, counter: Counter, codec: str) -> None:
    """Two passes: batches to Arrow (spilled) while the schema is unified, then written with it.

    Nothing reaches ``handle`` when records do not fit one schema.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    spill = _Spill()
    try:
        builder = _SchemaBuilder()
        for batch in _rebatched(batches, ARROW_BATCH_ROWS):
            if batch:
                columns = _BatchColumns(batch)
                builder.add(columns)
                spill.add(columns.batch)
        schema = builder.schema()
        with pq.ParquetWriter(
            handle, schema, compression=codec, coerce_timestamps="us"
        ) as parquet_writer:
            pending: list[Any] = []
            rows = 0
            for stored in spill:
                pending.append(_conform(stored, schema))
                rows += stored.num_rows
                if rows >= ROW_GROUP_ROWS:
                    parquet_writer.write_table(pa.Table.from_batches(pending, schema=schema))
                    counter.count += rows
                    pending, rows = [], 0
            if pending:
                parquet_writer.write_table(pa.Table.from_batches(pending, schema=schema))
                counter.count += rows
    finally:
        spill.close()
