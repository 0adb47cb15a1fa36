"""Reading and writing the state store. Run summaries now; cursors and the ledger build on it."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from airflow_dataflow.state.migrate import (
    StateStoreError,
    default_state_url,
    state_engine,
    status,
    upgrade,
)
from airflow_dataflow.state.schema import dead_letters, run_summaries


class StateStore:
    """The package's state behind one engine. Use ``StateStore.open()`` in tasks and commands."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls) -> StateStore:
        """The configured store, ready to use.

        The default SQLite store is migrated on first use; a configured store (connection
        ``dataflow_state``) must be migrated by its operators with ``airflow-dataflow db upgrade``.
        """
        engine = state_engine()
        revision = status(engine)
        if not revision.up_to_date:
            if engine.url.render_as_string(hide_password=False) != default_state_url():
                raise StateStoreError(
                    f"the state store {revision.location} is at revision {revision.current or 'none'}, "
                    f"this package needs {revision.head}: run `airflow-dataflow db upgrade`"
                )
            upgrade(engine)
        return cls(engine)

    def save_run_summary(
        self,
        *,
        route: str,
        run_id: str,
        state: str,
        counts: Mapping[str, Any],
        warnings: list[str],
        started_at: datetime | None,
        finished_at: datetime | None = None,
        failed_task: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record (or replace, on a retried commit) the summary of one run.

        A failed run names the task that failed it and that task's error.
        """
        values = {
            "state": state,
            "counts": dict(counts),
            "warnings": list(warnings),
            "started_at": started_at,
            "finished_at": finished_at or datetime.now(timezone.utc),
            "failed_task": failed_task,
            "error": error,
        }
        key = (run_summaries.c.route == route) & (run_summaries.c.run_id == run_id)
        with self.engine.begin() as connection:
            if (
                connection.execute(sa.update(run_summaries).where(key).values(**values)).rowcount
                == 0
            ):
                connection.execute(
                    sa.insert(run_summaries).values(route=route, run_id=run_id, **values)
                )

    def add_dead_letters(self, entries: Iterable[list[Mapping[str, Any]]]) -> int:
        """Keep dead letters (batches of staged entries) in the store; returns how many.

        Re-adding a run's dead letters (a retried route task) replaces that run's earlier ones.
        """
        now = datetime.now(timezone.utc)
        added = 0
        with self.engine.begin() as connection:
            cleared: set[tuple[str, str]] = set()
            for batch in entries:
                rows = [_dead_letter_row(entry, now) for entry in batch]
                for key in {(row["route"], row["run_id"]) for row in rows} - cleared:
                    connection.execute(
                        sa.delete(dead_letters).where(
                            (dead_letters.c.route == key[0])
                            & (dead_letters.c.run_id == key[1])
                            & dead_letters.c.destination.is_(None)  # not a delivery's rejections
                        )
                    )
                    cleared.add(key)
                if rows:
                    connection.execute(sa.insert(dead_letters), rows)
                    added += len(rows)
        return added

    def add_rejections(
        self,
        *,
        route: str,
        run_id: str,
        destination: str,
        batch_key: str,
        rejections: Iterable[tuple[Any, str]],
    ) -> int:
        """Keep the records a destination refused in one batch, as dead letters.

        Each is positioned ``batch <key>:<n>``; storing the same batch's rejections again (the
        batch re-sent after a crash) replaces them instead of adding duplicates.
        """
        now = datetime.now(timezone.utc)
        rows = [
            {
                "route": route,
                "run_id": run_id,
                "rule": None,
                "destination": destination,
                "step": None,
                "reason": reason,
                "position": f"batch {batch_key[:16]}:{index}",
                "record": record,
                "created_at": now,
            }
            for index, (record, reason) in enumerate(rejections)
        ]
        with self.engine.begin() as connection:
            connection.execute(
                sa.delete(dead_letters).where(
                    (dead_letters.c.route == route)
                    & (dead_letters.c.destination == destination)
                    & (dead_letters.c.replayed_at.is_(None))
                    & dead_letters.c.position.like(f"batch {batch_key[:16]}:%")
                )
            )
            if rows:
                connection.execute(sa.insert(dead_letters), rows)
        return len(rows)

    def dead_letters(self, route: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The route's dead letters (of one run when ``run_id`` is given), oldest first."""
        query = (
            sa.select(dead_letters).where(dead_letters.c.route == route).order_by(dead_letters.c.id)
        )
        if run_id is not None:
            query = query.where(dead_letters.c.run_id == run_id)
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def list_dead_letters(
        self,
        route: str,
        *,
        since: datetime | None = None,
        include_replayed: bool = False,
        run_id: str | None = None,
        ids: Collection[int] | None = None,
    ) -> list[dict[str, Any]]:
        """The route's dead letters as plain data (timestamps in ISO 8601), oldest first.

        Pending ones only unless ``include_replayed``; ``since`` keeps those stored at or after
        it; ``run_id`` those of one run; ``ids`` those with these ids.
        """
        query = (
            sa.select(dead_letters).where(dead_letters.c.route == route).order_by(dead_letters.c.id)
        )
        if not include_replayed:
            query = query.where(dead_letters.c.replayed_at.is_(None))
        if since is not None:
            query = query.where(dead_letters.c.created_at >= _utc(since))
        if run_id is not None:
            query = query.where(dead_letters.c.run_id == run_id)
        if ids is not None:
            query = query.where(dead_letters.c.id.in_(sorted(set(ids))))
        with self.engine.connect() as connection:
            return [_letter_row(row._mapping) for row in connection.execute(query)]

    def dead_letter(self, route: str, letter_id: int) -> dict[str, Any] | None:
        """One dead letter of the route (as ``list_dead_letters`` gives it), else None."""
        query = sa.select(dead_letters).where(
            (dead_letters.c.route == route) & (dead_letters.c.id == letter_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return _letter_row(row._mapping) if row is not None else None

    def mark_dead_letters_replayed(
        self,
        route: str,
        ids: Iterable[int],
        *,
        replay_run_id: str | None = None,
        at: datetime | None = None,
    ) -> int:
        """Mark the route's dead letters ``ids`` replayed (those not replayed yet); returns how many."""
        values = {
            "replayed_at": _utc(at or datetime.now(timezone.utc)),
            "replay_run_id": replay_run_id,
            "replay_error": None,
        }
        marked = 0
        with self.engine.begin() as connection:
            for chunk in _chunks(sorted(set(ids))):
                statement = (
                    sa.update(dead_letters)
                    .where(_pending(route) & dead_letters.c.id.in_(chunk))
                    .values(**values)
                )
                marked += connection.execute(statement).rowcount
        return marked

    def note_replay_attempts(
        self, route: str, replay_run_id: str, notes: Mapping[int, ReplayNote]
    ) -> None:
        """Record what a replay did with pending dead letters: where it delivered each one
        (destinations replays have delivered it to, in all) and why it left it pending."""
        if not notes:
            return
        statement = (
            sa.update(dead_letters)
            .where(_pending(route) & (dead_letters.c.id == sa.bindparam("letter_id")))
            .values(
                replay_run_id=replay_run_id,
                replay_error=sa.bindparam("error"),
                replayed_to=sa.bindparam("to", type_=sa.JSON),
            )
        )
        rows = [
            {"letter_id": letter_id, "error": note.error, "to": sorted(note.replayed_to)}
            for letter_id, note in notes.items()
        ]
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def recent_runs(self, route: str, limit: int = 20) -> list[dict[str, Any]]:
        """The route's latest run summaries, newest first."""
        query = (
            sa.select(run_summaries)
            .where(run_summaries.c.route == route)
            .order_by(run_summaries.c.finished_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [_summary_row(row._mapping) for row in connection.execute(query)]


def _dead_letter_row(entry: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "route": entry["route"],
        "run_id": entry["run_id"],
        "rule": entry.get("rule"),
        "destination": entry.get("destination"),
        "step": entry.get("step"),
        "reason": entry.get("error") or "",
        "position": entry.get("position"),
        "record": entry.get("record"),
        "created_at": now,
    }


@dataclass(frozen=True)
class ReplayNote:
    """What one replay did with a pending dead letter (see ``note_replay_attempts``)."""

    replayed_to: Collection[str]
    error: str | None = None


_CHUNK = 500  # ids per IN (...): well under every database's limit on bound parameters


def _chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _pending(route: str) -> sa.ColumnElement[bool]:
    return (dead_letters.c.route == route) & dead_letters.c.replayed_at.is_(None)


def _letter_row(row: Mapping[str, Any]) -> dict[str, Any]:
    created, replayed = _aware(row["created_at"]), _aware(row["replayed_at"])
    return {
        "id": row["id"],
        "route": row["route"],
        "run_id": row["run_id"],
        "rule": row["rule"],
        "destination": row["destination"],
        "step": row["step"],
        "reason": row["reason"],
        "position": row["position"],
        "record": row["record"],
        "created_at": created.isoformat() if created else None,
        "replayed_at": replayed.isoformat() if replayed else None,
        "replay_run_id": row["replay_run_id"],
        "replay_error": row["replay_error"],
        "replayed_to": list(row["replayed_to"] or []),
    }


def _utc(value: datetime) -> datetime:
    """An aware UTC timestamp (a naive one is taken as UTC), comparable on every database."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _summary_row(row: Mapping[str, Any]) -> dict[str, Any]:
    started, finished = _aware(row["started_at"]), _aware(row["finished_at"])
    return {
        "route": row["route"],
        "run_id": row["run_id"],
        "state": row["state"],
        "counts": row["counts"],
        "warnings": row["warnings"] or [],
        "started_at": started.isoformat() if started else None,
        "finished_at": finished.isoformat() if finished else None,
        "duration_seconds": round((finished - started).total_seconds(), 3)
        if started and finished
        else None,
        "failed_task": row["failed_task"],
        "error": row["error"],
    }


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands timestamps back without their zone; they were written in UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
