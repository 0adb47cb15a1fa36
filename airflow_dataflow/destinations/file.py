"""The ``file`` destination: JSON Lines, JSON, CSV or Parquet at a templated path.

``LaidOutDestination`` (also the base of ``s3``) names files or objects with a template: one
per rendered name. A template over run-level variables names one file for the whole delivery;
``{{ record.x }}`` groups the records by rendered name (spilled to local files first, so memory
stays bounded); ``{{ batch }}`` gives each batch its own file and its own ledger entry.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import IO, Any, Literal

from jinja2 import TemplateError, meta, nodes
from pydantic import Field

from airflow_dataflow import storage
from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    DeliveryResult,
    Destination,
    DestinationSettings,
    Rejection,
)
from airflow_dataflow.destinations.formats import (
    Compression,
    FileFormat,
    RecordsDoNotFit,
    compression_from_name,
    format_from_name,
    write_records,
)
from airflow_dataflow.destinations.formats import Counter as _Counter
from airflow_dataflow.destinations.policy import RateLimiter
from airflow_dataflow.errors import DestinationError
from airflow_dataflow.jsonable import dumps_line
from airflow_dataflow.staging import StagedBatches
from airflow_dataflow.templating import TemplateText, compile_text

log = logging.getLogger(__name__)

Batches = Iterable[Batch]
DEFAULT_BATCH_SIZE = 1000
MAX_LOCATIONS_REPORTED = 100
_RENDER_CACHE = 10_000
_RECORD_ERRORS = (TemplateError, TypeError, ValueError, ArithmeticError, LookupError)


class FileDestinationSettings(DestinationSettings):
    type: Literal["file"]  # type: ignore[assignment]
    path: TemplateText = Field(
        description="Path or URL; a Jinja template over route, destination, run_id, ds, params, "
        "record (one file per rendered path) and batch (one file per batch)"
    )
    format: FileFormat | None = Field(
        default=None, description="Default: from the path's extension, else jsonl"
    )
    compression: Compression | None = Field(
        default=None,
        description="Default: from the extension (.gz: gzip, .zst: zstd), else none; "
        "for parquet the codec inside the file (default snappy)",
    )
    base_dir: str | None = Field(
        default=None,
        description="Refuse any rendered path outside this folder (after '..' and symlinks); "
        "relative to the route file's folder",
    )
    batch_size: int = Field(
        default=DEFAULT_BATCH_SIZE,
        ge=1,
        description="Records per batch: per file with {{ batch }} in the path",
    )


# --- Path and key templates ---------------------------------------------------------------------


class _Placeholder:
    """Stands for ``record.<field>`` or ``batch`` when rendering a template's pattern."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> _Placeholder:
        if attribute.startswith("_"):
            raise AttributeError(attribute)
        return _Placeholder(f"{self._name}.{attribute}")

    def __getitem__(self, key: object) -> _Placeholder:
        return _Placeholder(f"{self._name}.{key}")

    def __str__(self) -> str:
        return "{" + self._name + "}"


_MISSING = object()


def _chain(node: nodes.Node) -> tuple[Any, ...] | None:
    """The keys of ``record.a["b"].c`` (``("a", "b", "c")``); None if not such a chain."""
    keys: list[Any] = []
    while True:
        if isinstance(node, nodes.Getattr):
            keys.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            keys.append(node.arg.value)
            node = node.node
        else:
            break
    if isinstance(node, nodes.Name) and node.name == "record" and keys:
        return tuple(reversed(keys))
    return None


def _record_lookups(ast: nodes.Node) -> list[tuple[Any, ...]] | None:
    """Every ``record.<chain>`` the template reads, or None when it uses ``record`` otherwise
    (whole, called, iterated): then it is rendered for every record, uncached."""
    chains: list[tuple[Any, ...]] = []

    def visit(node: nodes.Node) -> bool:
        if isinstance(node, nodes.Call) and _chain(node.node) is not None:
            return False
        if isinstance(node, nodes.Getattr | nodes.Getitem):
            chain = _chain(node)
            if chain is not None:
                if chain not in chains:
                    chains.append(chain)
                return True
        if isinstance(node, nodes.Name) and node.name == "record":
            return False
        return all(visit(child) for child in node.iter_child_nodes())

    return chains if visit(ast) else None


