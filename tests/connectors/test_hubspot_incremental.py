"""The ``hubspot`` connector's incremental reads: keyset search over a modified-date window."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from airflow_dataflow.connectors import hubspot as hubspot_module
from airflow_dataflow.connectors.base import Cursor
from airflow_dataflow.errors import SourceError
from airflow_dataflow.hooks.hubspot import HubSpotHook
from airflow_dataflow.hooks.hubspot_limits import HubSpotApiError
from tests.connectors.hubspot_support import connect, deals_fake, fake, ids, read
from tests.fakes.hubspot import SHARED_MODIFIED, FakeHubSpot, Reply, iso, to_ms

__all__ = ["deals_fake", "fake"]  # fixtures

FIELD = "hs_lastmodifieddate"
NOW = datetime(2030, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
NOW_MS = to_ms(NOW.isoformat()) or 0
SECOND = 1000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[datetime]:
    """The extract's wall clock, fixed at ``NOW`` (tests move it by replacing ``clock[0]``)."""
    now = [NOW]
    monkeypatch.setattr(hubspot_module, "wall_clock", lambda: now[0])
    return now


def _searches(fake: FakeHubSpot) -> list[dict]:
    return [r.body for r in fake.requests if r.kind == "search"]


def test_a_first_run_reads_all_25000_deals_past_the_10000_cap_without_offsets(
    deals_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = Cursor(FIELD)
    records = read(connect(monkeypatch, deals_fake), cursor, object="deals", incremental={})
    assert ids(records) == list(range(1, 25_001))  # all, in id order: no gap, no duplicate
    bodies = _searches(deals_fake)
    assert len(bodies) == 125 and all("after" not in body for body in bodies)
    assert all(body["limit"] == 200 for body in bodies)
    assert deals_fake.count("search", 400) == 0


def test_12000_deals_sharing_one_timestamp_are_all_read(
    deals_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    cursor = Cursor(FIELD, start=SHARED_MODIFIED)
    records = read(connect(monkeypatch, deals_fake), cursor, object="deals", incremental={})
    assert ids(records) == list(range(5_001, 17_001))
    assert {r["properties"][FIELD] for r in records} == {SHARED_MODIFIED}


def test_offset_paging_of_the_search_api_stops_at_10000(
    deals_fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HubSpotHook(connect(monkeypatch, deals_fake))
    body = {"filterGroups": [], "limit": 200, "after": "10000"}
    with pytest.raises(HubSpotApiError) as caught:
        hook.call("search", "do_search", "deals", body, search=True)
    assert caught.value.status == 400 and caught.value.category == "VALIDATION_ERROR"
    total = hook.call("search", "do_search", "deals", {**body, "after": "9800"}, search=True)
    assert total.data["total"] == 25_000 and len(total.data["results"]) == 200


def test_the_window_ends_safety_lag_before_the_start_and_the_cursor_is_its_end(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, clock: list[datetime]
) -> None:
    inside = fake.add("deals", {"dealname": "in"}, modified_ms=NOW_MS - 60 * SECOND - 1)
    at_end = fake.add("deals", {"dealname": "end"}, modified_ms=NOW_MS - 60 * SECOND)
    lagging = fake.add("deals", {"dealname": "lag"}, modified_ms=NOW_MS - 30 * SECOND)
    conn = connect(monkeypatch, fake)
    first = Cursor(FIELD)
    assert ids(read(conn, first, object="deals", incremental={})) == [inside]
    assert first.last_value == iso(NOW_MS - 60 * SECOND)

    clock[0] = NOW + timedelta(minutes=5)
    second = Cursor(FIELD, start=first.last_value)
    assert ids(read(conn, second, object="deals", incremental={})) == [at_end, lagging]
    assert second.last_value == iso(NOW_MS + 4 * 60 * SECOND)


def test_lookback_re_reads_records_modified_before_the_cursor(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, clock: list[datetime]
) -> None:
    late = fake.add("deals", {"dealname": "late"}, modified_ms=NOW_MS - 3600 * SECOND - 5)
    conn = connect(monkeypatch, fake)
    start = iso(NOW_MS - 3600 * SECOND)
    assert read(conn, Cursor(FIELD, start=start), object="deals", incremental={}) == []
    again = read(conn, Cursor(FIELD, start=start), object="deals", incremental={"lookback": "10m"})
    assert ids(again) == [late]


def test_the_cursor_advances_when_nothing_was_read(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, clock: list[datetime]
) -> None:
    cursor = Cursor(FIELD, start=iso(NOW_MS - 3600 * SECOND))
    assert read(connect(monkeypatch, fake), cursor, object="deals", incremental={}) == []
    assert cursor.last_value == iso(NOW_MS - 60 * SECOND)


def test_the_cursor_never_moves_back(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, clock: list[datetime]
) -> None:
    start = iso(NOW_MS - 10 * SECOND)  # committed with a shorter safety_lag than now
    cursor = Cursor(FIELD, start=start)
    read(connect(monkeypatch, fake), cursor, object="deals", incremental={})
    assert cursor.last_value == start


def test_records_changing_between_pages_no_gap_no_duplicate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeHubSpot(deals=(1000, 0)) as server:

        def change(kind: str, page: int) -> None:
            if page == 2:
                server.touch("deals", 10, dealname="already read")
                server.touch("deals", 900, dealname="not read yet")

        server.on_page = change
        conn = connect(monkeypatch, server)
        first = Cursor(FIELD)
        run1 = ids(read(conn, first, object="deals", incremental={"safety_lag": "0s"}))
        assert len(run1) == len(set(run1)) == 999  # no duplicate
        assert 900 not in run1  # it left the window: its new time is after the window's end
        server.on_page = None
        time.sleep(0.005)
        second = Cursor(FIELD, start=first.last_value)
        run2 = read(conn, second, object="deals", incremental={"safety_lag": "0s"})
        assert ids(run2) == [10, 900]  # the next run reads both changes
        assert run2[1]["properties"]["dealname"] == "not read yet"
        assert set(run1) | set(ids(run2)) == set(range(1, 1001))  # no gap


def test_a_search_that_does_not_move_forward_fails_instead_of_looping(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(1, 401):
        fake.add("deals", {"dealname": f"d{n}"}, modified_ms=NOW_MS - 3600 * SECOND)
    page = {
        "total": 400,
        "results": [{"id": str(n), "properties": {}} for n in range(1, 201)],
        "paging": {"next": {"after": "200"}},
    }
    fake.script(Reply(200, page), Reply(200, page))
    with pytest.raises(SourceError, match="instead of reading them again"):
        read(
            connect(monkeypatch, fake),
            Cursor(FIELD),
            object="deals",
            properties=["dealname"],
            incremental={},
        )


def test_a_cursor_that_is_not_a_time_fails_with_the_remedy(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SourceError) as caught:
        read(
            connect(monkeypatch, fake),
            Cursor(FIELD, start="yesterday"),
            object="deals",
            incremental={},
        )
    assert "route 'crm'" in str(caught.value) and "cursor reset" in str(caught.value)


def test_a_cursor_in_milliseconds_is_accepted(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch, clock: list[datetime]
) -> None:
    record = fake.add("deals", {"dealname": "x"}, modified_ms=NOW_MS - 7200 * SECOND)
    cursor = Cursor(FIELD, start=str(NOW_MS - 7200 * SECOND))
    assert ids(read(connect(monkeypatch, fake), cursor, object="deals", incremental={})) == [record]


def test_records_archived_within_the_window_are_read_with_the_flag(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = fake.add("deals", {"dealname": "old"}, modified_ms=NOW_MS)
    fake.archive("deals", old)  # archived now (real time): before the window below
    kept = fake.add("deals", {"dealname": "kept"}, modified_ms=NOW_MS)
    time.sleep(0.005)
    start = datetime.now(timezone.utc).isoformat()
    time.sleep(0.005)
    gone = fake.add("deals", {"dealname": "gone"}, modified_ms=NOW_MS)
    fake.archive("deals", gone)
    time.sleep(0.005)
    records = read(
        connect(monkeypatch, fake),
        Cursor(FIELD, start=start),
        object="deals",
        include_archived=True,
        incremental={"safety_lag": "0s"},
    )
    assert [(r["id"], r["archived"]) for r in records] == [(str(gone), True)]
    assert kept not in ids(records)
