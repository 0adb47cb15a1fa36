"""The ``email`` destination against a real SMTP server (aiosmtpd) on loopback.

Deliveries go through the pipeline's ``deliver`` (so through the delivery ledger); the tests
read back the MIME messages and envelopes the server received.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from airflow_dataflow.config import load_route_text
from airflow_dataflow.destinations import messages
from airflow_dataflow.destinations.email import EmailSettings
from airflow_dataflow.destinations.messages import MessagingConfigError
from airflow_dataflow.destinations.policy import RateLimiter
from airflow_dataflow.errors import FatalError, RetriableError, RouteConfigError
from airflow_dataflow.pipeline.deliver import deliver
from airflow_dataflow.state.ledger import ledger_entries
from airflow_dataflow.state.migrate import state_engine
from airflow_dataflow.state.store import StateStore
from tests.fakes.smtp import SmtpServer
from tests.support.databases import _server_unavailable
from tests.support.faults import deliver_and_get_killed, record_message_waits
from tests.support.routes import route_text, stage_and_deliver, stage_partition

ORDERS = [
    {"id": 1, "email": "ann@example.com", "name": "Ann", "amount": 250, "tags": ["vip"]},
    {"id": 2, "email": "bob@example.com", "name": "Bob", "amount": 40, "tags": []},
    {"id": 3, "email": "chloe@example.com", "name": "Chloé", "amount": 120, "tags": None},
]
SENDER = "Dataflow <dataflow@example.com>"


pytestmark = pytest.mark.usefixtures("own_state_store")


def _start(server_factory: Callable[[], SmtpServer]) -> Iterator[SmtpServer]:
    try:
        server = server_factory()
    except ImportError as exc:
        _server_unavailable(f"aiosmtpd is not installed: {exc}")
    with server:
        yield server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    yield from _start(SmtpServer)


@pytest.fixture
def conn(smtp: SmtpServer, define_conn: Callable[..., str]) -> str:
    """An ``smtp`` connection to the server, with the provider's ``from_email`` extra."""
    return define_conn(json.dumps(smtp.connection(from_email=SENDER)), "smtp")


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    return record_message_waits(monkeypatch)


def _deliver(
    tmp_path: Path,
    settings: dict[str, Any],
    records: list[dict[str, Any]] = ORDERS,
    run_id: str = "run-1",
) -> dict[str, Any]:
    """Route ``records`` to an email destination ``out`` and deliver them through the ledger."""
    return stage_and_deliver(tmp_path, {"type": "email", **settings}, records, run_id)


def _dead_letters() -> list[dict[str, Any]]:
    return StateStore.open().dead_letters("orders")


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())


# -- settings ----------------------------------------------------------------------------------


def test_settings_are_checked_when_the_route_is_loaded() -> None:
    with pytest.raises(RouteConfigError, match="not an email address"):
        load_route_text(route_text("{type: email, connection: c, to: [nobody]}"), "r.route.yaml")
    with pytest.raises(RouteConfigError, match="subjet"):
        load_route_text(
            route_text("{type: email, connection: c, to: a@b.c, subjet: x}"), "r.route.yaml"
        )
    with pytest.raises(RouteConfigError, match="invalid template"):
        load_route_text(
            route_text("{type: email, connection: c, to: a@b.c, html: '{{'}"), "r.route.yaml"
        )
    route = load_route_text(
        route_text("{type: email, connection: c, from: 'A <a@b.c>', to: '{{ record.email }}'}"),
        "r.route.yaml",
    )
    settings = route.config.destinations["out"]
    assert isinstance(settings, EmailSettings)
    assert (settings.from_, settings.to, settings.cc) == ("A <a@b.c>", "{{ record.email }}", [])


# -- messages ----------------------------------------------------------------------------------


def test_one_message_per_record_with_headers_recipients_and_alternatives(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {
        "connection": conn,
        "to": "{{ record.email }}",
        "cc": ["Sales <sales@example.com>", "audit@example.com"],
        "bcc": "archive@example.com",
        "subject": "Order {{ record.id }} for {{ record.name }}",
        "text": "Hello {{ record.name }}, your order of {{ record.amount }} EUR ({{ ds }}).",
        "html": "<p>Hello <b>{{ record.name }}</b>, {{ record.amount }} EUR</p>",
    }
    outcome = _deliver(tmp_path, settings, ORDERS[:2])
    assert (outcome["delivered"], outcome["batches"]) == (2, 2)
    first, second = smtp.recorder.received
    assert first.mail_from == "dataflow@example.com"
    assert first.rcpt_tos == [
        "ann@example.com",
        "sales@example.com",
        "audit@example.com",
        "archive@example.com",
    ]
    message = first.message
    assert message["From"] == SENDER
    assert message["To"] == "ann@example.com"
    assert message["Cc"] == "Sales <sales@example.com>, audit@example.com"
    assert message["Bcc"] is None
    assert "archive@example.com" not in first.content.decode()
    assert message["Subject"] == "Order 1 for Ann"
    assert message["Message-ID"].endswith("@example.com>")
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]
    assert _body(message, "plain") == "Hello Ann, your order of 250 EUR (1970-01-01).\n"
    assert _body(message, "html") == "<p>Hello <b>Ann</b>, 250 EUR</p>\n"
    assert second.rcpt_tos[0] == "bob@example.com"
    assert second.message["Message-ID"] != message["Message-ID"]


