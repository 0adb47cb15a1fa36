"""The ``jsonl_batches`` destination: one JSON Lines file per delivery batch, named by its key.

A batch's key derives from the route, the destination and the batch's content, so writing
``<key>.jsonl`` again (a retried task) replaces the same file: delivery is idempotent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from airflow_dataflow.destinations.base import (
    Batch,
    BatchSender,
    Destination,
    DestinationSettings,
    Rejection,
)


class JsonlBatchesSettings(DestinationSettings):
    """``{type: jsonl_batches, directory: out/numbers}``."""

    type: Literal["jsonl_batches"]  # type: ignore[assignment]
    directory: str = Field(description="Folder of the batch files (relative: to the route file)")
    batch_size: int = Field(default=100, ge=1, description="Records per file")
    required: list[str] = Field(
        default_factory=list, description="Fields a record must have; others are dead-lettered"
    )


class JsonlBatchesDestination(Destination):
    """Writes each batch to ``<directory>/<batch key>.jsonl`` atomically (temp file + rename)."""

    settings_model = JsonlBatchesSettings

    settings: JsonlBatchesSettings

    @property
    def directory(self) -> str:
        return os.path.join(self.context.base_dir, self.settings.directory)

    def target(self) -> str:
        """Part of every batch key: the same records sent elsewhere are another batch."""
        return self.directory

    def open_batches(self, batches: Iterable[Batch]) -> BatchSender:
        """Batch by batch, so the delivery ledger skips the batches already written."""
        return _Sender(self.directory, self.settings.required)


class _Sender(BatchSender):
    def __init__(self, directory: str, required: list[str]) -> None:
        self.directory = directory
        self.required = required
        os.makedirs(directory, exist_ok=True)

    def send(self, batch: Batch, key: str, token: str, offset: int = 0) -> list[Rejection]:
        kept: Batch = []
        refused: list[Rejection] = []
        for record in batch:
            missing = [field for field in self.required if field not in record]
            if missing:
                refused.append(Rejection(record, f"missing required field(s) {missing}"))
            else:
                kept.append(record)
        path = self._path(key)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(path + ".tmp", path)
        return refused

    def received(self, key: str, token: str) -> bool:
        return os.path.exists(self._path(key))  # same key, same content

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.jsonl")