def _lookup(record: Any, chain: tuple[Any, ...]) -> tuple[Any, Any]:
    """The value at ``chain`` with its type (``1``, ``1.0`` and ``True`` render differently).

    Raises TypeError where the template's own lookup might differ (not a dict or list).
    """
    value = record
    for key in chain:
        if isinstance(value, dict):
            value = value.get(key, _MISSING)
        elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
            value = value[key]
        else:
            raise TypeError("not a plain lookup")
        if value is _MISSING:
            break
    return (value.__class__, value)


class PathTemplate:
    """A path or key template, rendered once, per batch or per record (cached by the values
    of the record fields it reads, so a million records with ten countries render ten times)."""

    def __init__(self, source: str, variables: dict[str, Any]) -> None:
        self.source = source
        self.template = compile_text(source)
        ast = self.template.environment.parse(source)
        names = meta.find_undeclared_variables(ast)
        self.uses_record = "record" in names
        self.uses_batch = "batch" in names
        self.referenced = sorted(names - {"record", "batch"})
        known = set(variables) | set(self.template.environment.globals)
        self.undefined = [name for name in self.referenced if name not in known]
        self.lookups = _record_lookups(ast) if self.uses_record else []
        self.variables = variables
        self._cache: dict[tuple[Any, ...], str] = {}

    def render(self, batch: int = 0, record: Any = None) -> str:
        return self.template.render({**self.variables, "batch": batch, "record": record})

    def for_record(self, record: Any, batch: int = 0) -> str:
        if self.lookups is None:
            return self.render(batch, record)
        try:
            key = (batch, *(_lookup(record, chain) for chain in self.lookups))
            cached = self._cache.get(key)
        except TypeError:  # unhashable values (lists, dicts): render every time
            return self.render(batch, record)
        if cached is None:
            cached = self.render(batch, record)
            if len(self._cache) >= _RENDER_CACHE:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    def pattern(self) -> str:
        """What the template names, for the ledger's target: fully rendered when it uses no
        record or batch, else with ``{record.country}`` and ``{batch}`` placeholders (or, when
        the template computes with them, its source and the run values it reads)."""
        if not (self.uses_record or self.uses_batch):
            return self.render()
        try:
            return self.template.render(
                {**self.variables, "record": _Placeholder("record"), "batch": _Placeholder("batch")}
            )
        except Exception:  # the template computes with record/batch: fall back to its source
            values = {name: self.variables.get(name) for name in self.referenced}
            return f"{self.source} {json.dumps(values, sort_keys=True, default=str)}"


# --- Records grouped by location ------------------------------------------------------------------


class _Partitions:
    """Records grouped by location, spilled to local JSON Lines files (bounded memory)."""

    MAX_OPEN = 64

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="dataflow-partitions-")
        self.files: dict[str, list[Any]] = {}  # location -> [spill path, count]
        self.handles: OrderedDict[str, IO[bytes]] = OrderedDict()

    def add(self, location: str, record: Any) -> None:
        entry = self.files.get(location)
        if entry is None:
            entry = self.files[location] = [
                os.path.join(self.folder, f"{len(self.files)}.jsonl"),
                0,
            ]
        handle = self.handles.pop(location, None)
        if handle is None:
            handle = open(entry[0], "ab", buffering=1 << 16)  # noqa: SIM115
            if len(self.handles) >= self.MAX_OPEN:
                self.handles.popitem(last=False)[1].close()
        self.handles[location] = handle
        handle.write(dumps_line(record))
        entry[1] += 1

    def groups(self, batch_size: int) -> Iterator[tuple[str, StagedBatches]]:
        """Each location with its records, re-iterable, in the order locations first appeared."""
        self._close_handles()
        for location, (path, count) in self.files.items():
            manifest = {"chunks": [{"uri": path, "count": count}], "count": count}
            yield location, StagedBatches(manifest, batch_size=batch_size)

    def _close_handles(self) -> None:
        while self.handles:
            self.handles.popitem()[1].close()

    def __enter__(self) -> _Partitions:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_handles()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- Destinations writing named files or objects -------------------------------------------------


