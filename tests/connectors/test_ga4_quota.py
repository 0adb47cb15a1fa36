"""GA4 property quotas: read on every response, paced, exhausted ones named; retries."""

from __future__ import annotations

import pytest

from airflow_dataflow.connectors.base import Cursor
from airflow_dataflow.connectors.ga4 import GA4QuotaExhaustedError, GA4UnavailableError
from airflow_dataflow.connectors.ga4_quota import QuotaPacer, QuotaStatus
from airflow_dataflow.errors import FatalError, RetriableError
from tests.connectors import ga4_support
from tests.connectors.ga4_support import Sleeps, read, records, warnings
from tests.fakes.ga4 import FakeGA4, exhausted, internal_error, unavailable

ga4 = ga4_support.ga4  # fixtures
ga4_conn = ga4_support.ga4_conn


def test_every_request_asks_for_the_property_quota(ga4: FakeGA4, ga4_conn: str) -> None:
    read(ga4_conn)
    assert all(request.body["returnPropertyQuota"] for request in ga4.requests)


def test_plentiful_quota_means_no_pauses(ga4: FakeGA4, ga4_conn: str) -> None:
    sleeps = Sleeps()
    items = read(ga4_conn, sleep=sleeps)
    assert sleeps == [] and warnings(items) == []


def test_slows_down_when_an_hourly_quota_runs_low(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.quota.tokensPerHour = 10 * 52  # 52 requests of 10 tokens this hour
    sleeps = Sleeps()
    items = read(ga4_conn, sleep=sleeps)
    # After each of the first two answers 51, then 50 requests' worth remain (< 100): the
    # next request waits 3600 s / requests left. The last answer's reading is not waited on.
    assert sleeps == [3600 / 51, 3600 / 50]
    assert (
        "an hourly quota ran low, so requests were slowed down (2 pauses, 143 s in all)"
        in (warnings(items)[-1])
    )
    assert len(records(items)) == 12


def test_pauses_are_capped(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.quota.tokensPerProjectPerHour = 10 * 4  # 3, then 2 requests left: 1200 s, 1800 s
    sleeps = Sleeps()
    read(ga4_conn, sleep=sleeps)
    assert sleeps == [300.0, 300.0]


def test_warns_once_when_the_daily_quota_runs_low(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.quota.tokensPerDay = 10 * 60
    items = read(ga4_conn)
    [warning] = warnings(items)
    assert "GA4 property 123456789: only 590 of its tokens per day are left" in warning.replace(
        "route 'ga4_daily': ", ""
    )


def test_an_exhausted_quota_fails_naming_the_property_and_the_quota(
    ga4: FakeGA4, ga4_conn: str
) -> None:
    ga4.quota.tokensPerHour = 10 * 2  # two requests, then 429 RESOURCE_EXHAUSTED
    cursor = Cursor("date")
    sleeps = Sleeps()
    with pytest.raises(GA4QuotaExhaustedError) as caught:
        read(ga4_conn, cursor, sleep=sleeps)
    message = str(caught.value)
    assert "route 'ga4_daily': GA4 property 123456789 has exhausted its tokens per hour" in message
    assert "(tokensPerHour) reading 2024-03-03 ('Exhausted property tokens per hour.')" in message
    assert "it returns within the hour. The run failed and its cursor did not move" in message
    assert not isinstance(caught.value, RetriableError)
    assert [request.status for request in ga4.requests] == [200, 200, 429]  # not retried
    assert cursor.last_value == "2024-03-02"


def test_the_daily_quota_message_says_when_it_returns(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.script(exhausted("tokensPerDay"))
    with pytest.raises(GA4QuotaExhaustedError, match=r"tokens per day quota \(tokensPerDay\)"):
        read(ga4_conn)
    assert len(ga4.requests) == 1


def test_a_429_with_quota_left_is_retried(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.script(exhausted("concurrentRequests"), exhausted("concurrentRequests"))
    sleeps = Sleeps()
    items = read(ga4_conn, sleep=sleeps)
    assert len(records(items)) == 12
    assert [request.status for request in ga4.requests] == [429, 429, 200, 200, 200]
    assert len(sleeps) == 2 and all(0 <= pause <= 2 for pause in sleeps)  # 1 s base, jittered


@pytest.mark.parametrize("reply", [unavailable(), internal_error()], ids=["503", "500"])
def test_transient_server_errors_are_retried(ga4: FakeGA4, ga4_conn: str, reply: object) -> None:
    ga4.script(reply)  # type: ignore[arg-type]
    assert len(records(read(ga4_conn))) == 12
    assert [request.status for request in ga4.requests][:2] == [reply.status, 200]  # type: ignore[attr-defined]


def test_gives_up_after_the_retry_policys_attempts(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.script(*[unavailable()] * 5)
    with pytest.raises(GA4UnavailableError) as caught:
        read(ga4_conn)
    assert "(gave up after 5 attempts of GA4 runReport for 2024-03-01)" in str(caught.value)
    assert "(503): The service is currently unavailable." in str(caught.value)
    assert isinstance(caught.value, RetriableError) and not isinstance(caught.value, FatalError)


def test_an_unreachable_server_is_retriable(ga4: FakeGA4, ga4_conn: str) -> None:
    ga4.__exit__()  # stop listening: connection refused
    with pytest.raises(GA4UnavailableError, match="could not be reached"):
        read(ga4_conn)


def test_an_unnamed_429_is_exhausted_when_the_last_reading_shows_no_tokens() -> None:
    pacer = QuotaPacer(sleep=Sleeps())
    pacer.observe({"tokensPerHour": QuotaStatus(10, 500), "tokensPerDay": QuotaStatus(10, 0)})
    assert pacer.exhausted("Resource has been exhausted (e.g. check quota).") == "tokensPerDay"
    pacer.observe({"tokensPerHour": QuotaStatus(10, 500), "tokensPerDay": QuotaStatus(10, 900)})
    assert pacer.exhausted("Resource has been exhausted (e.g. check quota).") is None
    assert pacer.exhausted("Exhausted concurrent requests quota.") is None
    assert pacer.exhausted("Exhausted property tokens for a project per hour.") == (
        "tokensPerProjectPerHour"
    )