def test_non_ascii_subjects_and_bodies_arrive_intact(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {"connection": conn, "to": "ops@example.com", "subject": "Für {{ record.name }}"}
    _deliver(tmp_path, settings, ORDERS[2:])
    (message,) = smtp.recorder.messages()
    assert message["Subject"] == "Für Chloé"
    assert message.get_content_type() == "text/plain"
    assert _body(message, "plain") == (
        "id: 3\nemail: chloe@example.com\nname: Chloé\namount: 120\ntags: None\n"
    )


def test_per_batch_is_one_message_with_the_records_as_csv(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {
        "connection": conn,
        "to": ["ops@example.com", "lead@example.com"],
        "per": "batch",
        "subject": "{{ count }} orders",
        "html": "<ul>{% for r in records %}<li>{{ r.name }}</li>{% endfor %}</ul>",
        "text": "{{ count }} orders, see the attachment",
        "attach": "csv",
    }
    outcome = _deliver(tmp_path, settings)
    assert (outcome["delivered"], outcome["batches"]) == (3, 1)
    (received,) = smtp.recorder.received
    assert received.rcpt_tos == ["ops@example.com", "lead@example.com"]
    message = received.message
    assert message["To"] == "ops@example.com, lead@example.com"
    assert message["Subject"] == "3 orders"
    assert message.get_content_type() == "multipart/mixed"
    assert _body(message, "html") == "<ul><li>Ann</li><li>Bob</li><li>Chloé</li></ul>\n"
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == "text/csv"
    assert attachment.get_filename() == "out.csv"
    rows = list(csv.reader(io.StringIO(attachment.get_content())))
    assert rows == [
        ["id", "email", "name", "amount", "tags"],
        ["1", "ann@example.com", "Ann", "250", '["vip"]'],
        ["2", "bob@example.com", "Bob", "40", "[]"],
        ["3", "chloe@example.com", "Chloé", "120", ""],
    ]


def test_per_batch_default_text_counts_every_record_and_shows_sample_size(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {"connection": conn, "to": "ops@example.com", "per": "batch", "sample_size": 1}
    _deliver(tmp_path, settings)
    (message,) = smtp.recorder.messages()
    assert message["Subject"] == "[orders] 3 records for out"
    assert _body(message, "plain") == (
        "3 records from route orders to out.\n\n"
        "id: 1\nemail: ann@example.com\nname: Ann\namount: 250\ntags: ['vip']\n"
        "\n... and 2 more\n"
    )


def test_per_record_csv_attachment_is_the_record(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {"connection": conn, "to": "ops@example.com", "attach": "csv", "text": "see"}
    _deliver(tmp_path, settings, ORDERS[:1])
    (message,) = smtp.recorder.messages()
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content() == (
        'id,email,name,amount,tags\n1,ann@example.com,Ann,250,"[""vip""]"\n'
    )


def test_from_defaults_to_the_connection_and_is_required(
    tmp_path: Path, smtp: SmtpServer, define_conn: Callable[..., str]
) -> None:
    bare = define_conn(json.dumps(smtp.connection()), "smtp")
    with pytest.raises(MessagingConfigError, match="no sender: set from, or the extra from_email"):
        _deliver(tmp_path, {"connection": bare, "to": "ops@example.com"}, ORDERS[:1])
    _deliver(tmp_path, {"connection": bare, "to": "ops@example.com", "from": "me@example.org"})
    assert {item.mail_from for item in smtp.recorder.received} == {"me@example.org"}


def test_rate_limit_paces_the_delivery(
    tmp_path: Path, smtp: SmtpServer, conn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The destination's ``rate_limit`` is its token bucket's rate (spacing: test_slack.py)."""
    clock = {"now": 0.0}
    rates: list[float | None] = []

    def limiter(rate: float | None) -> RateLimiter:
        rates.append(rate)
        return RateLimiter(
            rate, clock=lambda: clock["now"], sleep=lambda s: clock.update(now=clock["now"] + s)
        )

    monkeypatch.setattr(messages, "rate_limiter", limiter)
    _deliver(tmp_path, {"connection": conn, "to": "ops@example.com", "rate_limit": 2})
    assert rates == [2.0]
    assert clock["now"] == pytest.approx(0.5)  # a burst of 2, then the third after 0.5 s
    assert len(smtp.recorder.received) == 3


# -- values are data ---------------------------------------------------------------------------


def test_record_values_are_data_never_template_source(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    records = [{"id": 1, "name": "{{ 7*7 }}<script>alert(1)</script>"}]
    settings = {
        "connection": conn,
        "to": "ops@example.com",
        "subject": "{{ record.name }}",
        "text": "{{ record.name }}",
        "html": "<p>{{ record.name }}</p>",
    }
    _deliver(tmp_path, settings, records)
    (message,) = smtp.recorder.messages()
    assert message["Subject"] == "{{ 7*7 }}<script>alert(1)</script>"
    assert _body(message, "plain") == "{{ 7*7 }}<script>alert(1)</script>\n"
    assert _body(message, "html") == "<p>{{ 7*7 }}&lt;script&gt;alert(1)&lt;/script&gt;</p>\n"


def test_a_value_cannot_inject_headers(tmp_path: Path, smtp: SmtpServer, conn: str) -> None:
    records = [{"id": 1, "name": "Hi\r\nBcc: victim@example.com"}]
    settings = {"connection": conn, "to": "ops@example.com", "subject": "{{ record.name }}"}
    _deliver(tmp_path, settings, records)
    (received,) = smtp.recorder.received
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.message["Subject"] == "Hi Bcc: victim@example.com"


def test_a_bad_address_in_a_record_dead_letters_it(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    records = [ORDERS[0], {**ORDERS[1], "email": "not an address"}]
    outcome = _deliver(tmp_path, {"connection": conn, "to": "{{ record.email }}"}, records)
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    (letter,) = _dead_letters()
    assert letter["record"]["id"] == 2
    assert "not an email address" in letter["reason"]


# -- the server's answers ----------------------------------------------------------------------


def test_every_recipient_refused_dead_letters_the_record(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    records = [ORDERS[0], {**ORDERS[1], "email": "bob@refused.example"}]
    outcome = _deliver(tmp_path, {"connection": conn, "to": "{{ record.email }}"}, records)
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    (letter,) = _dead_letters()
    assert letter["reason"].startswith(
        "the mail server refused every recipient: bob@refused.example (550 5.1.1"
    )


def test_one_refused_recipient_does_not_stop_the_others(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    settings = {"connection": conn, "to": ["ops@example.com", "gone@refused.example"]}
    outcome = _deliver(tmp_path, settings, ORDERS[:1])
    assert (outcome["delivered"], outcome["rejected"]) == (1, 0)
    (received,) = smtp.recorder.received
    assert received.rcpt_tos == ["ops@example.com"]


def test_a_deferred_recipient_is_retried_alone(
    tmp_path: Path, smtp: SmtpServer, conn: str, sleeps: list[float]
) -> None:
    smtp.recorder.busy_for = 1
    settings = {"connection": conn, "to": ["ops@example.com", "later@busy.example"]}
    _deliver(tmp_path, settings, ORDERS[:1])
    first, second = smtp.recorder.received
    assert first.rcpt_tos == ["ops@example.com"]
    assert second.rcpt_tos == ["later@busy.example"]
    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert len(sleeps) == 1


@pytest.mark.parametrize("answer", ["451 4.3.0 try again later", "421 4.3.2 shutting down"])
def test_a_deferred_message_is_retried(
    tmp_path: Path, smtp: SmtpServer, conn: str, sleeps: list[float], answer: str
) -> None:
    smtp.recorder.script_data(answer)
    outcome = _deliver(tmp_path, {"connection": conn, "to": "ops@example.com"}, ORDERS[:2])
    assert outcome["delivered"] == 2
    assert len(smtp.recorder.received) == 2
    assert len(sleeps) == 1


def test_a_refused_message_is_dead_lettered(tmp_path: Path, smtp: SmtpServer, conn: str) -> None:
    smtp.recorder.script_data("554 5.6.0 message content rejected")
    outcome = _deliver(tmp_path, {"connection": conn, "to": "ops@example.com"}, ORDERS[:2])
    assert (outcome["delivered"], outcome["rejected"]) == (1, 1)
    assert _dead_letters()[0]["reason"] == (
        "the mail server refused the message: 554 5.6.0 message content rejected"
    )


def test_a_refused_sender_fails_the_task(tmp_path: Path, smtp: SmtpServer, conn: str) -> None:
    settings = {"connection": conn, "to": "ops@example.com", "from": "me@refused.example"}
    with pytest.raises(MessagingConfigError, match="refused the sender") as failure:
        _deliver(tmp_path, settings, ORDERS[:1])
    assert isinstance(failure.value, FatalError)
    assert _dead_letters() == []


def test_an_unreachable_server_is_retried_then_fails_retriably(
    tmp_path: Path, define_conn: Callable[..., str], sleeps: list[float]
) -> None:
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": 9, "extra": {"disable_ssl": True}}
    conn_id = define_conn(json.dumps(conn), "smtp")
    settings = {"connection": conn_id, "to": "ops@example.com", "from": "a@example.com"}
    with pytest.raises(RetriableError, match=r"cannot connect to mail server 127\.0\.0\.1:9"):
        _deliver(tmp_path, settings, ORDERS[:1])
    assert len(sleeps) == 4


# -- login and secrets -------------------------------------------------------------------------


_PLAIN_AUTH = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def smtp_with_login() -> Iterator[SmtpServer]:
    yield from _start(lambda: SmtpServer(login=("mailer", "s3cret-smtp-password")))


@_PLAIN_AUTH
def test_login_works_and_the_password_is_masked(
    tmp_path: Path, smtp_with_login: SmtpServer, define_conn: Callable[..., str]
) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    conn_id = define_conn(json.dumps(smtp_with_login.connection(from_email=SENDER)), "smtp")
    _deliver(tmp_path, {"connection": conn_id, "to": "ops@example.com"}, ORDERS[:1])
    assert len(smtp_with_login.recorder.received) == 1
    assert "s3cret-smtp-password" not in redact("login mailer:s3cret-smtp-password")


@_PLAIN_AUTH
def test_a_wrong_password_fails_the_task_without_showing_it(
    tmp_path: Path, smtp_with_login: SmtpServer, define_conn: Callable[..., str]
) -> None:
    conn = {**smtp_with_login.connection(from_email=SENDER), "password": "wrong-password-123"}
    conn_id = define_conn(json.dumps(conn), "smtp")
    with pytest.raises(MessagingConfigError, match="refused the login") as failure:
        _deliver(tmp_path, {"connection": conn_id, "to": "ops@example.com"}, ORDERS[:1])
    assert "wrong-password-123" not in str(failure.value)


def test_tls_on_a_plain_server_is_a_configuration_error(
    tmp_path: Path, smtp: SmtpServer, define_conn: Callable[..., str]
) -> None:
    conn = smtp.connection(from_email=SENDER, disable_ssl=False)  # SMTPS against plain SMTP
    conn_id = define_conn(json.dumps(conn), "smtp")
    with pytest.raises(MessagingConfigError, match="check the extras disable_ssl"):
        _deliver(tmp_path, {"connection": conn_id, "to": "ops@example.com"}, ORDERS[:1])


# -- killed mid-delivery, then retried ---------------------------------------------------------


def _email_destination(conn_id: str) -> str:
    settings = {
        "type": "email",
        "connection": conn_id,
        "to": "ops@example.com",
        "subject": "order {{ record.id }}",
    }
    return json.dumps(settings)


def _subjects(smtp: SmtpServer) -> list[str]:
    return [str(message["Subject"]) for message in smtp.recorder.messages()]


def test_killed_between_messages_the_retry_sends_each_once(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    route, context, partition = stage_partition(tmp_path, _email_destination(conn), "run-1", 10)
    deliver_and_get_killed(
        route, context, partition, target="messages:RateLimiter.acquire", after=5
    )
    assert _subjects(smtp) == [f"order {n}" for n in range(4)]
    outcome = deliver(route, "out", context, partition)  # the task's retry
    assert (outcome["delivered"], outcome["skipped"]) == (10, 4)
    assert _subjects(smtp) == [f"order {n}" for n in range(10)]


def test_killed_after_a_message_was_sent_it_is_sent_again_with_the_same_id(
    tmp_path: Path, smtp: SmtpServer, conn: str
) -> None:
    """SMTP cannot be asked: the one message in doubt goes again, as the same message."""
    route, context, partition = stage_partition(tmp_path, _email_destination(conn), "run-1", 10)
    deliver_and_get_killed(route, context, partition, target="messages:MessageSender.send", after=4)
    statuses = [e["status"] for e in ledger_entries(state_engine(), "orders")]
    assert statuses == ["delivered"] * 3 + ["sending"]
    outcome = deliver(route, "out", context, partition)
    assert (outcome["delivered"], outcome["skipped"]) == (10, 3)
    assert _subjects(smtp) == [f"order {n}" for n in [0, 1, 2, 3, 3, 4, 5, 6, 7, 8, 9]]
    ids = [str(message["Message-ID"]) for message in smtp.recorder.messages()]
    assert ids[3] == ids[4]  # a mail client shows it once
    assert len(set(ids)) == 10