class LaidOutDestination(Destination):
    """Writes records to files or objects named by a template: one per rendered name.

    Subclasses say which template (``_template_source``), how a rendered name becomes a
    location (``_location``), which locations they refuse (``_refusal``) and how one location
    is written whole (``_write``). Rewriting a location is the retry.
    """

    what = "path"

    def _template_source(self) -> str:
        raise NotImplementedError

    def _location(self, rendered: str) -> str:
        raise NotImplementedError

    def _refusal(self, location: str) -> str | None:
        """Why ``location`` must not be written (None: it may)."""
        return None

    def _write(self, location: str, batches: Batches) -> int:
        """Write ``batches`` as the whole content of ``location``; returns the records written."""
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return int(getattr(self.settings, "batch_size", DEFAULT_BATCH_SIZE))

    @cached_property
    def layout(self) -> PathTemplate:
        layout = PathTemplate(
            self._template_source(), self.context.template_vars(destination=self.name)
        )
        if layout.undefined and (layout.uses_record or layout.uses_batch):
            # Not the records' fault: refuse the delivery rather than dead-letter every record.
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r}: the {self.what} "
                f"template {layout.source!r} uses undefined {', '.join(layout.undefined)}; "
                f"templates see route, destination, run_id, ds, params, record and batch"
            )
        return layout

    @cached_property
    def limiter(self) -> RateLimiter:
        return RateLimiter(self.settings.rate_limit)

    @cached_property
    def _located(self) -> dict[str, tuple[str | None, str | None]]:
        return {}

    def target(self) -> str:
        """The rendered location; with record or batch in the template, its pattern."""
        return self._location(self.layout.pattern())

    def deliver(self, batches: Batches) -> DeliveryResult:
        layout = self.layout
        if layout.uses_batch:
            result = DeliveryResult()
            for index, batch in enumerate(batches):
                _merge(result, self._send_batch(batch, index))
        elif layout.uses_record:
            result = self._deliver_grouped(batches)
        else:
            location = self._checked(self._location(layout.render()))
            result = DeliveryResult(self._write_limited(location, batches), [location])
        result.locations = _capped(result.locations)
        return result

    def open_batches(self, batches: Batches) -> BatchSender | None:
        """With ``{{ batch }}`` in the template each batch is its own ledger unit."""
        return _LaidOutBatchSender(self) if self.layout.uses_batch else None

    def _deliver_grouped(self, batches: Batches) -> DeliveryResult:
        """Every record to the location its rendered name gives; refused ones dead-lettered."""
        result = DeliveryResult()
        with _Partitions() as partitions:
            for batch in batches:
                for record in batch:
                    location, reason = self._locate(record, 0)
                    if location is None:
                        result.rejections.append(Rejection(record, str(reason)))
                    else:
                        partitions.add(location, record)
            for location, staged in partitions.groups(self.batch_size):
                result.delivered += self._write_limited(location, staged)
                result.locations.append(location)
        _warn_refused(self, result.rejections)
        return result

    def _send_batch(self, batch: Batch, index: int) -> DeliveryResult:
        """One batch to its location(s): with record fields, grouped in memory."""
        if not self.layout.uses_record:
            location = self._checked(self._location(self.layout.render(batch=index)))
            return DeliveryResult(self._write_limited(location, [batch]), [location])
        result = DeliveryResult()
        groups: dict[str, list[Any]] = {}
        for record in batch:
            location, reason = self._locate(record, index)
            if location is None:
                result.rejections.append(Rejection(record, str(reason)))
            else:
                groups.setdefault(location, []).append(record)
        for location, records in groups.items():
            result.delivered += self._write_limited(location, [records])
            result.locations.append(location)
        _warn_refused(self, result.rejections)
        return result

    def _locate(self, record: Any, index: int) -> tuple[str | None, str | None]:
        """``(location, None)``, or ``(None, reason)`` for a record whose location is refused."""
        try:
            rendered = self.layout.for_record(record, index)
        except _RECORD_ERRORS as exc:
            return None, (
                f"cannot render the {self.what} template {self.layout.source!r} for this "
                f"record: {exc}"
            )
        known = self._located.get(rendered)
        if known is None:
            location = self._location(rendered)
            reason = self._refusal(location)
            known = (None, reason) if reason else (location, None)
            if len(self._located) >= _RENDER_CACHE:
                self._located.clear()
            self._located[rendered] = known
        return known

    def _checked(self, location: str) -> str:
        """``location``, or DestinationError when it is refused (nothing is written)."""
        reason = self._refusal(location)
        if reason:
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r}: {reason}; nothing "
                f"was written. Fix the {self.what} template or the destination's settings"
            )
        return location

    def _write_limited(self, location: str, batches: Batches) -> int:
        self.limiter.acquire()
        return self._write(location, batches)


