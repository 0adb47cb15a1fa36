"""``HubSpotHook`` against the fake: credentials, OAuth refresh, retries and pacing."""

from __future__ import annotations

import json
import random
import time

import pytest

from airflow_dataflow.destinations.policy import RetryPolicy
from airflow_dataflow.errors import RetriableError
from airflow_dataflow.hooks.hubspot import DEFAULT_BASE_URL, HubSpotHook
from airflow_dataflow.hooks.hubspot_limits import HubSpotAuthError, HubSpotError, RateLimitHeaders
from tests.connectors.hubspot_support import connect, fake
from tests.fakes.hubspot import (
    APP_ID,
    DEVELOPER_API_KEY,
    PRIVATE_TOKEN,
    FakeHubSpot,
    Reply,
    error,
    rate_limited,
)

__all__ = ["fake"]  # fixtures


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _list(hook: HubSpotHook) -> int:
    return hook.call("objects", "get_page", "deals", limit=1).status


def test_a_private_app_token_is_sent_as_a_bearer_token(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _list(HubSpotHook(connect(monkeypatch, fake))) == 200
    assert fake.requests[-1].headers["authorization"] == f"Bearer {PRIVATE_TOKEN}"


def test_oauth_fetches_an_access_token_with_the_refresh_token(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HubSpotHook(connect(monkeypatch, fake, oauth=True))
    assert _list(hook) == 200 and _list(hook) == 200
    assert fake.refreshes == 1
    [token_request] = [r for r in fake.requests if r.kind == "oauth"]
    assert token_request.body["grant_type"] == "refresh_token"
    assert fake.requests[-1].headers["authorization"].startswith("Bearer oauth-access-")


def test_oauth_refreshes_before_the_token_expires(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    hook = HubSpotHook(connect(monkeypatch, fake, oauth=True), clock=clock, sleep=clock.sleep)
    _list(hook)
    clock.now += 1800 - 59  # within a minute of the expiry
    _list(hook)
    assert fake.refreshes == 2
    assert fake.count("list", 401) == 0  # refreshed before HubSpot refused it


def test_oauth_refreshes_and_retries_once_on_401(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HubSpotHook(connect(monkeypatch, fake, oauth=True))
    _list(hook)
    fake.expire_tokens()
    assert _list(hook) == 200
    assert fake.refreshes == 2 and fake.count("list", 401) == 1


def test_oauth_gives_up_after_one_retry(fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    hook = HubSpotHook(connect(monkeypatch, fake, oauth=True))
    expired = error(401, "The OAuth token used to make this call expired", "EXPIRED_AUTHENTICATION")
    fake.script(expired, expired, expired)
    with pytest.raises(HubSpotAuthError, match="EXPIRED_AUTHENTICATION"):
        _list(hook)
    assert fake.count("list", 401) == 2


def test_a_private_token_is_not_retried_on_401(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.private_tokens.clear()
    with pytest.raises(HubSpotAuthError, match="INVALID_AUTHENTICATION"):
        _list(HubSpotHook(connect(monkeypatch, fake)))
    assert fake.count("list", 401) == 1


def test_incomplete_oauth_extras_are_named(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = connect(monkeypatch, fake, client_id="only-this")
    with pytest.raises(HubSpotError, match="not client_secret, refresh_token"):
        _list(HubSpotHook(conn_id))


def test_retry_after_is_honoured(fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    hook = HubSpotHook(connect(monkeypatch, fake), clock=clock, sleep=clock.sleep)
    fake.script(rate_limited(retry_after=7))
    assert _list(hook) == 200
    assert 7.0 in clock.slept
    assert hook.rate_limited == 1


def test_without_retry_after_backoff_is_exponential_with_full_jitter(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=5, base_delay=1.0, rng=random.Random(7))
    hook = HubSpotHook(connect(monkeypatch, fake), retry=policy, clock=clock, sleep=clock.sleep)
    policy.sleep = clock.sleep
    fake.script(rate_limited(), rate_limited(), rate_limited())
    assert _list(hook) == 200
    backoffs = [s for s in clock.slept if s not in (0.0,)][-3:]
    expected = random.Random(7)
    assert backoffs == [
        expected.uniform(0, 1.0),
        expected.uniform(0, 2.0),
        expected.uniform(0, 4.0),
    ]


def test_server_errors_are_retried_then_reported(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock()
    hook = HubSpotHook(connect(monkeypatch, fake), clock=clock, sleep=clock.sleep)
    outage = error(502, "Bad gateway", "INTERNAL_ERROR")
    fake.script(outage)
    assert _list(hook) == 200
    fake.script(*[outage] * 6)
    with pytest.raises(RetriableError, match="gave up after 6 attempts"):
        _list(hook)


def test_rate_limit_headers_are_read() -> None:
    headers = {
        "x-hubspot-ratelimit-max": "190",
        "x-hubspot-ratelimit-interval-milliseconds": "10000",
        "x-hubspot-ratelimit-remaining": "4",
        "x-hubspot-ratelimit-secondly": "19",
    }
    limits = RateLimitHeaders.parse(headers)
    assert (limits.max, limits.interval_seconds, limits.remaining) == (190, 10.0, 4)
    assert limits.rate() == 19.0
    assert RateLimitHeaders.parse({}).rate() is None


def test_pacing_follows_the_headers_and_stays_under_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakeHubSpot(max_requests=20, interval=1.0) as server:
        hook = HubSpotHook(connect(monkeypatch, server))
        started = time.monotonic()
        for _ in range(45):
            _list(hook)
        elapsed = time.monotonic() - started
        assert server.count("list", 429) == 0
        assert hook.pacer.general.rate == pytest.approx(20 * 0.95)
        assert elapsed >= 1.5  # paced, not bursting into 429s


def test_search_is_paced_at_its_own_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeHubSpot(search_per_second=5) as server:
        hook = HubSpotHook(connect(monkeypatch, server, search_requests_per_second=5))
        started = time.monotonic()
        for _ in range(12):
            hook.call("search", "do_search", "deals", {"limit": 1}, search=True)
        assert server.count("search", 429) == 0
        assert time.monotonic() - started >= 1.8


def test_search_answers_carry_no_rate_limit_headers(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HubSpotHook(connect(monkeypatch, fake))
    searched = hook.call("search", "do_search", "deals", {"limit": 1}, search=True)
    listed = hook.call("objects", "get_page", "deals", limit=1)
    assert not any(name.startswith("x-hubspot-ratelimit") for name in searched.headers)
    assert listed.headers["x-hubspot-ratelimit-max"] == str(fake.max_requests)


def test_an_account_nearly_out_of_quota_makes_the_hook_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    with FakeHubSpot(max_requests=5, interval=1.0) as server:
        server._window.extend([time.monotonic()] * 3)  # another app used the account's quota
        hook = HubSpotHook(connect(monkeypatch, server), clock=clock, sleep=clock.sleep)
        _list(hook)  # the answer says 1 request remains
        assert clock.slept and clock.slept[-1] == pytest.approx(0.2 * 1)


def test_the_fake_answers_429_over_the_limit_in_hubspots_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    with FakeHubSpot(max_requests=2, interval=60.0) as server:
        policy = RetryPolicy(max_attempts=1)
        hook = HubSpotHook(
            connect(monkeypatch, server), retry=policy, clock=clock, sleep=clock.sleep
        )
        _list(hook)
        _list(hook)
        with pytest.raises(RetriableError, match=r"TEN_SECONDLY_ROLLING|RATE_LIMITS"):
            _list(hook)
        body = json.loads(json.dumps(server.requests[-1].status))
        assert body == 429


def test_client_is_pointed_at_the_connections_host(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = HubSpotHook(connect(monkeypatch, fake))
    assert hook.base_url == fake.url
    page = hook.client().crm.objects.basic_api.get_page("deals", limit=1)
    assert page.results == []


def test_client_with_a_developer_api_key_manages_webhook_subscriptions(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubspot.webhooks import SubscriptionCreateRequest

    api = HubSpotHook(connect(monkeypatch, fake)).client(api_key=DEVELOPER_API_KEY)
    created = api.webhooks.subscriptions_api.create(
        APP_ID, SubscriptionCreateRequest(event_type="deal.creation", active=True)
    )
    assert created.event_type == "deal.creation"
    listed = api.webhooks.subscriptions_api.get_all(APP_ID)
    assert [s.id for s in listed.results] == [created.id]
    assert "hapikey=" in fake.requests[-1].url


def test_the_fake_refuses_webhook_calls_without_the_developer_key(fake: FakeHubSpot) -> None:
    import urllib.request
    from urllib.error import HTTPError

    with pytest.raises(HTTPError) as caught:
        urllib.request.urlopen(f"{fake.url}/webhooks/v3/{APP_ID}/subscriptions?hapikey=wrong")
    assert caught.value.code == 401
    assert json.loads(caught.value.read())["category"] == "INVALID_AUTHENTICATION"


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        ({"conn_type": "hubspot", "password": "t"}, DEFAULT_BASE_URL),
        ({"conn_type": "hubspot", "password": "t", "host": "http://h:81/"}, "http://h:81"),
        ({"conn_type": "hubspot", "password": "t", "host": "h", "port": 8443}, "https://h:8443"),
    ],
)
def test_base_url_comes_from_the_host(
    monkeypatch: pytest.MonkeyPatch, conn: dict, expected: str
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HUBSPOT_URL_TEST", json.dumps(conn))
    assert HubSpotHook("hubspot_url_test").base_url == expected


def test_a_scripted_reply_reaches_the_hook_unchanged(
    fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.script(Reply(200, {"results": [{"id": "9"}]}))
    answer = HubSpotHook(connect(monkeypatch, fake)).call("objects", "get_page", "deals")
    assert answer.data == {"results": [{"id": "9"}]}
