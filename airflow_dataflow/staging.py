"""Records staged between tasks as chunked JSON Lines files; XCom carries only manifests.

Layout under the staging URL (``[dataflow] staging_url``, default
``file://$AIRFLOW_HOME/dataflow/staging``)::

    <route>/runs/<run>/<name>-00000.jsonl     one chunk of at most ``chunk_size`` records
    <route>/dead_letters/<run>.jsonl          dead letters when no dead_letter destination is set

A manifest is ``{"chunks": [{"uri": ..., "count": n}], "count": N}``.

Lines are written by ``jsonable.dumps_line`` (orjson, compact) through buffered binary
handles and read back by ``jsonable.loads_line``. Reading streams line by line: memory stays
bounded by the largest record, not the chunk size.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from airflow_dataflow import storage
from airflow_dataflow.jsonable import dumps_line, loads_line

DEFAULT_CHUNK_SIZE = 50_000
BUFFER_SIZE = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=-]+")


def default_staging_url() -> str:
    """``[dataflow] staging_url`` from Airflow's config, else under ``$AIRFLOW_HOME``."""
    home = os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow")
    fallback = f"file://{home}/dataflow/staging"
    try:
        from airflow.configuration import conf

        return conf.get("dataflow", "staging_url", fallback=fallback) or fallback
    except ImportError:  # pragma: no cover - Airflow is a dependency
        return fallback


def safe_segment(value: str) -> str:
    """A path segment from a run id or name (``manual__2024-01-01T00:00:00+00:00``)."""
    return _UNSAFE.sub("_", value).strip("._") or "_"


class StagingArea:
    """The staging folder of one route run."""

    def __init__(
        self, base_url: str, route: str, run_id: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.route = route
        self.run_id = run_id
        self.chunk_size = chunk_size
        self.run_url = f"{self.base_url}/{safe_segment(route)}/runs/{safe_segment(run_id)}"

    def writer(self, name: str) -> ChunkWriter:
        return ChunkWriter(f"{self.run_url}/{safe_segment(name)}", self.chunk_size)

    def dead_letter_url(self) -> str:
        return f"{self.base_url}/{safe_segment(self.route)}/dead_letters/{safe_segment(self.run_id)}.jsonl"

    def clean(self) -> None:
        """Remove this run's staged chunks (dead letters kept in staging stay)."""
        path = storage.resolve(self.run_url)
        if not path.exists():
            return
        if storage.is_local(self.run_url):
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.rmdir(recursive=True)


class ChunkWriter:
    """Writes records to numbered chunk files, opening the next one every ``chunk_size``."""

    def __init__(self, prefix: str, chunk_size: int) -> None:
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.chunks: list[dict[str, Any]] = []
        self._handle: Any = None
        self._in_chunk = 0
        self.count = 0

    def write(self, record: Any) -> None:
        """Stage one record (raises TypeError/RecursionError if it cannot be serialised)."""
        self.write_line(dumps_line(record))

    def write_line(self, line: bytes) -> None:
        """Stage one record already serialised by ``jsonable.dumps_line``."""
        if self._in_chunk >= self.chunk_size or self._handle is None:
            self._open_next()
        self._handle.write(line)
        self._in_chunk += 1
        self.count += 1

    def write_lines(self, lines: list[bytes]) -> None:
        """Stage many lines from ``jsonable.dumps_line`` at once; same chunks as ``write_line``."""
        chunk_size = self.chunk_size
        start, total = 0, len(lines)
        while start < total:
            if self._in_chunk >= chunk_size or self._handle is None:
                self._open_next()
            end = min(total, start + max(1, chunk_size - self._in_chunk))
            self._handle.write(b"".join(lines[start:end] if start or end < total else lines))
            self._in_chunk += end - start
            self.count += end - start
            start = end

    def write_many(self, records: Iterable[Any]) -> None:
        for record in records:
            self.write(record)

    def _open_next(self) -> None:
        self._close_current()
        uri = f"{self.prefix}-{len(self.chunks):05d}.jsonl"
        path = storage.resolve(uri)
        if storage.is_local(uri):
            path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(path, Path):
            self._handle = open(path, "wb", buffering=BUFFER_SIZE)  # noqa: SIM115
        else:
            self._handle = path.open("wb")
        self._in_chunk = 0
        self.chunks.append({"uri": uri, "count": 0})

    def _close_current(self) -> None:
        if self._handle is not None:
            self.chunks[-1]["count"] = self._in_chunk
            self._handle.close()
            self._handle = None

    def close(self) -> dict[str, Any]:
        """Finish writing; returns the manifest."""
        self._close_current()
        return {"chunks": self.chunks, "count": self.count}

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_current()


class StagedLineError(ValueError):
    """A staged line that does not decode; names the chunk and line."""

    def __init__(self, uri: str, line: int, reason: str) -> None:
        self.uri, self.line, self.reason = uri, line, reason
        super().__init__(f"{uri}:{line}: staged line is not valid JSON: {reason}")


def read_lines(manifest: dict[str, Any]) -> Iterator[tuple[str, Iterator[tuple[int, bytes]]]]:
    """Per chunk, in order: its URI and its raw lines with 1-based line numbers."""
    for chunk in manifest.get("chunks", []):
        uri = chunk["uri"]
        path = storage.resolve(uri)
        if isinstance(path, Path):
            opened = open(path, "rb", buffering=BUFFER_SIZE)  # noqa: SIM115
        else:
            opened = path.open("rb")
        with opened as handle:
            yield uri, enumerate(handle, start=1)


def decode_line(uri: str, line: int, raw: bytes) -> Any:
    """One staged line's record; StagedLineError naming ``uri:line`` if it does not decode."""
    try:
        return loads_line(raw)
    except ValueError as exc:
        raise StagedLineError(uri, line, str(exc)) from None


def read_chunks(manifest: dict[str, Any]) -> Iterator[tuple[str, int, Any]]:
    """Every staged record with its chunk URI and line number, in order.

    A line that does not decode raises StagedLineError (the route phase reads with
    ``read_lines`` instead and dead-letters such lines).
    """
    for uri, lines in read_lines(manifest):
        for line_number, raw in lines:
            yield uri, line_number, decode_line(uri, line_number, raw)


class StagedBatches:
    """A re-iterable view of a manifest's records in lists of ``batch_size``."""

    def __init__(self, manifest: dict[str, Any], batch_size: int = 1000) -> None:
        self.manifest = manifest
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for _, _, record in read_chunks(self.manifest):
            batch.append(record)
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def staged_batches_with_lines(
    manifest: dict[str, Any], batch_size: int
) -> Iterator[tuple[list[bytes], list[Any]]]:
    """The manifest's records in batches of ``batch_size``, each with its raw staged lines.

    The raw lines are what batch keys hash (no re-serialising); a line that does not decode
    raises StagedLineError.
    """
    lines: list[bytes] = []
    records: list[Any] = []
    for uri, numbered in read_lines(manifest):
        for line_number, raw in numbered:
            lines.append(raw)
            records.append(decode_line(uri, line_number, raw))
            if len(records) >= batch_size:
                yield lines, records
                lines, records = [], []
    if records:
        yield lines, records


def staged_lines(manifest: dict[str, Any]) -> Iterator[bytes]:
    """Every raw staged line of the manifest, in order."""
    for _, numbered in read_lines(manifest):
        for _, raw in numbered:
            yield raw