class _LaidOutBatchSender(BatchSender):
    """Each batch its own file or object (``{{ batch }}`` in the template).

    A batch in doubt after a crash is written again: it rewrites the same name with the same
    records, which is harmless, so ten batches are marked "sending" at a time.
    """

    window = 10

    def __init__(self, destination: LaidOutDestination) -> None:
        self.destination = destination

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection] | None:
        # Batches are ``batch_size`` records each but the last: the offset gives the index.
        index = offset // self.destination.batch_size
        return self.destination._send_batch(batch, index).rejections


def _merge(result: DeliveryResult, part: DeliveryResult) -> None:
    result.delivered += part.delivered
    result.locations.extend(part.locations)
    result.rejections.extend(part.rejections)


def _capped(locations: list[str]) -> list[str]:
    """At most ``MAX_LOCATIONS_REPORTED`` locations (they go to XCom and the run summary)."""
    if len(locations) <= MAX_LOCATIONS_REPORTED:
        return locations
    more = len(locations) - MAX_LOCATIONS_REPORTED
    return [*locations[:MAX_LOCATIONS_REPORTED], f"... and {more} more"]


def _warn_refused(destination: Destination, rejections: list[Rejection]) -> None:
    if rejections:
        log.warning(
            "destination %s refused %d records (they go to the dead letters); first: %s",
            destination.name,
            len(rejections),
            rejections[0].reason,
        )


class FileDestination(LaidOutDestination):
    """Writes records to files at a templated path, each written atomically (temp + rename).

    The file at a rendered path is replaced, so a retried delivery rewrites the same file
    instead of appending twice.
    """

    settings_model = FileDestinationSettings
    settings: FileDestinationSettings

    def _template_source(self) -> str:
        return self.settings.path

    def _location(self, rendered: str) -> str:
        return storage.absolute(rendered, self.context.base_dir)

    @cached_property
    def base_dir(self) -> str | None:
        if not self.settings.base_dir:
            return None
        return storage.absolute(self.settings.base_dir, self.context.base_dir)

    def _refusal(self, location: str) -> str | None:
        base = self.base_dir
        if base is None or storage.inside(location, base):
            return None
        return f"path {location} is outside base_dir {base} (after resolving '..' and symlinks)"

    def _write(self, location: str, batches: Batches) -> int:
        file_format = self.settings.format or format_from_name(location)
        compression = self.settings.compression
        if compression is None and file_format != "parquet":
            compression = compression_from_name(location)
        counter = _Counter()

        def write(handle: IO[bytes]) -> None:
            write_records(handle, batches, file_format, compression, counter)

        try:
            path = storage.write_atomically(location, write)
        except RecordsDoNotFit as exc:
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r}: records do not fit "
                f"one Parquet schema in {location}: {exc}"
            ) from exc
        except OSError as exc:
            raise DestinationError(
                f"route {self.context.route!r}: destination {self.name!r} cannot write "
                f"{location}: {exc}"
            ) from exc
        log.info("wrote %d records to %s", counter.count, path)
        return counter.count
