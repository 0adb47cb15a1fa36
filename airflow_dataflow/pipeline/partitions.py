"""Where the route phase writes each destination's records.

``per: record`` (the default) stages every record routed to the destination. ``per: batch``
stages one summary record instead, ``{"count": n, "records": [the first sample_size]}``, so
the destination delivers once per run (an alert, a digest) while the run summary still
counts the ``n`` records it stands for.
"""

from __future__ import annotations

from typing import Any

from airflow_dataflow.staging import ChunkWriter, StagingArea


class BatchSummaryWriter:
    """Counts records and keeps the first ``sample_size``; stages one summary record on close."""

    def __init__(self, writer: ChunkWriter, sample_size: int) -> None:
        self.writer = writer
        self.sample_size = sample_size
        self.count = 0
        self.samples: list[Any] = []

    def write(self, record: Any) -> None:
        self.count += 1
        if len(self.samples) < self.sample_size:
            self.samples.append(record)

    def close(self) -> dict[str, Any]:
        if self.count and not self.writer.count:
            self.writer.write({"count": self.count, "records": self.samples})
        manifest = self.writer.close()
        manifest["records"] = self.count
        return manifest


def partition_writer(
    staging: StagingArea, name: str, settings: Any
) -> ChunkWriter | BatchSummaryWriter:
    """The writer of destination ``name``'s partition, by its ``per`` setting."""
    writer = staging.writer(f"to-{name}")
    if getattr(settings, "per", "record") == "batch":
        return BatchSummaryWriter(writer, settings.sample_size)
    return writer


def records_in(partition: dict[str, Any]) -> int:
    """How many routed records a staged partition stands for (a batch summary is one line)."""
    return int(partition.get("records", partition["count"]))
