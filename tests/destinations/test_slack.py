"""The ``slack`` destination against a local server speaking Slack's webhook and Web API.

Deliveries go through the pipeline's ``deliver`` (so through the delivery ledger); what Slack
received is read back from the fake server (tests/fakes/slack.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.config import load_route_text
from airflow_dataflow.context import RunContext
from airflow_dataflow.destinations.messages import (
    MessageSender,
    MessagingConfigError,
    SummaryRefusedError,
)
from airflow_dataflow.destinations.policy import RateLimiter
from airflow_dataflow.destinations.slack import SlackDestination, SlackSettings
from airflow_dataflow.errors import FatalError, RetriableError, RouteConfigError
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.state.ledger import ledger_entries
from airflow_dataflow.state.migrate import state_engine
from airflow_dataflow.state.store import StateStore
from tests.fakes.slack import API_TOKEN, WEBHOOK_TOKEN, FakeSlack, Reply, rate_limited
from tests.support.faults import deliver_and_get_killed, record_message_waits
from tests.support.routes import route_text, stage_and_deliver, stage_partition

ORDERS = [{"id": n, "name": f"customer {n}", "amount": 10 * n} for n in range(1, 6)]


pytestmark = pytest.mark.usefixtures("own_state_store")


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as server:
        yield server


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries wait on a fake clock: the waits are recorded, not slept."""
    return record_message_waits(monkeypatch)


@pytest.fixture
def webhook(slack: FakeSlack, define_conn: Callable[..., str]) -> str:
    """A ``slackwebhook`` connection to the fake: endpoint as host, token as password."""
    conn = {"conn_type": "slackwebhook", "host": f"{slack.url}/services", "password": WEBHOOK_TOKEN}
    return define_conn(json.dumps(conn), "slack_hook")


@pytest.fixture
def api(slack: FakeSlack, define_conn: Callable[..., str]) -> str:
    """A ``slack`` (Web API) connection to the fake: bot token, ``base_url`` extra."""
    conn = {"conn_type": "slack", "password": API_TOKEN, "extra": {"base_url": slack.api_url}}
    return define_conn(json.dumps(conn), "slack_api")


def _deliver(
    tmp_path: Path,
    settings: dict[str, Any],
    records: list[dict[str, Any]] = ORDERS,
    run_id: str = "run-1",
) -> dict[str, Any]:
    """Route ``records`` to a slack destination ``out`` and deliver them through the ledger."""
    return stage_and_deliver(
        tmp_path, {"type": "slack", "rate_limit": 1000, **settings}, records, run_id
    )


def _dead_letters() -> list[dict[str, Any]]:
    return StateStore.open().dead_letters("orders")


# -- settings ----------------------------------------------------------------------------------


def test_unknown_keys_and_bad_templates_are_rejected_at_load_time() -> None:
    with pytest.raises(RouteConfigError, match="chanel"):
        load_route_text(route_text("{type: slack, connection: c, chanel: '#x'}"), "r.route.yaml")
    with pytest.raises(RouteConfigError, match="invalid template"):
        load_route_text(route_text("{type: slack, connection: c, text: '{{ x '}"), "r.route.yaml")
    bad_block = "{type: slack, connection: c, blocks: [{type: section, text: {text: '{% if %}'}}]}"
    with pytest.raises(RouteConfigError, match="invalid template"):
        load_route_text(route_text(bad_block), "r.route.yaml")


def test_a_batch_summary_keeps_max_rows_records_unless_sample_size_is_set() -> None:
    settings = SlackSettings(type="slack", connection="c", per="batch", max_rows=25)
    assert settings.sample_size == 25
    assert SlackSettings(type="slack", connection="c", max_rows=3, sample_size=7).sample_size == 7
    assert SlackSettings(type="slack", connection="c").rate_limit == 1.0  # Slack's 1 msg/s


def test_one_message_is_one_ledger_batch(tmp_path: Path, slack: FakeSlack, webhook: str) -> None:
    outcome = _deliver(tmp_path, {"connection": webhook, "text": "order {{ record.id }}"})
    assert (outcome["delivered"], outcome["batches"], outcome["rejected"]) == (5, 5, 0)
    assert slack.texts() == [f"order {n}" for n in range(1, 6)]
    entries = ledger_entries(state_engine(), "orders")
    assert [(e["records"], e["status"]) for e in entries] == [(1, "delivered")] * 5


