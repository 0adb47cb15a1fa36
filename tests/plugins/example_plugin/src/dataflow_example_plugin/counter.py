"""The ``counter`` connector: numbered records, optionally incremental on ``n``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from airflow_dataflow.connectors.base import (
    BadRecord,
    Connector,
    ConnectorSettings,
    CursorSpec,
    SourceWarning,
)


class CounterSettings(ConnectorSettings):
    """``source: {type: counter, count: 5}``: records n = start .. start + count - 1."""

    type: Literal["counter"]  # type: ignore[assignment]
    count: int = Field(ge=0, description="How many records a run generates")
    start: int = Field(default=1, description="The first record's n")
    incremental: bool = Field(
        default=False,
        description="Keep a cursor on n: a run yields only numbers after the committed one",
    )
    bad: list[int] = Field(
        default_factory=list, description="Numbers given as undecodable input (dead letters)"
    )

    def cursor_spec(self) -> CursorSpec | None:
        return CursorSpec(field="n", initial=self.start - 1) if self.incremental else None


class CounterConnector(Connector):
    """Generates numbered records; with ``incremental`` it continues after the last committed n."""

    settings_model = CounterSettings

    def read(self) -> Iterator[Any | BadRecord | SourceWarning]:
        settings: CounterSettings = self.settings  # type: ignore[assignment]
        end = settings.start + settings.count
        first = settings.start
        if self.cursor is not None and self.cursor.start is not None:
            first = max(first, int(self.cursor.start) + 1)
        if first >= end:
            yield SourceWarning(f"counter: nothing after n={first - 1} (count ends at {end - 1})")
            return
        bad = set(settings.bad)
        for n in range(first, end):  # a generator: one record at a time, never a list
            if n in bad:
                yield BadRecord(position=f"counter:{n}", error="listed in bad", raw=str(n))
            else:
                yield {"n": n, "parity": "even" if n % 2 == 0 else "odd"}
            if self.cursor is not None:
                self.cursor.advance(n)
