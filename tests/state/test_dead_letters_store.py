"""Dead letters in the state store: listing with filters, one by id, marking replayed; on
SQLite and PostgreSQL, and kept across the migration that added the replay columns."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from airflow_dataflow.state.migrate import state_engine, upgrade
from airflow_dataflow.state.schema import dead_letters
from airflow_dataflow.state.store import ReplayNote, StateStore
from tests.state.test_migrations import postgres_state, sqlite_state, state_store  # noqa: F401

OLD = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(state_store: str) -> StateStore:  # noqa: F811
    """A migrated store (the default SQLite file, or a configured PostgreSQL database)."""
    engine = state_engine()
    upgrade(engine)
    return StateStore(engine)


def _entry(run_id: str, n: int, route: str = "orders", **extra: Any) -> dict[str, Any]:
    return {
        "route": route,
        "run_id": run_id,
        "rule": "big",
        "step": 0,
        "error": f"cast amount to int: invalid literal 'x{n}'",
        "position": f"in.jsonl:{n}",
        "record": {"id": n, "amount": f"x{n}"},
        **extra,
    }


def _ids(letters: list[dict[str, Any]]) -> list[int]:
    return [letter["id"] for letter in letters]


def _fill(store: StateStore) -> list[int]:
    """Three dead letters of `orders` (the first stored long ago) and one of another route."""
    store.add_dead_letters([[_entry("run-1", 1), _entry("run-1", 2)]])
    store.add_dead_letters([[_entry("run-2", 3, rule=None, step=None, record="not json")]])
    store.add_dead_letters([[_entry("run-1", 9, route="other")]])
    ids = _ids(store.list_dead_letters("orders"))
    with store.engine.begin() as connection:
        connection.execute(
            sa.update(dead_letters).where(dead_letters.c.id == ids[0]).values(created_at=OLD)
        )
    return ids


def test_listing_filters_by_time_run_ids_and_replayed(store: StateStore) -> None:
    first, second, third = _fill(store)
    assert _ids(store.list_dead_letters("orders", since=OLD + timedelta(seconds=1))) == [
        second,
        third,
    ]
    naive = datetime(2024, 5, 1, 12, 0)  # taken as UTC
    assert _ids(store.list_dead_letters("orders", since=naive)) == [first, second, third]
    in_berlin = datetime(2024, 5, 1, 14, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    assert _ids(store.list_dead_letters("orders", since=in_berlin)) == [second, third]
    assert _ids(store.list_dead_letters("orders", run_id="run-1")) == [first, second]
    assert _ids(store.list_dead_letters("orders", ids=[third, first, 12345])) == [first, third]
    assert store.list_dead_letters("orders", ids=[]) == []
    assert len(store.list_dead_letters("other")) == 1

    assert store.mark_dead_letters_replayed("orders", [second], replay_run_id="replay__1") == 1
    assert _ids(store.list_dead_letters("orders")) == [first, third]
    assert _ids(store.list_dead_letters("orders", include_replayed=True)) == [first, second, third]


def test_one_dead_letter_in_full(store: StateStore) -> None:
    first, _, third = _fill(store)
    letter = store.dead_letter("orders", first)
    assert letter is not None
    assert letter == {
        "id": first,
        "route": "orders",
        "run_id": "run-1",
        "rule": "big",
        "destination": None,
        "step": 0,
        "reason": "cast amount to int: invalid literal 'x1'",
        "position": "in.jsonl:1",
        "record": {"id": 1, "amount": "x1"},
        "created_at": OLD.isoformat(),
        "replayed_at": None,
        "replay_run_id": None,
        "replay_error": None,
        "replayed_to": [],
    }
    assert store.dead_letter("orders", third)["record"] == "not json"  # type: ignore[index]
    assert store.dead_letter("other", first) is None  # ids belong to their route


def test_marking_replayed_touches_only_pending_ones(store: StateStore) -> None:
    first, second, _ = _fill(store)
    at = datetime(2024, 6, 1, 8, 30, tzinfo=timezone.utc)
    marked = store.mark_dead_letters_replayed(
        "orders", [first, second, first], replay_run_id="replay__a", at=at
    )
    assert marked == 2
    again = store.mark_dead_letters_replayed("orders", [first], replay_run_id="replay__b")
    assert again == 0  # already replayed: unchanged
    letter = store.dead_letter("orders", first)
    assert letter is not None
    assert (letter["replayed_at"], letter["replay_run_id"]) == (at.isoformat(), "replay__a")
    other = store.list_dead_letters("other")[0]["id"]
    assert store.mark_dead_letters_replayed("orders", [other]) == 0  # another route's id


def test_replay_attempts_are_noted_on_pending_ones(store: StateStore) -> None:
    first, second, third = _fill(store)
    store.note_replay_attempts(
        "orders",
        "replay__1",
        {
            first: ReplayNote(replayed_to=("b", "a"), error="delivery to 'c' failed: boom"),
            second: ReplayNote(replayed_to=(), error="rule 'big' is no longer in route 'orders'"),
        },
    )
    noted = store.dead_letter("orders", first)
    assert noted is not None
    assert noted["replay_run_id"] == "replay__1"
    assert noted["replay_error"] == "delivery to 'c' failed: boom"
    assert noted["replayed_to"] == ["a", "b"]
    assert noted["replayed_at"] is None  # still pending
    untouched = store.dead_letter("orders", third)
    assert untouched is not None and untouched["replay_run_id"] is None

    store.mark_dead_letters_replayed("orders", [first], replay_run_id="replay__2")
    replayed = store.dead_letter("orders", first)
    assert replayed is not None
    assert replayed["replay_error"] is None and replayed["replay_run_id"] == "replay__2"
    assert replayed["replayed_to"] == ["a", "b"]
    store.note_replay_attempts("orders", "replay__3", {first: ReplayNote((), "late")})
    assert store.dead_letter("orders", first) == replayed  # replayed ones are final
    store.note_replay_attempts("orders", "replay__4", {})  # nothing to note


def test_dead_letters_stored_before_the_replay_columns_survive_the_upgrade(
    state_store: str,  # noqa: F811
) -> None:
    engine = state_engine()
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO dataflow_dead_letters (route, run_id, rule, reason, record, created_at)"
                " VALUES ('orders', 'run-0', 'big', 'boom', :record, :created)"
            ),
            {"record": '{"id": 1}', "created": OLD},
        )
    upgrade(engine)
    (letter,) = StateStore(engine).list_dead_letters("orders")
    assert (letter["run_id"], letter["reason"], letter["record"]) == ("run-0", "boom", {"id": 1})
    assert letter["replayed_to"] == [] and letter["replay_error"] is None