# -- webhook and Web API -----------------------------------------------------------------------


def test_webhook_messages_render_text_per_record(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    text = (
        "*{{ record.name }}* ordered {{ record.amount }} ({{ route }}/{{ destination }}, {{ ds }})"
    )
    _deliver(tmp_path, {"connection": webhook, "text": text}, ORDERS[:2])
    assert slack.texts() == [
        "*customer 1* ordered 10 (orders/out, 1970-01-01)",
        "*customer 2* ordered 20 (orders/out, 1970-01-01)",
    ]
    assert {message.via for message in slack.messages} == {"webhook"}


def test_api_messages_go_to_the_channel_with_blocks(
    tmp_path: Path, slack: FakeSlack, api: str
) -> None:
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": "Order {{ record.id }}"}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "*{{ record.name }}*: {{ record.amount }} EUR"},
        },
    ]
    settings = {"connection": api, "channel": "#orders", "blocks": blocks, "text": "order"}
    outcome = _deliver(tmp_path, settings, ORDERS[:2])
    assert outcome["delivered"] == 2
    first = slack.messages[0]
    assert (first.via, first.channel, first.text) == ("api", "C0ORDERS", "order")
    assert first.blocks == [
        {"type": "header", "text": {"type": "plain_text", "text": "Order 1"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*customer 1*: 10 EUR"}},
    ]
    assert first.metadata is not None
    assert first.metadata["event_type"] == "airflow_dataflow_message"


def test_the_channel_may_be_a_template(tmp_path: Path, slack: FakeSlack, api: str) -> None:
    records = [{"id": 1, "team": "orders"}, {"id": 2, "team": "alerts"}]
    settings = {"connection": api, "channel": "#{{ record.team }}", "text": "{{ record.id }}"}
    _deliver(tmp_path, settings, records)
    assert [(m.channel, m.text) for m in slack.messages] == [("C0ORDERS", "1"), ("C0ALERTS", "2")]


def test_default_text_lists_the_record(tmp_path: Path, slack: FakeSlack, webhook: str) -> None:
    _deliver(tmp_path, {"connection": webhook}, ORDERS[:1])
    assert slack.texts() == ["`orders` → `out`\n• *id*: 1\n• *name*: customer 1\n• *amount*: 10\n"]


# -- per: batch --------------------------------------------------------------------------------


def test_per_batch_is_one_summary_with_count_and_max_rows(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    outcome = _deliver(tmp_path, {"connection": webhook, "per": "batch", "max_rows": 2})
    assert (outcome["delivered"], outcome["batches"]) == (5, 1)  # records, not messages
    assert slack.texts() == [
        "*5 records* from route `orders` to `out`\n"
        "• id: 1, name: customer 1, amount: 10\n"
        "• id: 2, name: customer 2, amount: 20\n"
        "… and 3 more"
    ]


def test_a_batch_template_sees_count_and_records(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    text = "{{ count }}: {% for r in records %}{{ r.id }} {% endfor %}"
    _deliver(tmp_path, {"connection": webhook, "per": "batch", "max_rows": 3, "text": text})
    assert slack.texts() == ["5: 1 2 3 "]


def test_a_refused_summary_fails_the_run(tmp_path: Path, slack: FakeSlack, webhook: str) -> None:
    slack.script(Reply(400, "invalid_payload"))
    with pytest.raises(SummaryRefusedError, match="invalid_payload") as failure:
        _deliver(tmp_path, {"connection": webhook, "per": "batch"})
    assert isinstance(failure.value, FatalError)
    assert _dead_letters() == []


# -- templates are sandboxed, values are data --------------------------------------------------


def test_record_values_are_data_never_template_source(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    records = [{"id": 1, "note": "{{ 7*7 }}"}, {"id": 2, "note": "{% raw %}x"}]
    settings = {
        "connection": webhook,
        "text": "{{ record.note }}",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ record.note }}"}}],
    }
    _deliver(tmp_path, settings, records)
    assert slack.texts() == ["{{ 7*7 }}", "{% raw %}x"]
    assert slack.messages[0].blocks[0]["text"]["text"] == "{{ 7*7 }}"


def test_values_cannot_ping_the_channel_or_forge_links(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    records = [{"name": "<!channel> & <https://evil.example|your bank>"}]
    text = "<https://shop.example/orders|Order> by {{ record.name }}"
    _deliver(tmp_path, {"connection": webhook, "text": text}, records)
    assert slack.texts() == [
        "<https://shop.example/orders|Order> by "
        "&lt;!channel&gt; &amp; &lt;https://evil.example|your bank&gt;"
    ]
    slack.messages.clear()
    unescaped = {"connection": webhook, "text": text, "escape": False}
    _deliver(tmp_path, unescaped, [{**records[0], "id": 2}], "run-2")
    assert slack.texts() == [f"<https://shop.example/orders|Order> by {records[0]['name']}"]


def test_the_sandbox_refuses_unsafe_templates(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    text = "{{ record.__class__.__mro__ }}"
    outcome = _deliver(tmp_path, {"connection": webhook, "text": text}, ORDERS[:1])
    assert outcome["rejected"] == 1
    assert slack.messages == []
    assert "cannot render the message" in _dead_letters()[0]["reason"]


def test_a_template_failing_on_a_record_dead_letters_it(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    records = [{"id": 1, "customer": {"name": "Ann"}}, {"id": 2}]
    text = "{{ record.customer.name }}"
    outcome = _deliver(tmp_path, {"connection": webhook, "text": text}, records)
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    assert slack.texts() == ["Ann"]
    (letter,) = _dead_letters()
    assert letter["record"] == {"id": 2}
    assert "customer" in letter["reason"]


# -- Slack's answers ---------------------------------------------------------------------------


@pytest.mark.parametrize("connection", ["webhook", "api"])
def test_429_waits_exactly_retry_after(
    tmp_path: Path,
    slack: FakeSlack,
    sleeps: list[float],
    request: pytest.FixtureRequest,
    connection: str,
) -> None:
    conn_id = request.getfixturevalue(connection)
    settings = {"connection": conn_id, "text": "order {{ record.id }}"}
    if connection == "api":
        settings["channel"] = "#orders"
    slack.script(rate_limited(7, api=connection == "api"), rate_limited(3, api=connection == "api"))
    outcome = _deliver(tmp_path, settings, ORDERS[:2])
    assert outcome["delivered"] == 2
    assert sleeps == [7.0, 3.0]
    assert slack.texts() == ["order 1", "order 2"]
    assert [r.status for r in slack.requests if "postMessage" in r.path or "services" in r.path][
        :3
    ] == [429, 429, 200]


def test_5xx_is_retried_with_backoff(
    tmp_path: Path, slack: FakeSlack, webhook: str, sleeps: list[float]
) -> None:
    slack.script(Reply(500, "internal error"), Reply(503, "unavailable"))
    outcome = _deliver(tmp_path, {"connection": webhook, "text": "{{ record.id }}"}, ORDERS[:1])
    assert outcome["delivered"] == 1
    assert len(sleeps) == 2 and all(0 <= pause <= 1.0 for pause in sleeps)  # full jitter


def test_when_retries_run_out_the_task_fails_and_its_retry_sends_the_rest(
    tmp_path: Path, slack: FakeSlack, webhook: str, sleeps: list[float]
) -> None:
    settings = {"connection": webhook, "text": "order {{ record.id }}"}
    _deliver(tmp_path, settings, ORDERS[:2])  # two messages arrive
    slack.script(*[Reply(503, "unavailable")] * 5)  # the third fails 5 times (max_attempts)
    with pytest.raises(RetriableError, match="gave up after 5 attempts"):
        _deliver(tmp_path, settings, ORDERS[:4])
    assert slack.texts() == ["order 1", "order 2"]
    _deliver(tmp_path, settings, ORDERS[:4])  # the task's retry (same run)
    assert slack.texts() == [f"order {n}" for n in range(1, 5)]


def test_invalid_payload_dead_letters_the_record(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    slack.script(Reply(200, "ok"), Reply(400, "invalid_payload"))
    outcome = _deliver(tmp_path, {"connection": webhook, "text": "{{ record.id }}"}, ORDERS[:3])
    assert (outcome["delivered"], outcome["rejected"]) == (2, 1)
    (letter,) = _dead_letters()
    assert letter["record"]["id"] == 2
    assert letter["reason"] == "Slack refused the message: invalid_payload (HTTP 400)"


def test_invalid_blocks_from_a_record_dead_letters_it(
    tmp_path: Path, slack: FakeSlack, api: str
) -> None:
    records = [{"id": 1, "note": "fine"}, {"id": 2, "note": ""}]
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "{{ record.note }}"}}]
    settings = {"connection": api, "channel": "#orders", "blocks": blocks, "text": "note"}
    outcome = _deliver(tmp_path, settings, records)
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    assert "invalid_blocks" in _dead_letters()[0]["reason"]


def test_an_unknown_templated_channel_dead_letters_the_record(
    tmp_path: Path, slack: FakeSlack, api: str
) -> None:
    records = [{"id": 1, "team": "orders"}, {"id": 2, "team": "nowhere"}]
    settings = {"connection": api, "channel": "#{{ record.team }}", "text": "{{ record.id }}"}
    outcome = _deliver(tmp_path, settings, records)
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    assert _dead_letters()[0]["reason"] == "Slack refused the message: channel_not_found (HTTP 200)"


def test_an_unknown_fixed_channel_fails_the_task(
    tmp_path: Path, slack: FakeSlack, api: str
) -> None:
    settings = {"connection": api, "channel": "#nowhere", "text": "{{ record.id }}"}
    with pytest.raises(MessagingConfigError, match="cannot post to #nowhere: channel_not_found"):
        _deliver(tmp_path, settings, ORDERS[:2])
    assert _dead_letters() == []


def test_a_revoked_webhook_fails_the_task_without_leaking_the_token(
    tmp_path: Path, slack: FakeSlack, define_conn: Callable[..., str]
) -> None:
    conn = {
        "conn_type": "slackwebhook",
        "host": f"{slack.url}/services",
        "password": "T1/B1/revoked",
    }
    conn_id = define_conn(json.dumps(conn), "slack_hook")
    with pytest.raises(MessagingConfigError) as failure:
        _deliver(tmp_path, {"connection": conn_id, "text": "x"}, ORDERS[:2])
    message = str(failure.value)
    assert "no_service (HTTP 404)" in message
    assert f"connection {conn_id!r}" in message
    assert "revoked" not in message.replace("was revoked", "")  # the token's text is not there
    assert isinstance(failure.value, FatalError)  # Airflow does not retry it
    assert len(slack.requests) == 1  # not retried


def test_an_invalid_token_fails_the_task(
    tmp_path: Path, slack: FakeSlack, define_conn: Callable[..., str]
) -> None:
    conn = {"conn_type": "slack", "password": "xoxb-wrong", "extra": {"base_url": slack.api_url}}
    conn_id = define_conn(json.dumps(conn), "slack_api")
    settings = {"connection": conn_id, "channel": "#orders", "text": "x"}
    with pytest.raises(MessagingConfigError, match=r"invalid_auth .*the token is invalid"):
        _deliver(tmp_path, settings, ORDERS[:1])


def test_connection_mistakes_are_named(
    tmp_path: Path, webhook: str, api: str, define_conn: Callable[..., str]
) -> None:
    with pytest.raises(MessagingConfigError, match="incoming webhook, which always posts"):
        _deliver(tmp_path, {"connection": webhook, "channel": "#orders"}, ORDERS[:1])
    with pytest.raises(MessagingConfigError, match="set channel"):
        _deliver(tmp_path, {"connection": api}, ORDERS[:1])
    http = define_conn("http://example.com", "http")
    with pytest.raises(MessagingConfigError, match="type 'http'; the slack destination needs"):
        _deliver(tmp_path, {"connection": http}, ORDERS[:1])
    with pytest.raises(MessagingConfigError, match="AIRFLOW_CONN_MISSING_CONN"):
        _deliver(tmp_path, {"connection": "missing_conn"}, ORDERS[:1])
    no_token = define_conn(json.dumps({"conn_type": "slackwebhook", "host": "h"}), "hook")
    with pytest.raises(MessagingConfigError, match="has no webhook token: set its password"):
        _deliver(tmp_path, {"connection": no_token}, ORDERS[:1])


def test_an_unreachable_slack_is_retried_then_fails_retriably(
    tmp_path: Path, define_conn: Callable[..., str], sleeps: list[float]
) -> None:
    conn = {"conn_type": "slackwebhook", "host": "http://127.0.0.1:9/services", "password": "T/B/x"}
    conn_id = define_conn(json.dumps(conn), "slack_hook")
    with pytest.raises(RetriableError, match="cannot reach the Slack webhook") as failure:
        _deliver(tmp_path, {"connection": conn_id, "text": "x"}, ORDERS[:1])
    assert "T/B/x" not in str(failure.value)
    assert len(sleeps) == 4


def test_secrets_are_masked(tmp_path: Path, slack: FakeSlack, webhook: str, api: str) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    _deliver(tmp_path, {"connection": webhook, "text": "x"}, ORDERS[:1])
    _deliver(tmp_path, {"connection": api, "channel": "#orders", "text": "x"}, ORDERS[:1], "r2")
    line = f"posting to {slack.url}/services/{WEBHOOK_TOKEN} with {API_TOKEN}"
    assert WEBHOOK_TOKEN not in redact(line)
    assert API_TOKEN not in redact(line)


# -- rate limit (fake clock) -------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_rate_limit_spaces_messages(slack: FakeSlack, webhook: str) -> None:
    clock = FakeClock()
    settings = SlackSettings(type="slack", connection=webhook, text="{{ record.id }}")
    destination = SlackDestination("out", settings, RunContext(route="orders"))
    sent_at: list[float] = []
    limiter = RateLimiter(settings.rate_limit, clock=clock, sleep=clock.sleep)
    sender = MessageSender(destination, destination.outbox(), limiter=limiter)
    original = sender.outbox.post

    def post(*args: Any) -> None:
        sent_at.append(clock.now)
        original(*args)

    sender.outbox.post = post  # type: ignore[method-assign]
    with sender:
        for n in range(4):
            assert sender.send([{"id": n}], f"key-{n}", "run#1") == []
    assert sent_at == [0.0, 1.0, 2.0, 3.0]  # the default: 1 message per second
    assert slack.texts() == ["0", "1", "2", "3"]


# -- killed mid-delivery, then retried ---------------------------------------------------------


def _slack_destination(conn_id: str, **extra: str) -> str:
    settings = {"type": "slack", "connection": conn_id, "text": "order {{ record.id }}"}
    return json.dumps({**settings, **extra, "rate_limit": 1000})


@pytest.mark.parametrize("connection", ["webhook", "api"])
def test_killed_between_messages_the_retry_sends_each_once(
    tmp_path: Path, slack: FakeSlack, request: pytest.FixtureRequest, connection: str
) -> None:
    extra = {"channel": "#orders"} if connection == "api" else {}
    destination = _slack_destination(request.getfixturevalue(connection), **extra)
    route, context, partition = stage_partition(tmp_path, destination, "run-1", 10)
    # killed when the 5th message got its turn (marked "sending", not sent yet)
    deliver_and_get_killed(
        route, context, partition, target="messages:RateLimiter.acquire", after=5
    )
    assert slack.texts() == [f"order {n}" for n in range(4)]
    outcome = deliver(route, "out", context, partition)  # the task's retry
    assert (outcome["delivered"], outcome["skipped"]) == (10, 4)
    assert slack.texts() == [f"order {n}" for n in range(10)]


def test_killed_after_a_message_arrived_the_api_retry_finds_it(
    tmp_path: Path, slack: FakeSlack, api: str
) -> None:
    """The ledger never heard that message 4 arrived; its metadata in the channel says so."""
    route, context, partition = stage_partition(
        tmp_path, _slack_destination(api, channel="#orders"), "run-1", 10
    )
    deliver_and_get_killed(route, context, partition, target="messages:MessageSender.send", after=4)
    assert slack.texts() == [f"order {n}" for n in range(4)]
    statuses = [e["status"] for e in ledger_entries(state_engine(), "orders")]
    assert statuses == ["delivered"] * 3 + ["sending"]
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["skipped"]) == (10, 4)
    assert slack.texts() == [f"order {n}" for n in range(10)]  # exactly once


def test_killed_after_a_message_arrived_a_webhook_sends_that_one_again(
    tmp_path: Path, slack: FakeSlack, webhook: str
) -> None:
    """A webhook cannot be asked: the one message in doubt is sent again, nothing else."""
    route, context, partition = stage_partition(tmp_path, _slack_destination(webhook), "run-1", 10)
    deliver_and_get_killed(route, context, partition, target="messages:MessageSender.send", after=4)
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["skipped"]) == (10, 3)
    assert slack.texts() == [f"order {n}" for n in [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]]
